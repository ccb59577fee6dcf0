"""``fbvision config check``: the world a configuration points at, checked without starting anything.

A config can be valid as a tree and still fail at start: a video file that is not there, a misspelt
``synthetic:`` scene, a model that is missing, cannot batch or lacks a configured class, an RTSP URL that
does not parse. :func:`check_world` lists every such problem (one string each) instead of stopping at the
first; ``probe=True`` also tries to open each RTSP/stream source, each within a timeout.
"""

from __future__ import annotations

import difflib
import logging
import threading
from pathlib import Path
from urllib.parse import urlsplit

from fbvision.camera.factory import load_scenario, source_kind
from fbvision.core.config import CameraConfig, Settings
from fbvision.core.redact import redact_url

logger = logging.getLogger(__name__)


def _open_video(source: str | int, timeout_s: float) -> str | None:
    """None when ``source`` opens with OpenCV and yields a frame within ``timeout_s``; else what went wrong."""
    import cv2

    result: list[str | None] = []

    def attempt() -> None:
        ms = int(timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        cap = (cv2.VideoCapture(source, cv2.CAP_FFMPEG, params) if isinstance(source, str)
               else cv2.VideoCapture(source))
        try:
            if not cap.isOpened():
                result.append("OpenCV cannot open it as video")
                return
            ok, frame = cap.read()
            result.append(None if ok and frame is not None else "opens, but no frame could be read")
        finally:
            cap.release()

    # The timeouts above bound FFmpeg; the thread bounds everything else (a wedged backend never hangs the check).
    thread = threading.Thread(target=attempt, name="fbv-config-probe", daemon=True)
    thread.start()
    thread.join(timeout_s + 2.0)
    if thread.is_alive():
        return f"no answer within {timeout_s:.0f} s"
    return result[0] if result else "the open failed"


def check_camera(cam: CameraConfig, *, probe: bool = False, probe_timeout_s: float = 5.0) -> list[str]:
    spec = cam.source.strip()
    kind = source_kind(spec)
    shown = redact_url(spec)
    where = f"cameras[{cam.id}].source"
    if kind == "synthetic":
        name = spec.split(":", 1)[1].strip()
        try:
            load_scenario(name)
        except ValueError as exc:
            from fbvision.synth.scenario import builtin_scenarios

            close = difflib.get_close_matches(name, builtin_scenarios(), n=1)
            return [f"{where}: {exc}" + (f" - did you mean 'synthetic:{close[0]}'?" if close else "")]
        except Exception as exc:  # a scenario file that exists but does not load
            return [f"{where}: scenario {name!r} does not load: {exc}"]
        return []
    if kind == "file":
        path = Path(spec).expanduser()
        if not path.is_file():
            return [f"{where}: video file not found: {shown} (relative paths are taken from {Path.cwd()})"]
        problem = _open_video(str(path), probe_timeout_s)
        return [f"{where}: {shown}: {problem}"] if problem else []
    if kind == "device":
        index = spec.split(":", 1)[1].strip()
        if not index.isdigit():
            return [f"{where}: a device source is 'device:<index>', got {shown!r}"]
        if probe:
            problem = _open_video(int(index), probe_timeout_s)
            return [f"{where}: {shown}: {problem}"] if problem else []
        return []
    # rtsp:// and the other FFmpeg URLs
    try:
        parts = urlsplit(spec)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        return [f"{where}: {shown} does not parse as a URL: {exc}"]
    if not parts.hostname:
        return [f"{where}: {shown} has no host"]
    if probe:
        problem = _open_video(spec, probe_timeout_s)
        if problem:
            return [f"{where}: {shown}: {problem} (probe)"]
    return []


def check_model(settings: Settings) -> list[str]:
    """The model exists, loads, batches dynamically and has every configured class."""
    from fbvision.core.modelinfo import ModelError, load_model_info

    path = settings.model.resolved_path()
    try:
        info = load_model_info(path)
    except ModelError as exc:
        return [f"model.path: {exc}"]
    problems = []
    for name in settings.inference.class_names:
        try:
            info.class_id(name)
        except ModelError as exc:
            problems.append(f"inference.class_names: {exc}")
    if settings.inference.max_batch > info.max_batch:
        problems.append(f"inference.max_batch: {settings.inference.max_batch} is more than the model's largest "
                        f"batch ({info.max_batch}, {path.name})")
    return problems


def check_world(settings: Settings, *, probe: bool = False, probe_timeout_s: float = 5.0) -> list[str]:
    """Every problem found, in config order (cameras, then the model); empty when all is well."""
    problems: list[str] = []
    for cam in settings.cameras:
        if cam.enabled:
            problems += check_camera(cam, probe=probe, probe_timeout_s=probe_timeout_s)
    problems += check_model(settings)
    return problems
