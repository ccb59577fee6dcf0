"""Camera sources behind one interface: RTSP (and other FFmpeg URLs), video files, local devices, synthetic scenes.

A :class:`FrameSource` is a small state machine around a *capture* (the thing that actually yields frames)::

    connecting ──first frame──► online ──read error / watchdog──► reconnecting ──outage > offline_after_s──► offline
        │                          ▲                                   │                                     │
        └──open fails──► reconnecting                                  └────────────first frame──────────────┘
    any state ──close()──► closed          a non-looping file that ends ──► offline (finished)

Reconnection waits with exponential back-off and jitter; a watchdog reconnects a capture that gave no frame for
``watchdog_s``. Every transition, and a heartbeat every ``status_interval_s``, is reported to a *status sink*
(``sink(camera_id, status_dict)``; ``Transport.set_camera_status`` fits, the camera manager passes its own
non-blocking sink). :meth:`FrameSource.read` never blocks much longer than ``max_block_s`` (network opens and
reads are bounded by OpenCV's open/read timeouts), so a reader thread sees its stop event promptly.

Clock, wall clock, sleep and random jitter are injected so the state machine is tested with a scripted capture
and a fake clock, without sleeping. RTSP credentials never reach a log record: only :func:`redact_url` output does.
"""

from __future__ import annotations

import enum
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from fbvision.redact import redact_url

if TYPE_CHECKING:
    from fbvision.config import CameraConfig, ProducerConfig

logger = logging.getLogger(__name__)

StatusSink = Callable[[str, dict], None]

#: URL schemes handed to OpenCV's FFmpeg backend as live network streams.
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
#: A file whose container reports no usable frame rate is paced at this rate.
DEFAULT_FILE_FPS = 25.0


class SourceError(RuntimeError):
    """The capture failed (cannot open, read error); the source reconnects after a back-off."""


class EndOfStream(SourceError):
    """A non-looping file has no more frames."""


class SourceState(str, enum.Enum):
    CONNECTING = "connecting"
    ONLINE = "online"
    RECONNECTING = "reconnecting"
    OFFLINE = "offline"
    CLOSED = "closed"


class Capture(Protocol):
    """What a :class:`FrameSource` drives. ``grab`` returns True for a new frame, False when none came within
    ``timeout_s`` (not an error); it raises :class:`SourceError` when the capture is broken and
    :class:`EndOfStream` at the end of a non-looping file. ``retrieve`` decodes the grabbed frame (BGR uint8)."""

    def grab(self, timeout_s: float) -> bool: ...

    def retrieve(self) -> np.ndarray: ...

    def close(self) -> None: ...


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


class FpsSampler:
    """Keep frames at ``fps`` on average out of a faster stream.

    A frame is kept when it arrives no earlier than ``tolerance`` of a period before its slot; slots advance by
    exactly one period per kept frame (so the long-run rate is exact even when the source rate is not a multiple),
    and re-anchor after a gap so a stall does not release a burst.
    """

    def __init__(self, fps: float, tolerance: float = 0.2):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.period = 1.0 / fps
        self.tolerance = tolerance * self.period
        self._next: float | None = None

    def accept(self, t: float) -> bool:
        if self._next is None or t >= self._next + self.period:
            self._next = t + self.period
            return True
        if t >= self._next - self.tolerance:
            self._next += self.period
            return True
        return False

    def reset(self) -> None:
        self._next = None


@dataclass
class Backoff:
    """Exponential back-off with 'equal jitter': the n-th delay is uniform in [d/2, d], d = min(max, initial*2^n)."""

    initial_s: float
    max_s: float
    rng: random.Random

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_s, self.initial_s * (2.0 ** min(attempt, 30)))
        return ceiling * (0.5 + 0.5 * self.rng.random())


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
        return self.renderer.frame(self.index)

    def close(self) -> None:
        pass


# -- the state machine ------------------------------------------------------------------------------------------


