"""Horse rules: each a pure function of features (or a window of them) and its parameters -> raw score.

A score is in [0, 1] (1: the condition holds in this frame) or ``None`` when the rule cannot say (the
track is not seen); smoothing treats ``None`` as 0. What turns scores into alerts (smoothing, duration,
severity, resolve) is :mod:`fbvision.logic.smoothing`, configured per rule in :mod:`fbvision.core.logic_config`.
See ``docs/rules.md`` for the reasoning behind each rule and default.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from fbvision.core.logic_config import CameraOfflineRule, RollingRule, TooFastRule
from fbvision.logic.features import TrackFeatures

logger = logging.getLogger(__name__)


def horse_down(features: TrackFeatures) -> float | None:
    """1.0 while the track's posture is lying, 0.0 standing, None when not seen."""
    if not features.present:
        return None
    return 1.0 if features.lying else 0.0


def too_fast(features: TrackFeatures, params: TooFastRule) -> float | None:
    """1.0 while the centroid moves at ``>= speed_bl_s`` body lengths per second."""
    if not features.present or not math.isfinite(features.speed_bl_s):
        return None
    return 1.0 if features.speed_bl_s >= params.speed_bl_s else 0.0


@dataclass(frozen=True)
class PostureEvents:
    """Debounced posture events within a window: lie-downs (after a real stand) and flips (short rises)."""

    downs: int
    flips: int

    @property
    def total(self) -> int:
        return self.downs + self.flips


def posture_events(times: np.ndarray, lying: np.ndarray, t: float, params: RollingRule) -> PostureEvents:
    """Count lie-downs and lateral flips in the samples (capture times, lying flags) of one track.

    Runs of equal posture are measured from their first sample to the next run's first sample (the last
    run to ``t``). A lying run shorter than ``min_posture_s`` is noise. A non-lying interruption of a lying
    spell lasting ``flip_min_s..flip_max_s`` is a flip (legs up while rolling: the box briefly grows); a
    longer one that lasts ``min_posture_s`` is standing, and the next lying spell is a new lie-down. The
    first spell in the window is context only (what preceded it is unknown).
    """
    times = np.asarray(times, dtype=float)
    lying = np.asarray(lying, dtype=bool)
    if times.size == 0:
        return PostureEvents(0, 0)
    starts = np.concatenate(([0], np.flatnonzero(lying[1:] != lying[:-1]) + 1))
    start_times = times[starts]
    end_times = np.append(start_times[1:], max(t, float(times[-1])))
    durations = end_times - start_times
    last = len(starts) - 1

    state: str | None = None  # debounced posture: "lying" | "standing"
    pending_flip = False
    downs = flips = 0
    for i, (run_lying, duration) in enumerate(zip(lying[starts], durations, strict=True)):
        if run_lying:
            if duration < params.min_posture_s:
                continue
            if state == "standing":
                downs += 1
            elif state == "lying" and pending_flip:
                flips += 1
            state, pending_flip = "lying", False
        elif state == "lying" and params.flip_min_s <= duration <= params.flip_max_s and i < last:
            pending_flip = True
        elif duration > params.flip_max_s and duration >= params.min_posture_s:
            state, pending_flip = "standing", False
        elif state is None and duration >= params.min_posture_s:
            state = "standing"
    return PostureEvents(downs, flips)


def rolling(events: PostureEvents, params: RollingRule) -> float:
    """1.0 when the window holds ``min_downs`` lie-downs, or ``min_events`` lie-downs + flips."""
    return 1.0 if events.downs >= params.min_downs or events.total >= params.min_events else 0.0


def horse_absent(present_tracks: int) -> float:
    """1.0 when no confirmed horse track is in view in this frame."""
    return 1.0 if present_tracks == 0 else 0.0


def camera_offline(
    t: float, last_frame_t: float | None, camera_online: bool | None, params: CameraOfflineRule
) -> float:
    """1.0 when the camera manager says the camera is offline, or no frame came for ``stale_after_s``."""
    if camera_online is False:
        return 1.0
    if last_frame_t is None:
        return 0.0 if camera_online else 1.0
    return 1.0 if t - last_frame_t >= params.stale_after_s else 0.0
