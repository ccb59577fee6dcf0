"""Synthetic stall scenes: scenario format, determinism, truth == drawing, motion semantics, outputs, speed."""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from fbvision.synth import (
    EVENT_COLUMNS,
    TRUTH_COLUMNS,
    CameraSettings,
    Scenario,
    SceneRenderer,
    builtin_scenarios,
    events,
    ground_truth,
    write_video,
)
from fbvision.synth.dataset import random_scenario, samples, write_yolo_split
from fbvision.synth.evaluate import average_precision, box_iou

REQUIRED_BUILTINS = {"down_long", "running", "normal_rest", "normal_walk", "rolling", "night_down"}

SMALL = """
name: small
seed: 3
fps: 5
size: [480, 270]
camera: {noise: 0}
horses:
  - id: h
    start_x: 0.5
    script:
      - standing: 2
      - walking: 2
      - lying_down: 2
      - lying_flat: 1
      - rolling: 2
      - getting_up: 2
      - running: 2
"""


def _one_second_speeds(truth: pd.DataFrame, fps: float, body_length: float) -> pd.DataFrame:
    """Centroid displacement over one second, in body lengths per second, with the behaviour held throughout."""
    truth = truth.reset_index(drop=True)
    step = int(round(fps))
    cx, cy = (truth.x1 + truth.x2) / 2, (truth.y1 + truth.y2) / 2
    speed = np.hypot(cx.diff(step), cy.diff(step)) / body_length
    held = truth.behaviour.eq(truth.behaviour.shift(step))
    for k in range(1, step):
        held &= truth.behaviour.eq(truth.behaviour.shift(k))
    return pd.DataFrame({"behaviour": truth.behaviour, "speed": speed})[held]


# --- scenario format -------------------------------------------------------------------------------------------


def test_builtins_cover_the_acceptance_scenarios():
    names = builtin_scenarios()
    assert REQUIRED_BUILTINS <= set(names)
    for name in names:
        scenario = Scenario.builtin(name)
        assert scenario.name == name
        assert scenario.fps == 5
        assert scenario.size == (960, 540)
        assert 20 <= scenario.effective_duration_s <= 120, name
    assert Scenario.builtin("night_down").look == "night"


def test_unknown_builtin_lists_the_available_ones():
    with pytest.raises(KeyError, match="down_long"):
        Scenario.builtin("nope")


def test_segment_shorthands_and_explicit_form_are_equivalent():
    explicit = Scenario.from_yaml(
        "name: x\nhorses:\n  - id: a\n    script:\n      - {behaviour: standing, duration_s: 20}\n"
        "      - {behaviour: lying_down, duration_s: 3}\n"
    )
    short = Scenario.from_yaml("name: x\nhorses:\n  - id: a\n    script: [{standing: 20}, 'lying_down 3']\n")
    assert explicit == short
    assert short.effective_duration_s == 23 and short.n_frames == 115


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nhorses: [{id: a, script: [{standing: 5}]}]\ncolour: red\n", "colour"),  # typo'd key
        ("name: x\nhorses: [{id: a, script: [{sleeping: 5}]}]\n", "behaviour"),
        ("name: x\nhorses: [{id: a, script: [{standing: -1}]}]\n", "duration_s"),
        ("name: x\nhorses: [{id: a, script: [{standing: 5}]}, {id: a, script: [{standing: 5}]}]\n", "unique"),
        ("name: x\nlook: dusk\nhorses: [{id: a, script: [{standing: 5}]}]\n", "look"),
        ("name: x\nhorses: []\n", "duration_s"),
    ],
)
def test_invalid_scenarios_are_rejected_with_the_field_named(text, message):
    with pytest.raises(ValidationError, match=message):
        Scenario.from_yaml(text)


def test_scenario_yaml_round_trip():
    scenario = Scenario.builtin("rolling")
    assert Scenario.from_yaml(scenario.to_yaml()) == scenario


# --- determinism -----------------------------------------------------------------------------------------------


def test_frames_and_truth_are_deterministic():
    scenario = Scenario.builtin("two_horses")
    first, second = SceneRenderer(scenario), SceneRenderer(scenario, precompute=False)
    for i in (0, 17, 60, first.n_frames - 1):
        assert np.array_equal(first.frame(i), second.frame(i))
        assert first.truth(i) == second.truth(i)
    pd.testing.assert_frame_equal(ground_truth(scenario), first.ground_truth())


def test_another_seed_gives_another_scene():
    scenario = Scenario.builtin("normal_walk")
    other = scenario.model_copy(update={"seed": scenario.seed + 1})
    assert not np.array_equal(SceneRenderer(scenario).frame(0), SceneRenderer(other).frame(0))


