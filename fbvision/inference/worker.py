"""Batch inference worker: pop → decode (parallel) → tensor → model → candidates → publish.

One loop per worker process (any number of workers share ``batch_frames``; ``LPOP`` hands each frame to exactly
one of them). Per batch:

* :class:`fbvision.inference.batcher.Batcher` forms the batch (max batch, max wait, stale drop) - see docs/inference.md;
* JPEGs are decoded by a thread pool (``cv2.imdecode`` releases the GIL), raw frames (wire version 2,
  ``encoding: raw``) only size-checked and viewed (:func:`fbvision.inference.decode.decode_image`), each thread
  writing its image straight into its slot of one preallocated contiguous ``[max_batch, 3, H, W]`` float32 tensor (BGR→RGB, /255);
* the engine runs once on the batch; :func:`fbvision.inference.decode.decode_yolo` reduces the raw head to a few
  candidates per image (class subset, confidence floor, top-k) in source pixels - the head never leaves here;
* one :class:`ResultMessage` per frame, with the full timeline, is published to its camera's result partition.

Pipelined (``inference.pipeline``, the default): the engine call runs on a thread of its own, at most one batch at
a time, and the loop overlaps everything else with it - while the engine runs batch k, batch k+1 is popped and
decoded into the second of two tensor buffers, then (k collected) k+1 goes to the engine and k's results are
published. Serial (``pipeline: false``): pop, decode, infer, publish one batch after the other. A warm stop
collects the batch on the engine and publishes it (nothing popped is lost); ``engine_busy_fraction`` (time inside
``infer`` over wall time, per flush interval) is in the stats snapshot and on Prometheus; ``time_ms:engine_busy`` /
``time_ms:wall`` are its running totals in the shared counters.

Bad input (garbage, unknown wire version, corrupt JPEG, wrong size) is skipped, counted, dead-lettered and
logged at a limited rate; a Redis outage is waited out with a back-off (results computed meanwhile are kept,
bounded, and published when Redis is back). Counters go to ``stats:inference`` about once a second.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fbvision.core.clock import ReferenceClock
from fbvision.core.config import InferenceConfig, ModelConfig, Settings
from fbvision.core.loop import Backoff, LogThrottle, StageLoop
from fbvision.core.metrics import Counters, LatencyStats, set_gauge, set_queue_depth
from fbvision.core.modelinfo import ModelError
from fbvision.core.procutil import cpu_model
from fbvision.core.tensor import to_tensor
from fbvision.core.transport import FRAMES_QUEUE, Transport, TransportUnavailable, message_id, new_token
from fbvision.core.wire import FrameMessage, ResultMessage, Timeline, WireError, encode_result
from fbvision.inference.batcher import (
    AutotuneCache,
    AutotuneResult,
    Batch,
    Batcher,
    autotune,
    candidate_batch_sizes,
    format_table,
)
from fbvision.inference.decode import FrameRefused, decode_image, decode_yolo
from fbvision.inference.engines import Engine, build_engine
from fbvision.inference.engines.variants import Choice, choose

logger = logging.getLogger(__name__)

STAGE = "inference"
FRAME_QUEUE = FRAMES_QUEUE
#: Pipelined, with a batch on the engine: how long the batcher waits for the first frame of the next one. Short: if
#: nothing is queued, the engine's batch is collected and published now, not after a whole first wait.
PIPELINE_POLL_S = 0.002


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class _Job:
    """One decoded batch on its way through the engine (the engine thread fills in output and times)."""

    frames: list[FrameMessage]
    popped_at: list[float]
    tensor: np.ndarray
    wait_ms: float
    decode_s: float
    output: np.ndarray | None = None
    infer_start: float = 0.0  # reference clock
    infer_end: float = 0.0
    infer_s: float = 0.0


class InferenceWorker:
    """``InferenceWorker(settings, transport)`` or ``InferenceWorker(inference_cfg, transport, model_cfg)``.

    Builds the engine ``model.engine`` names at construction, with
    :func:`fbvision.inference.engines.build_engine` (a missing or non-dynamic model, or a class name the model does
    not have, raises :class:`fbvision.core.modelinfo.ModelError` here); ``engine=`` injects a ready
    :class:`Engine` instead (the benchmarks build theirs with the same function). Warm-up and auto-tuning happen in :meth:`prepare` (called by
    :meth:`run` before taking traffic).
    """

    def __init__(
        self,
        config: Settings | InferenceConfig,
        transport: Transport,
        model: ModelConfig | None = None,
        *,
        engine: Engine | None = None,
        name: str | None = None,
        flush_interval_s: float = 1.0,
        max_pending_results: int = 10_000,
        first_wait_s: float = 1.0,
        autotune_budget_s: float = 3.0,
    ):
        if isinstance(config, Settings):
            self.config = config.inference
            model = model or config.model
        else:
            self.config = config
        self.model_config = model or ModelConfig()
        self.transport = transport
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self) & 0xFFFF:04x}"
        self.flush_interval_s = flush_interval_s
        self.max_pending_results = max_pending_results
        self.autotune_budget_s = autotune_budget_s
        self.ready = threading.Event()  # set once warmed up and taking traffic

        self.model_choice: Choice | None = None
        if engine is None:
            engine = build_engine(self.model_config)  # model.engine: ort (default) or torch
            if self.model_config.precision != "fp32":  # FP32 or its INT8 variant (engines/variants.py)
                fp32 = self.model_config.model_copy(update={"precision": "fp32"})
                self.model_choice = choose(self.model_config, engine.provider,
                                           lambda path: build_engine(fp32.model_copy(update={"path": path})))
                logger.info("inference: model precision %s (%s)", self.model_choice.precision,
                            self.model_choice.reason)
                if self.model_choice.precision != "fp32":
                    engine = build_engine(fp32.model_copy(update={"path": Path(self.model_choice.path)}))
        self.engine = engine
        self.input_h, self.input_w = (int(v) for v in engine.input_size)
        self.class_ids = self._class_ids(self.config.class_names)

        max_batch = min(self.config.max_batch, engine.max_batch)
        if max_batch < self.config.max_batch:
            logger.warning(
                "inference.max_batch=%d but the model allows %d; using %d", self.config.max_batch,
                engine.max_batch, max_batch,
            )
        # Frame ages (max_age_ms) and the timeline stamps are on the reference clock (the Redis server's), as
        # the camera manager's capture stamps are: a camera host whose clock is off drops nothing as stale.
        self.clock = ReferenceClock(transport.server_time)
        self.batcher = Batcher(
            self._pop, max_batch=max_batch, max_wait_ms=self.config.max_wait_ms,
            max_age_ms=self.config.max_age_ms, first_wait_s=first_wait_s, wall=self.clock.now,
        )
        self.autotune_result: AutotuneResult | None = None
        self.warmup_ms: dict[int, float] = {}
        self._prepared = False
        self._pool: ThreadPoolExecutor | None = None
        self._tensor = np.empty((max_batch, 3, self.input_h, self.input_w), dtype=np.float32)
        self.pipelined = bool(self.config.pipeline)
        # Pipelined: two buffers, the engine reading one while the next batch is decoded into the other.
        self._tensors = [self._tensor, *([np.empty_like(self._tensor)] if self.pipelined else [])]
        self._buffer = 0
        self._engine_pool: ThreadPoolExecutor | None = None  # the one engine thread (pipelined)
        self._inflight: tuple[_Job, Future] | None = None  # the batch on the engine
        # Time inside engine.infer (and when the running call began), for engine_busy_fraction.
        self._busy_lock = threading.Lock()
        self._busy_s = 0.0
        self._busy_since: float | None = None
        self._busy_mark = (time.perf_counter(), 0.0)  # (perf_counter, busy_s) at the last flush
        self.engine_busy_fraction: float | None = None
        self._pending: collections.deque[ResultMessage] = collections.deque()
        # Since start: stats(), the shared counters (stats:inference) and Prometheus.
        self.counters = Counters(prometheus_stage=STAGE)
        self.counters.declare("frames_in", "frames_out", "batches", "redis_unavailable", "errors:batch")
        self.latency = LatencyStats(prometheus_stage_prefix=f"{STAGE}_")  # per batch: wait, decode, infer, ...
        # Attempt token of the pending results while a publish of them is unconfirmed (see _publish_pending).
        self._pending_token: str | None = None
        self._queue_depth: int | None = None
        self._throttle = LogThrottle(10.0)

    # -- set-up -------------------------------------------------------------------------------------------------
    def _class_ids(self, names) -> list[int]:
        info = getattr(self.engine, "info", None)
        ids = []
        for name in names:
            if info is not None:
                ids.append(info.class_id(name))
            elif name in self.engine.class_names:
                ids.append(list(self.engine.class_names).index(name))
            else:
                raise ModelError(f"the model has no class named {name!r}; it has {', '.join(self.engine.class_names)}")
        return ids

    def prepare(self) -> None:
        """Auto-tune (when enabled), then warm up every batch size the batcher can form. Idempotent."""
        if self._prepared:
            return
        if self.config.autotune and self.batcher.max_batch > 1:
            sizes = candidate_batch_sizes(self.batcher.max_batch)
            cache = key = None
            if self.config.autotune_cache is not None:
                cache = AutotuneCache(self.config.autotune_cache)
                key = self._autotune_key(sizes)
            result = cache.load(key) if cache is not None else None
            if result is not None:
                logger.info("inference %s: auto-tune result reused from %s (measured %s on this machine)",
                            self.name, cache.path, time.strftime("%Y-%m-%d %H:%M", time.localtime(result.measured_at)))
            else:
                self.engine.warmup([1])
                result = autotune(
                    self.engine, sizes, max_wait_ms=self.config.max_wait_ms,
                    budget_s=self.autotune_budget_s, margin=self.config.autotune_margin,
                )
                if cache is not None:
                    cache.save(key, result)
            self.autotune_result = result
            self.batcher.max_batch = result.batch
            self.batcher.max_wait_ms = result.max_wait_ms
            logger.info("inference %s autotune:\n%s", self.name, format_table(result.table))
        self.warmup_ms = self.engine.warmup(range(1, self.batcher.max_batch + 1))
        logger.info(
            "inference %s ready on %s: max batch %d, max wait %.1f ms, max age %.0f ms, classes %s",
            self.name, self.engine.provider, self.batcher.max_batch, self.batcher.max_wait_ms,
            self.batcher.max_age_ms, self.config.class_names,
        )
        self._prepared = True

    def _autotune_key(self, sizes: list[int]) -> str:
        """What makes an auto-tune measurement valid for this start (:class:`AutotuneCache`)."""
        import hashlib
        import platform

        import onnxruntime

        model = self.model_config
        path = Path(self.model_choice.path) if self.model_choice else model.resolved_path()  # the file that runs
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            digest = str(path)
        return AutotuneCache.key(
            model=digest, engine=model.engine, provider=self.engine.provider, ort=onnxruntime.__version__,
            cpu=cpu_model(), machine=platform.machine(), cores=_usable_cores(), threads=model.intra_op_threads,
            spinning=model.intra_op_spinning, sizes=sizes, margin=self.config.autotune_margin,
            max_wait_ms=self.config.max_wait_ms,
        )

    # -- the worker shape ---------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self.prepare()
        self.ready.set()
        self.loop().run(stop)

    def loop(self) -> StageLoop:
        """The stage loop with the inference worker's policy: a bad batch is counted (``errors:batch``),
        dropped and the worker goes on; outages back off up to 1 s (frames keep arriving: retry soon);
        counters are flushed every ``flush_interval_s``; at stop the pending results are published."""
        self._busy_mark = (time.perf_counter(), self._busy_now())  # warm-up and autotune are not traffic
        return StageLoop(
            f"inference {self.name}", self._step, counters=self.counters, outage_counter="redis_unavailable",
            backoff=Backoff(0.1, 1.0, random.Random()), on_error="continue", error_counter="errors:batch",
            error_wait_s=0.1, flush=self._flush_stats, flush_interval_s=self.flush_interval_s,
            drain=self._drain, shutdown=self._shutdown,
        )

    def _step(self, stop: threading.Event) -> bool:
        """Publish what an outage held back, then form, run and publish one batch (the batcher blocks while
        the queue is empty, so there is no idle wait). Pipelined: :meth:`_step_pipelined`."""
        if self._pending:
            self._publish_pending()
        if self.pipelined:
            return self._step_pipelined()
        batch = self.batcher.next()
        self._account_drops(batch)
        if batch.frames:
            self.process(batch)
        return bool(batch.frames)

    def _step_pipelined(self) -> bool:
        """Pop and decode batch k+1 while the engine runs batch k; collect k; start k+1; publish k's results
        (while k+1 runs). A failure collecting k (an engine error) still starts k+1, then propagates (counted as
        ``errors:batch`` by the loop, like a failed batch of the serial loop).

        When the engine has already finished batch k (a fast engine), k is collected and published first: its
        results do not wait for batch k+1 to fill (up to ``max_wait_ms``) and decode."""
        if self._inflight is not None and self._inflight[1].done():
            self._collect()
            if self._pending:
                self._publish_pending()
        had_inflight = self._inflight is not None
        batch = self.batcher.next(first_wait_s=PIPELINE_POLL_S if had_inflight else None)
        self._account_drops(batch)
        job = self._prepare(batch, self._tensors[self._buffer]) if batch.frames else None
        try:
            self._collect()  # batch k: wait for the engine; its results join the pending ones
        finally:
            if job is not None:
                self._submit(job)  # batch k+1 onto the engine
        if self._pending:
            self._publish_pending()  # batch k's results, while the engine runs k+1
        return bool(batch.frames) or had_inflight

    def _submit(self, job: _Job) -> None:
        if self._engine_pool is None:
            self._engine_pool = ThreadPoolExecutor(1, thread_name_prefix="engine")
        self._inflight = (job, self._engine_pool.submit(self._run, job))
        self._buffer = (self._buffer + 1) % len(self._tensors)  # the next batch decodes into the other buffer

    def _collect(self) -> None:
        """Wait for the batch on the engine (if any) and turn its output into pending results."""
        if self._inflight is None:
            return
        job, future = self._inflight
        self._inflight = None
        try:
            future.result()
        except BaseException:
            self.counters.incr("frames_in", len(job.frames))  # their fate: lost with the failed batch
            raise
        self._finish(job)

    def _drain(self) -> None:
        try:
            self._collect()  # pipelined: the batch still on the engine is finished and published, not lost
        except Exception:
            self.counters.incr("errors:batch")
            logger.exception("inference %s: the last batch failed at shutdown", self.name)
        try:
            if self._pending:
                self._publish_pending()
        except TransportUnavailable:
            logger.warning("inference %s: %d results not published at shutdown", self.name, len(self._pending))

    def _shutdown(self) -> None:
        if self._engine_pool is not None:
            self._engine_pool.shutdown(wait=True)
            self._engine_pool = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.ready.clear()
        logger.info("inference %s stopped", self.name)

    def stats(self) -> dict:
        """Counters since start, the batch-size histogram, queue depth, provider and autotune table."""
        totals = self.counters.snapshot()
        return {
            "name": self.name,
            "provider": self.engine.provider,
            "max_batch": self.batcher.max_batch,
            "max_wait_ms": self.batcher.max_wait_ms,
            "max_age_ms": self.batcher.max_age_ms,
            "queue_depth": self._queue_depth,
            "pending_results": len(self._pending),
            "pipeline": self.pipelined,
            "engine_simulated": bool(getattr(self.engine, "simulated", False)),
            # Time inside engine.infer / wall time over the last flush interval (None before the first flush).
            "engine_busy_fraction": self.engine_busy_fraction,
            "counters": totals,
            "batch_sizes": {int(k.split(":")[1]): v for k, v in totals.items() if k.startswith("batch_size:")},
            "autotune": self.autotune_result.table if self.autotune_result else None,
            "model_precision": self.model_choice.to_dict() if self.model_choice else None,
            # How the table was measured: interleaved rounds, and the confidence margin a batch > 1 had to clear.
            "autotune_info": {
                "batch": self.autotune_result.batch, "rounds": self.autotune_result.rounds,
                "margin": self.autotune_result.margin, "seconds": round(self.autotune_result.seconds, 2),
                "measured_at": self.autotune_result.measured_at,  # set when reused from inference.autotune_cache
                "cache": str(self.config.autotune_cache) if self.config.autotune_cache is not None else None,
            } if self.autotune_result else None,
            "clock": self.clock.report(),
            "at": time.time(),
        }

    # -- per batch ----------------------------------------------------------------------------------------------
    def _pop(self, max_n: int, timeout_s: float) -> list[bytes]:
        return self.transport.pop_frames(max_n, timeout_s)

    def _account_drops(self, batch: Batch) -> None:
        # frames_in counts a frame with its fate (a result or a drop), so the flushed counters always add up,
        # even while a batch is on the engine: here the ones dropped already, the batch's frames when finished.
        self.counters.incr("frames_in", batch.popped - len(batch.frames))
        if batch.stale:
            self.counters.incr("dropped:stale", len(batch.stale))
            held = self._throttle("stale")
            if held is not None:
                oldest = max(self.clock.now() - f.capture_ts for f in batch.stale)
                logger.warning(
                    "inference %s: dropped %d stale frames (oldest %.0f ms, max age %.0f ms)%s", self.name,
                    len(batch.stale) + held, oldest * 1000, self.batcher.max_age_ms,
                    " (and earlier)" if held else "",
                )
        for data, exc in batch.rejected:
            self._reject(data, f"wire_{exc.reason}", str(exc))

    def _reject(self, payload: bytes, reason: str, detail: str, camera_id: str | None = None) -> None:
        self.counters.incr(f"dropped:{reason}")
        held = self._throttle(f"reject:{reason}")
        if held is not None:
            logger.warning(
                "inference %s: skipped a frame%s: %s (%s)%s", self.name,
                f" of camera {camera_id}" if camera_id else "", reason, detail,
                f"; {held} more like it not logged" if held else "",
            )
        try:
            self.transport.dead_letter(FRAME_QUEUE, reason, payload)
        except TransportUnavailable:
            pass  # the sample is best effort; the counter has it

    def _decode_all(self, frames: list[FrameMessage], tensor: np.ndarray) -> list[tuple[str, str] | None]:
        """Decode ``frames`` into their slots of ``tensor``: one strided share per decode thread, the calling thread
        taking the first - a hand-off per thread, not per frame (thread wake-ups cost as much as a small JPEG), and
        no more threads than usable cores."""
        n = len(frames)
        threads = min(self.config.decode_threads, _usable_cores(), n)
        if threads <= 1:
            return [self._decode_into(i, frames[i], tensor) for i in range(n)]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max(1, min(self.config.decode_threads, _usable_cores()) - 1),
                                            thread_name_prefix="jpeg-decode")

        def share(first: int) -> list[tuple[str, str] | None]:
            return [self._decode_into(i, frames[i], tensor) for i in range(first, n, threads)]

        others = [self._pool.submit(share, k) for k in range(1, threads)]
        shares = [share(0), *(f.result() for f in others)]
        refusals: list[tuple[str, str] | None] = [None] * n
        for k, got in enumerate(shares):
            refusals[k::threads] = got
        return refusals

    def _decode_into(self, slot: int, frame: FrameMessage, tensor: np.ndarray | None = None) -> tuple[str, str] | None:
        """Decode one frame (JPEG or raw) into slot ``slot`` of ``tensor`` (default: the first buffer); returns (drop reason,
        detail), or None when the slot is filled. Never raises: whatever one frame does, it drops that frame only."""
        out = self._tensor if tensor is None else tensor
        # JPEG: the header first - a JPEG declaring more pixels than the input (a JPEG bomb) is refused before
        # imdecode allocates for it, or raises past OpenCV's own limit. Raw: exactly input_h x input_w x 3 bytes.
        try:
            image = decode_image(frame, self.input_w, self.input_h)
        except FrameRefused as exc:
            return exc.reason, exc.detail
        try:
            # BGR HWC uint8 -> RGB CHW float32 0..1, written in place (numpy releases the GIL in the loop).
            to_tensor(image, out=out[slot : slot + 1])
        except Exception as exc:  # a bug, not bad input: still this frame only, logged with its traceback
            logger.exception("inference %s: frame %d of camera %s not converted", self.name, frame.seq,
                             frame.camera_id)
            return "decode_error", f"{type(exc).__name__}: {exc}"
        return None

    def process(self, batch: Batch) -> list[ResultMessage]:
        """Run one formed batch through the model and publish its results, start to end (the serial loop, and
        the benchmarks); returns them."""
        job = self._prepare(batch, self._tensor)
        if job is None:
            return []
        try:
            self._run(job)
        except BaseException:
            self.counters.incr("frames_in", len(job.frames))  # their fate: lost with the failed batch
            raise
        results = self._finish(job)
        self._publish_pending()
        return results

    def _prepare(self, batch: Batch, tensor: np.ndarray) -> _Job | None:
        """Decode the batch's JPEGs into ``tensor`` (in parallel); the frames that fail are dropped, counted and
        dead-lettered. None when no frame is left."""
        frames, popped_at = batch.frames, batch.popped_at
        t0 = time.perf_counter()
        refusals = self._decode_all(frames, tensor)
        keep = [i for i, refusal in enumerate(refusals) if refusal is None]
        self.counters.incr("frames_in", len(frames) - len(keep))
        for i, refusal in enumerate(refusals):
            if refusal is not None:  # that frame only: the others of the batch (other cameras') go on
                self._reject(frames[i].jpeg, refusal[0], refusal[1], frames[i].camera_id)
        if not keep:
            return None
        view = tensor[: len(frames)] if len(keep) == len(frames) else tensor[keep]
        return _Job([frames[i] for i in keep], [popped_at[i] for i in keep], view, batch.wait_ms,
                    time.perf_counter() - t0)

    def _busy_now(self) -> float:
        """Seconds spent inside engine.infer so far, the running call's share included."""
        with self._busy_lock:
            running = time.perf_counter() - self._busy_since if self._busy_since is not None else 0.0
            return self._busy_s + running

    def _run(self, job: _Job) -> None:
        """The engine call (on the engine thread when pipelined)."""
        job.infer_start = self.clock.now()
        t0 = time.perf_counter()
        with self._busy_lock:
            self._busy_since = t0
        try:
            job.output = self.engine.infer(job.tensor)
        finally:
            t1 = time.perf_counter()
            job.infer_end = self.clock.now()
            job.infer_s = t1 - t0
            with self._busy_lock:
                self._busy_s += t1 - t0
                self._busy_since = None

    def _finish(self, job: _Job) -> list[ResultMessage]:
        """The engine's output of ``job`` -> candidates -> results, queued for publishing; returns them."""
        t2 = time.perf_counter()
        frames = job.frames
        candidates = decode_yolo(job.output, [f.letterbox for f in frames], self.class_ids, self.config.conf_floor, self.config.top_k)
        job.output = None
        size = len(frames)
        results = [
            ResultMessage(
                camera_id=f.camera_id, seq=f.seq, src_w=f.src_w, src_h=f.src_h,
                timeline=Timeline(
                    captured=f.capture_ts, pushed=f.push_ts, popped=popped, infer_start=job.infer_start,
                    infer_end=job.infer_end,
                ),
                batch_size=size, boxes=c.xyxy, scores=c.scores, class_ids=c.class_ids,
            )
            for f, popped, c in zip(frames, job.popped_at, candidates, strict=True)
        ]
        t3 = time.perf_counter()
        self.counters.incr("frames_in", size)
        self.counters.incr("batches")
        self.counters.incr(f"batch_size:{size}")
        self.counters.incr("time_ms:wait", job.wait_ms)
        self.counters.incr("time_ms:decode", job.decode_s * 1000.0)
        self.counters.incr("time_ms:infer", job.infer_s * 1000.0)
        self.counters.incr("time_ms:postprocess", (t3 - t2) * 1000.0)
        self.latency.add_many({"wait": job.wait_ms / 1000.0, "decode": job.decode_s, "infer": job.infer_s,
                               "postprocess": t3 - t2})
        self._pending.extend(results)
        while len(self._pending) > self.max_pending_results:
            self._pending.popleft()
            self.counters.incr("dropped:publish_backlog")
        return results

    def _publish_pending(self) -> None:
        if not self._pending:
            return
        t0 = time.perf_counter()
        now = self.clock.now()
        pending = list(self._pending)
        payloads: list[tuple[str, bytes, str]] = []
        unencodable: set[int] = set()
        for r in pending:
            stamped = ResultMessage(
                camera_id=r.camera_id, seq=r.seq, src_w=r.src_w, src_h=r.src_h,
                timeline=Timeline(r.timeline.captured, r.timeline.pushed, r.timeline.popped,
                                  r.timeline.infer_start, r.timeline.infer_end, now),
                batch_size=r.batch_size, boxes=r.boxes, scores=r.scores, class_ids=r.class_ids,
            )
            try:
                payload = encode_result(stamped)
            except WireError as exc:  # e.g. more boxes than the wire allows: top_k is bounded, so a bug
                self.counters.incr("dropped:result_encode")
                logger.error("inference %s: result of camera %s not encodable: %s", self.name, r.camera_id, exc)
                unencodable.add(id(r))
                continue
            payloads.append((r.camera_id, payload, message_id(r.camera_id, r.seq, r.timeline.captured)))
        if unencodable:  # counted once, not again on a retry
            self._pending = collections.deque(r for r in pending if id(r) not in unencodable)
        # Once ids make the publish idempotent: a retry (redis-py's after a lost reply, or ours of the whole
        # pending list after TransportUnavailable) under the same token skips what the first attempt wrote.
        token = self._pending_token = self._pending_token or new_token()
        reply = self.transport.publish_results(  # raises TransportUnavailable: the results stay pending
            [(cam, payload) for cam, payload, _ in payloads], once=[i for _, _, i in payloads], token=token,
        )
        self._pending.clear()
        self._pending_token = None
        duplicates = sum(1 for r in reply if r == "!")
        if duplicates:  # the same frame inferred twice (it was queued twice): its first result stands
            self.counters.incr("dropped:duplicate", duplicates)
        self.counters.incr("frames_out", len(payloads) - duplicates)
        publish_s = time.perf_counter() - t0
        self.counters.incr("time_ms:publish", publish_s * 1000.0)
        self.latency.add("publish", publish_s)

    # -- counters -----------------------------------------------------------------------------------------------
    def _measure_busy(self) -> None:
        """engine_busy_fraction over the interval since the last flush; its totals into the counters."""
        now, busy = time.perf_counter(), self._busy_now()
        last_at, last_busy = self._busy_mark
        if now - last_at <= 0:
            return
        self._busy_mark = (now, busy)
        self.engine_busy_fraction = round(min(1.0, max(0.0, (busy - last_busy) / (now - last_at))), 4)
        self.counters.incr("time_ms:wall", (now - last_at) * 1000.0)
        self.counters.incr("time_ms:engine_busy", (busy - last_busy) * 1000.0)
        set_gauge(STAGE, "engine_busy_fraction", self.engine_busy_fraction)

    def _flush_stats(self) -> None:
        self._measure_busy()
        totals = self.counters.snapshot()
        # Running totals (idempotent, see Transport.report_totals); Redis needs ints for counters, floats for
        # the time sums.
        payload = {k: (float(v) if k.startswith("time_ms:") else int(v)) for k, v in totals.items()}
        try:
            self.transport.report_totals(STAGE, self.counters.writer, payload)
        except TransportUnavailable:
            return  # the next flush reports the totals, this one's included
        try:
            self._queue_depth = self.transport.frame_queue_depth()
            set_queue_depth(STAGE, FRAME_QUEUE, self._queue_depth)
            self.transport.put_snapshot(f"{STAGE}:{self.name}", self.stats())
        except TransportUnavailable:
            pass  # the snapshot is refreshed on the next flush

