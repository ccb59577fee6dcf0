"""The stage loop's parts: back-off with jitter and throttled logging."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


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


