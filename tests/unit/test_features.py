"""Per-track features: posture against the track's own standing baseline, speed in body lengths/s."""

from __future__ import annotations

import math

import numpy as np
import pytest
import supervision as sv

from fbvision.core.logic_config import FeatureConfig
from fbvision.logic.features import FeatureExtractor, TrackFeatures, is_lying, sorted_percentile

FPS = 5.0
FRAME = (1280, 720)
STAND = (400.0, 200.0, 700.0, 500.0)  # 300 x 300
LYING = (380.0, 380.0, 720.0, 500.0)  # 340 x 120: wide and at 0.4 of the standing height
LYING_HEAD_ON = (500.0, 330.0, 660.0, 500.0)  # 160 x 170: aspect ~0.94, at 0.57 of the standing height


def dets(*tracks: tuple[int, tuple[float, float, float, float]]) -> sv.Detections:
    if not tracks:
        empty = sv.Detections.empty()
        empty.tracker_id = np.zeros(0, dtype=int)
        return empty
    return sv.Detections(
        xyxy=np.array([b for _, b in tracks], dtype=np.float32),
        confidence=np.full(len(tracks), 0.9, dtype=np.float32),
        class_id=np.zeros(len(tracks), dtype=int),
        tracker_id=np.array([tid for tid, _ in tracks], dtype=int),
    )


def feed(extractor, boxes, t0=0.0, track_id=1) -> list[TrackFeatures]:
    out = []
    for i, box in enumerate(boxes):
        (f,) = [
            f
            for f in extractor.update(dets((track_id, box)), t=t0 + i / FPS, seq=i, frame_size=FRAME)
            if f.track_id == track_id
        ]
        out.append(f)
    return out


@pytest.mark.parametrize(
    ("aspect", "rel_height", "expected"),
    [
        pytest.param(2.8, 0.4, True, id="flat-out"),
        pytest.param(0.94, 0.57, True, id="sternal-head-on"),
        pytest.param(1.0, 1.0, False, id="standing"),
        pytest.param(1.4, 0.75, False, id="standing-far-back-in-the-stall"),
        pytest.param(0.5, 0.5, False, id="tall-and-thin-is-not-lying"),
        pytest.param(2.1, float("nan"), True, id="fallback-wide"),
        pytest.param(1.6, float("nan"), False, id="fallback-grazing-head-down"),
        pytest.param(float("nan"), 0.3, False, id="no-box"),
    ],
)
def test_posture_table(aspect, rel_height, expected):
    assert is_lying(aspect, rel_height, FeatureConfig()) is expected


def test_baseline_from_standing_then_lying_relative_to_it():
    fx = FeatureExtractor("c", FeatureConfig())
    standing = feed(fx, [STAND] * 50)  # 10 s standing: 10 baseline samples
    assert standing[0].rel_height != standing[0].rel_height  # NaN before any baseline
    assert standing[-1].baseline_height == pytest.approx(300.0)
    assert standing[-1].aspect == pytest.approx(1.0) and not standing[-1].lying
    assert standing[-1].bottom == pytest.approx(500 / 720)
    (head_on,) = feed(fx, [LYING_HEAD_ON], t0=20.0)
    # Aspect alone (0.94) would call this standing; the baseline sees it at 0.57 of its standing height.
    assert head_on.lying and head_on.rel_height == pytest.approx(170 / 300)


def test_a_long_time_lying_does_not_erode_the_baseline():
    fx = FeatureExtractor("c", FeatureConfig(baseline_samples=20))
    feed(fx, [STAND] * 50)
    long_down = feed(fx, [LYING] * 3000, t0=10.0)  # 10 min: far more frames than the 20 samples kept
    assert all(f.lying for f in long_down)
    assert long_down[-1].baseline_height == pytest.approx(300.0)


def test_first_frames_use_the_aspect_fallback():
    fx = FeatureExtractor("c", FeatureConfig())
    first = feed(fx, [LYING] * 3)
    assert all(f.lying for f in first) and all(math.isnan(f.rel_height) for f in first)


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0], ids=["far", "mid", "near"])
def test_speed_is_in_body_lengths_per_second_whatever_the_distance(scale):
    fx = FeatureExtractor("c", FeatureConfig(speed_window_s=1.0))
    w = 300.0 * scale
    # The horse walks one body length (its box width) per second.
    boxes = [(i / FPS * w, 100.0, i / FPS * w + w, 100.0 + 0.6 * w) for i in range(20)]
    speeds = [f.speed_bl_s for f in feed(fx, boxes)]
    assert math.isnan(speeds[0])
    assert speeds[-1] == pytest.approx(1.0, rel=1e-5)