def test_noise_differs_between_frames_but_not_between_runs():
    renderer = SceneRenderer(Scenario.builtin("down_long"))
    assert not np.array_equal(renderer.frame(0), renderer.frame(1))  # standing still: only the noise moves
    assert np.array_equal(renderer.frame(1), SceneRenderer(Scenario.builtin("down_long")).frame(1))


# --- truth matches what is drawn -------------------------------------------------------------------------------


@pytest.mark.parametrize("look", ["day", "night"])
def test_truth_box_is_the_drawn_horse(look):
    scenario = Scenario.from_yaml(SMALL).model_copy(update={"look": look})
    renderer = SceneRenderer(scenario)
    checked = set()
    for i in range(0, renderer.n_frames, 3):
        clean = renderer.render(i, noise=False, shadows=False)
        changed = np.abs(clean.astype(np.int16) - renderer.background.astype(np.int16)).max(axis=2) > 0
        ys, xs = np.nonzero(changed)
        (truth,) = renderer.truth(i)
        assert truth.visible
        drawn = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        # Soft (anti-aliased) edges below alpha 0.5 are drawn but outside the box: allow 2 px.
        assert np.allclose(truth.box, drawn, atol=2.0), (i, truth.behaviour, truth.box, drawn)
        checked.add(truth.behaviour)
    assert {"standing", "walking", "lying_flat", "rolling", "running"} <= checked


def test_frame_format_and_counts():
    renderer = SceneRenderer(Scenario.builtin("normal_rest"))
    frame = renderer.frame(0)
    assert frame.shape == (540, 960, 3) and frame.dtype == np.uint8
    assert renderer.size == (960, 540) and renderer.fps == 5.0
    assert renderer.n_frames == int(Scenario.builtin("normal_rest").effective_duration_s * 5)
    with pytest.raises(IndexError):
        renderer.frame(renderer.n_frames)
    iterated = list(renderer.frames())
    assert [i for i, *_ in iterated] == list(range(renderer.n_frames))
    assert iterated[5][1] == pytest.approx(1.0)


def test_absent_horse_has_no_box():
    scenario = Scenario.from_yaml(
        "name: a\nhorses: [{id: h, script: [{standing: 1}, {absent: 1}, {standing: 1}]}]\n"
    )
    truth = ground_truth(scenario)
    absent = truth[truth.behaviour == "absent"]
    assert len(absent) == 5 and not absent.visible.any() and absent.x1.isna().all()
    assert (absent.posture == "absent").all()
    assert truth[truth.behaviour == "standing"].visible.all()


# --- motion and posture semantics the logic stage relies on ---------------------------------------------------


@pytest.mark.parametrize("name", sorted(REQUIRED_BUILTINS | {"two_horses"}))
def test_motion_semantics(name):
    scenario = Scenario.builtin(name)
    renderer = SceneRenderer(scenario, precompute=False)
    truth = renderer.ground_truth()
    for horse_id, track in truth.groupby("horse_id"):
        body = renderer.body_length_px(horse_id)
        speeds = _one_second_speeds(track, scenario.fps, body)
        by_behaviour = speeds.groupby("behaviour").speed
        if "standing" in by_behaviour.groups:
            assert by_behaviour.get_group("standing").max() < 0.01
        if "walking" in by_behaviour.groups:
            assert by_behaviour.get_group("walking").max() <= 0.5
        if "running" in by_behaviour.groups:
            assert by_behaviour.get_group("running").min() >= 1.5
        heights = track.y2 - track.y1
        standing_height = heights[track.behaviour == "standing"].median()
        lying = track[track.posture == "lying"]
        if len(lying):
            assert ((lying.y2 - lying.y1) <= 0.62 * standing_height).all()
            assert ((lying.x2 - lying.x1) > 1.5 * (lying.y2 - lying.y1)).all()


def test_running_scenario_runs_and_walks():
    truth = ground_truth(Scenario.builtin("running"))
    assert {"standing", "running", "walking"} <= set(truth.behaviour)
    assert (truth.posture != "lying").all()


def test_posture_labels_follow_behaviour():
    truth = ground_truth(Scenario.builtin("down_long"))
    by = truth.groupby("behaviour").posture.agg(set)
    assert (
        by["lying_flat"] == {"lying"} and by["lying_sternal"] == {"lying"} and by["standing"] == {"standing"}
    )
    assert by["lying_down"] == {"standing", "lying"} and by["getting_up"] == {"standing", "lying"}


def test_events_are_contiguous_intervals():
    scenario = Scenario.builtin("rolling")
    table = events(scenario)
    assert list(table.columns) == list(EVENT_COLUMNS)
    assert table.start_s.iloc[0] == 0 and table.end_s.iloc[-1] == pytest.approx(scenario.effective_duration_s)
    assert np.allclose(table.start_s.iloc[1:].to_numpy(), table.end_s.iloc[:-1].to_numpy())
    assert (table.behaviour == "rolling").sum() == 3
    # consecutive equal behaviours are merged
    assert not (table.behaviour.to_numpy()[1:] == table.behaviour.to_numpy()[:-1]).any()


