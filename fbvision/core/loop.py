"""The one loop every stage runs (:class:`StageLoop`) and its parts: back-off with jitter, throttled logging.

A stage (camera manager, inference worker, logic worker, alert delivery) supplies its step and hooks; the loop
owns what they used to hand-write each in their own way: waiting out a Redis outage with a growing, jittered
back-off, logging repeated failures at a limited rate, counting outages and errors in the stage's counters,
flushing counters on a schedule, and the warm stop (finish the current step, drain, final flush, shutdown).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from fbvision.core.transport.errors import TransportUnavailable

logger = logging.getLogger(__name__)


class LogThrottle:
    """Let one log record per key through every ``interval_s`` and count the ones held back.

    ``n = throttle(key)`` is None when the record should be skipped, else the number suppressed since the last one.
    """

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, key: str) -> int | None:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)


@dataclass
class Backoff:
    """Exponential back-off with 'equal jitter': the n-th delay is uniform in [d/2, d], d = min(max, initial*2^n)."""

    initial_s: float
    max_s: float
    rng: random.Random

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_s, self.initial_s * (2.0 ** min(attempt, 30)))
        return ceiling * (0.5 + 0.5 * self.rng.random())


class _Counts(Protocol):
    def incr(self, name: str, n: int | float = 1) -> None: ...


#: What :class:`StageLoop` does with an exception from a step that is not an outage.
ErrorPolicy = Literal["raise", "continue"]


def _wait_on(stop: threading.Event, seconds: float) -> None:
    stop.wait(seconds)


class StageLoop:
    """``StageLoop(name, step, ...).run(stop)``: call ``step(stop)`` until ``stop`` is set.

    Per iteration: ``step(stop)``; then ``flush()`` when ``flush_interval_s`` has passed; then, if the step
    returned a false value (nothing to do) and ``idle_wait_s`` > 0, ``idle(stop, idle_wait_s)``.

    * :class:`TransportUnavailable` (from the step or the flush) is an outage (no connection, or an error reply
      such as OOM/READONLY/MISCONF/NOGROUP: its ``reason``): counted as ``outage_counter`` and
      ``outage_counter:<reason>``,
      logged (at most once per ``log_interval_s``), ``on_outage()`` runs, then the loop waits
      ``backoff.delay(n)`` for the n-th outage in a row; the first step that gets through resets n.
    * any other exception from the step: ``on_error="raise"`` lets it out (the process dies, the supervisor
      restarts it: what was not acknowledged is redone); ``"continue"`` counts it as ``error_counter``, logs
      it with its traceback (limited rate), waits ``error_wait_s`` and goes on with the next step.
    * stop (or an exception on its way out): the current step finishes, then ``drain()`` (finish what is in
      hand), a final ``flush()``, and ``shutdown()`` - each run even when the one before failed; an outage in
      the drain or the final flush is logged, not raised (whatever Redis did not take is redone or recounted).

    ``clock`` (monotonic seconds) schedules the flush and throttles the log; ``wait(stop, seconds)`` does the
    back-off and error waits; both are injectable so tests run without sleeping. ``idle(stop, seconds)``
    (default: ``wait``) does the idle wait, so a stage can end it early (the camera manager on a new frame).
    """

    def __init__(
        self,
        name: str,
        step: Callable[[threading.Event], object],
        *,
        counters: _Counts | None = None,
        outage_counter: str = "redis_unavailable",
        backoff: Backoff | None = None,
        on_outage: Callable[[], None] | None = None,
        on_error: ErrorPolicy = "raise",
        error_counter: str = "errors:step",
        error_wait_s: float = 0.1,
        flush: Callable[[], None] | None = None,
        flush_interval_s: float = 1.0,
        idle_wait_s: float = 0.0,
        idle: Callable[[threading.Event, float], object] | None = None,
        drain: Callable[[], None] | None = None,
        shutdown: Callable[[], None] | None = None,
        log_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[threading.Event, float], object] = _wait_on,
    ):
        if on_error not in ("raise", "continue"):
            raise ValueError(f"on_error must be 'raise' or 'continue', not {on_error!r}")
        self.name = name
        self.step = step
        self.counters = counters
        self.outage_counter = outage_counter
        self.backoff = backoff or Backoff(0.1, 5.0, random.Random())
        self.on_outage = on_outage
        self.on_error = on_error
        self.error_counter = error_counter
        self.error_wait_s = error_wait_s
        self.flush = flush
        self.flush_interval_s = flush_interval_s
        self.idle_wait_s = idle_wait_s
        self.wait = wait
        self.idle = idle or wait
        self.drain = drain
        self.shutdown = shutdown
        self.clock = clock
        self.throttle = LogThrottle(log_interval_s, clock)
        self.outages = 0  # consecutive failed iterations (the back-off's attempt number)
        self._next_flush = clock() + flush_interval_s

    def run(self, stop: threading.Event) -> None:
        self._next_flush = self.clock() + self.flush_interval_s
        try:
            while not stop.is_set():
                self.run_once(stop)
        finally:
            self._finish()

    def run_once(self, stop: threading.Event) -> None:
        """One iteration: the step, the flush when due, then the wait that follows (outage, error, idle)."""
        pause, wait = 0.0, self.wait
        try:
            try:
                result = self.step(stop)
            except TransportUnavailable:
                raise
            except Exception:
                if self.on_error == "raise":
                    raise
                self._step_failed()
                pause = self.error_wait_s
            else:
                self._recovered()
                if not result:
                    pause, wait = self.idle_wait_s, self.idle
            self._maybe_flush()
        except TransportUnavailable as exc:
            self._outage(exc, stop)
            return
        if pause > 0 and not stop.is_set():
            wait(stop, pause)

    # -- the parts ----------------------------------------------------------------------------------------------
    def _count(self, name: str) -> None:
        if self.counters is not None and name:
            self.counters.incr(name)

    def _outage(self, exc: TransportUnavailable, stop: threading.Event) -> None:
        reason = getattr(exc, "reason", "unreachable")
        self._count(self.outage_counter)
        # Per reason too (``redis_unavailable:oom``...): an operator must tell a full Redis from a dead one.
        if self.outage_counter:
            self._count(f"{self.outage_counter}:{reason}")
        delay = self.backoff.delay(self.outages)
        self.outages += 1
        held = self.throttle(f"outage:{reason}")
        if held is not None:
            logger.warning("%s: Redis unavailable [%s] (%s); retrying in %.2f s%s", self.name, reason, exc, delay,
                           f" ({held} more outage(s) not logged)" if held else "")
        if self.on_outage is not None:
            self.on_outage()
        if not stop.is_set():
            self.wait(stop, delay)

    def _recovered(self) -> None:
        if self.outages:
            logger.info("%s: Redis reachable again after %d failed attempt(s)", self.name, self.outages)
            self.outages = 0

    def _step_failed(self) -> None:
        self._count(self.error_counter)
        held = self.throttle("error")
        if held is not None:
            logger.exception("%s: step failed and was skipped%s", self.name,
                             f" ({held} more failure(s) not logged)" if held else "")

    def _maybe_flush(self) -> None:
        if self.flush is None:
            return
        now = self.clock()
        if now < self._next_flush:
            return
        self._next_flush = now + self.flush_interval_s  # a failed flush is retried on schedule, not at once
        self.flush()

    def _finish(self) -> None:
        try:
            self._final("drain", self.drain)
            self._final("final flush", self.flush)
        finally:
            if self.shutdown is not None:
                self.shutdown()

    def _final(self, what: str, fn: Callable[[], None] | None) -> None:
        if fn is None:
            return
        try:
            fn()
        except TransportUnavailable as exc:
            logger.warning("%s: Redis unavailable at stop (%s); %s not done", self.name, exc, what)
