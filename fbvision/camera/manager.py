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
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from fbvision.camera.factory import open_source
from fbvision.camera.source import FrameSource, SourceState
from fbvision.core.config import CameraConfig, CameraManagerConfig, Settings
from fbvision.core.letterbox import Letterbox, letterbox
from fbvision.core.loop import LogThrottle
from fbvision.core.transport import Transport, TransportUnavailable, message_id, new_token
from fbvision.core.wire import FrameMessage, WireError, encode_frame

logger = logging.getLogger(__name__)

STAGE = "camera"


@dataclass(frozen=True)
class EncodedFrame:
    """A frame ready to push, but for its push time (stamped just before the push)."""

    camera_id: str
    seq: int
    capture_ts: float
    box: Letterbox
    jpeg: bytes


class _CameraCounters:
    __slots__ = ("read", "pushed", "dropped_buffer", "dropped_encode")

    def __init__(self) -> None:
        self.read = self.pushed = self.dropped_buffer = self.dropped_encode = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


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
    ):
        if isinstance(config, Settings):
            cameras = list(config.cameras)
            manager_config = manager_config or config.camera
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

        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._buffer: collections.deque[EncodedFrame] = collections.deque()
        self._status: dict[str, dict] = {}
        self._status_dirty: set[str] = set()
        self._counters = {c.id: _CameraCounters() for c in self.cameras}
        self._writer = new_token()  # this manager's name in the shared counters (reports running totals)
        # The attempt token of frames whose push failed: they go out again under it, so a push that did reach
        # Redis before its reply was lost is recognised as ours and counted once.
        self._unconfirmed_token: str | None = None
        self._pushes = 0
        self._queue_full_drops = 0
        self._push_failures = 0
        self._throttle = LogThrottle(10.0)
        self._halt = threading.Event()
        self._threads: list[threading.Thread] = []
        # Sources are built here so a bad spec (missing file, unknown scenario) fails at start, loudly.
        self.sources: dict[str, FrameSource] = {}
        for cam in self.cameras:
            self.sources[cam.id] = source_factory(
                cam, self.manager_config, status_sink=self._on_status, offline_after_s=offline_after_s
            )

    # -- the worker shape ---------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self._halt.clear()
        for cam in self.cameras:
            thread = threading.Thread(
                target=self._reader, args=(cam, stop), name=f"camera-{cam.id}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        logger.info(
            "camera manager %s: %d cameras, input %dx%d, jpeg q%d", self.name, len(self.cameras),
            self.input_size[0], self.input_size[1], self.manager_config.jpeg_quality,
        )
        backoff = 0.0
        last_flush = time.monotonic()
        try:
            while not stop.is_set():
                with self._wakeup:
                    if not self._buffer:
                        self._wakeup.wait(0.05 if backoff == 0 else backoff)
                    elif backoff:
                        self._wakeup.wait(backoff)  # Redis is away: don't spin
                try:
                    self._push_buffered()
                    self._publish_statuses()
                    if time.monotonic() - last_flush >= self.stats_interval_s:
                        self._flush_stats()
                        last_flush = time.monotonic()
                    backoff = 0.0
                except TransportUnavailable as exc:
                    self._push_failures += 1
                    backoff = min(1.0, max(0.1, backoff * 2))
                    held = self._throttle("transport")
                    if held is not None:
                        logger.warning("camera manager %s: Redis unavailable (%s); buffering, retrying", self.name, exc)
        finally:
            self._halt.set()
            for thread in self._threads:
                thread.join(timeout=15.0)
                if thread.is_alive():
                    logger.warning("camera manager %s: reader %s did not stop in time", self.name, thread.name)
            self._threads.clear()
            for source in self.sources.values():
                source.close()
            try:
                self._push_buffered()
                self._publish_statuses()
                self._flush_stats()
            except TransportUnavailable:
                logger.warning("camera manager %s: Redis unavailable at shutdown; last counters not flushed", self.name)
            logger.info("camera manager %s stopped", self.name)

    def stats(self) -> dict:
        """Snapshot: per-camera counters and state, buffer depth, push round trips."""
        with self._lock:
            return self._stats_locked()

    def _stats_locked(self) -> dict:
        cameras = {
            cam_id: {**counters.as_dict(), "state": self.sources[cam_id].state.value}
            for cam_id, counters in self._counters.items()
        }
        return {
            "name": self.name,
            "cameras": cameras,
            "cameras_online": sum(1 for c in cameras.values() if c["state"] == SourceState.ONLINE.value),
            "buffered": len(self._buffer),
            "pushes": self._pushes,
            "push_failures": self._push_failures,
            "dropped_queue_full": self._queue_full_drops,
            "at": time.time(),
        }

    # -- per camera ---------------------------------------------------------------------------------------------
    def _reader(self, cam: CameraConfig, stop: threading.Event) -> None:
        source = self.sources[cam.id]
        counters = self._counters[cam.id]
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
                with self._lock:
                    counters.read += 1
                encoded = self._encode(cam.id, seq, frame, capture_ts)
                seq += 1
                if encoded is None:
                    with self._lock:
                        counters.dropped_encode += 1
                    continue
                self._enqueue(encoded)
            except Exception:  # a bug must not silently kill a camera: log, pause, carry on
                held = self._throttle(f"reader:{cam.id}")
                if held is not None:
                    logger.exception("camera %s: reader error", cam.id)
                stop.wait(1.0)

    def _encode(self, camera_id: str, seq: int, frame: np.ndarray, capture_ts: float) -> EncodedFrame | None:
        image, box = letterbox(frame, self.input_size)
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
                self._counters[old.camera_id].dropped_buffer += 1
            self._buffer.append(encoded)
            self._wakeup.notify()

    def _on_status(self, camera_id: str, status: dict) -> None:
        # Called from reader threads: record only, the manager loop publishes.
        with self._lock:
            self._status[camera_id] = status
            self._status_dirty.add(camera_id)

    # -- manager loop -------------------------------------------------------------------------------------------
    def _push_buffered(self) -> None:
        with self._lock:
            pending = list(self._buffer)
            self._buffer.clear()
        if not pending:
            return
        now = time.time()
        messages: list[bytes] = []
        counted: list[EncodedFrame] = []
        for f in pending:
            try:
                messages.append(encode_frame(FrameMessage(
                    camera_id=f.camera_id, seq=f.seq, capture_ts=f.capture_ts, push_ts=now,
                    src_w=f.box.src_w, src_h=f.box.src_h, input_w=f.box.dst_w, input_h=f.box.dst_h,
                    scale=f.box.scale, pad_x=f.box.pad_x, pad_y=f.box.pad_y, jpeg=f.jpeg,
                )))
                counted.append(f)
            except WireError as exc:
                logger.warning("camera %s: frame %d not encodable (%s), dropped", f.camera_id, f.seq, exc)
                with self._lock:
                    self._counters[f.camera_id].dropped_encode += 1
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
                    self._counters[old.camera_id].dropped_buffer += 1
            raise
        self._unconfirmed_token = None
        if pushed.duplicates:
            logger.warning("camera manager %s: %d frames had been pushed before by another writer; skipped",
                           self.name, pushed.duplicates)
        with self._lock:
            self._pushes += 1
            for f in counted:  # a frame an earlier attempt of ours pushed (reply lost) is in the queue once
                self._counters[f.camera_id].pushed += 1
            # The queue cap dropped the oldest frames in Redis (any camera manager's); the transport counts them in
            # stats:queue, here only this manager's total is kept.
            self._queue_full_drops += pushed.dropped_by_cap

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
        names = {"read": "frames_read", "pushed": "frames_pushed", "dropped_buffer": "dropped:buffer_full",
                 "dropped_encode": "dropped:encode"}
        totals: dict[str, int] = {}
        with self._lock:
            for cam_id, counters in self._counters.items():
                for key, value in counters.as_dict().items():
                    if value:
                        totals[names[key]] = totals.get(names[key], 0) + value
                        totals[f"{names[key]}:{cam_id}"] = value
            snapshot = self._stats_locked()
        # Running totals, not deltas: a flush retried after a lost reply, or after a failure, counts once.
        self.transport.report_totals(STAGE, self._writer, totals)
        self.transport.put_snapshot(f"{STAGE}:{self.name}", snapshot)
