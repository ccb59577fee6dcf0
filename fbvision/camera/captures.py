"""Captures: the things that actually yield frames (OpenCV for RTSP/files/devices, synthetic scenes)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

if TYPE_CHECKING:
    pass


logger = logging.getLogger(__name__)

#: URL schemes handed to OpenCV's FFmpeg backend as live network streams.
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
#: A file whose container reports no usable frame rate is paced at this rate.
DEFAULT_FILE_FPS = 25.0

class SourceError(RuntimeError):
    """The capture failed (cannot open, read error); the source reconnects after a back-off."""


class EndOfStream(SourceError):
    """A non-looping file has no more frames."""


class Capture(Protocol):
    """What a :class:`FrameSource` drives. ``grab`` returns True for a new frame, False when none came within
    ``timeout_s`` (not an error); it raises :class:`SourceError` when the capture is broken and
    :class:`EndOfStream` at the end of a non-looping file. ``retrieve`` decodes the grabbed frame (BGR uint8)."""

    def grab(self, timeout_s: float) -> bool: ...

    def retrieve(self) -> np.ndarray: ...

    def close(self) -> None: ...


# -- captures ---------------------------------------------------------------------------------------------------


class CvCapture:
    """OpenCV ``VideoCapture`` (FFmpeg backend) for a network stream, a video file or a local device.

    Asks for hardware decoding (``CAP_PROP_HW_ACCELERATION=VIDEO_ACCELERATION_ANY``; OpenCV itself decodes in
    software when no device is there) and, with ``software_fallback``, retries a failed open without it at once.
    Network streams pass ``software_fallback=False``: a dead camera would otherwise cost two open timeouts per
    attempt; :func:`open_source` alternates instead. Files are paced at their own frame rate (``realtime``) and
    rewound at the end when ``loop`` is set. Network opens and reads are bounded by ``open_timeout_s`` /
    ``read_timeout_s``.
    """

    def __init__(
        self,
        target: str | int,
        kind: str,
        *,
        description: str,
        hw_decode: bool = True,
        software_fallback: bool = True,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        loop: bool = True,
        realtime: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.target = target
        self.kind = kind
        self.description = description
        self.loop = loop
        self.clock = clock
        self.sleep = sleep
        self.hw_decode = hw_decode
        self.software_fallback = software_fallback
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.cap = self._open()
        self.fps = None
        if kind == "file" and realtime:
            fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
            self.fps = fps if math.isfinite(fps) and 0.1 <= fps <= 240 else DEFAULT_FILE_FPS
        self._t0 = clock()
        self._n = 0

    def _open(self) -> cv2.VideoCapture:
        api = cv2.CAP_ANY if self.kind == "device" else cv2.CAP_FFMPEG
        params: list[int] = []
        if self.kind != "device":
            params += [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000),
            ]
        attempts = [params]
        if self.hw_decode:
            attempts.insert(0, [*params, cv2.CAP_PROP_HW_ACCELERATION, cv2.VIDEO_ACCELERATION_ANY])
            if not self.software_fallback:
                attempts = attempts[:1]
        for i, attempt in enumerate(attempts):
            cap = cv2.VideoCapture(self.target, api, attempt)
            if cap.isOpened():
                if self.hw_decode and i > 0:
                    # Hardware open failed but software works: stay in software for this capture.
                    logger.debug("%s: hardware decoding unavailable, using software", self.description)
                    self.hw_decode = False
                return cap
            cap.release()
        raise SourceError(f"cannot open {self.description}")

    def grab(self, timeout_s: float) -> bool:
        if self.fps is not None:
            due = self._t0 + self._n / self.fps
            wait = due - self.clock()
            if wait > timeout_s:
                self.sleep(max(timeout_s, 0.0))
                return False
            if wait > 0:
                self.sleep(wait)
            if self.clock() - due > 1.0:  # far behind (stalled): re-anchor rather than race to catch up
                self._t0, self._n = self.clock(), 0
            self._n += 1
        if self.cap.grab():
            return True
        if self.kind != "file":
            raise SourceError(f"{self.description}: read failed (stream ended or timed out)")
        if not self.loop:
            raise EndOfStream(f"{self.description}: end of file")
        # Rewind; some containers cannot seek, then reopen.
        self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        if self.cap.grab():
            return True
        self.cap.release()
        self.cap = self._open()
        if self.cap.grab():
            return True
        raise SourceError(f"{self.description}: cannot read a frame after rewinding")

    def retrieve(self) -> np.ndarray:
        ok, frame = self.cap.retrieve()
        if not ok or frame is None:
            raise SourceError(f"{self.description}: frame could not be decoded")
        return frame

    def close(self) -> None:
        self.cap.release()


class SyntheticCapture:
    """A synthetic stall scene rendered live at the camera's fps, in real time, looping.

    The scene index follows the wall clock (``index = elapsed * scene_fps``), so scene time runs at real speed
    whatever the camera fps; only the frames actually sampled are rendered.
    """

    def __init__(
        self,
        renderer,
        fps: float,
        *,
        loop: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.renderer = renderer
        self.period = 1.0 / fps
        self.loop = loop
        self.clock = clock
        self.sleep = sleep
        self._t0 = clock()
        # Wall time of scene frame 0: scene time of a frame = capture_ts - t0_wall (ground-truth scoring).
        self.t0_wall = time.time()
        self._next_due = self._t0
        self.index = -1

    def grab(self, timeout_s: float) -> bool:
        wait = self._next_due - self.clock()
        if wait > timeout_s:
            self.sleep(max(timeout_s, 0.0))
            return False
        if wait > 0:
            self.sleep(wait)
        now = self.clock()
        index = int((now - self._t0) * self.renderer.fps)
        if index >= self.renderer.n_frames:
            if not self.loop:
                raise EndOfStream("synthetic scene ended")
            index %= self.renderer.n_frames
        self.index = index
        self._next_due = max(self._next_due + self.period, now)
        return True

    def retrieve(self) -> np.ndarray:
        # Read-only and shared with the other cameras playing this scene (the consumers only read frames).
        shared = getattr(self.renderer, "shared_frame", None)
        return shared(self.index) if shared is not None else self.renderer.frame(self.index)

    def close(self) -> None:
        pass


