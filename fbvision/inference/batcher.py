"""Dynamic batching policy and batch-size auto-tuning. Pure: no Redis, no model - a pop function and a clock.

Policy of :meth:`Batcher.next` (see docs/inference.md):

1. Block for the first frame, at most ``first_wait_s`` (1 s, so the worker sees its stop event).
2. Once a fresh frame is in hand, keep popping until ``max_batch`` frames or ``max_wait_ms`` since that frame.
   A backlog fills a batch at once (one pop takes up to ``max_batch``); a trickle waits at most ``max_wait_ms``.
3. Frames older than ``max_age_ms`` (``wall()`` now minus capture time; the worker passes the reference clock,
   :mod:`fbvision.core.clock`, on which the camera manager stamps capture times) are dropped as they are popped and
   counted; they never start the wait. Messages that do not parse are returned with their :class:`WireError`
   for the caller to count and dead-letter.

:func:`autotune` measures frames/s per batch size on the real engine and picks the batch size to use: the
smallest one within ``tolerance`` of the best throughput - so it never picks one slower than batch 1 beyond noise.
On a CPU, where batching does not pay, that is 1; on a GPU it is the largest that still pays.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from fbvision.core.wire import FrameMessage, WireError, decode_frame

logger = logging.getLogger(__name__)

PopFn = Callable[[int, float], list[bytes]]  # (max_n, timeout_s) -> up to max_n raw messages, FIFO


@dataclass
class Batch:
    """What one :meth:`Batcher.next` call produced."""

    frames: list[FrameMessage] = field(default_factory=list)
    popped_at: list[float] = field(default_factory=list)  # wall time each frame left the queue
    stale: list[FrameMessage] = field(default_factory=list)
    rejected: list[tuple[bytes, WireError]] = field(default_factory=list)
    wait_ms: float = 0.0  # from the first fresh frame in hand to the batch being complete
    popped: int = 0  # raw messages taken off the queue (frames + stale + rejected)

    def __len__(self) -> int:
        return len(self.frames)


class Batcher:
    """Forms batches from a FIFO queue (``pop(max_n, timeout_s)``) under the policy above.

    ``max_batch`` / ``max_wait_ms`` / ``max_age_ms`` are plain attributes: auto-tuning may change them.
    ``clock`` is monotonic (waits), ``wall`` is unix time (frame age, pop stamps).
    """

    def __init__(
        self,
        pop: PopFn,
        *,
        max_batch: int,
        max_wait_ms: float,
        max_age_ms: float,
        first_wait_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        decode: Callable[[bytes], FrameMessage] = decode_frame,
        rate_window_s: float = 2.0,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.pop = pop
        self.max_batch = int(max_batch)
        self.max_wait_ms = float(max_wait_ms)
        self.max_age_ms = float(max_age_ms)
        self.first_wait_s = float(first_wait_s)
        self.clock = clock
        self.wall = wall
        self.decode = decode
        self.rate_window_s = float(rate_window_s)
        self._arrivals: collections.deque[tuple[float, int]] = collections.deque()  # (clock, frames popped)
        self._observed_since: float | None = None

    def expected_gap_s(self, now: float) -> float | None:
        """Mean time between frames over the last ``rate_window_s``; None until a whole window was observed
        (at start-up, or after an idle spell, the worker waits as configured)."""
        if self._observed_since is None or now - self._observed_since < self.rate_window_s:
            return None
        while self._arrivals and now - self._arrivals[0][0] > self.rate_window_s:
            self._arrivals.popleft()
        n = sum(count for _, count in self._arrivals)
        return self.rate_window_s / n if n else None

    def next(self, first_wait_s: float | None = None) -> Batch:
        """One batch (possibly empty after ``first_wait_s`` with nothing fresh). Exceptions of ``pop``
        (e.g. TransportUnavailable) propagate; frames already popped in this call are then lost (ephemeral).

        ``first_wait_s`` overrides the attribute for this call (the pipelined worker, with a batch on the engine,
        only looks: a few ms)."""
        batch = Batch()
        started = self.clock()
        first_at: float | None = None
        first_wait = self.first_wait_s if first_wait_s is None else float(first_wait_s)
        max_wait_s = max(self.max_wait_ms, 0.0) / 1000.0
        while True:
            now = self.clock()
            if first_at is None:
                remaining = first_wait - (now - started)
                want = self.max_batch
            else:
                remaining = max_wait_s - (now - first_at)
                want = self.max_batch - len(batch.frames)
                if want <= 0:
                    break
            if remaining <= 0:
                break
            raw = self.pop(want, remaining)
            if not raw:
                break
            popped_at = self.wall()
            batch.popped += len(raw)
            for data in raw:
                try:
                    frame = self.decode(data)
                except WireError as exc:
                    batch.rejected.append((data, exc))
                    continue
                if (popped_at - frame.capture_ts) * 1000.0 > self.max_age_ms:
                    batch.stale.append(frame)
                    continue
                batch.frames.append(frame)
                batch.popped_at.append(popped_at)
            if first_at is None and batch.frames:
                first_at = self.clock()
            now = self.clock()
            if self._observed_since is None:
                self._observed_since = now
            self._arrivals.append((now, len(raw)))
            if first_at is not None and len(raw) < want:
                # The queue is drained. Waiting only pays when another frame is likely within max_wait: at
                # 4 cameras x 5 fps a frame comes every ~50 ms, so a 10 ms wait would just add 10 ms of latency.
                gap = self.expected_gap_s(now)
                if gap is not None and gap > max_wait_s:
                    break
        if first_at is not None:
            batch.wait_ms = (self.clock() - first_at) * 1000.0
        return batch


# -- auto-tuning ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AutotuneResult:
    batch: int  # the batch size to use (max_batch of the batcher)
    max_wait_ms: float  # the wait to use with it
    table: list[dict]  # rows: batch, frames_per_s, ms_per_batch, ratio_vs_1, iterations
    seconds: float  # time the measurement took


def candidate_batch_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, ... up to ``max_batch``, and ``max_batch`` itself."""
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    sizes.append(max_batch)
    return sizes


