"""Batching ratio: the same frames through the same model, sequentially and batched, side by side in one run.

Every mode turns the same wire frames (letterboxed 640² JPEGs of synthetic stalls, as the camera manager pushes them)
into encoded result messages:

* ``sequential`` - what a naive per-camera loop does: decode one JPEG, run the model on one image, reduce the
  head, encode the result; one frame per model call.
* ``batch-N`` - the inference worker (:class:`fbvision.inference.worker.InferenceWorker`: its batcher, its parallel
  JPEG decode into one tensor, one model call, ``decode_yolo``, result encoding) with ``max_batch = N``, fed a
  backlog so every batch is full.
* ``dynamic`` - the same worker with the auto-tuned ``max_batch`` / ``max_wait_ms`` of this run
  (benchmarks/test_autotune.py): what the pipeline actually runs with on this machine.

The worker pops from an in-memory queue here (Redis is measured in test_e2e/test_micro): this compares compute.
Modes are interleaved round by round, so a noisy neighbour hurts them alike; frames/s is from the median round.
"""

from __future__ import annotations

import collections
import dataclasses
import time

import cv2
import numpy as np
import pytest

from benchmarks import common
from fbvision.core.config import InferenceConfig
from fbvision.core.letterbox import Letterbox
from fbvision.core.tensor import to_tensor
from fbvision.core.wire import ResultMessage, Timeline, decode_frame, encode_frame, encode_result
from fbvision.inference.decode import decode_yolo
from fbvision.inference.worker import InferenceWorker

pytestmark = [pytest.mark.bench, pytest.mark.timeout(1800)]


class MemoryTransport:
    """The part of :class:`fbvision.core.transport.Transport` the inference worker uses, in memory."""

    def __init__(self) -> None:
        self.queue: collections.deque[bytes] = collections.deque()
        self.published = 0

    def pop_frames(self, max_n: int, timeout_s: float) -> list[bytes]:
        n = min(max_n, len(self.queue))
        return [self.queue.popleft() for _ in range(n)]

    def publish_results(self, results, once=None, token: str = "") -> list[str]:
        n = sum(1 for _ in results)
        self.published += n
        return [f"0-{self.published - n + i}" for i in range(n)]  # entry ids: all new, none a duplicate

    def dead_letter(self, queue: str, reason: str, payload: bytes) -> None:
        raise AssertionError(f"benchmark frame rejected: {reason}")

    def report_totals(self, stage: str, writer: str, totals: dict) -> None:
        pass

    def frame_queue_depth(self) -> int:
        return len(self.queue)

    def put_snapshot(self, name: str, snapshot: dict) -> None:
        pass

    def server_time(self) -> float:
        return time.time()  # in memory, the reference clock is this process's own


def restamp(frames) -> list[bytes]:
    """Fresh capture/push times (the batcher drops frames older than max_age_ms); same JPEGs."""
    now = time.time()
    return [encode_frame(dataclasses.replace(f, capture_ts=now, push_ts=now)) for f in frames]


