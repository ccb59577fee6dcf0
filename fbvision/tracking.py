"""Per-camera tracking: ByteTrack (the ``trackers`` package) plus re-linking, so each horse keeps one id.

ByteTrack (moved out of ``supervision`` into Roboflow's ``trackers`` package) gets each frame's capture
time, so its Kalman steps and lost-track budget follow real time at any frame rate. On top of it, a horse
whose track was lost (lying still in straw, occluded by a person) and re-detected under a new ByteTrack id
within ``relink_s`` where it was last seen (IoU >= ``relink_iou``) takes back its old *stable* id, so its
standing baseline and open alert episodes carry on. The same mechanism resumes ids after a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import supervision as sv

from fbvision.logic_config import TrackerConfig
from fbvision.postprocess import Candidates

logger = logging.getLogger(__name__)

try:
    from trackers import ByteTrackTracker
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "fbvision.tracking needs the 'trackers' package (ByteTrack left supervision in 0.27): pip install trackers"
    ) from exc

# ByteTrack counts its lost-track buffer in 30 fps frames; with timestamps that is buffer / 30 seconds.
_BYTETRACK_REFERENCE_FPS = 30.0


def candidates_to_detections(candidates: Candidates) -> sv.Detections:
    return sv.Detections(
        xyxy=candidates.xyxy.astype(np.float32, copy=False),
        confidence=candidates.scores,
        class_id=candidates.class_ids,
    )


@dataclass
class _LostTrack:
    box: np.ndarray  # xyxy
    lost_at: float | None  # None: restored after a restart, lost "since the first frame"


class CameraTracker:
    """One camera's tracker: ``update(candidates, t)`` -> confirmed detections with stable ``tracker_id``."""

    def __init__(self, config: TrackerConfig, camera_id: str = "", next_track_id: int = 1) -> None:
        self.config = config
        self.camera_id = camera_id
        self._bytetrack = ByteTrackTracker(
            lost_track_buffer=round(config.lost_track_s * _BYTETRACK_REFERENCE_FPS),
            frame_rate=config.frame_rate,
            track_activation_threshold=config.track_activation_threshold,
            minimum_consecutive_frames=config.min_consecutive_frames,
            minimum_iou_threshold=config.match_iou,
            high_conf_det_threshold=config.high_conf_threshold,
        )
        self._stable_of_raw: dict[int, int] = {}
        self._last_box: dict[int, np.ndarray] = {}
        self._lost: dict[int, _LostTrack] = {}
        self._first_t: float | None = None
        self.next_track_id = next_track_id

    def seed_lost(self, track_id: int, box: Iterable[float]) -> None:
        """A track known before a restart: a new track where it was is given its id (within ``relink_s``)."""
        self._lost[track_id] = _LostTrack(np.asarray(list(box), dtype=np.float32), None)
        self.next_track_id = max(self.next_track_id, track_id + 1)

    def update(self, candidates: Candidates, t: float) -> sv.Detections:
        if self._first_t is None:
            self._first_t = t
        tracked = self._bytetrack.update(candidates_to_detections(candidates), timestamp=t)
        if tracked.tracker_id is None or len(tracked) == 0:
            confirmed = sv.Detections.empty()
            confirmed.tracker_id = np.zeros(0, dtype=int)
        else:
            confirmed = tracked[tracked.tracker_id >= 0]
        stable = np.array(
            [self._stable_id(int(raw), confirmed.xyxy[i], t) for i, raw in enumerate(confirmed.tracker_id)],
            dtype=int,
        )
        present = set(stable.tolist())
        for track_id in list(self._last_box):
            if track_id not in present:
                self._lost[track_id] = _LostTrack(self._last_box.pop(track_id), t)
        for i, track_id in enumerate(stable):
            self._last_box[int(track_id)] = confirmed.xyxy[i].copy()
            self._lost.pop(int(track_id), None)
        self._expire(t)
        confirmed.tracker_id = stable
        return confirmed

    def _stable_id(self, raw_id: int, box: np.ndarray, t: float) -> int:
        stable = self._stable_of_raw.get(raw_id)
        if stable is not None:
            return stable
        stable = self._relink(box, t)
        if stable is None:
            stable = self.next_track_id
            self.next_track_id += 1
        else:
            logger.info("camera %s: track %d re-linked (ByteTrack id %d)", self.camera_id, stable, raw_id)
        self._stable_of_raw[raw_id] = stable
        return stable

    def _relink(self, box: np.ndarray, t: float) -> int | None:
        candidates = [(tid, lost) for tid, lost in self._lost.items() if self._within_relink(lost, t)]
        if not candidates:
            return None
        ious = sv.box_iou_batch(box[None, :], np.stack([lost.box for _, lost in candidates]))[0]
        best = int(np.argmax(ious))
        if ious[best] < self.config.relink_iou:
            return None
        track_id = candidates[best][0]
        del self._lost[track_id]
        # The old ByteTrack id may still linger as 'lost' there; it must not map to this horse twice.
        for raw_id in [r for r, s in self._stable_of_raw.items() if s == track_id]:
            del self._stable_of_raw[raw_id]
        return track_id

    def _within_relink(self, lost: _LostTrack, t: float) -> bool:
        since = lost.lost_at if lost.lost_at is not None else self._first_t
        return since is not None and t - since <= self.config.relink_s

    def _expire(self, t: float) -> None:
        for track_id in [tid for tid, lost in self._lost.items() if not self._within_relink(lost, t)]:
            del self._lost[track_id]
        alive_raw = {int(tr.tracker_id) for tr in self._bytetrack.tracks if tr.tracker_id >= 0}
        for raw_id in [r for r in self._stable_of_raw if r not in alive_raw]:
            del self._stable_of_raw[raw_id]

    def last_box(self, track_id: int) -> np.ndarray | None:
        box = self._last_box.get(track_id)
        if box is None and track_id in self._lost:
            box = self._lost[track_id].box
        return box

    def reset(self) -> None:
        self._bytetrack.reset()
        self._stable_of_raw.clear()
        self._last_box.clear()
        self._lost.clear()
        self._first_t = None
