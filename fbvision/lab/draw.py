"""Drawing a frame's tracks and active alerts (supervision annotators), and the recorded frames they come from."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pandas as pd
import supervision as sv

from fbvision.core.logic_config import TRACK_RULES
from fbvision.synth import HorseTruth

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