def test_script_shorter_than_scene_holds_its_final_state():
    scenario = Scenario.from_yaml(
        "name: a\nduration_s: 6\nhorses: [{id: h, script: [{standing: 1}, {lying_down: 2}]}]\n"
    )
    table = events(scenario)
    assert table.behaviour.tolist() == ["standing", "lying_down", "lying_sternal"]
    assert table.end_s.iloc[-1] == 6


# --- outputs ---------------------------------------------------------------------------------------------------


def test_write_video_with_truth(tmp_path):
    scenario = Scenario.from_yaml(SMALL)
    path = write_video(scenario, tmp_path / "clip.mp4", jpeg_quality=60)
    capture = cv2.VideoCapture(str(path))
    count = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        assert frame.shape == (270, 480, 3)
        count += 1
    capture.release()
    n_frames = SceneRenderer(scenario).n_frames
    assert count == n_frames
    truth = pd.read_parquet(tmp_path / "clip.parquet")
    assert list(truth.columns) == list(TRUTH_COLUMNS) and len(truth) == n_frames
    assert len(pd.read_parquet(tmp_path / "clip.events.parquet")) == 7


def test_jpeg_camera_setting_adds_artefacts():
    scenario = Scenario.from_yaml(SMALL)
    plain = SceneRenderer(scenario).frame(3)
    camera = CameraSettings(noise=0, jpeg_quality=30)
    jpeg = SceneRenderer(scenario.model_copy(update={"camera": camera})).frame(3)
    difference = np.abs(plain.astype(int) - jpeg.astype(int)).mean()
    assert 0.5 < difference < 20


def test_render_cost_fits_four_live_cameras():
    renderer = SceneRenderer(Scenario.builtin("two_horses"))
    renderer.frame(0)
    started = time.perf_counter()
    for i in range(60):
        renderer.frame(i)
    per_frame_ms = (time.perf_counter() - started) / 60 * 1000
    assert per_frame_ms < 10, f"{per_frame_ms:.1f} ms per 960x540 frame"


# --- training data and the evaluation helper -------------------------------------------------------------------


def test_random_scenarios_are_deterministic_and_varied():
    assert random_scenario(5) == random_scenario(5)
    scenes = [random_scenario(seed) for seed in range(40)]
    assert {s.look for s in scenes} == {"day", "night"}
    assert {len(s.horses) for s in scenes} >= {1, 2}
    behaviours = {seg.behaviour for s in scenes for h in s.horses for seg in h.script}
    assert {
        "standing",
        "walking",
        "running",
        "lying_down",
        "lying_flat",
        "rolling",
        "getting_up",
    } <= behaviours


def test_yolo_split_labels_match_samples(tmp_path):
    count = write_yolo_split(tmp_path, range(3), frames_per_seed=2, long_side=320)
    assert count == 6
    images = sorted((tmp_path / "images").glob("*.jpg"))
    assert len(images) == 6
    for sample, image_path in zip(samples(range(3), 2), images, strict=True):
        image = cv2.imread(str(image_path))
        assert max(image.shape[:2]) == 320
        lines = (tmp_path / "labels" / (image_path.stem + ".txt")).read_text().split()
        rows = np.array(lines, float).reshape(-1, 5)
        assert len(rows) == len(sample.boxes)
        height, width = sample.image.shape[:2]
        for row, box in zip(rows, sample.boxes, strict=True):
            assert row[0] == 0
            assert row[1] == pytest.approx((box[0] + box[2]) / 2 / width, abs=1e-5)
            assert row[4] == pytest.approx((box[3] - box[1]) / height, abs=1e-5)


def test_average_precision_reference_cases():
    truth = [np.array([[0, 0, 10, 10]], float), np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)]
    perfect = [np.array([[0, 0, 10, 10, 0.9]]), np.array([[0, 0, 10, 10, 0.8], [20, 20, 30, 30, 0.7]])]
    assert average_precision(perfect, truth)["ap"] == pytest.approx(1.0)
    # the top-scoring detection is a false positive and one horse is missed: precision 2/3 up to recall 2/3
    flawed = [np.array([[0, 0, 10, 10, 0.9]]), np.array([[0, 0, 10, 10, 0.8], [50, 50, 60, 60, 0.95]])]
    assert average_precision(flawed, truth)["ap"] == pytest.approx((2 / 3) * 67 / 101)
    # a duplicate of a matched horse is a false positive
    duplicate = [np.array([[0, 0, 10, 10, 0.9], [0, 0, 10, 11, 0.85]]), np.zeros((0, 5))]
    assert average_precision(duplicate, truth)["n_detections"] == 2
    assert math.isclose(box_iou(np.array([[0, 0, 10, 10.0]]), np.array([[5, 0, 15, 10.0]]))[0, 0], 1 / 3)