def autotune(
    engine,
    candidate_sizes: Iterable[int] | None = None,
    *,
    max_wait_ms: float = 10.0,
    budget_s: float = 3.0,
    min_iterations: int = 3,
    tolerance: float = 0.95,
    clock: Callable[[], float] = time.perf_counter,
) -> AutotuneResult:
    """Measure throughput per batch size on ``engine`` and choose the batch size to run with.

    The sizes are timed in interleaved rounds for about ``budget_s`` (at least ``min_iterations`` rounds), so a
    burst of contention - other stages starting beside the worker - is spread over every size instead of skewing
    one. In each round every size gets an untimed call, then a timed one: a size measured right after a much
    bigger batch would otherwise pay for the caches and thread pool that batch left cold, which steady traffic of
    that size does not. The median time per batch gives frames/s. The chosen size is the smallest whose throughput is at least ``tolerance`` x the best;
    batch 1 is always measured, so the choice is never slower than batch 1 by more than that noise margin. The
    wait to use is ``min(max_wait_ms, ms per batch at 1)``: waiting longer than one single-frame inference takes
    cannot pay off; with batch 1 there is nothing to wait for.
    """
    started = clock()
    sizes = sorted({1, *(int(b) for b in (candidate_sizes or candidate_batch_sizes(engine.max_batch)))})
    sizes = [b for b in sizes if 1 <= b <= engine.max_batch]
    h, w = engine.input_size
    rng = np.random.default_rng(0)
    batches = {b: rng.random((b, 3, h, w), dtype=np.float32) for b in sizes}
    times: dict[int, list[float]] = {b: [] for b in sizes}
    rounds_started = clock()
    rounds = 0
    while rounds < min_iterations or (clock() - rounds_started < budget_s and rounds < 200):
        for b in sizes:
            engine.infer(batches[b])  # untimed: back to this size's steady state
            t0 = clock()
            engine.infer(batches[b])
            times[b].append(clock() - t0)
        rounds += 1
    rows: list[dict] = []
    for b in sizes:
        ms = float(np.median(times[b])) * 1000.0
        rows.append({"batch": b, "frames_per_s": b / (ms / 1000.0) if ms > 0 else float("inf"),
                     "ms_per_batch": ms, "iterations": len(times[b])})
    base = rows[0]["frames_per_s"]
    for row in rows:
        row["ratio_vs_1"] = row["frames_per_s"] / base if base > 0 else 1.0
    best = max(row["frames_per_s"] for row in rows)
    chosen = next(row for row in rows if row["frames_per_s"] >= tolerance * best)
    wait = 0.0 if chosen["batch"] == 1 else min(float(max_wait_ms), rows[0]["ms_per_batch"])
    result = AutotuneResult(batch=chosen["batch"], max_wait_ms=wait, table=rows, seconds=clock() - started)
    logger.info(
        "autotune on %s: batch %d, wait %.1f ms (%s) in %.1f s", getattr(engine, "provider", "?"), result.batch,
        wait, ", ".join(f"b{r['batch']}={r['frames_per_s']:.0f}/s" for r in rows), result.seconds,
    )
    return result


def format_table(rows: Sequence[dict]) -> str:
    """The autotune table as fixed-width text (for logs and the benchmark report)."""
    lines = [f"{'batch':>5} {'frames/s':>10} {'ms/batch':>9} {'vs b1':>6}"]
    for r in rows:
        lines.append(f"{r['batch']:>5} {r['frames_per_s']:>10.1f} {r['ms_per_batch']:>9.2f} {r['ratio_vs_1']:>6.2f}")
    return "\n".join(lines)
