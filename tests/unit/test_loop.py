"""StageLoop, the one loop of every stage: outage back-off, error policy, flush schedule, warm stop.

A fake clock and a fake wait (which only advances the clock) replace time: nothing here sleeps."""

from __future__ import annotations

import itertools
import logging
import random
import threading

import pytest

from fbvision.core.loop import Backoff, StageLoop
from fbvision.core.metrics import Counters
from fbvision.core.transport import TransportUnavailable


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []
        self.idles: list[float] = []

    def clock(self) -> float:
        return self.now

    def wait(self, stop: threading.Event, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def idle(self, stop: threading.Event, seconds: float) -> None:
        self.idles.append(seconds)
        self.now += seconds


class Script:
    """A step that plays ``outcomes`` in order (an exception is raised, anything else returned), advancing the
    fake clock by ``step_s`` each time, and sets the stop event after the last one."""

    def __init__(self, t: FakeTime, outcomes: list, step_s: float = 0.0):
        self.t, self.outcomes, self.step_s = t, list(outcomes), step_s
        self.calls = 0
        self.log: list[str] = []

    def __call__(self, stop: threading.Event):
        self.calls += 1
        self.t.now += self.step_s
        outcome = self.outcomes.pop(0)
        if not self.outcomes:
            stop.set()
        self.log.append("step")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def make_loop(t: FakeTime, step, **kw) -> StageLoop:
    kw.setdefault("backoff", Backoff(0.1, 1.0, random.Random(7)))
    return StageLoop("test stage", step, clock=t.clock, wait=t.wait, **kw)


def down() -> TransportUnavailable:
    return TransportUnavailable("connection refused")


def test_outage_backoff_grows_is_capped_and_resets_after_a_good_step():
    t = FakeTime()
    counters = Counters()
    outages: list[float] = []
    script = Script(t, [down(), down(), down(), down(), down(), down(), True, down(), True])
    make_loop(t, script, counters=counters, on_outage=lambda: outages.append(t.now)).run(threading.Event())
    assert script.calls == 9
    assert counters.get("redis_unavailable") == 7
    assert len(outages) == 7  # the on-outage hook ran once per outage, before its wait
    first_run, second_run = t.waits[:6], t.waits[6:]
    ceilings = [min(1.0, 0.1 * 2**n) for n in range(6)]  # 0.1, 0.2, 0.4, 0.8, 1.0 (cap), 1.0
    for wait, ceiling in zip(first_run, ceilings, strict=True):
        assert ceiling / 2 <= wait <= ceiling
    assert first_run[3] > first_run[0]  # grows
    assert len(second_run) == 1 and 0.05 <= second_run[0] <= 0.1  # the good step reset it


def test_an_outage_in_the_flush_backs_off_like_one_in_the_step():
    t = FakeTime()
    counters = Counters()
    flushes = itertools.chain([down()], itertools.repeat(None))

    def flush():
        outcome = next(flushes)
        if outcome is not None:
            raise outcome

    script = Script(t, [True, True, True], step_s=1.0)
    make_loop(t, script, counters=counters, flush=flush, flush_interval_s=1.0).run(threading.Event())
    assert counters.get("redis_unavailable") == 1
    assert len(t.waits) == 1


def test_errors_are_counted_and_logged_at_a_limited_rate_when_the_policy_is_continue(caplog):
    t = FakeTime()
    counters = Counters()
    # 12 failing steps, 1 s apart (the error wait): logged at 0 s and again once 10 s have passed.
    script = Script(t, [ValueError(f"bad batch {i}") for i in range(12)] + [True])
    loop = make_loop(t, script, counters=counters, on_error="continue", error_counter="errors:batch",
                     error_wait_s=1.0, log_interval_s=10.0)
    with caplog.at_level(logging.ERROR, logger="fbvision.core.loop"):
        loop.run(threading.Event())
    assert script.calls == 13
    assert counters.get("errors:batch") == 12
    assert counters.get("redis_unavailable") == 0
    assert t.waits == [1.0] * 12
    records = [r for r in caplog.records if "step failed" in r.getMessage()]
    assert len(records) == 2
    assert records[0].exc_info is not None and "bad batch 0" in caplog.text  # with its traceback
    assert "bad batch 10" in caplog.text and "(9 more failure(s) not logged)" in records[1].getMessage()


def test_outage_warnings_are_throttled_too(caplog):
    t = FakeTime()
    script = Script(t, [down() for _ in range(5)] + [True])
    with caplog.at_level(logging.INFO, logger="fbvision.core.loop"):
        make_loop(t, script, counters=Counters(), log_interval_s=60.0).run(threading.Event())
    warnings = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "test stage" in warnings[0].getMessage()
    assert "reachable again after 5 failed attempt(s)" in caplog.text


def test_the_raise_policy_lets_an_error_out_after_the_shutdown_ran():
    t = FakeTime()
    counters = Counters()
    order: list[str] = []
    script = Script(t, [True, RuntimeError("bug"), True])
    loop = make_loop(t, script, counters=counters, on_error="raise", flush=lambda: order.append("flush"),
                     drain=lambda: order.append("drain"), shutdown=lambda: order.append("shutdown"))
    stop = threading.Event()
    with pytest.raises(RuntimeError, match="bug"):
        loop.run(stop)
    assert script.calls == 2
    assert order == ["drain", "flush", "shutdown"]
    assert counters.snapshot() == {}  # an error that is let out is not counted as a handled one
    assert t.waits == []


def test_flush_runs_on_schedule_and_once_more_at_stop():
    t = FakeTime()
    at: list[float] = []
    script = Script(t, [True] * 10, step_s=0.3)  # steps end at 0.3, 0.6, ... 3.0
    make_loop(t, script, flush=lambda: at.append(round(t.now, 6)), flush_interval_s=1.0).run(threading.Event())
    # due at 1.0 (seen at 1.2), then 2.2 (seen at 2.4), then the final one at stop (3.0)
    assert at == [1.2, 2.4, 3.0]


def test_warm_stop_finishes_the_step_then_drains_flushes_and_shuts_down_in_order():
    t = FakeTime()
    order: list[str] = []
    stop = threading.Event()

    def step(stop_event):
        order.append("step start")
        stop.set()  # the stop arrives while a step is in hand: the step still finishes
        order.append("step end")
        return True

    def failing_drain():
        order.append("drain")
        raise down()  # Redis away at stop: logged, and the rest of the stop still runs

    loop = make_loop(t, step, flush=lambda: order.append("flush"), flush_interval_s=100.0, drain=failing_drain,
                     shutdown=lambda: order.append("shutdown"))
    loop.run(stop)
    assert order == ["step start", "step end", "drain", "flush", "shutdown"]
    assert t.waits == []  # no back-off once stopped


def test_idle_wait_only_after_a_step_that_found_nothing():
    t = FakeTime()
    script = Script(t, [0, 3, False, None, True])
    make_loop(t, script, idle_wait_s=0.05, idle=t.idle).run(threading.Event())
    assert t.idles == [0.05, 0.05, 0.05]
    assert t.waits == []


def test_no_idle_wait_when_the_step_blocks_by_itself():
    t = FakeTime()
    make_loop(t, Script(t, [0, 0, 0])).run(threading.Event())
    assert t.waits == [] and t.idles == []


def test_unknown_error_policy_is_refused():
    with pytest.raises(ValueError, match="on_error"):
        StageLoop("x", lambda stop: None, on_error="ignore")  # type: ignore[arg-type]


def test_error_reply_outages_back_off_like_lost_connections_and_are_counted_per_reason():
    """Issue 13: OOM / READONLY / MISCONF / NOGROUP come as TransportUnavailable with a reason (the transport
    classifies the reply); the loop backs off exactly as for a lost connection and counts each reason apart."""
    t = FakeTime()
    counters = Counters()
    refused = [TransportUnavailable("OOM", "oom"), TransportUnavailable("OOM", "oom"),
               TransportUnavailable("READONLY", "readonly"), TransportUnavailable("MISCONF", "misconf"),
               TransportUnavailable("NOGROUP", "nogroup"), down()]
    script = Script(t, [*refused, True])
    make_loop(t, script, counters=counters).run(threading.Event())
    assert script.calls == 7  # nothing escaped the loop
    assert counters.get("redis_unavailable") == 6
    assert {r: counters.get(f"redis_unavailable:{r}") for r in ("oom", "readonly", "misconf", "nogroup",
                                                                  "unreachable")} == {
        "oom": 2, "readonly": 1, "misconf": 1, "nogroup": 1, "unreachable": 1}
    assert len(t.waits) == 6 and t.waits[3] > t.waits[0]  # one growing back-off across the reasons