def test_body_length_width_option():
    fx = FeatureExtractor("c", FeatureConfig(body_length="width"))
    boxes = [(i * 10.0, 0.0, i * 10.0 + 100.0, 200.0) for i in range(10)]  # 50 px/s, width 100, height 200
    assert feed(fx, boxes)[-1].speed_bl_s == pytest.approx(0.5)


def test_lost_track_is_reported_not_present_until_forgotten():
    fx = FeatureExtractor("c", FeatureConfig())
    feed(fx, [STAND] * 10)
    (gone,) = fx.update(dets(), t=5.0, seq=99, frame_size=FRAME)
    assert not gone.present and gone.box == STAND and math.isnan(gone.speed_bl_s)
    assert gone.to_dict()["x2"] == 700.0 and gone.to_dict()["present"] is False
    fx.forget(1)
    assert fx.update(dets(), t=5.2, seq=100, frame_size=FRAME) == []


def test_seeded_baseline_is_used_until_fresh_samples():
    fx = FeatureExtractor("c", FeatureConfig())
    fx.seed(7, baseline_height=300.0, box=LYING)
    (f,) = feed(fx, [LYING], track_id=7)
    assert f.lying and f.rel_height == pytest.approx(0.4)
    assert set(f.numeric()) >= {"aspect", "rel_height", "bottom", "confidence"}


def test_track_back_after_a_gap_keeps_its_baseline_and_its_speed_reference():
    """A re-linked track comes back under the same id: its standing baseline and recent centroids carry on,
    so a horse missed for a second while cantering has a speed again at once (too_fast is not reset)."""
    fx = FeatureExtractor("c", FeatureConfig(speed_window_s=1.0))
    w = 300.0
    cantering = [(i / FPS * 3 * w, 200.0, i / FPS * 3 * w + w, 500.0) for i in range(40)]  # 3 BL/s
    feed(fx, cantering[:30])
    for k in range(30, 35):  # not seen for 1 s
        fx.update(dets(), t=k / FPS, seq=k, frame_size=FRAME)
    (back,) = fx.update(dets((1, cantering[35])), t=35 / FPS, seq=35, frame_size=FRAME)
    assert back.speed_bl_s == pytest.approx(3.0, rel=1e-5)
    assert back.baseline_height == pytest.approx(300.0)
    # Lying when found again much later: judged against the standing baseline, not the aspect fallback.
    (down,) = [f for f in fx.update(dets((1, LYING)), t=60.0, seq=300, frame_size=FRAME) if f.present]
    assert down.lying and down.rel_height == pytest.approx(0.4) and math.isnan(down.speed_bl_s)


@pytest.mark.parametrize("q", [0.0, 37.5, 90.0, 100.0])
def test_sorted_percentile_is_numpys_linear_percentile(q):
    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 60):
        values = rng.uniform(50, 400, n)
        assert sorted_percentile(sorted(values.tolist()), q) == pytest.approx(np.percentile(values, q), rel=1e-12)


def test_the_baseline_is_the_percentile_of_the_samples_kept_after_the_oldest_leave():
    # Heights that drift, more samples than the window keeps: the running sorted copy must drop exactly the
    # evicted ones (a wrong removal would show as a baseline off the window's percentile).
    cfg = FeatureConfig(baseline_samples=7, baseline_sample_interval_s=0.0)
    fx = FeatureExtractor("c", cfg)
    for i in range(40):
        h = 300.0 + 7.0 * ((i * 5) % 11)
        fx.update(dets((1, (400.0, 500.0 - h, 700.0, 500.0))), t=float(i), seq=i, frame_size=FRAME)
        state = fx._tracks[1]
        assert len(state.heights) == min(i + 1, 7)
        assert state.sorted_heights == sorted(state.heights)
        assert state.baseline == pytest.approx(np.percentile(list(state.heights), cfg.baseline_percentile),
                                               rel=1e-12)
