"""Synthetic stall scenes with per-frame ground truth: horses standing, walking, running, lying and rolling.

Pure numpy/OpenCV/pandas (no torch): the camera manager renders it live, tests and the demo model's training use
the same code. See docs/model.md for the scenario format and the motion semantics.
"""

from fbvision.synth.renderer import (
    EVENT_COLUMNS,
    TRUTH_COLUMNS,
    HorseTruth,
    SceneRenderer,
    events,
    ground_truth,
)
from fbvision.synth.scenario import (
    BEHAVIOURS,
    CameraSettings,
    HorseScript,
    Scenario,
    Segment,
    builtin_scenarios,
)
from fbvision.synth.video import write_frames, write_mp4, write_video

__all__ = [
    "BEHAVIOURS",
    "EVENT_COLUMNS",
    "TRUTH_COLUMNS",
    "CameraSettings",
    "HorseScript",
    "HorseTruth",
    "Scenario",
    "SceneRenderer",
    "Segment",
    "builtin_scenarios",
    "events",
    "ground_truth",
    "write_frames",
    "write_mp4",
    "write_video",
]
