"""Annotated frames of a run: boxes, track ids, posture and speed, the active alert rule; preview MP4 and
one JPEG snapshot per raised alert.

The pipeline keeps no frames (they are letterboxed JPEGs in Redis and gone once inferred), so for
**synthetic cameras** the frame a result came from is rendered again: the scene is deterministic per frame
index, and the producer publishes the wall time of scene frame 0 in each camera's status (``scene_t0``), so

    scene index = floor((capture_t - scene_t0) * scene_fps)      (modulo the scene length when it loops)

which is what :class:`fbvision.sources.SyntheticCapture` rendered (at most one scene frame off, when a
capture lands within a millisecond of a frame boundary). ``scene_t0`` changes when a source reconnects (a
new capture starts the scene again), and the status published when a source closes has none: read it
while the camera runs (``Transport.camera_statuses()``) and keep the last value.

What is drawn comes from the logic worker's recording (:func:`fbvision.recorder.read_recording`: one row
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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import supervision as sv

from fbvision.logic_config import TRACK_RULES
from fbvision.synth import HorseTruth, Scenario, SceneRenderer

logger = logging.getLogger(__name__)

#: Alert states after which an episode counts as active at a frame.
ACTIVE_STATES = ("raised", "ongoing")
PREVIEW_DIR = "previews"
SNAPSHOT_DIR = "snapshots"
ALERT_COLOR = sv.Color.RED
TRUTH_COLOR = sv.Color.WHITE
#: Track colours (by track id), none of them red: red means an active alert.
TRACK_PALETTE = sv.ColorPalette.from_hex(["#00C2FF", "#7CFC00", "#FFD400", "#B266FF", "#00E5A0", "#4F7BFF"])


# -- what is drawn -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackView:
    """One track in one frame, as drawn. ``alerts``: active rule -> severity."""

    track_id: int
    box: tuple[float, float, float, float]
    present: bool = True
    lying: bool = False
    speed_bl_s: float = math.nan
    confidence: float = math.nan
    alerts: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedFrame:
    """One processed frame of one camera, from the recording, with the alerts active at it."""

    camera_id: str
    seq: int
    t: float
    tracks: tuple[TrackView, ...]
    camera_alerts: Mapping[str, str]  # active camera-level rule -> severity
    events: tuple[str, ...]  # this frame's events, "rule:state:severity"


def _finite(value: Any) -> bool:
    try:
        return value is not None and not pd.isna(value) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _flag(value: Any) -> bool:
    return False if value is None or pd.isna(value) else bool(value)


def _num(value: Any) -> float:
    return float(value) if _finite(value) else math.nan


def _parse_events(text: Any) -> list[tuple[str, str, str]]:
    if not isinstance(text, str) or not text:
        return []
    out = []
    for token in text.split(";"):
        parts = token.split(":")
        if len(parts) == 3 and all(parts):
            out.append((parts[0], parts[1], parts[2]))
    return out


def recorded_frames(recording: pd.DataFrame, camera_id: str) -> list[RecordedFrame]:
    """The camera's frames in capture order, each with its tracks and the alerts active at it.

    Replayed results (the same ``camera_id, seq, track_id`` twice after a worker restart) count once.
    Track rules (``horse_down``, ``rolling``, ``too_fast``) belong to the row's track, other rules to the
    camera; an episode is active from its ``raised`` event until its ``resolved`` event.
    """
    if recording is None or len(recording) == 0 or "camera_id" not in recording:
        return []
    rows = recording[recording["camera_id"] == camera_id]
    if rows.empty:
        return []
    rows = rows.drop_duplicates(subset=[c for c in ("camera_id", "seq", "track_id") if c in rows], keep="first")
    rows = rows.sort_values(["t", "seq"], kind="stable")
    active: dict[tuple[int | None, str], str] = {}
    frames: list[RecordedFrame] = []
    for (seq, t), group in rows.groupby(["seq", "t"], sort=False):
        events: list[str] = []
        for rec in group.itertuples(index=False):
            track = getattr(rec, "track_id", None)
            track = None if track is None or pd.isna(track) else int(track)
            for rule, state, severity in _parse_events(getattr(rec, "alerts", "")):
                events.append(f"{rule}:{state}:{severity}")
                key = (track if rule in TRACK_RULES else None, rule)
                if state in ACTIVE_STATES:
                    active[key] = severity
                elif key in active:
                    del active[key]
                else:  # a track rule whose event landed on a track-less row: end whatever holds that rule
                    for other in [k for k in active if k[1] == rule and (k[0] is None or key[0] is None)]:
                        del active[other]
        tracks = []
        for rec in group.itertuples(index=False):
            track = getattr(rec, "track_id", None)
            if track is None or pd.isna(track):
                continue
            box = tuple(_num(getattr(rec, name, math.nan)) for name in ("x1", "y1", "x2", "y2"))
            if not all(math.isfinite(v) for v in box):
                continue
            tid = int(track)
            tracks.append(
                TrackView(
                    track_id=tid,
                    box=box,  # type: ignore[arg-type]
                    present=_flag(getattr(rec, "present", True)),
                    lying=_flag(getattr(rec, "lying", False)),
                    speed_bl_s=_num(getattr(rec, "speed_bl_s", math.nan)),
                    confidence=_num(getattr(rec, "confidence", math.nan)),
                    alerts={rule: sev for (k, rule), sev in active.items() if k == tid},
                )
            )
        camera_alerts = {rule: sev for (k, rule), sev in active.items() if k is None}
        frames.append(RecordedFrame(camera_id, int(seq), float(t), tuple(tracks), camera_alerts, tuple(events)))
    return frames


def track_label(track: TrackView) -> str:
    """``#3 lying 0.1 BL/s`` plus one line per active alert (``horse_down warning``)."""
    if not track.present:
        head = f"#{track.track_id} lost"
    else:
        head = f"#{track.track_id} {'lying' if track.lying else 'standing'}"
        if math.isfinite(track.speed_bl_s):
            head += f" {track.speed_bl_s:.1f} BL/s"
    lines = [head] + [f"{rule} {severity}" for rule, severity in sorted(track.alerts.items())]
    return "\n".join(lines)


