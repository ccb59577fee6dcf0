"""The reference clock: the Redis server's TIME, round-trip corrected, extrapolated on the monotonic clock."""

from __future__ import annotations

import time

import pytest

from fbvision.core.clock import ReferenceClock, local_clock
from fbvision.core.transport import TransportUnavailable


class Host:
    """A host whose wall clock is ``skew`` seconds off true time, and a server answering TIME after ``delay``."""

    def __init__(self, skew: float = 0.0, delay: float = 0.0):
        self.true = 1_700_000_000.0
        self.mono = 500.0
        self.skew = skew
        self.delay = delay
        self.down = False
        self.calls = 0

    def advance(self, s: float) -> None:
        self.true += s
        self.mono += s

    def wall(self) -> float:
        return self.true + self.skew

    def monotonic(self) -> float:
        return self.mono

    def server_time(self) -> float:
        self.calls += 1
        if self.down:
            raise TransportUnavailable("redis away")
        self.advance(self.delay)  # the request's way there: TIME is read in the middle of the round trip
        at = self.true
        self.advance(self.delay)
        return at

    def clock(self, **kw) -> ReferenceClock:
        return ReferenceClock(self.server_time, wall=self.wall, monotonic=self.monotonic, **kw)


@pytest.mark.parametrize("skew", [-120.0, 0.0, 120.0])
def test_now_is_the_server_clock_whatever_the_host_clock_says(skew):
    host = Host(skew=skew, delay=0.002)
    clock = host.clock()
    assert clock.now() == pytest.approx(host.true, abs=1e-6)
    assert clock.skew_s == pytest.approx(skew, abs=1e-6)
    report = clock.report()
    assert report["synced"] is True and report["skew_ms"] == pytest.approx(skew * 1000, abs=1e-3)
    assert report["rtt_ms"] == pytest.approx(4.0, abs=1e-6)
    # a stamp taken on this host's wall clock 0.3 s ago lands 0.3 s ago on the reference clock
    stamp = host.wall()
    host.advance(0.3)
    assert clock.from_wall(stamp) == pytest.approx(host.true - 0.3, abs=1e-6)


def test_a_step_of_the_local_wall_clock_does_not_move_it_and_resync_measures_again():
    host = Host(delay=0.001)
    clock = host.clock(resync_s=30.0)
    clock.sync()
    host.skew = -3600.0  # NTP steps this host back an hour
    host.advance(5.0)
    assert clock.now() == pytest.approx(host.true, abs=1e-6)
    assert host.calls == 3  # no new measurement before resync_s
    host.advance(30.0)
    assert clock.now() == pytest.approx(host.true, abs=1e-6)
    assert host.calls == 6 and clock.syncs == 2
    assert clock.skew_s == pytest.approx(-3600.0, abs=1e-6)


def test_shortest_round_trip_wins():
    host = Host()
    delays = iter([0.050, 0.001, 0.020])

    def server_time():
        host.delay = next(delays)
        return host.server_time()

    clock = ReferenceClock(server_time, wall=host.wall, monotonic=host.monotonic, samples=3)
    assert clock.sync()
    assert clock.rtt_s == pytest.approx(0.002)
    assert clock.now() == pytest.approx(host.true, abs=1e-6)


def test_an_outage_keeps_the_last_estimate_and_retries_later():
    host = Host(skew=42.0)
    clock = host.clock(resync_s=1.0)
    assert clock.now() == pytest.approx(host.true)
    host.down = True
    host.advance(10.0)
    assert clock.now() == pytest.approx(host.true)  # extrapolated, not the skewed wall clock
    assert clock.sync_failures == 1
    calls = host.calls
    clock.now()
    assert host.calls == calls  # a failed measurement is not retried on every call
    host.down = False
    host.advance(3.0)
    clock.now()
    assert clock.syncs == 2


def test_never_measured_falls_back_to_the_wall_clock():
    host = Host(skew=7.0)
    host.down = True
    clock = host.clock()
    assert clock.now() == pytest.approx(host.wall())
    assert not clock.synced and clock.skew_s == 0.0
    assert local_clock().now() == pytest.approx(time.time(), abs=1.0)


def test_a_server_clock_step_is_counted():
    host = Host()
    clock = host.clock(resync_s=1.0)
    clock.sync()
    host.true -= 60.0  # the Redis host's clock is stepped back
    host.advance(2.0)
    clock.now()
    assert clock.steps == 1
    assert clock.now() == pytest.approx(host.true)


def test_auto_sync_off_never_calls_redis_from_now():
    host = Host()
    clock = host.clock(auto_sync=False)
    clock.now()
    clock.from_wall(host.wall())
    assert host.calls == 0
    clock.maybe_sync()
    assert host.calls == 3 and clock.synced


def test_non_finite_server_time_is_refused():
    clock = ReferenceClock(lambda: float("nan"))
    assert clock.sync() is False and not clock.synced


def test_server_time_of_a_real_redis(transport):
    clock = ReferenceClock(transport.server_time)
    assert clock.sync()
    # one host: the Redis server's clock is this host's clock, so the skew is the measurement's error only
    assert abs(clock.skew_s) < 0.05
    assert clock.rtt_s is not None and clock.rtt_s < 0.5
