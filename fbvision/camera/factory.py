"""A camera's source spec -> a :class:`~fbvision.camera.source.FrameSource` (rtsp://, file, device:N, synthetic:)."""

from __future__ import annotations

import logging
import random
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fbvision.camera.captures import STREAM_SCHEMES, Capture, CvCapture, SyntheticCapture
from fbvision.camera.source import FrameSource, SourceError, SourceUnusable, StatusSink
from fbvision.core.redact import redact_url

if TYPE_CHECKING:
    from fbvision.core.config import CameraConfig, CameraManagerConfig


logger = logging.getLogger(__name__)

# -- parsing a camera's source spec ------------------------------------------------------------------------------


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


# Held weakly: a renderer lives as long as a camera of this process plays its scene.
_RENDERERS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_RENDERERS_LOCK = threading.Lock()


def _shared_renderer(scenario, build):
    """One renderer per distinct scenario in this process, shared by the cameras that play it (with its frame
    cache: a scene frame is rendered once, whatever the number of cameras showing it)."""
    key = scenario.model_dump_json()
    with _RENDERERS_LOCK:
        renderer = _RENDERERS.get(key)
        if renderer is None:
            renderer = build(scenario)
            _RENDERERS[key] = renderer
        return renderer


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
    manager_config: CameraManagerConfig | None = None,
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

    Nothing is opened yet; the first ``read()`` connects. A spec that cannot work (unknown scenario, missing
    file, malformed device index) does not raise here: one bad camera must not stop the others. Its opener
    raises :class:`~fbvision.camera.source.SourceUnusable` instead, so that camera goes ``offline`` with the
    reason (the logic stage raises ``camera_offline``) and is retried: a file that appears later is picked up.
    ``fbvision config check`` reports such specs before a start.
    """
    from fbvision.core.config import CameraManagerConfig

    manager_config = manager_config or CameraManagerConfig()
    spec = camera.source.strip()
    kind = source_kind(spec)
    description = redact_url(spec)  # credentials masked: safe to log
    # FFmpeg probes a new RTSP stream for up to a few seconds before the open returns; reads only wait for
    # the next frame, so the watchdog bounds them.
    open_timeout = min(max(10.0, 2.0 * manager_config.watchdog_s), 60.0)
    read_timeout = min(max(1.0, manager_config.watchdog_s), 30.0)
    opener: Callable[[], Capture]

    if kind == "synthetic":
        scene_name = spec.split(":", 1)[1].strip()
        renderer_box: list = []

        def opener() -> Capture:
            if not renderer_box:
                from fbvision.synth import SceneRenderer

                try:
                    scenario = load_scenario(scene_name)
                except ValueError as exc:  # an unknown built-in name, or a scenario file that is not there
                    is_file = scene_name.endswith((".yaml", ".yml")) or "/" in scene_name
                    raise SourceUnusable(f"camera {camera.id}: {exc}", may_appear=is_file) from None
                except Exception as exc:  # a scenario file that exists but does not load: needs an edit
                    raise SourceUnusable(f"camera {camera.id}: scenario {scene_name!r} does not load: {exc}",
                                         may_appear=False) from None
                renderer_box.append(_shared_renderer(scenario, SceneRenderer))  # built on the reader thread
            return SyntheticCapture(renderer_box[0], camera.fps, loop=camera.loop, clock=clock, sleep=sleep)

    elif kind == "device":
        index_text = spec.split(":", 1)[1].strip()
        if index_text.isdigit():
            index = int(index_text)

            def opener() -> Capture:
                # A device that does not exist fails to open: an ordinary outage, retried with back-off
                # (a USB camera plugged in later is picked up).
                return CvCapture(index, "device", description=description, hw_decode=False, clock=clock,
                                 sleep=sleep)
        else:

            def opener() -> Capture:
                raise SourceUnusable(f"camera {camera.id}: device source must be 'device:<index>', got {spec!r}",
                                     may_appear=False)

    elif kind == "file":

        def opener() -> Capture:
            if not Path(spec).is_file():  # checked on every attempt: a file copied in later is picked up
                raise SourceUnusable(f"camera {camera.id}: video file not found: {description}", may_appear=True)
            return CvCapture(
                spec, kind, description=description, hw_decode=manager_config.hw_decode, loop=camera.loop,
                realtime=realtime, clock=clock, sleep=sleep,
            )

    else:
        # One open per attempt (a dead camera costs one open timeout, not two). With hardware decoding asked
        # for, a failed attempt makes the next one try software and vice versa; every new connection starts
        # with hardware again, so an outage never leaves a source in software for good.
        hw_next = [manager_config.hw_decode]

        def opener() -> Capture:
            use_hw = hw_next[0]
            try:
                capture = CvCapture(
                    spec, kind, description=description, hw_decode=use_hw, software_fallback=False,
                    open_timeout_s=open_timeout, read_timeout_s=read_timeout, clock=clock, sleep=sleep,
                )
            except SourceError:
                hw_next[0] = manager_config.hw_decode and not use_hw
                raise
            if manager_config.hw_decode and not use_hw:
                logger.debug("camera %s: connected with software decoding", camera.id)
            hw_next[0] = manager_config.hw_decode
            return capture

    return FrameSource(
        camera.id, opener, fps=camera.fps, description=description, watchdog_s=manager_config.watchdog_s,
        reconnect_initial_s=manager_config.reconnect_initial_s, reconnect_max_s=manager_config.reconnect_max_s,
        offline_after_s=offline_after_s, status_interval_s=manager_config.status_interval_s, status_sink=status_sink,
        clock=clock, wall=wall, sleep=sleep, rng=rng,
    )
