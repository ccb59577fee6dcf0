"""One reference clock for every cross-host age: the Redis server's ``TIME``.

Stages run on different hosts whose wall clocks disagree (a camera host 120 s behind, NTP stepping a clock
back). Every age that compares a time stamped on one host with "now" on another - the inference worker's
``max_age_ms``, the camera status age, logic heartbeats - is measured on the Redis server's clock instead:
all stages already talk to that one server.

:class:`ReferenceClock` keeps this process's estimate of the server clock: it asks ``TIME`` (a few round
trips, the shortest one wins, half of it corrects for the reply's way back) and extrapolates with the
monotonic clock in between, so a step of the local wall clock between two measurements does not move it.
It measures again every ``resync_s``. When Redis is away it keeps extrapolating the last measurement (the
monotonic clock drifts a few ppm: well under a millisecond a minute); before the first measurement it falls
back to the local wall clock, so a stage that starts during an outage still runs.

``skew_s`` is how far this host's wall clock is ahead of the reference (negative: behind). It is reported
per process (counters and metrics snapshots), so the dashboard and the run report can show each host's skew.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

#: Re-measure the offset this often (seconds of monotonic time).
DEFAULT_RESYNC_S = 30.0
#: Round trips per measurement (the shortest one is kept: it bounds the error best).
DEFAULT_SAMPLES = 3
#: After a failed measurement, try again after this long rather than on every call.
RETRY_AFTER_FAILURE_S = 2.0
#: A measured offset that moves by more than this between two measurements is logged as a clock step.
STEP_WARN_S = 1.0


class ReferenceClock:
    """``now()``: unix seconds on the reference (Redis server) clock, as well as this process can tell.

    ``server_time``: returns the server's unix time in seconds (``Transport.server_time``); may raise (an
    outage): the clock then keeps its last estimate. ``wall``/``monotonic`` are injectable for tests.
    Thread-safe: camera reader threads stamp frames while the stage loop resyncs. ``auto_sync=False``: only
    :meth:`sync`/:meth:`maybe_sync` measure, ``now()`` never waits on Redis (for threads that must not block
    on an outage; the owner calls ``maybe_sync`` from its loop).
    """

    def __init__(
        self,
        server_time: Callable[[], float] | None,
        *,
        resync_s: float = DEFAULT_RESYNC_S,
        samples: int = DEFAULT_SAMPLES,
        auto_sync: bool = True,
        wall: Callable[[], float] | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        if resync_s <= 0:
            raise ValueError("resync_s must be > 0")
        self._server_time = server_time
        self.resync_s = resync_s
        self.samples = max(1, int(samples))
        self.auto_sync = auto_sync
        self._sync_lock = threading.Lock()  # one measurement at a time; others use the old estimate
        # Looked up at call time (not bound at import), so a process whose time functions are replaced later
        # (the fault suite's skewed host) is measured as it is.
        self._wall = wall or (lambda: time.time())
        self._monotonic = monotonic or (lambda: time.monotonic())
        self._lock = threading.Lock()
        # (reference seconds, monotonic seconds) of the last good measurement; None: never measured.
        self._anchor: tuple[float, float] | None = None
        self._next_sync = 0.0  # monotonic
        self.rtt_s: float | None = None  # round trip of the measurement in use
        self.syncs = 0
        self.sync_failures = 0
        self.steps = 0  # measurements whose offset moved by more than STEP_WARN_S

    # -- measuring ------------------------------------------------------------------------------------------
    def sync(self) -> bool:
        """Measure the offset now; False (and the old estimate kept) when the server did not answer."""
        if self._server_time is None:
            return False
        if not self._sync_lock.acquire(blocking=False):
            return False
        try:
            return self._measure()
        finally:
            self._sync_lock.release()

    def _measure(self) -> bool:
        assert self._server_time is not None
        best: tuple[float, float, float] | None = None  # (rtt, reference at mid-point, monotonic at mid-point)
        try:
            for _ in range(self.samples):
                m0 = self._monotonic()
                server = float(self._server_time())
                m1 = self._monotonic()
                if not math.isfinite(server):
                    raise ValueError(f"server time {server!r} is not finite")
                rtt = max(0.0, m1 - m0)
                if best is None or rtt < best[0]:
                    # TIME is read somewhere inside the round trip; its middle is the best guess.
                    best = (rtt, server, (m0 + m1) / 2.0)
        except Exception as exc:  # an outage (TransportUnavailable) or a bad reply: keep extrapolating
            with self._lock:
                self.sync_failures += 1
                self._next_sync = self._monotonic() + RETRY_AFTER_FAILURE_S
            logger.debug("reference clock: TIME failed (%s); keeping the last estimate", exc)
            return False
        assert best is not None
        rtt, server, mono = best
        with self._lock:
            if self._anchor is not None:
                before = self._anchor[0] + (mono - self._anchor[1])
                if abs(server - before) > STEP_WARN_S:
                    self.steps += 1
                    logger.warning("reference clock moved by %+.3f s between two measurements "
                                   "(the Redis host's clock was stepped?)", server - before)
            self._anchor = (server, mono)
            self.rtt_s = rtt
            self.syncs += 1
            self._next_sync = mono + self.resync_s
        return True

    def maybe_sync(self) -> None:
        """Measure if due (call it from a stage loop; ``now()`` does it too)."""
        if self._server_time is not None and self._monotonic() >= self._next_sync:
            self.sync()

    # -- reading --------------------------------------------------------------------------------------------
    @property
    def synced(self) -> bool:
        return self._anchor is not None

    def now(self) -> float:
        """Reference unix seconds (the local wall clock until the first measurement succeeded)."""
        if self.auto_sync:
            self.maybe_sync()
        anchor = self._anchor
        if anchor is None:
            return self._wall()
        return anchor[0] + (self._monotonic() - anchor[1])

    def from_wall(self, wall_ts: float) -> float:
        """A time stamped with this host's wall clock, moved onto the reference clock (by its age)."""
        wall_now = self._wall()
        ref_now = self.now()
        # An age, not an absolute time: a wall clock stepped since the measurement changes nothing. A stamp in
        # the local future (the clock stepped back since) counts as taken now.
        return ref_now - max(0.0, wall_now - wall_ts)

    @property
    def skew_s(self) -> float:
        """This host's wall clock minus the reference clock (0.0 until measured)."""
        anchor = self._anchor
        if anchor is None:
            return 0.0
        return self._wall() - (anchor[0] + (self._monotonic() - anchor[1]))

    def report(self) -> dict[str, object]:
        """Figures for a metrics snapshot (``clock`` key): skew, measurement round trip, counts."""
        return {
            "synced": self.synced,
            "skew_ms": round(self.skew_s * 1000.0, 3),
            "rtt_ms": None if self.rtt_s is None else round(self.rtt_s * 1000.0, 3),
            "syncs": self.syncs,
            "sync_failures": self.sync_failures,
            "steps": self.steps,
        }


def local_clock() -> ReferenceClock:
    """A clock that never measures: the local wall clock (tests, tools, a stage without Redis)."""
    return ReferenceClock(None)