def _detections(tracks: Sequence[TrackView]) -> sv.Detections:
    if not tracks:
        return sv.Detections.empty()
    conf = np.array([t.confidence if math.isfinite(t.confidence) else 0.0 for t in tracks], dtype=np.float32)
    return sv.Detections(
        xyxy=np.array([t.box for t in tracks], dtype=np.float32).reshape(-1, 4),
        confidence=conf,
        class_id=np.zeros(len(tracks), dtype=int),
        tracker_id=np.array([t.track_id for t in tracks], dtype=int),
    )


class FrameAnnotator:
    """Draws :class:`TrackView` boxes and labels, an optional header band and optional ground-truth boxes.

    Tracks with an active alert: thick red box, red label. ``show_lost``: also draw tracks not detected in
    this frame (their last known box). All drawing is on a copy unless ``copy=False``.
    """

    def __init__(self, *, thickness: int = 2, text_scale: float = 0.5, show_lost: bool = False):
        self.show_lost = show_lost
        self.text_scale = text_scale
        lookup = sv.ColorLookup.TRACK
        padding = max(2, int(round(8 * text_scale)))
        self.box = sv.BoxAnnotator(color=TRACK_PALETTE, thickness=thickness, color_lookup=lookup)
        self.alert_box = sv.BoxAnnotator(color=ALERT_COLOR, thickness=thickness + 2, color_lookup=lookup)
        self.label = sv.LabelAnnotator(
            color=TRACK_PALETTE, text_color=sv.Color.BLACK, color_lookup=lookup, text_scale=text_scale,
            text_padding=padding,
        )
        self.alert_label = sv.LabelAnnotator(
            color=ALERT_COLOR, color_lookup=lookup, text_scale=text_scale, text_padding=padding
        )
        self.truth_box = sv.BoxAnnotator(color=TRUTH_COLOR, thickness=1, color_lookup=sv.ColorLookup.INDEX)
        self.truth_label = sv.LabelAnnotator(
            color=TRUTH_COLOR, text_color=sv.Color.BLACK, color_lookup=sv.ColorLookup.INDEX,
            text_scale=text_scale * 0.8, text_padding=2, text_position=sv.Position.BOTTOM_LEFT,
        )

    def annotate(
        self,
        frame: np.ndarray,
        tracks: Sequence[TrackView],
        *,
        labels: bool = True,
        header: str | None = None,
        camera_alerts: Mapping[str, str] | None = None,
        truth: Sequence[HorseTruth] | None = None,
        copy: bool = True,
    ) -> np.ndarray:
        scene = frame.copy() if copy else frame
        if truth:
            seen = [h for h in truth if h.visible and all(math.isfinite(v) for v in h.box)]
            if seen:
                det = sv.Detections(xyxy=np.array([h.box for h in seen], dtype=np.float32).reshape(-1, 4),
                                    class_id=np.zeros(len(seen), dtype=int))
                scene = self.truth_box.annotate(scene, det)
                if labels:
                    scene = self.truth_label.annotate(scene, det, labels=[f"truth: {h.behaviour}" for h in seen])
        drawn = [t for t in tracks if t.present or self.show_lost]
        calm = [t for t in drawn if not t.alerts]
        alarmed = [t for t in drawn if t.alerts]
        for group, box, label in ((calm, self.box, self.label), (alarmed, self.alert_box, self.alert_label)):
            if not group:
                continue
            det = _detections(group)
            scene = box.annotate(scene, det)
            if labels:
                scene = label.annotate(scene, det, labels=[track_label(t) for t in group])
        if header is not None or camera_alerts:
            self._header(scene, header or "", camera_alerts or {})
        return scene

    def _header(self, scene: np.ndarray, text: str, camera_alerts: Mapping[str, str]) -> None:
        font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, self.text_scale, 1
        lines = [(text, (255, 255, 255))] if text else []
        lines += [(f"ALERT {rule} {sev}", ALERT_COLOR.as_bgr()) for rule, sev in sorted(camera_alerts.items())]
        if not lines:
            return
        (_, h), base = cv2.getTextSize("Ag", font, scale, thick)
        step = h + base + 4
        width = max(cv2.getTextSize(s, font, scale, thick)[0][0] for s, _ in lines) + 12
        band = scene[: step * len(lines) + 4, : min(width, scene.shape[1])]
        band[:] = (band * 0.35).astype(scene.dtype)  # darken, so the text reads on any background
        for k, (line, colour) in enumerate(lines):
            cv2.putText(scene, line, (6, 2 + h + k * step), font, scale, colour, thick, cv2.LINE_AA)