class FrameSource:
    """One camera: opens its capture, samples it to ``fps``, reconnects, watches, reports status.

    ``read()`` returns ``(frame BGR uint8, capture_ts unix seconds)`` or None (nothing yet: connecting, backing
    off, between samples). ``finished`` turns True when a non-looping file has ended.
    """

    def __init__(
        self,
        camera_id: str,
        opener: Callable[[], Capture],
        *,
        fps: float,
        description: str = "",
        watchdog_s: float = 5.0,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 10.0,
        offline_after_s: float | None = None,
        status_interval_s: float = 1.0,
        status_sink: StatusSink | None = None,
        max_block_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        self.camera_id = camera_id
        self.opener = opener
        self.description = redact_url(description)
        self.watchdog_s = watchdog_s
        self.offline_after_s = offline_after_s if offline_after_s is not None else 2.0 * watchdog_s
        self.status_interval_s = status_interval_s
        self.status_sink = status_sink
        self.max_block_s = max_block_s
        self.clock, self.wall, self.sleep = clock, wall, sleep
        self.backoff = Backoff(reconnect_initial_s, reconnect_max_s, rng or random.Random())
        self.sampler = FpsSampler(fps)

        self.state = SourceState.CONNECTING
        self.since = wall()
        self.detail = "starting"
        self.frames = 0  # frames delivered by read()
        self.last_frame_ts: float | None = None  # wall
        self.reconnects = 0  # open attempts after a failure
        self.failures = 0  # consecutive failures since the last frame
        self.outages = 0  # completed outages (online -> ... -> online)
        self.last_outage_s: float | None = None
        self.finished = False

        self._capture: Capture | None = None
        self._last_scene_t0: float | None = None
        self._retry_at = clock()
        self._last_progress = clock()  # last grabbed frame, or the open of the capture (watchdog base)
        self._down_since = clock()  # monotonic start of the current outage (or of the first connection)
        self._down_since_wall: float | None = None  # wall start of the current outage; None before first online
        self._last_status = -math.inf
        self._log_throttle = LogThrottle(30.0, clock)
        self._publish()

    # -- public -----------------------------------------------------------------------------------------------
    def read(self) -> tuple[np.ndarray, float] | None:
        if self.state is SourceState.CLOSED or self.finished:
            self._heartbeat()
            return None
        try:
            if self._capture is None and not self._connect():
                return None
            return self._read_frame()
        finally:
            self._check_offline()
            self._heartbeat()

    def close(self) -> None:
        self._release()
        if self.state is not SourceState.CLOSED:
            self._set_state(SourceState.CLOSED, "closed")

    def status(self) -> dict:
        return {
            "state": self.state.value,
            "since": self.since,
            "last_frame_ts": self.last_frame_ts,
            "frames": self.frames,
            "detail": self.detail,
            "source": self.description,
            "outages": self.outages,
            "last_outage_s": self.last_outage_s,
            "reconnects": self.reconnects,
            "updated": self.wall(),
            "scene_t0": self._scene_t0(),
        }

    def _scene_t0(self) -> float | None:
        """Wall time of a synthetic scene's frame 0; kept after the capture closes (the last status says it too)."""
        t0 = getattr(self._capture, "t0_wall", None)
        if t0 is not None:
            self._last_scene_t0 = t0
        return self._last_scene_t0

    # -- internals --------------------------------------------------------------------------------------------
    def _connect(self) -> bool:
        wait = self._retry_at - self.clock()
        if wait > 0:
            self.sleep(min(wait, self.max_block_s))
            if self._retry_at > self.clock():
                return False
        if self.failures:
            self.reconnects += 1
        try:
            self._capture = self.opener()
        except SourceError as exc:
            self._fail(str(exc))
            return False
        except Exception as exc:  # an unexpected error opening must not kill the reader thread
            self._fail(f"{type(exc).__name__}: {exc}")
            return False
        self._last_progress = self.clock()
        self.sampler.reset()
        logger.debug("camera %s: opened %s", self.camera_id, self.description)
        return True

    def _read_frame(self) -> tuple[np.ndarray, float] | None:
        assert self._capture is not None
        deadline = self.clock() + self.max_block_s
        try:
            while True:
                remaining = deadline - self.clock()
                if not self._capture.grab(max(remaining, 0.0)):
                    break
                self._last_progress = self.clock()
                if not self.sampler.accept(self.clock()):
                    if self.clock() >= deadline:
                        break
                    continue
                capture_ts = self.wall()
                frame = self._capture.retrieve()
                self._on_frame(capture_ts)
                return frame, capture_ts
        except EndOfStream as exc:
            self._release()
            self.finished = True
            self._set_state(SourceState.OFFLINE, str(exc))
            return None
        except SourceError as exc:
            self._fail(str(exc))
            return None
        except Exception as exc:
            self._fail(f"{type(exc).__name__}: {exc}")
            return None
        silent = self.clock() - self._last_progress
        if silent > self.watchdog_s:
            self._fail(f"watchdog: no frame for {silent:.1f} s")
        return None

    def _on_frame(self, capture_ts: float) -> None:
        self.frames += 1
        self.last_frame_ts = capture_ts
        self.failures = 0
        if self.state is not SourceState.ONLINE:
            if self._down_since_wall is not None:  # back from an outage (not the first connection)
                self.outages += 1
                self.last_outage_s = max(capture_ts - self._down_since_wall, 0.0)
                logger.warning(
                    "camera %s: back online after %.1f s outage (%s)", self.camera_id, self.last_outage_s,
                    self.description,
                )
            else:
                logger.info("camera %s: online (%s)", self.camera_id, self.description)
            self._down_since_wall = None
            self._set_state(SourceState.ONLINE, "receiving frames")

    def _fail(self, detail: str) -> None:
        detail = redact_url(detail)
        self._release()
        delay = self.backoff.delay(self.failures)
        self.failures += 1
        self._retry_at = self.clock() + delay
        if self.state is SourceState.ONLINE:
            self._down_since = self.clock()
            self._down_since_wall = self.wall()
            logger.warning("camera %s: lost (%s), reconnecting in %.1f s", self.camera_id, detail, delay)
            self._set_state(SourceState.RECONNECTING, detail)
            return
        held = self._log_throttle("fail")
        if held is not None:
            logger.info(
                "camera %s: %s; retry %d in %.1f s%s", self.camera_id, detail, self.failures, delay,
                f" ({held} similar not logged)" if held else "",
            )
        if self.state is SourceState.CONNECTING:
            self._set_state(SourceState.RECONNECTING, detail)
        else:
            self.detail = detail

    def _check_offline(self) -> None:
        if self.state in (SourceState.CONNECTING, SourceState.RECONNECTING):
            down = self.clock() - self._down_since
            if down >= self.offline_after_s:
                logger.warning("camera %s: offline for %.1f s (%s)", self.camera_id, down, self.detail)
                self._set_state(SourceState.OFFLINE, self.detail)

    def _release(self) -> None:
        capture, self._capture = self._capture, None
        if capture is not None:
            try:
                capture.close()
            except Exception:  # closing a broken capture must not mask the original failure
                logger.debug("camera %s: error closing capture", self.camera_id, exc_info=True)

    def _set_state(self, state: SourceState, detail: str) -> None:
        self.state = state
        self.since = self.wall()
        self.detail = detail
        self._publish()

    def _heartbeat(self) -> None:
        if self.clock() - self._last_status >= self.status_interval_s:
            self._publish()

    def _publish(self) -> None:
        self._last_status = self.clock()
        if self.status_sink is None:
            return
        try:
            self.status_sink(self.camera_id, self.status())
        except Exception as exc:  # status is best effort; TransportUnavailable included
            held = self._log_throttle("status")
            if held is not None:
                logger.warning("camera %s: cannot publish status: %s", self.camera_id, exc)


# -- parsing a camera's source spec ------------------------------------------------------------------------------


def describe_source(spec: str) -> str:
    """The source spec with credentials masked: safe to log."""
    return redact_url(spec)


def source_kind(spec: str) -> str:
    """'rtsp' / 'stream' / 'device' / 'synthetic' / 'file'."""
    lower = spec.lower()
    if lower.startswith(("rtsp://", "rtsps://")):
        return "rtsp"
    if lower.startswith(STREAM_SCHEMES):
        return "stream"
    if lower.startswith("device:"):
        return "device"
    if lower.startswith("synthetic:"):
        return "synthetic"
    return "file"


def load_scenario(name: str):
    from fbvision.synth import Scenario

    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"synthetic scenario file not found: {name}")
        return Scenario.from_yaml(path)
    try:
        return Scenario.builtin(name)
    except KeyError as exc:
        raise ValueError(str(exc.args[0])) from None


