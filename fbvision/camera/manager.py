"""Camera manager: one process reads many cameras and feeds the shared frame queue.

One reader thread per camera (OpenCV decoding, letterboxing and JPEG encoding release the GIL) turns each
sampled frame into a letterboxed JPEG with its geometry, capture time and sequence number. The manager's own
loop (the thread that calls :meth:`CameraManager.run`) stamps the push time, encodes the wire messages and
pushes everything that came in since the last tick in one round trip, publishes camera status and flushes
counters about once a second. When Redis is away, frames wait in a small bounded buffer (oldest dropped,
counted) and the loop backs off; readers never block on Redis.

Several managers (processes or hosts) can feed one queue: camera ids must be unique across them.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from fbvision.camera.evidence import EvidenceKeeper
from fbvision.camera.factory import open_source
from fbvision.camera.source import FrameSource, SourceState, SourceUnusable
from fbvision.core.clock import ReferenceClock
from fbvision.core.config import CameraConfig, CameraManagerConfig, EvidenceConfig, Settings
from fbvision.core.evidence import EvidenceRequest
from fbvision.core.letterbox import Letterbox, letterbox
from fbvision.core.loop import Backoff, LogThrottle, StageLoop
from fbvision.core.metrics import Counters, LatencyStats
from fbvision.core.redact import redact_url
from fbvision.core.transport import Transport, TransportUnavailable, message_id, new_token
from fbvision.core.wire import FrameMessage, WireError, encode_frame

logger = logging.getLogger(__name__)

STAGE = "camera"
#: Status fields that are wall-clock times (moved onto the reference clock before they are published).
_STATUS_TIMES = ("since", "last_frame_ts", "updated", "scene_t0")


@dataclass(frozen=True)
class EncodedFrame:
    """A frame ready to push, but for its push time (stamped just before the push)."""

    camera_id: str
    seq: int
    capture_ts: float
    box: Letterbox
    jpeg: bytes  # the image: a JPEG, or raw uint8 HxWx3 with encoding "raw"
    encoding: str = "jpeg"


#: stats()'s per-camera keys and the counters behind them (each counted in total and as ``<name>:<camera id>``).
_PER_CAMERA = {"read": "frames_read", "pushed": "frames_pushed", "dropped_buffer": "dropped:buffer_full",
               "dropped_encode": "dropped:encode"}


def _unusable_source(cam: CameraConfig, exc: Exception, config: CameraManagerConfig, sink) -> FrameSource:
    """A source for a camera whose source could not even be built: offline, saying why, checked again rarely."""
    reason = f"camera {cam.id}: cannot be set up: {type(exc).__name__}: {exc}"

    def opener():
        raise SourceUnusable(reason, may_appear=False)

    return FrameSource(cam.id, opener, fps=cam.fps, description=redact_url(cam.source), status_sink=sink,
                       watchdog_s=config.watchdog_s, status_interval_s=config.status_interval_s)


class CameraManager:
    """Reads every enabled camera and pushes letterboxed JPEG frames to ``batch_frames``.

    ``input_size`` is the model input as **(width, height)** - what :func:`fbvision.core.letterbox.letterbox`
    takes (note: ``ModelInfo.input_size`` is (height, width)). ``seq`` of each camera starts at the wall
    clock in milliseconds when the manager starts, then counts frames, so a restarted camera manager never reuses a
    sequence number (``seq_start`` overrides it).
    """

    def __init__(
        self,
        config: Settings | Sequence[CameraConfig],
        transport: Transport,
        input_size: tuple[int, int],
        manager_config: CameraManagerConfig | None = None,
        *,
        name: str | None = None,
        offline_after_s: float | None = None,
        max_buffered: int | None = None,
        seq_start: int | None = None,
        source_factory: Callable[..., FrameSource] = open_source,
        stats_interval_s: float = 1.0,
        evidence: EvidenceConfig | None = None,
    ):
        if isinstance(config, Settings):
            cameras = list(config.cameras)
            manager_config = manager_config or config.camera
            evidence = evidence or config.evidence
        else:
            cameras = list(config)
        self.manager_config = manager_config or CameraManagerConfig()
        self.cameras = [c for c in cameras if c.enabled]
        if not self.cameras:
            logger.warning("camera manager has no enabled cameras")
        self.transport = transport
        width, height = int(input_size[0]), int(input_size[1])
        if width <= 0 or height <= 0:
            raise ValueError(f"input_size must be (width, height) > 0, got {input_size}")
        self.input_size = (width, height)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.stats_interval_s = stats_interval_s
        self.max_buffered = max_buffered or max(16, 4 * len(self.cameras))
        self._seq_start = int(time.time() * 1000) if seq_start is None else int(seq_start)
        self._encode_params = [cv2.IMWRITE_JPEG_QUALITY, int(self.manager_config.jpeg_quality)]
        # Frame encoding per camera (wire v2): the camera's own, else camera.encoding.
        self._encodings = {c.id: getattr(c, "encoding", None) or self.manager_config.encoding for c in self.cameras}

        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._buffer: collections.deque[EncodedFrame] = collections.deque()
        self._status: dict[str, dict] = {}
        self._status_dirty: set[str] = set()
        # Shared counters (stats:camera, running totals) and Prometheus; "pushes" are round trips and
        # "evicted:queue_full" this manager's share of what the queue cap dropped (stats:queue counts them all).
        self.counters = Counters(prometheus_stage=STAGE)
        self.counters.declare("frames_read", "frames_pushed", "pushes", "redis_unavailable")
        self.latency = LatencyStats(prometheus_stage_prefix=f"{STAGE}_")  # encode (per frame), push (per trip)
        # The attempt token of frames whose push failed: they go out again under it, so a push that did reach
        # Redis before its reply was lost is recognised as ours and counted once.
        self._unconfirmed_token: str | None = None
        self._throttle = LogThrottle(10.0)
        # Capture/push stamps and status times go out on the reference clock (the Redis server's), so the
        # stages downstream measure ages on one clock whatever this host's wall clock says.
        # Reader threads never wait on Redis for it: the loop re-measures (_step), run() measures first.
        self.clock = ReferenceClock(transport.server_time, auto_sync=False)
        self._halt = threading.Event()
        self._threads: list[threading.Thread] = []
        # Evidence (docs/evidence-and-review.md): a bounded ring of recent frames per camera, and a writer thread
        # serving the logic's evidence requests. Off when no evidence config is given (tests, tools) or disabled.
        self.evidence: EvidenceKeeper | None = None
        if evidence is not None and evidence.enabled:
            self.evidence = EvidenceKeeper(evidence, {c.id: c.fps for c in self.cameras}, self.clock.now,
                                           self.counters, self.latency)
        self._evidence_after = "0-0"
        self._evidence_polled = 0.0  # monotonic time of the last look at evidence:requests (at most every 0.2 s)
        # One bad camera is one offline camera: a spec that cannot work (missing file, unknown scenario) makes
        # that camera "offline" with the reason (open_source defers it to the first open), and a factory that
        # raises all the same gets a source that reports why - never an exception that stops the others.
        self.sources: dict[str, FrameSource] = {}
        for cam in self.cameras:
            try:
                self.sources[cam.id] = source_factory(
                    cam, self.manager_config, status_sink=self._on_status, offline_after_s=offline_after_s
                )
            except Exception as exc:
                logger.error("camera %s: cannot be set up (%s); it stays offline", cam.id, redact_url(str(exc)))
                self.sources[cam.id] = _unusable_source(cam, exc, self.manager_config, self._on_status)

    # -- the worker shape ---------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self._halt.clear()
        if not self.clock.sync():  # until it succeeds frames carry this host's wall clock
            logger.warning("camera manager %s: cannot read the Redis clock yet; stamping with the local clock",
                           self.name)
        if self.evidence is not None:
            # Requests made from now on (stream ids are the Redis server's time, the reference clock).
            self._evidence_after = f"{int(self.clock.now() * 1000)}-0"
            self.evidence.start()
        for cam in self.cameras:
            thread = threading.Thread(
                target=self._reader, args=(cam, stop), name=f"camera-{cam.id}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        logger.info(
            "camera manager %s: %d cameras, input %dx%d, jpeg q%d, %d sending raw frames", self.name,
            len(self.cameras), self.input_size[0], self.input_size[1], self.manager_config.jpeg_quality,
            sum(1 for e in self._encodings.values() if e == "raw"),
        )
        self.loop().run(stop)

    def loop(self) -> StageLoop:
        """The stage loop with the camera manager's policy: outages back off up to 1 s while the readers keep
        buffering (bounded), a bug is not caught, counters are flushed every ``stats_interval_s``, an idle
        loop waits up to 50 ms for the next frame (woken by it), and at stop the readers are halted and what
        they left is pushed.

        The back-off is capped at one frame period of the fastest camera: the buffer holds only a few frames per
        camera (under a second), so a longer wait would evict every frame read during an outage before the first
        retry after it, and push the first frame late. A failed retry costs one refused connection, at most once
        per frame period."""
        frame_period_s = 1.0 / max((cam.fps for cam in self.cameras), default=1.0)
        return StageLoop(
            f"camera manager {self.name}", self._step, counters=self.counters, outage_counter="redis_unavailable",
            backoff=Backoff(min(0.05, frame_period_s), min(1.0, frame_period_s), random.Random()), on_error="raise",
            flush=self._flush_stats,
            flush_interval_s=self.stats_interval_s, idle_wait_s=0.05, idle=self._wait_for_frames,
            drain=self._drain, shutdown=self._shutdown,
        )

    def _step(self, stop: threading.Event) -> int:
        self.clock.maybe_sync()
        pushed = self._push_buffered()
        self._publish_statuses()
        if time.monotonic() - self._evidence_polled >= 0.2:
            self._poll_evidence_requests()
        return pushed

    def _poll_evidence_requests(self) -> int:
        """Hand the evidence requests for our cameras to the writer (other managers' cameras are skipped)."""
        if self.evidence is None:
            return 0
        self._evidence_polled = time.monotonic()
        taken = 0
        while True:
            entries = self.transport.read_evidence_requests(self._evidence_after, count=100)
            for entry_id, payload in entries:
                self._evidence_after = entry_id
                try:
                    req = EvidenceRequest.from_json(payload)
                except (ValueError, KeyError, TypeError) as exc:
                    self.counters.incr("evidence:bad_request")
                    logger.warning("unreadable evidence request %s skipped: %s", entry_id, exc)
                    continue
                if self.evidence.owns(req.camera_id):
                    taken += self.evidence.submit(req)
            if len(entries) < 100:
                return taken

    def _drain_evidence(self) -> None:
        """At stop: frames already queued may still raise alerts. Keep serving requests while the queues downstream
        hold work (bounded by ``evidence.drain_s``), then write everything pending with the frames there are."""
        if self.evidence is None:
            return
        deadline = time.monotonic() + self.evidence.config.drain_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            try:
                if self._poll_evidence_requests():
                    quiet_since = time.monotonic()
                busy = self.transport.frame_queue_depth() + self.transport.result_backlog()
            except TransportUnavailable:
                break
            if busy == 0 and time.monotonic() - quiet_since > 1.0:
                break
            if busy:
                quiet_since = time.monotonic()
            time.sleep(0.1)
        self.evidence.stop(finish=True)

    def _wait_for_frames(self, stop: threading.Event, at_most_s: float) -> None:
        with self._wakeup:
            if not self._buffer:
                self._wakeup.wait(at_most_s)  # a reader's notify ends it early

    def _drain(self) -> None:
        self._halt.set()
        for thread in self._threads:
            thread.join(timeout=15.0)
            if thread.is_alive():
                logger.warning("camera manager %s: reader %s did not stop in time", self.name, thread.name)
        self._threads.clear()
        for source in self.sources.values():
            source.close()
        self._push_buffered()
        self._publish_statuses()
        self._drain_evidence()

    def _shutdown(self) -> None:
        logger.info("camera manager %s stopped", self.name)

    def stats(self) -> dict:
        """Snapshot: per-camera counters and state, buffer depth, push round trips."""
        with self._lock:
            return self._stats_locked()

    def _stats_locked(self) -> dict:
        get = self.counters.get
        cameras = {
            cam.id: {**{key: get(f"{name}:{cam.id}") for key, name in _PER_CAMERA.items()},
                     "state": self.sources[cam.id].state.value}
            for cam in self.cameras
        }
        return {
            "name": self.name,
            "cameras": cameras,
            "cameras_online": sum(1 for c in cameras.values() if c["state"] == SourceState.ONLINE.value),
            "buffered": len(self._buffer),
            "pushes": get("pushes"),
            "push_failures": get("redis_unavailable"),
            "dropped_queue_full": get("evicted:queue_full"),
            "clock": self.clock.report(),
            "evidence": None if self.evidence is None else {
                "ring_bytes": self.evidence.memory_bytes(),
                "ring_budget_bytes": self.evidence.budget_bytes(),
                "pending": self.evidence.pending(),
                "latency_s": {k: self.latency.summary(k) for k in ("evidence_snapshot", "evidence_clip")
                              if self.latency.count(k)},
            },
            "at": time.time(),
        }

    # -- per camera ---------------------------------------------------------------------------------------------
    def _reader(self, cam: CameraConfig, stop: threading.Event) -> None:
        source = self.sources[cam.id]
        seq = self._seq_start
        while not stop.is_set() and not self._halt.is_set():
            try:
                got = source.read()
                if got is None:
                    if source.finished:
                        logger.info("camera %s: source finished, reader exits", cam.id)
                        return
                    continue
                frame, capture_ts = got
                capture_ts = self.clock.from_wall(capture_ts)
                self._count_camera(cam.id, "frames_read")
                if self.evidence is not None:
                    self.evidence.keep(cam.id, frame, capture_ts)
                t0 = time.perf_counter()
                encoded = self._encode(cam.id, seq, frame, capture_ts)
                self.latency.add("encode", time.perf_counter() - t0)
                seq += 1
                if encoded is None:
                    self._count_camera(cam.id, "dropped:encode")
                    continue
                self._enqueue(encoded)
            except Exception:  # a bug must not silently kill a camera: log, pause, carry on
                held = self._throttle(f"reader:{cam.id}")
                if held is not None:
                    logger.exception("camera %s: reader error", cam.id)
                stop.wait(1.0)

    def _encode(self, camera_id: str, seq: int, frame: np.ndarray, capture_ts: float) -> EncodedFrame | None:
        image, box = letterbox(frame, self.input_size)
        if self._encodings.get(camera_id) == "raw":  # no encoding at all: the letterboxed pixels as they are
            return EncodedFrame(camera_id, seq, capture_ts, box, np.ascontiguousarray(image).tobytes(), "raw")
        ok, buf = cv2.imencode(".jpg", image, self._encode_params)
        if not ok:
            held = self._throttle(f"encode:{camera_id}")
            if held is not None:
                logger.warning("camera %s: JPEG encoding failed", camera_id)
            return None
        return EncodedFrame(camera_id, seq, capture_ts, box, buf.tobytes())

    def _enqueue(self, encoded: EncodedFrame) -> None:
        with self._wakeup:
            while len(self._buffer) >= self.max_buffered:
                old = self._buffer.popleft()
                self._count_camera(old.camera_id, "dropped:buffer_full")
            self._buffer.append(encoded)
            self._wakeup.notify()

    def _on_status(self, camera_id: str, status: dict) -> None:
        # Called from reader threads: record only, the manager loop publishes. The source stamps with this
        # host's wall clock; the logic stage reads these times against the reference clock.
        status = dict(status)
        for key in _STATUS_TIMES:
            value = status.get(key)
            if isinstance(value, (int, float)) and value:
                status[key] = self.clock.from_wall(float(value))
        with self._lock:
            self._status[camera_id] = status
            self._status_dirty.add(camera_id)

    def _count_camera(self, camera_id: str, name: str, n: int = 1) -> None:
        self.counters.incr(name, n)
        self.counters.incr(f"{name}:{camera_id}", n)

    # -- manager loop -------------------------------------------------------------------------------------------
    def _push_buffered(self) -> int:
        """Push what the readers buffered in one round trip; returns how many frames went out."""
        with self._lock:
            pending = list(self._buffer)
            self._buffer.clear()
        if not pending:
            return 0
        t0 = time.perf_counter()
        now = self.clock.now()
        messages: list[bytes] = []
        counted: list[EncodedFrame] = []
        for f in pending:
            try:
                messages.append(encode_frame(FrameMessage(
                    camera_id=f.camera_id, seq=f.seq, capture_ts=f.capture_ts, push_ts=now,
                    letterbox=f.box, jpeg=f.jpeg,
                    encoding=f.encoding,
                )))
                counted.append(f)
            except WireError as exc:
                logger.warning("camera %s: frame %d not encodable (%s), dropped", f.camera_id, f.seq, exc)
                self._count_camera(f.camera_id, "dropped:encode")
        token = self._unconfirmed_token or new_token()
        try:
            pushed = self.transport.push_frames(
                messages, once=[message_id(f.camera_id, f.seq, f.capture_ts) for f in counted], token=token,
            )
        except TransportUnavailable:
            self._unconfirmed_token = token
            with self._lock:  # put them back in front of anything read meanwhile, still bounded
                self._buffer.extendleft(reversed(counted))  # not the unencodable ones: counted already
                while len(self._buffer) > self.max_buffered:
                    old = self._buffer.popleft()
                    self._count_camera(old.camera_id, "dropped:buffer_full")
            raise
        self._unconfirmed_token = None
        if pushed.duplicates:
            logger.warning("camera manager %s: %d frames had been pushed before by another writer; skipped",
                           self.name, pushed.duplicates)
        self.latency.add("push", time.perf_counter() - t0)
        self.counters.incr("pushes")
        for f in counted:  # a frame an earlier attempt of ours pushed (reply lost) is in the queue once
            self._count_camera(f.camera_id, "frames_pushed")
        # The queue cap dropped the oldest frames in Redis (any camera manager's); the transport counts them in
        # stats:queue (dropped:queue_full), here only this manager's share, under a name that no drop sum adds.
        self.counters.incr("evicted:queue_full", pushed.dropped_by_cap)
        return len(counted)

    def _publish_statuses(self) -> None:
        with self._lock:
            dirty = {cam_id: self._status[cam_id] for cam_id in self._status_dirty}
            self._status_dirty.clear()
        try:
            for cam_id, status in dirty.items():
                self.transport.set_camera_status(cam_id, status)
        except TransportUnavailable:
            with self._lock:
                self._status_dirty.update(dirty)
            raise

    def _flush_stats(self) -> None:
        totals = self.counters.snapshot()
        snapshot = self.stats()
        # Running totals, not deltas: a flush retried after a lost reply, or after a failure, counts once.
        self.transport.report_totals(STAGE, self.counters.writer, totals)
        self.transport.put_snapshot(f"{STAGE}:{self.name}", snapshot)