_DEFAULT = None


def _default_annotator() -> FrameAnnotator:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = FrameAnnotator()
    return _DEFAULT


def annotate_frame(
    frame: np.ndarray,
    tracks: Sequence[TrackView] | RecordedFrame,
    *,
    labels: bool = True,
    header: str | None = None,
    camera_alerts: Mapping[str, str] | None = None,
    truth: Sequence[HorseTruth] | None = None,
    annotator: FrameAnnotator | None = None,
) -> np.ndarray:
    """A copy of the BGR ``frame`` with the tracks drawn (a :class:`RecordedFrame` brings its camera alerts)."""
    if isinstance(tracks, RecordedFrame):
        camera_alerts = tracks.camera_alerts if camera_alerts is None else camera_alerts
        tracks = tracks.tracks
    return (annotator or _default_annotator()).annotate(
        frame, tracks, labels=labels, header=header, camera_alerts=camera_alerts, truth=truth
    )


# -- synthetic scenes on the run's clock -------------------------------------------------------------------------


class SyntheticScene:
    """A synthetic camera's scene on the run's wall clock: the frame and truth at a capture time."""

    def __init__(self, scene: Scenario | SceneRenderer | str, scene_t0: float, *, loop: bool = True):
        if isinstance(scene, str):
            from fbvision.sources import load_scenario

            scene = load_scenario(scene.split(":", 1)[1] if scene.startswith("synthetic:") else scene)
        self.renderer = scene if isinstance(scene, SceneRenderer) else SceneRenderer(scene)
        self.scene_t0 = float(scene_t0)
        self.loop = loop

    @property
    def name(self) -> str:
        return self.renderer.scenario.name

    def index(self, t: float) -> int:
        """Scene frame index the producer rendered for capture time ``t`` (clamped when not looping)."""
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
    from fbvision.sources import load_scenario

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


def write_preview_mp4(frames: Iterable[np.ndarray], path: str | Path, fps: float = 5.0) -> Path:
    """Write BGR frames as an MP4 (``mp4v``); frames of another size are resized to the first one's.

    Raises ValueError when ``frames`` is empty, RuntimeError when OpenCV cannot open the writer.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    size = None
    count = 0
    try:
        for frame in frames:
            if writer is None:
                size = (frame.shape[1], frame.shape[0])
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
                if not writer.isOpened():
                    raise RuntimeError(f"OpenCV cannot write {path} with codec mp4v")
            if (frame.shape[1], frame.shape[0]) != size:
                frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            if frame.ndim == 2:
                frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
            writer.write(np.ascontiguousarray(frame, dtype=np.uint8))
            count += 1
    finally:
        if writer is not None:
            writer.release()
    if count == 0:
        raise ValueError("no frames to write")
    logger.info("preview: %d frames at %.1f fps -> %s", count, fps, path)
    return path


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
    """``<camera>_<rule>_<track|cam>_<state>_<severity>_<seq|ms>_<key8>.jpg``: unique per event."""
    evidence = alert.get("evidence") or {}
    track = alert.get("track_id")
    when = evidence.get("seq")
    if when is None:
        when = int(round(float(alert.get("updated_at") or 0) * 1000))
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