def open_source(
    camera: CameraConfig,
    producer: ProducerConfig | None = None,
    *,
    status_sink: StatusSink | None = None,
    offline_after_s: float | None = None,
    realtime: bool = True,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> FrameSource:
    """A :class:`FrameSource` for ``camera.source``: ``rtsp://...`` (or another FFmpeg URL), a video file path,
    ``device:N`` or ``synthetic:<built-in name | scenario.yaml>``.

    Invalid specs (unknown scenario, missing file, bad device index) raise ValueError here: that is a
    configuration mistake, not an outage. Nothing is opened yet; the first ``read()`` connects.
    """
    from fbvision.config import ProducerConfig

    producer = producer or ProducerConfig()
    spec = camera.source.strip()
    kind = source_kind(spec)
    description = describe_source(spec)
    # FFmpeg probes a new RTSP stream for up to a few seconds before the open returns; reads only wait for
    # the next frame, so the watchdog bounds them.
    open_timeout = min(max(10.0, 2.0 * producer.watchdog_s), 60.0)
    read_timeout = min(max(1.0, producer.watchdog_s), 30.0)
    opener: Callable[[], Capture]

    if kind == "synthetic":
        scenario = load_scenario(spec.split(":", 1)[1].strip())
        renderer_box: list = []

        def opener() -> Capture:
            if not renderer_box:
                from fbvision.synth import SceneRenderer

                renderer_box.append(SceneRenderer(scenario))  # built once, on the reader thread
            return SyntheticCapture(renderer_box[0], camera.fps, loop=camera.loop, clock=clock, sleep=sleep)

    elif kind == "device":
        index_text = spec.split(":", 1)[1].strip()
        if not index_text.isdigit():
            raise ValueError(f"camera {camera.id}: device source must be 'device:<index>', got {spec!r}")
        index = int(index_text)

        def opener() -> Capture:
            return CvCapture(index, "device", description=description, hw_decode=False, clock=clock, sleep=sleep)

    elif kind == "file":
        if not Path(spec).is_file():
            raise ValueError(f"camera {camera.id}: video file not found: {description}")

        def opener() -> Capture:
            return CvCapture(
                spec, kind, description=description, hw_decode=producer.hw_decode, loop=camera.loop,
                realtime=realtime, clock=clock, sleep=sleep,
            )

    else:
        # One open per attempt (a dead camera costs one open timeout, not two). With hardware decoding asked
        # for, a failed attempt makes the next one try software and vice versa; every new connection starts
        # with hardware again, so an outage never leaves a source in software for good.
        hw_next = [producer.hw_decode]

        def opener() -> Capture:
            use_hw = hw_next[0]
            try:
                capture = CvCapture(
                    spec, kind, description=description, hw_decode=use_hw, software_fallback=False,
                    open_timeout_s=open_timeout, read_timeout_s=read_timeout, clock=clock, sleep=sleep,
                )
            except SourceError:
                hw_next[0] = producer.hw_decode and not use_hw
                raise
            if producer.hw_decode and not use_hw:
                logger.debug("camera %s: connected with software decoding", camera.id)
            hw_next[0] = producer.hw_decode
            return capture

    return FrameSource(
        camera.id, opener, fps=camera.fps, description=description, watchdog_s=producer.watchdog_s,
        reconnect_initial_s=producer.reconnect_initial_s, reconnect_max_s=producer.reconnect_max_s,
        offline_after_s=offline_after_s, status_interval_s=producer.status_interval_s, status_sink=status_sink,
        clock=clock, wall=wall, sleep=sleep, rng=rng,
    )
