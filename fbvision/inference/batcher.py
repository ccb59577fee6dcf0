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
smallest one within ``tolerance`` of the best throughput among those that beat batch 1 by a confidence margin in
at least 3 of 4 interleaved rounds - so it never leaves batch 1 on a lucky measurement. On a CPU, where batching
does not pay, that is 1; on a GPU it is the largest that still pays.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
    # rows: batch, frames_per_s, ms_per_batch, ratio_vs_1, iterations, and per-round ratios vs batch 1:
    # ratio_median, ratio_p25 (the lower quartile: the confidence bound), wins (share of rounds beating batch 1),
    # eligible (cleared the margin)
    table: list[dict]
    seconds: float  # time the measurement took
    rounds: int = 0  # interleaved rounds measured
    margin: float | None = None  # the confidence margin a batch size > 1 had to clear (None: no margin, old rule)
    measured_at: float | None = None  # wall time of the measurement when it came from an AutotuneCache, else None


class AutotuneCache:
    """The auto-tune's result kept per machine, model and engine settings in one JSON file, so that the next start
    on the same machine reuses it instead of measuring again (``inference.autotune_cache``).

    The measurement runs every batch size at full speed for seconds at start-up; on a small CPU that starves the
    cameras and the logic just started beside it, and the frames they queue meanwhile go stale. The key names what
    makes a measurement valid elsewhere: the model file's digest, the provider, the ONNX Runtime version, the CPU
    model, the usable cores, the engine's thread settings, the candidate sizes and the margin; an entry older than
    ``max_age_s`` is measured again. A damaged file is ignored (and replaced at the next save), never fatal.
    """

    def __init__(self, path, max_age_s: float = 7 * 86400.0, now: Callable[[], float] = time.time):
        self.path = Path(path).expanduser()
        self.max_age_s = float(max_age_s)
        self.now = now

    @staticmethod
    def key(**parts) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def load(self, key: str) -> AutotuneResult | None:
        entry = self._read().get(key)
        try:
            measured_at = float(entry["measured_at"])
            if self.now() - measured_at > self.max_age_s:
                return None
            return AutotuneResult(batch=int(entry["batch"]), max_wait_ms=float(entry["max_wait_ms"]),
                                  table=list(entry["table"]), seconds=float(entry["seconds"]),
                                  rounds=int(entry["rounds"]),
                                  margin=None if entry.get("margin") is None else float(entry["margin"]),
                                  measured_at=measured_at)
        except (TypeError, KeyError, ValueError):
            return None

    def save(self, key: str, result: AutotuneResult) -> None:
        data = self._read()
        data[key] = {"batch": result.batch, "max_wait_ms": result.max_wait_ms, "table": result.table,
                     "seconds": result.seconds, "rounds": result.rounds, "margin": result.margin,
                     "measured_at": self.now()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, self.path)
        except OSError as exc:
            logger.warning("auto-tune result not cached in %s: %s", self.path, exc)


