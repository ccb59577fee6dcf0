"""Camera sources behind one interface: RTSP (and other FFmpeg URLs), video files, local devices, synthetic scenes.

A :class:`FrameSource` is a small state machine around a *capture* (the thing that actually yields frames)::

    connecting ──first frame──► online ──read error / watchdog──► reconnecting ──outage > offline_after_s──► offline
        │                          ▲                                   │                                     │
        └──open fails──► reconnecting                                  └────────────first frame──────────────┘
    any state ──close()──► closed          a non-looping file that ends ──► offline (finished)
    open raises SourceUnusable (missing file, unknown scene) ──► offline at once, with the reason; retried

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
from typing import TYPE_CHECKING

import numpy as np

from fbvision.camera.captures import Capture, EndOfStream, SourceError
from fbvision.core.loop import Backoff, LogThrottle
from fbvision.core.redact import redact_url

if TYPE_CHECKING:
    pass


logger = logging.getLogger(__name__)

StatusSink = Callable[[str, dict], None]

#: How often a source that is unusable as configured but might become usable (a file that may appear) is
#: retried at least, and how often one that cannot (an unknown built-in scene) is re-checked: rarely, it is
#: a configuration mistake, but a cheap check keeps a fixed config picked up without a restart.
UNUSABLE_RETRY_MAX_S = 60.0


class SourceUnusable(SourceError):
    """The camera cannot be opened as configured (a missing video file, an unknown ``synthetic:`` scene, a
    malformed ``device:`` spec): the camera goes ``offline`` at once with this reason, never a stage crash.

    ``may_appear``: True when the cause can go away by itself (a file copied in later): retried with the usual
    back-off. False for a mistake only an edit fixes: the status says ``failed``, retried every
    :data:`UNUSABLE_RETRY_MAX_S`."""

    def __init__(self, message: str, *, may_appear: bool):
        super().__init__(message)
        self.may_appear = may_appear


class SourceState(str, enum.Enum):
    CONNECTING = "connecting"
    ONLINE = "online"
    RECONNECTING = "reconnecting"
    OFFLINE = "offline"
    CLOSED = "closed"


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
        self.failed: str | None = None  # why the camera cannot work as configured (SourceUnusable, may_appear=False)
        self.problem: str | None = None  # the latest failure since the last frame (see status())

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
            # True while the camera cannot be opened as configured and nothing but a config fix will change
            # that (an unknown scene): "offline" with this flag is a mistake to fix, not an outage to wait out.
            "failed": self.failed is not None,
            # The latest failure while no frame flows (kept after close: the run report says why a camera that
            # never ran did not), None while frames flow.
            "problem": self.problem,
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
        except SourceUnusable as exc:
            self._unusable(exc)
            return False
        except SourceError as exc:
            self._fail(str(exc))
            return False
        except Exception as exc:  # an unexpected error opening must not kill the reader thread
            self._fail(f"{type(exc).__name__}: {exc}")
            return False
        self._last_progress = self.clock()
        self.sampler.reset()
        self.failed = None  # it opened: whatever was wrong with the configuration is fixed
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
            self.problem = None
            self._set_state(SourceState.ONLINE, "receiving frames")

    def _fail(self, detail: str) -> None:
        detail = redact_url(detail)
        self.problem = detail
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

    def _unusable(self, exc: SourceUnusable) -> None:
        """The camera cannot be opened as configured: offline at once (no offline_after_s grace: waiting
        will not bring a missing file or a misspelt scene), with the reason, and retried - with the usual
        back-off when the cause may go away (a file copied in later), else every UNUSABLE_RETRY_MAX_S."""
        detail = redact_url(str(exc))
        self._release()
        delay = (min(self.backoff.delay(self.failures), UNUSABLE_RETRY_MAX_S) if exc.may_appear
                 else UNUSABLE_RETRY_MAX_S)
        self.failures += 1
        self._retry_at = self.clock() + delay
        self.failed = None if exc.may_appear else detail
        self.problem = detail
        if self._down_since_wall is None and self.frames:  # it was online: an outage starts now
            self._down_since = self.clock()
            self._down_since_wall = self.wall()
        held = self._log_throttle("unusable")
        if held is not None:
            logger.warning("camera %s: offline, %s; %s in %.1f s%s", self.camera_id, detail,
                           "retrying" if exc.may_appear else "not usable as configured, checking again",
                           delay, f" ({held} similar not logged)" if held else "")
        if self.state is not SourceState.OFFLINE or self.detail != detail:
            self._set_state(SourceState.OFFLINE, detail)

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


