"""Batch inference worker: pop → decode (parallel) → tensor → model → candidates → publish.

One loop per worker process (any number of workers share ``batch_frames``; ``LPOP`` hands each frame to exactly
one of them). Per batch:

* :class:`fbvision.inference.batcher.Batcher` forms the batch (max batch, max wait, stale drop) - see docs/inference.md;
* JPEGs are decoded by a thread pool (``cv2.imdecode`` releases the GIL), each thread writing its image straight
  into its slot of one preallocated contiguous ``[max_batch, 3, H, W]`` float32 tensor (BGR→RGB, /255);
* the engine runs once on the batch; :func:`fbvision.inference.decode.decode_yolo` reduces the raw head to a few
  candidates per image (class subset, confidence floor, top-k) in source pixels - the head never leaves here;
* one :class:`ResultMessage` per frame, with the full timeline, is published to its camera's result partition.

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
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from fbvision.core.clock import ReferenceClock
from fbvision.core.config import InferenceConfig, ModelConfig, Settings
from fbvision.core.letterbox import Letterbox
from fbvision.core.loop import Backoff, LogThrottle, StageLoop
from fbvision.core.metrics import Counters, LatencyStats, set_queue_depth
from fbvision.core.modelinfo import ModelError
from fbvision.core.tensor import to_tensor
from fbvision.core.transport import Transport, TransportUnavailable, message_id, new_token
from fbvision.core.wire import FrameMessage, ResultMessage, Timeline, WireError, encode_result
from fbvision.inference.batcher import (
    AutotuneResult,
    Batch,
    Batcher,
    autotune,
    candidate_batch_sizes,
    format_table,
)
from fbvision.inference.decode import decode_yolo
from fbvision.inference.engines import Engine, build_engine
from fbvision.inference.jpeg import JpegHeaderError, jpeg_size

logger = logging.getLogger(__name__)

STAGE = "inference"
FRAME_QUEUE = "batch_frames"


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

        if engine is None:
            engine = build_engine(self.model_config)  # model.engine: ort (default) or torch
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
            self.engine.warmup([1])
            result = autotune(
                self.engine, candidate_batch_sizes(self.batcher.max_batch), max_wait_ms=self.config.max_wait_ms,
                budget_s=self.autotune_budget_s,
            )
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

    # -- the worker shape ---------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self.prepare()
        self.ready.set()
        self.loop().run(stop)

    def loop(self) -> StageLoop:
        """The stage loop with the inference worker's policy: a bad batch is counted (``errors:batch``),
        dropped and the worker goes on; outages back off up to 1 s (frames keep arriving: retry soon);
        counters are flushed every ``flush_interval_s``; at stop the pending results are published."""
        return StageLoop(
            f"inference {self.name}", self._step, counters=self.counters, outage_counter="redis_unavailable",
            backoff=Backoff(0.1, 1.0, random.Random()), on_error="continue", error_counter="errors:batch",
            error_wait_s=0.1, flush=self._flush_stats, flush_interval_s=self.flush_interval_s,
            drain=self._drain, shutdown=self._shutdown,
        )

    def _step(self, stop: threading.Event) -> bool:
        """Publish what an outage held back, then form, run and publish one batch (the batcher blocks while
        the queue is empty, so there is no idle wait)."""
        if self._pending:
            self._publish_pending()
        batch = self.batcher.next()
        self._account_drops(batch)
        if batch.frames:
            self.process(batch)
        return bool(batch.frames)

    def _drain(self) -> None:
        try:
            if self._pending:
                self._publish_pending()
        except TransportUnavailable:
            logger.warning("inference %s: %d results not published at shutdown", self.name, len(self._pending))

    def _shutdown(self) -> None:
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
            "counters": totals,
            "batch_sizes": {int(k.split(":")[1]): v for k, v in totals.items() if k.startswith("batch_size:")},
            "autotune": self.autotune_result.table if self.autotune_result else None,
            "clock": self.clock.report(),
            "at": time.time(),
        }

    # -- per batch ----------------------------------------------------------------------------------------------
    def _pop(self, max_n: int, timeout_s: float) -> list[bytes]:
        return self.transport.pop_frames(max_n, timeout_s)

    def _account_drops(self, batch: Batch) -> None:
        self.counters.incr("frames_in", batch.popped)
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

    def _decode_into(self, slot: int, frame: FrameMessage) -> tuple[str, str] | None:
        """Decode one JPEG into tensor slot ``slot``; returns (drop reason, detail), or None when the slot is
        filled. Never raises: whatever one frame does, it drops that frame only, not its batch."""
        model = f"model {self.input_w}x{self.input_h}"
        if (frame.input_w, frame.input_h) != (self.input_w, self.input_h):
            return "bad_size", f"input {frame.input_w}x{frame.input_h}, {model}"
        # The header first: a JPEG declaring more pixels than the input (a JPEG bomb) is refused before
        # imdecode allocates for it, or raises past OpenCV's own limit.
        try:
            width, height = jpeg_size(frame.jpeg)
        except JpegHeaderError as exc:
            return "corrupt", f"no readable JPEG header ({exc})"
        if (width, height) != (self.input_w, self.input_h):
            return "bad_size", f"JPEG header says {width}x{height}, {model}; not decoded"
        try:
            image = cv2.imdecode(np.frombuffer(frame.jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
        except cv2.error as exc:
            return "corrupt", f"JPEG could not be decoded ({exc})"
        if image is None:
            return "corrupt", "JPEG could not be decoded"
        if image.shape[:2] != (self.input_h, self.input_w):
            return "bad_size", f"decoded {image.shape[1]}x{image.shape[0]}, {model}"
        try:
            # BGR HWC uint8 -> RGB CHW float32 0..1, written in place (numpy releases the GIL in the loop).
            to_tensor(image, out=self._tensor[slot : slot + 1])
        except Exception as exc:  # a bug, not bad input: still this frame only, logged with its traceback
            logger.exception("inference %s: frame %d of camera %s not converted", self.name, frame.seq,
                             frame.camera_id)
            return "decode_error", f"{type(exc).__name__}: {exc}"
        return None

    def process(self, batch: Batch) -> list[ResultMessage]:
        """Run one formed batch through the model and queue its results for publishing; returns them."""
        frames, popped_at = batch.frames, batch.popped_at
        t0 = time.perf_counter()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.config.decode_threads, thread_name_prefix="jpeg-decode")
        refusals = list(self._pool.map(self._decode_into, range(len(frames)), frames))
        keep = [i for i, refusal in enumerate(refusals) if refusal is None]
        for i, refusal in enumerate(refusals):
            if refusal is not None:  # that frame only: the others of the batch (other cameras') go on
                self._reject(frames[i].jpeg, refusal[0], refusal[1], frames[i].camera_id)
        if not keep:
            return []
        tensor = self._tensor[: len(frames)] if len(keep) == len(frames) else self._tensor[keep]
        frames = [frames[i] for i in keep]
        popped_at = [popped_at[i] for i in keep]
        t1 = time.perf_counter()

        infer_start = self.clock.now()
        output = self.engine.infer(tensor)
        infer_end = self.clock.now()
        t2 = time.perf_counter()

        boxes = [
            Letterbox(f.src_w, f.src_h, f.input_w, f.input_h, f.scale, f.pad_x, f.pad_y) for f in frames
        ]
        candidates = decode_yolo(output, boxes, self.class_ids, self.config.conf_floor, self.config.top_k)
        size = len(frames)
        results = [
            ResultMessage(
                camera_id=f.camera_id, seq=f.seq, src_w=f.src_w, src_h=f.src_h,
                timeline=Timeline(
                    captured=f.capture_ts, pushed=f.push_ts, popped=popped, infer_start=infer_start,
                    infer_end=infer_end,
                ),
                batch_size=size, boxes=c.xyxy, scores=c.scores, class_ids=c.class_ids,
            )
            for f, popped, c in zip(frames, popped_at, candidates, strict=True)
        ]
        t3 = time.perf_counter()
        self.counters.incr("batches")
        self.counters.incr(f"batch_size:{size}")
        self.counters.incr("time_ms:wait", batch.wait_ms)
        self.counters.incr("time_ms:decode", (t1 - t0) * 1000.0)
        self.counters.incr("time_ms:infer", (t2 - t1) * 1000.0)
        self.counters.incr("time_ms:postprocess", (t3 - t2) * 1000.0)
        self.latency.add_many({"wait": batch.wait_ms / 1000.0, "decode": t1 - t0, "infer": t2 - t1,
                               "postprocess": t3 - t2})
        self._pending.extend(results)
        while len(self._pending) > self.max_pending_results:
            self._pending.popleft()
            self.counters.incr("dropped:publish_backlog")
        self._publish_pending()
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
    def _flush_stats(self) -> None:
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

