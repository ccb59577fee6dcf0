"""Rule functions as tables: scripted features/posture sequences -> raw scores and counted events."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fbvision.core.logic_config import CameraOfflineRule, RollingRule, TooFastRule
from fbvision.logic import rules
from fbvision.logic.features import TrackFeatures

FPS = 5.0
NAN = float("nan")


def feature(*, present=True, lying=False, speed=0.0):
    return TrackFeatures(
        camera_id="c",
        track_id=1,
        t=0.0,
        seq=0,
        box=(0, 0, 10, 10),
        aspect=1.0,
        rel_height=1.0,
        bottom=0.5,
        speed_bl_s=speed,
        confidence=0.9,
        present=present,
        lying=lying,
        baseline_height=10.0,
    )


@pytest.mark.parametrize(
    ("f", "expected"),
    [
        pytest.param(feature(lying=True), 1.0, id="lying"),
        pytest.param(feature(lying=False), 0.0, id="standing"),
        pytest.param(feature(present=False), None, id="not-seen"),
    ],
)
def test_horse_down_score(f, expected):
    assert rules.horse_down(f) == expected


@pytest.mark.parametrize(
    ("f", "expected"),
    [
        pytest.param(feature(speed=1.2), 1.0, id="fast"),
        pytest.param(feature(speed=1.0), 1.0, id="at-threshold"),
        pytest.param(feature(speed=0.4), 0.0, id="walking"),
        pytest.param(feature(speed=NAN), None, id="no-speed-yet"),
        pytest.param(feature(present=False), None, id="not-seen"),
    ],
)
def test_too_fast_score(f, expected):
    assert rules.too_fast(f, TooFastRule(speed_bl_s=1.0)) == expected


def posture_script(*segments):
    """[('stand'|'lie', seconds), ...] -> (times, lying) sampled at 5 fps from t=0, and the end time."""
    times, lying, t = [], [], 0.0
    for posture, duration in segments:
        for _ in range(round(duration * FPS)):
            times.append(t)
            lying.append(posture == "lie")
            t += 1 / FPS
    return np.array(times), np.array(lying), t


PARAMS = RollingRule()  # min_posture 3 s, flips 0.6..5 s, 3 downs or 4 events


@pytest.mark.parametrize(
    ("segments", "downs", "flips"),
    [
        pytest.param([("stand", 60), ("lie", 600)], 1, 0, id="one-normal-lie-down"),
        pytest.param([("lie", 600)], 0, 0, id="already-down-at-window-start"),
        pytest.param(
            [("stand", 30), ("lie", 60), ("stand", 30), ("lie", 60), ("stand", 30), ("lie", 30)],
            3,
            0,
            id="three-downs",
        ),
        pytest.param(
            [("stand", 30), ("lie", 20), ("stand", 2), ("lie", 20), ("stand", 3), ("lie", 20)],
            1,
            2,
            id="down-then-two-flips",
        ),
        pytest.param(
            [("stand", 30), ("lie", 20), ("stand", 0.2), ("lie", 20)], 1, 0, id="one-frame-rise-is-noise"
        ),
        pytest.param([("stand", 30), ("lie", 0.2), ("stand", 30)], 0, 0, id="one-frame-lying-is-noise"),
        pytest.param(
            [("stand", 30), ("lie", 20), ("stand", 2)], 1, 0, id="flip-not-confirmed-until-down-again"
        ),
        pytest.param(
            [("stand", 30), ("lie", 20), ("stand", 10), ("lie", 20)], 2, 0, id="long-rise-is-a-stand"
        ),
    ],
)
def test_posture_events_table(segments, downs, flips):
    times, lying, t = posture_script(*segments)
    assert rules.posture_events(times, lying, t, PARAMS) == rules.PostureEvents(downs, flips)


def test_posture_events_empty_history():
    assert rules.posture_events(np.zeros(0), np.zeros(0, dtype=bool), 5.0, PARAMS).total == 0


@pytest.mark.parametrize(
    ("downs", "flips", "expected"),
    [(1, 0, 0.0), (3, 0, 1.0), (2, 1, 0.0), (2, 2, 1.0), (1, 3, 1.0), (0, 3, 0.0)],
    ids=lambda v: str(v),
)
def test_rolling_score(downs, flips, expected):
    assert rules.rolling(rules.PostureEvents(downs, flips), PARAMS) == expected


@pytest.mark.parametrize(
    ("t", "last_frame_t", "online", "expected"),
    [
        pytest.param(10.0, 9.5, None, 0.0, id="frames-fresh"),
        pytest.param(10.0, 7.0, None, 1.0, id="frames-stale"),
        pytest.param(10.0, 9.9, False, 1.0, id="producer-says-offline"),
        pytest.param(10.0, 7.0, True, 1.0, id="online-but-no-frames"),
        pytest.param(10.0, None, None, 1.0, id="never-a-frame"),
        pytest.param(10.0, None, True, 0.0, id="just-connected"),
    ],
)
def test_camera_offline_score(t, last_frame_t, online, expected):
    assert rules.camera_offline(t, last_frame_t, online, CameraOfflineRule(stale_after_s=2.0)) == expected


@pytest.mark.parametrize(("present", "expected"), [(0, 1.0), (1, 0.0), (2, 0.0)])
def test_horse_absent_score(present, expected):
    assert rules.horse_absent(present) == expected


def test_scores_are_finite_or_none():
    for f in (feature(), feature(lying=True), feature(present=False)):
        for score in (rules.horse_down(f), rules.too_fast(f, TooFastRule())):
            assert score is None or math.isfinite(score)
