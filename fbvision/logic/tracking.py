"""Per-camera tracking: ByteTrack (the ``trackers`` package) plus re-linking, so each horse keeps one id.

ByteTrack (moved out of ``supervision`` into Roboflow's ``trackers`` package) gets each frame's capture
time, so its Kalman steps and lost-track budget follow real time at any frame rate.

Association. Plain IoU is not enough at 5 fps: a cantering horse moves ~0.6 body lengths per frame (IoU of
consecutive boxes ~0.25) and, where it turns at a wall, the constant-velocity Kalman prediction overshoots
by a body length or more (IoU 0), so ByteTrack dropped the track and started a new one every ~2 s. ByteTrack
is therefore given :class:`BodyProximity` as its similarity (the library's ``iou=`` hook): the IoU, or when
higher a score falling linearly with the centre distance in body lengths (from 0.5 to ``match_iou`` at the
gate). The gate is ``match_distance_bl`` plus twice the fastest horse's recent speed times the frame gap
(what a reversal at a wall costs the prediction), so it is wide for a cantering horse at any frame rate and
stays narrow while the horses stand. ByteTrack's Hungarian assignment still gives each box to its best track.

Re-linking. A horse whose track was lost anyway (lying still in straw, occluded by a person, missed for a
few frames) and re-detected under a new ByteTrack id within ``relink_s`` takes back its old *stable* id when
the new box overlaps the lost one (IoU >= ``relink_iou``) or its centre is close enough in body lengths
(``relink_distance_bl``, growing by ``relink_speed_bl_s`` per second lost up to ``relink_max_distance_bl``):
so its standing baseline, speed history and open alert episodes carry on (features are keyed by the stable
id). A new track first detected while the lost horse was still seen is another horse and never takes its
id; new tracks of one frame are matched to lost ones jointly (Hungarian), so two horses hidden together get
their own ids back. The same mechanism resumes ids after a restart.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import supervision as sv
from scipy.optimize import linear_sum_assignment

from fbvision.core.candidates import Candidates
from fbvision.core.logic_config import TrackerConfig

logger = logging.getLogger(__name__)

try:
    from trackers import ByteTrackTracker
    from trackers.utils.iou import BaseIoU
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "fbvision.logic.tracking needs the 'trackers' package (ByteTrack left supervision in 0.27): pip install trackers"
    ) from exc

# ByteTrack counts its lost-track buffer in 30 fps frames; with timestamps that is buffer / 30 seconds.
_BYTETRACK_REFERENCE_FPS = 30.0
# A lost horse's speed: centre displacement over about the last second it was seen, in body lengths/s.
_SPEED_WINDOW_S = 1.0
# Where a horse reverses at a wall it ends up this many times (speed x frame gap) from the prediction.
_SPEED_MARGIN = 2.0


def candidates_to_detections(candidates: Candidates) -> sv.Detections:
    return sv.Detections(
        xyxy=candidates.xyxy.astype(np.float32, copy=False),
        confidence=candidates.scores,
        class_id=candidates.class_ids,
    )


def _centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, :2] + boxes[:, 2:]) / 2.0


def _max_sides(boxes: np.ndarray) -> np.ndarray:
    return np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def centre_distance_bl(boxes_1: np.ndarray, boxes_2: np.ndarray) -> np.ndarray:
    """Pairwise centre distance in body lengths: / the larger max side of the pair (N x M)."""
    boxes_1 = np.asarray(boxes_1, dtype=np.float64).reshape(-1, 4)
    boxes_2 = np.asarray(boxes_2, dtype=np.float64).reshape(-1, 4)
    d = np.linalg.norm(_centres(boxes_1)[:, None, :] - _centres(boxes_2)[None, :, :], axis=2)
    body = np.maximum(_max_sides(boxes_1)[:, None], _max_sides(boxes_2)[None, :])
    return d / np.maximum(body, 1e-6)


class BodyProximity(BaseIoU):
    """ByteTrack similarity: the IoU, or when higher a *nearness* score of the centre distance.

    ``d`` is the centre distance in body lengths (:func:`centre_distance_bl`). The nearness score falls
    linearly from :attr:`NEAR_MAX` at ``d == 0`` to ``floor`` (ByteTrack's ``minimum_iou_threshold``) at
    ``d == distance_bl`` and is 0 beyond, so a box matches a track whose predicted box overlaps it or whose
    centre is within ``distance_bl`` body lengths; and a good overlap (IoU above ``NEAR_MAX``) always beats
    mere nearness, which matters when a horse walks over another one lying (same centre, other shape).
    ``distance_bl == 0``: plain IoU.
    """

    NEAR_MAX = 0.5

    def __init__(self, distance_bl: float, floor: float) -> None:
        if distance_bl < 0 or not 0 <= floor <= 1:
            raise ValueError(f"need distance_bl >= 0 and 0 <= floor <= 1, got {distance_bl}, {floor}")
        self.distance_bl = distance_bl
        self.floor = floor

    def _compute(self, boxes_1: np.ndarray, boxes_2: np.ndarray) -> np.ndarray:
        iou = sv.box_iou_batch(boxes_1, boxes_2).astype(np.float64)
        if self.distance_bl <= 0:
            return iou
        closeness = 1.0 - centre_distance_bl(boxes_1, boxes_2) / self.distance_bl
        top = max(self.NEAR_MAX, self.floor)
        near = np.where(closeness >= 0.0, self.floor + (top - self.floor) * closeness, 0.0)
        return np.maximum(iou, near)


@dataclass
class _LostTrack:
    box: np.ndarray  # xyxy
    lost_at: float | None  # None: restored after a restart, lost "since the first frame"
    speed_bl_s: float = 0.0  # how fast it moved just before it was lost


class CameraTracker:
    """One camera's tracker: ``update(candidates, t)`` -> confirmed detections with stable ``tracker_id``."""

    def __init__(self, config: TrackerConfig, camera_id: str = "", next_track_id: int = 1) -> None:
        self.config = config
        self.camera_id = camera_id
        self._similarity = BodyProximity(config.match_distance_bl, config.match_iou)
        self._bytetrack = ByteTrackTracker(
            lost_track_buffer=round(config.lost_track_s * _BYTETRACK_REFERENCE_FPS),
            frame_rate=config.frame_rate,
            track_activation_threshold=config.track_activation_threshold,
            minimum_consecutive_frames=config.min_consecutive_frames,
            minimum_iou_threshold=config.match_iou,
            high_conf_det_threshold=config.high_conf_threshold,
            iou=self._similarity,
        )
        self._last_t: float | None = None  # the latest frame time seen
        self._stable_of_raw: dict[int, int] = {}
        self._last_box: dict[int, np.ndarray] = {}
        self._recent: dict[int, deque[tuple[float, float, float, float]]] = {}  # t, cx, cy, body
        self._lost: dict[int, _LostTrack] = {}
        self._spawned: dict[int, tuple[Any, float]] = {}  # id(ByteTrack tracklet) -> (it, first seen)
        self._first_t: float | None = None
        self.next_track_id = next_track_id
        self.relinks = 0  # how many times a new ByteTrack track took back a lost stable id

    def seed_lost(self, track_id: int, box: Iterable[float]) -> None:
        """A track known before a restart: a new track where it was is given its id (within ``relink_s``)."""
        self._lost[track_id] = _LostTrack(np.asarray(list(box), dtype=np.float32), None)
        self.next_track_id = max(self.next_track_id, track_id + 1)

    def update(self, candidates: Candidates, t: float) -> sv.Detections:
        if self._first_t is None:
            self._first_t = t
        self._similarity.distance_bl = self._match_gate_bl(t)
        if self._last_t is None or t > self._last_t:
            self._last_t = t
        tracked = self._bytetrack.update(candidates_to_detections(candidates), timestamp=t)
        self._note_spawns(t)
        if tracked.tracker_id is None or len(tracked) == 0:
            confirmed = sv.Detections.empty()
            confirmed.tracker_id = np.zeros(0, dtype=int)
        else:
            confirmed = tracked[tracked.tracker_id >= 0]
        raw_ids = [int(raw) for raw in confirmed.tracker_id]
        new = [i for i, raw in enumerate(raw_ids) if raw not in self._stable_of_raw]
        if new:
            claimed = {self._stable_of_raw[raw] for raw in raw_ids if raw in self._stable_of_raw}
            self._assign_new([raw_ids[i] for i in new], confirmed.xyxy[new], t, claimed)
        stable = np.array([self._stable_of_raw[raw] for raw in raw_ids], dtype=int)
        present = set(stable.tolist())
        for track_id in list(self._last_box):
            if track_id not in present:
                speed = self._speed_bl_s(self._recent.pop(track_id, ()))
                self._lost[track_id] = _LostTrack(self._last_box.pop(track_id), t, speed)
        for i, track_id in enumerate(stable):
            box = confirmed.xyxy[i].copy()
            self._last_box[int(track_id)] = box
            self._lost.pop(int(track_id), None)
            recent = self._recent.setdefault(int(track_id), deque())
            recent.append((t, *((box[:2] + box[2:]) / 2.0).tolist(), float(_max_sides(box[None])[0])))
            while len(recent) > 2 and t - recent[1][0] >= _SPEED_WINDOW_S:
                recent.popleft()
        self._expire(t)
        confirmed.tracker_id = stable
        return confirmed

    def _note_spawns(self, t: float) -> None:
        """Remember when each ByteTrack track was started (its first detection), forget the dead ones."""
        alive = {id(tr): tr for tr in self._bytetrack.tracks}
        for key in [k for k in self._spawned if k not in alive]:
            del self._spawned[key]
        for key, tr in alive.items():
            self._spawned.setdefault(key, (tr, t))

    def _spawn_time(self, raw_id: int, t: float) -> float:
        for tr, first in self._spawned.values():
            if int(tr.tracker_id) == raw_id:
                return first
        return t

    @staticmethod
    def _speed_bl_s(recent: Iterable[tuple[float, float, float, float]]) -> float:
        samples = list(recent)
        if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
            return 0.0
        (t0, x0, y0, _), (t1, x1, y1, body) = samples[0], samples[-1]
        return math.hypot(x1 - x0, y1 - y0) / (t1 - t0) / max(body, 1e-6)

    def _fastest_bl_s(self, t: float) -> float:
        """The fastest recent horse (body lengths/s over its last second seen): present, or lost < 2 s ago."""
        speeds = [self._speed_bl_s(recent) for recent in self._recent.values()]
        speeds += [
            lost.speed_bl_s
            for lost in self._lost.values()
            if lost.lost_at is not None and t - lost.lost_at <= 2 * _SPEED_WINDOW_S
        ]
        return max(speeds, default=0.0)

    def _match_gate_bl(self, t: float) -> float:
        """ByteTrack's centre-distance gate for this frame: ``match_distance_bl`` plus how far the fastest horse
        can stray from its constant-velocity prediction since the last frame (a reversal: twice its speed x
        the gap), at most ``relink_max_distance_bl``."""
        cfg = self.config
        if cfg.match_distance_bl <= 0:
            return 0.0
        gap = 1.0 / cfg.frame_rate if self._last_t is None else max(0.0, t - self._last_t)
        gate = cfg.match_distance_bl + _SPEED_MARGIN * self._fastest_bl_s(t) * gap
        return min(gate, max(cfg.match_distance_bl, cfg.relink_max_distance_bl))

    def _assign_new(self, raw_ids: list[int], boxes: np.ndarray, t: float, claimed: set[int]) -> None:
        """Stable ids for ByteTrack tracks confirmed in this frame: a lost horse's id, or a fresh one."""
        spawned = np.array([self._spawn_time(raw, t) for raw in raw_ids])
        linked = self._relink(boxes, spawned, t, claimed)
        for k, raw_id in enumerate(raw_ids):
            stable = linked.get(k)
            if stable is None:
                stable = self.next_track_id
                self.next_track_id += 1
            else:
                self.relinks += 1
                logger.info("camera %s: track %d re-linked (ByteTrack id %d)", self.camera_id, stable, raw_id)
                self._forget_raw_of(stable, keep=raw_id)
            self._stable_of_raw[raw_id] = stable

    def _relink_gate_bl(self, lost: _LostTrack, t: float) -> float:
        """How far (body lengths) a new track may be from where a horse was lost ``t - lost_at`` ago: further
        the longer it was unseen and the faster it was moving then (a horse lost standing is looked for where
        it stood, one lost cantering further round)."""
        cfg = self.config
        since = lost.lost_at if lost.lost_at is not None else self._first_t
        lost_for = 0.0 if since is None else max(0.0, t - since)
        grown = cfg.relink_distance_bl + cfg.relink_speed_bl_s * lost_for
        return max(cfg.relink_distance_bl, min(grown, cfg.relink_max_distance_bl))

    def _relink(self, boxes: np.ndarray, spawned: np.ndarray, t: float, claimed: set[int]) -> dict[int, int]:
        """Index of a new box -> the lost stable id it takes back (joint assignment, nearest first).

        A new track first detected while the lost horse was still being seen is another horse: never linked.
        """
        candidates = [
            (tid, lost)
            for tid, lost in self._lost.items()
            if tid not in claimed and self._within_relink(lost, t)
        ]
        if not candidates or len(boxes) == 0:
            return {}
        lost_boxes = np.stack([lost.box for _, lost in candidates]).astype(np.float64)
        new_boxes = np.asarray(boxes, dtype=np.float64)
        ious = sv.box_iou_batch(new_boxes, lost_boxes)
        dist = centre_distance_bl(new_boxes, lost_boxes)
        gates = np.array([self._relink_gate_bl(lost, t) for _, lost in candidates])
        lost_at = np.array([-math.inf if lost.lost_at is None else lost.lost_at for _, lost in candidates])
        allowed = (ious >= self.config.relink_iou) | (dist <= gates[None, :])
        allowed &= np.asarray(spawned)[:, None] >= lost_at[None, :]
        if not allowed.any():
            return {}
        cost = np.where(allowed, dist - ious, 1e6)
        out: dict[int, int] = {}
        for row, col in zip(*linear_sum_assignment(cost), strict=True):
            if allowed[row, col]:
                track_id = candidates[col][0]
                out[int(row)] = track_id
                del self._lost[track_id]
        return out

    def _forget_raw_of(self, stable: int, keep: int) -> None:
        """The horse's old ByteTrack track may linger as 'lost' there; it must not come back as a 2nd id."""
        stale = {raw for raw, s in self._stable_of_raw.items() if s == stable and raw != keep}
        for raw_id in stale:
            del self._stable_of_raw[raw_id]
        if stale:
            self._bytetrack.tracks = [tr for tr in self._bytetrack.tracks if int(tr.tracker_id) not in stale]

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
        self._recent.clear()
        self._spawned.clear()
        self._first_t = None
        self._last_t = None
