"""Annotated frames of a run: boxes, track ids, posture and speed, the active alert rule; preview MP4 and
one JPEG snapshot per raised alert.

The pipeline keeps no frames (they are letterboxed JPEGs in Redis and gone once inferred), so for
**synthetic cameras** the frame a result came from is rendered again: the scene is deterministic per frame
index, and the camera manager publishes the wall time of scene frame 0 in each camera's status (``scene_t0``), so

    scene index = floor((capture_t - scene_t0) * scene_fps)      (modulo the scene length when it loops)

which is what :class:`fbvision.camera.captures.SyntheticCapture` rendered (at most one scene frame off, when a
capture lands within a millisecond of a frame boundary). ``scene_t0`` changes when a source reconnects (a
new capture starts the scene again), and the status published when a source closes has none: read it
while the camera runs (``Transport.camera_statuses()``) and keep the last value.

What is drawn comes from the logic worker's recording (:func:`fbvision.logic.recorder.read_recording`: one row
per frame and track with the track's box, ``lying``, ``speed_bl_s``, ``confidence`` and that frame's alert
events ``rule:state:severity``). :func:`recorded_frames` replays those events into the alerts *active* at
each frame (raised or escalated, not yet resolved), per track for the track rules and per camera for the
camera rules. Real cameras have no re-renderable frame: :func:`annotate_frame` draws on any BGR frame the
caller has.

Drawing uses supervision (``sv.BoxAnnotator`` / ``sv.LabelAnnotator``, colours by track id); a track
with an active alert gets a thick red box and a red label naming the rule and severity.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from fbvision.lab.draw import (
    PREVIEW_DIR,
    SNAPSHOT_DIR,
    FrameAnnotator,
    RecordedFrame,
    TrackView,
    _default_annotator,
    _finite,
    recorded_frames,
)
from fbvision.synth import HorseTruth, Scenario, SceneRenderer
from fbvision.synth.video import write_mp4 as write_preview_mp4  # the one MP4 writer; the lab's name for it

logger = logging.getLogger(__name__)

# -- synthetic scenes on the run's clock -------------------------------------------------------------------------


class SyntheticScene:
    """A synthetic camera's scene on the run's wall clock: the frame and truth at a capture time."""

    def __init__(self, scene: Scenario | SceneRenderer | str, scene_t0: float, *, loop: bool = True):
        if isinstance(scene, str):
            from fbvision.camera.factory import load_scenario

            scene = load_scenario(scene.split(":", 1)[1] if scene.startswith("synthetic:") else scene)
        self.renderer = scene if isinstance(scene, SceneRenderer) else SceneRenderer(scene)
        self.scene_t0 = float(scene_t0)
        self.loop = loop

    @property
    def name(self) -> str:
        return self.renderer.scenario.name

    def index(self, t: float) -> int:
        """Scene frame index the camera manager rendered for capture time ``t`` (clamped when not looping)."""
        r = self.renderer
        i = math.floor((t - self.scene_t0) * r.fps + 1e-3)
        if self.loop:
            return i % r.n_frames
        return min(max(i, 0), r.n_frames - 1)

    def frame(self, t: float) -> np.ndarray:
        return self.renderer.frame(self.index(t))

    def truth(self, t: float) -> list[HorseTruth]:
        return self.renderer.truth(self.index(t))

    def scene_time(self, t: float) -> float:
        return self.index(t) / self.renderer.fps


def synthetic_scenes(settings: Any, statuses: Mapping[str, Mapping[str, Any]]) -> dict[str, SyntheticScene]:
    """A :class:`SyntheticScene` per enabled ``synthetic:`` camera of ``settings`` whose status carries a
    ``scene_t0`` (``statuses``: ``Transport.camera_statuses()``, read before the run's Redis goes away)."""
    from fbvision.camera.factory import load_scenario

    scenes: dict[str, SyntheticScene] = {}
    for cam in settings.cameras:
        if not cam.enabled or not cam.source.startswith("synthetic:"):
            continue
        t0 = (statuses.get(cam.id) or {}).get("scene_t0")
        if not _finite(t0):
            logger.warning("camera %s: no scene_t0 in its status; its frames cannot be re-rendered", cam.id)
            continue
        scenes[cam.id] = SyntheticScene(load_scenario(cam.source.split(":", 1)[1].strip()), float(t0), loop=cam.loop)
    return scenes


def _as_scene(scene: SyntheticScene | Scenario | SceneRenderer | str, scene_t0: float | None, loop: bool):
    if isinstance(scene, SyntheticScene):
        return scene
    if scene_t0 is None:
        raise ValueError("scene_t0 is needed unless a SyntheticScene is given")
    return SyntheticScene(scene, scene_t0, loop=loop)


def _header_text(scene: SyntheticScene, frame: RecordedFrame) -> str:
    return f"{frame.camera_id}  scene {scene.scene_time(frame.t):5.1f} s  seq {frame.seq}"


def annotate_recording(
    recording: pd.DataFrame,
    camera_id: str,
    scene: SyntheticScene | Scenario | SceneRenderer | str,
    *,
    scene_t0: float | None = None,
    loop: bool = True,
    start_t: float | None = None,
    end_t: float | None = None,
    seqs: Iterable[int] | None = None,
    every: int = 1,
    limit: int | None = None,
    truth: bool = False,
    header: bool = True,
    annotator: FrameAnnotator | None = None,
) -> Iterator[np.ndarray]:
    """Annotated frames of one synthetic camera, in capture order: the scene frame each recorded result came
    from, with the result's tracks, labels and active alerts drawn.

    Select by capture time (``start_t <= t <= end_t``) and/or ``seqs``, then keep every ``every``-th frame,
    at most ``limit``. ``truth``: also draw the ground-truth boxes (thin white).
    """
    if every < 1:
        raise ValueError("every must be >= 1")
    synth = _as_scene(scene, scene_t0, loop)
    wanted = None if seqs is None else {int(s) for s in seqs}
    chosen = [
        f for f in recorded_frames(recording, camera_id)
        if (start_t is None or f.t >= start_t) and (end_t is None or f.t <= end_t)
        and (wanted is None or f.seq in wanted)
    ][::every]
    if limit is not None:
        chosen = chosen[: max(0, limit)]
    drawer = annotator or _default_annotator()
    for rec in chosen:
        yield drawer.annotate(
            synth.frame(rec.t), rec.tracks, camera_alerts=rec.camera_alerts,
            header=_header_text(synth, rec) if header else None,
            truth=synth.truth(rec.t) if truth else None, copy=False,
        )


def recording_previews(
    run_dir: str | Path,
    recording: pd.DataFrame,
    scenes: Mapping[str, SyntheticScene],
    fps: Mapping[str, float],
    *,
    truth: bool = False,
) -> list[Path]:
    """One annotated MP4 per camera of ``scenes`` under ``<run_dir>/previews/``: every recorded frame of the
    camera, re-rendered, with its tracks, labels and active alerts, at the camera's ``fps`` (5 when not given).
    Cameras without a recorded frame are skipped. Returns the written paths."""
    written: list[Path] = []
    for camera_id, scene in scenes.items():
        frames = annotate_recording(recording, camera_id, scene, truth=truth)
        try:
            written.append(write_preview_mp4(frames, Path(run_dir) / PREVIEW_DIR / f"{_safe(camera_id)}.mp4",
                                             fps=float(fps.get(camera_id) or 5.0)))
        except ValueError:
            logger.info("camera %s: no recorded frame, no preview", camera_id)
    return written


# -- alert snapshots ---------------------------------------------------------------------------------------------


def _alert_dict(alert: Any) -> dict:
    if isinstance(alert, Mapping):
        return dict(alert)
    if hasattr(alert, "model_dump"):
        return alert.model_dump(mode="json")
    raise TypeError(f"an alert must be a mapping or an AlertEvent, not {type(alert).__name__}")


def _safe(text: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", str(text)).strip("-") or "x"


def snapshot_name(alert: Mapping[str, Any]) -> str:
    """``<camera>_<rule>_<track|cam>_<state>_<severity>_frame<seq>|at<UTC time>_<key8>.jpg``: unique per event,
    and every part says what it is (``frame000123``: the camera's frame number, not a time)."""
    evidence = alert.get("evidence") or {}
    track = alert.get("track_id")
    seq = evidence.get("seq")
    if seq is not None:
        when = f"frame{int(seq):06d}"
    else:
        t = float(alert.get("updated_at") or 0)
        when = "at" + time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + f"{int(round(t * 1000)) % 1000:03d}Z"
    key = str(alert.get("idempotency_key") or alert.get("id") or "")[:8]
    parts = [alert.get("camera_id"), alert.get("rule"), "cam" if track is None else f"t{track}",
             alert.get("state"), alert.get("severity"), when]
    return "_".join(_safe(p) for p in parts) + (f"_{_safe(key)}" if key else "") + ".jpg"


def _frame_for(frames: list[RecordedFrame], seq: Any, t: float) -> RecordedFrame | None:
    if not frames:
        return None
    if seq is not None:
        for f in frames:
            if f.seq == int(seq):
                return f
    nearest = min(frames, key=lambda f: abs(f.t - t))
    return nearest if abs(nearest.t - t) < 1.0 else None


def alert_snapshots(
    run_dir: str | Path,
    alerts: Iterable[Any],
    scenes: Mapping[str, SyntheticScene],
    *,
    recording: pd.DataFrame | None = None,
    states: Sequence[str] = ("raised",),
    truth: bool = False,
    quality: int = 90,
    annotator: FrameAnnotator | None = None,
) -> list[Path]:
    """One JPEG per alert event in ``states`` (default: each raised alert) under ``<run_dir>/snapshots/``.

    ``alerts``: the backend's events (``PipelineRun.backend_alerts()``, ``AlertEvent``s or the report's
    alert dicts). The frame is the camera's scene at the event's capture time (``updated_at``); drawn are the
    tracks recorded for that frame (``recording``, when given) and the alert's own track box
    (``evidence.box``) labelled with the rule and severity. Alerts of cameras without a scene in ``scenes``
    (real cameras: no frame kept) are skipped and logged. Returns the written paths, in alert order.
    """
    out_dir = Path(run_dir) / SNAPSHOT_DIR
    drawer = annotator or _default_annotator()
    by_camera: dict[str, list[RecordedFrame]] = {}
    written: list[Path] = []
    skipped = 0
    for raw in alerts:
        alert = _alert_dict(raw)
        if alert.get("state") not in states:
            continue
        camera_id = alert.get("camera_id")
        scene = scenes.get(camera_id)
        t = alert.get("updated_at")
        if scene is None or not _finite(t):
            skipped += 1
            continue
        t = float(t)
        rule, severity = str(alert.get("rule")), str(alert.get("severity"))
        evidence = alert.get("evidence") or {}
        if recording is not None and camera_id not in by_camera:
            by_camera[camera_id] = recorded_frames(recording, camera_id)
        rec = _frame_for(by_camera.get(camera_id, []), evidence.get("seq"), t)
        tracks = {tr.track_id: tr for tr in rec.tracks} if rec is not None else {}
        camera_alerts = dict(rec.camera_alerts) if rec is not None else {}
        track_id = alert.get("track_id")
        if track_id is not None:
            base = tracks.get(int(track_id))
            box = evidence.get("box") or (base.box if base is not None else None)
            if box is not None and len(box) == 4:
                feats = evidence.get("features") or {}
                tracks[int(track_id)] = TrackView(
                    track_id=int(track_id),
                    box=tuple(float(v) for v in box),  # type: ignore[arg-type]
                    present=True,
                    lying=base.lying if base is not None else bool(feats.get("lying", 0.0)),
                    speed_bl_s=base.speed_bl_s if base is not None else float(feats.get("speed_bl_s", math.nan)),
                    confidence=base.confidence if base is not None else float(feats.get("confidence", math.nan)),
                    alerts={**(dict(base.alerts) if base is not None else {}), rule: severity},
                )
        else:
            camera_alerts[rule] = severity
        head = f"{camera_id}  {rule} {alert.get('state')} ({severity})  scene {scene.scene_time(t):5.1f} s"
        image = drawer.annotate(
            scene.frame(t), list(tracks.values()), header=head, camera_alerts=camera_alerts,
            truth=scene.truth(t) if truth else None, copy=False,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / snapshot_name(alert)
        if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)]):
            raise RuntimeError(f"could not write {path}")
        written.append(path)
    if skipped:
        logger.info("alert snapshots: %d alert(s) skipped (camera without a re-renderable scene)", skipped)
    logger.info("alert snapshots: %d written to %s", len(written), out_dir)
    return written