class Sweep:
    def __init__(self, engine, frames, class_ids, conf_floor: float, top_k: int, batch_sizes, tuned):
        self.engine, self.frames = engine, frames
        self.class_ids, self.conf_floor, self.top_k = class_ids, conf_floor, top_k
        self.workers: dict[str, tuple[InferenceWorker, MemoryTransport]] = {}
        for b in batch_sizes:
            self.workers[f"batch-{b}"] = self._worker(b, 0.0)
        self.workers["dynamic"] = self._worker(int(tuned.batch), float(tuned.max_wait_ms))
        self.modes = ["sequential", *self.workers]
        self.seconds: dict[str, list[float]] = {m: [] for m in self.modes}
        self.batch_hist: dict[str, collections.Counter] = {m: collections.Counter() for m in self.modes}

    def _worker(self, max_batch: int, max_wait_ms: float):
        transport = MemoryTransport()
        cfg = InferenceConfig(max_batch=max_batch, max_wait_ms=max_wait_ms, max_age_ms=60_000, autotune=False,
                              conf_floor=self.conf_floor, top_k=self.top_k, class_names=["horse"])
        return InferenceWorker(cfg, transport, engine=self.engine, first_wait_s=0.05, name=f"bench-b{max_batch}"), transport

    def sequential(self, payloads: list[bytes]) -> int:
        """A naive per-camera loop: one frame, one model call."""
        h, w = self.engine.input_size
        tensor = np.empty((1, 3, h, w), dtype=np.float32)
        done = 0
        for data in payloads:
            f = decode_frame(data)
            image = cv2.imdecode(np.frombuffer(f.jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
            to_tensor(image, out=tensor)
            t0 = time.time()
            output = self.engine.infer(tensor)
            t1 = time.time()
            box = Letterbox(f.src_w, f.src_h, f.input_w, f.input_h, f.scale, f.pad_x, f.pad_y)
            c = decode_yolo(output, [box], self.class_ids, self.conf_floor, self.top_k)[0]
            encode_result(ResultMessage(f.camera_id, f.seq, f.src_w, f.src_h,
                                        Timeline(f.capture_ts, f.push_ts, t0, t0, t1, time.time()), 1,
                                        c.xyxy, c.scores, c.class_ids))
            done += 1
        return done

    def through_worker(self, mode: str, payloads: list[bytes]) -> int:
        worker, transport = self.workers[mode]
        before = transport.published
        transport.queue.extend(payloads)
        while transport.queue:
            batch = worker.batcher.next()
            assert not batch.stale and not batch.rejected
            if batch.frames:
                self.batch_hist[mode][len(batch.frames)] += 1
                worker.process(batch)
        return transport.published - before

    def run_mode(self, mode: str, record: bool) -> None:
        payloads = restamp(self.frames)
        started = time.perf_counter()
        done = self.sequential(payloads) if mode == "sequential" else self.through_worker(mode, payloads)
        elapsed = time.perf_counter() - started
        assert done == len(payloads), f"{mode}: {done} of {len(payloads)} frames came out"
        if record:
            self.seconds[mode].append(elapsed)

    def round(self, record: bool = True) -> None:
        for mode in self.modes:
            self.run_mode(mode, record)

    def table(self) -> list[dict]:
        n = len(self.frames)
        rows = []
        for mode in self.modes:
            secs = np.asarray(self.seconds[mode])
            med = float(np.median(secs))
            rows.append({
                "mode": mode,
                "max_batch": 1 if mode == "sequential" else int(self.workers[mode][0].batcher.max_batch),
                "max_wait_ms": 0.0 if mode == "sequential" else float(self.workers[mode][0].batcher.max_wait_ms),
                "frames_per_s": round(n / med, 3),
                "frames_per_s_min": round(n / float(secs.max()), 3),
                "frames_per_s_max": round(n / float(secs.min()), 3),
                "ms_per_frame": round(med / n * 1000.0, 3),
                "rounds": int(secs.size),
            })
        base = rows[0]["frames_per_s"]
        for row in rows:
            row["ratio_vs_sequential"] = round(row["frames_per_s"] / base, 3)
        return rows


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'mode':<12} {'batch':>5} {'frames/s':>9} {'ms/frame':>9} {'vs seq':>7}  (min..max frames/s)"]
    for r in rows:
        lines.append(f"{r['mode']:<12} {r['max_batch']:>5} {r['frames_per_s']:>9.1f} {r['ms_per_frame']:>9.2f} "
                     f"{r['ratio_vs_sequential']:>6.2f}x  ({r['frames_per_s_min']:.1f}..{r['frames_per_s_max']:.1f})")
    return "\n".join(lines)


def test_batching_ratio(benchmark, model_key, engines, model_paths, tuned, prof, sweeps):
    engine = engines(model_key)
    info = engine.info
    class_ids = [info.class_id("horse")]
    sizes = [b for b in prof.batch_sizes if b <= engine.max_batch]
    n = max(prof.sweep_frames, max(sizes))
    frames = common.frame_messages(n, int(engine.input_size[0]))
    sweep = Sweep(engine, frames, class_ids, conf_floor=0.05, top_k=100, batch_sizes=sizes, tuned=tuned)

    sweep.round(record=False)  # warm-up: every batch size once, thread pools started
    benchmark.pedantic(sweep.round, rounds=prof.sweep_rounds, iterations=1)

    rows = sweep.table()
    print(f"\nbatching on {engine.provider}, model {model_key} ({n} frames per mode and round, "
          f"{prof.sweep_rounds} rounds):\n{format_rows(rows)}")
    by_mode = {r["mode"]: r for r in rows}
    sweeps[model_key] = by_mode
    largest = f"batch-{max(sizes)}"
    benchmark.extra_info.update(
        kind="batching", model_key=model_key, model=common.describe_model(model_paths[model_key]),
        provider=engine.provider, frames_per_round=n, rounds=prof.sweep_rounds, table=rows,
        dynamic_batch_sizes=dict(sorted(sweep.batch_hist["dynamic"].items())),
        ratio_largest_batch=by_mode[largest]["ratio_vs_sequential"],
        ratio_dynamic=by_mode["dynamic"]["ratio_vs_sequential"],
    )