def candidate_batch_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, ... up to ``max_batch``, and ``max_batch`` itself."""
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    sizes.append(max_batch)
    return sizes


#: Default confidence margin: a batch size > 1 is used only when, in at least 3 rounds of 4, it beat batch 1 by
#: this much (the lower quartile of its per-round throughput ratio vs batch 1 is >= 1 + margin).
AUTOTUNE_MARGIN = 0.10


def autotune(
    engine,
    candidate_sizes: Iterable[int] | None = None,
    *,
    max_wait_ms: float = 10.0,
    budget_s: float = 3.0,
    min_iterations: int = 5,
    max_rounds: int = 200,
    tolerance: float = 0.95,
    margin: float | None = AUTOTUNE_MARGIN,
    clock: Callable[[], float] = time.perf_counter,
) -> AutotuneResult:
    """Measure throughput per batch size on ``engine`` and choose the batch size to run with.

    The sizes are timed in interleaved rounds for about ``budget_s`` (at least ``min_iterations`` rounds), so a
    burst of contention - other stages starting beside the worker - is spread over every size instead of skewing
    one; the order of the sizes rotates from round to round, so none is always measured first or right after the
    biggest. In each round every size > 1 is timed *paired* with batch 1: the size, then batch 1 right after it.
    Every timed call follows an untimed one of the same size: a size measured right after a much bigger batch would
    otherwise pay for the caches and thread pool that batch left cold, which steady traffic of that size does not.
    The median time per batch gives frames/s.

    Robust choice (a batch measured at 1.59x in one run was 0.82x in the next, under load): each pair gives that
    size's throughput ratio against the batch 1 timed right beside it (the same moment's contention). A size > 1 is
    *eligible* only when the lower quartile of those per-round ratios is at least ``1 + margin`` - it beat batch 1
    by the margin in at least 3 rounds of 4; batch 1 always is. The chosen size is the smallest eligible one whose
    median throughput is at least ``tolerance`` x the best eligible one's. ``margin=None``: no confidence check
    (every size eligible: the smallest within ``tolerance`` of the best, the former rule). The wait to use is
    ``min(max_wait_ms, ms per batch at 1)``: waiting longer than one single-frame inference takes cannot pay off;
    with batch 1 there is nothing to wait for.
    """
    started = clock()
    sizes = sorted({1, *(int(b) for b in (candidate_sizes or candidate_batch_sizes(engine.max_batch)))})
    sizes = [b for b in sizes if 1 <= b <= engine.max_batch]
    h, w = engine.input_size
    rng = np.random.default_rng(0)
    batches = {b: rng.random((b, 3, h, w), dtype=np.float32) for b in sizes}
    times: dict[int, list[float]] = {b: [] for b in sizes}
    ratios: dict[int, list[float]] = {b: [] for b in sizes}

    def timed(b: int) -> float:
        engine.infer(batches[b])  # untimed: back to this size's steady state
        t0 = clock()
        engine.infer(batches[b])
        elapsed = clock() - t0
        times[b].append(elapsed)
        return elapsed

    bigger = [b for b in sizes if b > 1]
    rounds_started = clock()
    rounds = 0
    while rounds < min_iterations or (clock() - rounds_started < budget_s and rounds < max_rounds):
        if not bigger:
            timed(1)
        shift = rounds % len(bigger) if bigger else 0
        for b in bigger[shift:] + bigger[:shift]:
            # paired: batch 1 right after this size, so their ratio sees the same moment's contention
            t_b = timed(b)
            t_1 = timed(1)
            ratios[b].append(b * t_1 / max(t_b, 1e-12))
        rounds += 1
    rows: list[dict] = []
    for b in sizes:
        ms = float(np.median(times[b])) * 1000.0
        r = np.asarray(ratios[b]) if b > 1 else np.ones(1)
        rows.append({"batch": b, "frames_per_s": b / (ms / 1000.0) if ms > 0 else float("inf"),
                     "ms_per_batch": ms, "iterations": len(times[b]),
                     "ratio_median": float(np.median(r)), "ratio_p25": float(np.percentile(r, 25)),
                     "wins": float(np.mean(r > 1.0)) if b > 1 else 0.0})
    base = rows[0]["frames_per_s"]
    for row in rows:
        row["ratio_vs_1"] = row["frames_per_s"] / base if base > 0 else 1.0
        row["eligible"] = bool(row["batch"] == 1 or margin is None or row["ratio_p25"] >= 1.0 + margin)
    eligible = [row for row in rows if row["eligible"]]
    best = max(row["frames_per_s"] for row in eligible)
    chosen = next(row for row in eligible if row["frames_per_s"] >= tolerance * best)
    wait = 0.0 if chosen["batch"] == 1 else min(float(max_wait_ms), rows[0]["ms_per_batch"])
    result = AutotuneResult(batch=chosen["batch"], max_wait_ms=wait, table=rows, seconds=clock() - started,
                            rounds=rounds, margin=margin)
    logger.info(
        "autotune on %s: batch %d, wait %.1f ms (%s; %d rounds, margin %s) in %.1f s",
        getattr(engine, "provider", "?"), result.batch, wait,
        ", ".join(f"b{r['batch']}={r['frames_per_s']:.0f}/s p25 {r['ratio_p25']:.2f}x" for r in rows), rounds,
        "none" if margin is None else f"{margin:.0%}", result.seconds,
    )
    return result


def format_table(rows: Sequence[dict]) -> str:
    """The autotune table as fixed-width text (for logs and the benchmark report)."""
    lines = [f"{'batch':>5} {'frames/s':>10} {'ms/batch':>9} {'vs b1':>6} {'p25':>6} {'wins':>5} {'ok':>3}"]
    for r in rows:
        lines.append(f"{r['batch']:>5} {r['frames_per_s']:>10.1f} {r['ms_per_batch']:>9.2f} {r['ratio_vs_1']:>6.2f}"
                     f" {r.get('ratio_p25', r['ratio_vs_1']):>6.2f} {r.get('wins', 0.0):>5.0%}"
                     f" {'yes' if r.get('eligible', True) else 'no':>3}")
    return "\n".join(lines)
