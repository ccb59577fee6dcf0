"""fbvision.lab: detection logs with ground truth, strategy sweeps scored by fbvision.lab.groundtruth, config snippets."""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pandas as pd
import pytest

from fbvision import lab
from fbvision.core.config import load_settings
from fbvision.core.logic_config import HorseDownRule, LogicConfig, SmoothingConfig
from fbvision.logic import rules as rule_registry
from fbvision.synth import Scenario


def logic(**horse_down) -> LogicConfig:
    return LogicConfig.model_validate({"rules": {"horse_down": horse_down}})


# Scenario-scale horse_down: a 60 s lie-down must alert, the 13 s rest of normal_rest must not.
BASE = logic(
    escalation=[{"after_s": 20, "severity": "warning"}, {"after_s": 40, "severity": "critical"}],
    exit_after_s=5,
    cooldown_s=30,
)


@pytest.fixture(scope="module")
def down_log() -> pd.DataFrame:
    return lab.detection_log(["down_long"], use_model=False, config=BASE)


@pytest.fixture(scope="module")
def walk_log() -> pd.DataFrame:
    clean = lab.TruthNoise(jitter=0.01, dropout=0.0, glitch=0.0)
    return lab.detection_log(["normal_walk"], use_model=False, noise=clean)


def test_ground_truth_log_has_columns_rows_and_says_its_source(down_log):
    scenario = Scenario.builtin("down_long")
    assert list(down_log.columns) == list(lab.LOG_COLUMNS)
    assert down_log.attrs["source"] == lab.SOURCE_GROUND_TRUTH
    assert "ground-truth" in down_log.attrs["source_note"] and "use_model=False" in down_log.attrs["source_note"]
    assert set(down_log["source"]) == {lab.SOURCE_GROUND_TRUTH}
    assert set(down_log["camera_id"]) == {"down_long"}
    # One horse -> one track, one row per frame once confirmed (3 frames), at most one per frame.
    assert down_log["track_id"].nunique() == 1
    assert scenario.n_frames - 5 <= len(down_log) <= scenario.n_frames
    assert not down_log.duplicated(["camera_id", "frame", "track_id"]).any()
    present = down_log[down_log["present"]]
    assert present["gt_iou"].min() > 0.5 and (present["gt_horse"] == "bay").all()
    # Features follow the truth: lying when the horse lies flat, standing at the start.
    flat = present[present["gt_behaviour"] == "lying_flat"]
    standing = present[(present["gt_behaviour"] == "standing") & (present["t"] > 3)]
    assert flat["lying"].mean() > 0.85 and standing["lying"].mean() < 0.1
    assert flat["rel_height"].median() < 0.5 and standing["rel_height"].median() > 0.8
    # The raw rule signal is what the worker computed: lying -> 1 while present, NaN when not seen.
    assert (present["raw_horse_down"] == present["lying"].astype(float)).all()
    assert down_log.loc[~down_log["present"], "raw_horse_down"].isna().all()
    info = down_log.attrs["cameras"]["down_long"]
    assert info["duration_s"] == pytest.approx(scenario.n_frames / scenario.fps)
    assert Scenario.from_yaml(info["scenario"]) == scenario
    json.dumps(down_log.attrs)  # plain data: survives parquet metadata


def test_max_frames_fps_and_a_missing_model_fall_back_to_ground_truth(tmp_path, caplog):
    log = lab.detection_log(["normal_rest"], tmp_path / "absent.onnx", max_frames=40, fps=4.0)
    assert log.attrs["source"] == lab.SOURCE_GROUND_TRUTH and "not found" in log.attrs["source_note"]
    assert "using ground-truth detections" in caplog.text
    assert log["frame"].max() == 39 and log["t"].max() == pytest.approx(39 / 4.0)
    assert log.attrs["cameras"]["normal_rest"]["duration_s"] == pytest.approx(10.0)
    summary = lab.log_summary(log)
    assert summary.loc[0, "frames"] == 40 and summary.loc[0, "rows_matched"] == 1.0


def test_evaluate_finds_the_long_lie_down(down_log):
    table = lab.evaluate_strategies(
        down_log, "horse_down", {"k_of_n": {"window_s": [2.0], "fraction": [0.8]}, "median": {"window_s": [1.8]}}, BASE
    )
    assert list(table["strategy"]) == ["k_of_n window_s=2 fraction=0.8", "median window_s=1.8"]
    for row in table.itertuples():
        assert (row.expected, row.hits, row.false_alerts, row.recall) == (1, 1, 0, 1.0)
        assert 20.0 <= row.tta_median_s <= 30.0  # minimum duration 20 s + smoothing lag
        assert row.false_per_cam_h == 0.0
    assert table.attrs["camera_hours"] == pytest.approx(90 / 3600)
    assert isinstance(table.loc[0, "rule_config"], HorseDownRule)
    assert table.loc[0, "rule_config"].smoothing == SmoothingConfig(kind="vote", window_s=2.0, fraction=0.8, min_frames=3)


def test_evaluate_rejects_a_one_frame_glitch(walk_log):
    assert not walk_log["lying"].any()
    log = walk_log.copy()
    glitch = log.index[log["present"] & (log["t"] > 10)][0]
    log.loc[glitch, ["lying", "raw_horse_down"]] = [True, 1.0]
    instant = logic(escalation=[{"after_s": 0, "severity": "warning"}], exit_after_s=0, cooldown_s=0)
    grid = {"none": [{}], "k_of_n": {"window_s": [1.0], "fraction": [0.6]}, "median": {"window_s": [1.0]},
            "ema": {"ema_half_life_s": [1.0]}}
    table = lab.evaluate_strategies(log, "horse_down", grid, instant).set_index("strategy")
    assert table.loc["none", "false_alerts"] == 1 and table.loc["none", "false_cameras"] == "normal_walk"
    assert table.loc["none", "false_per_cam_h"] == pytest.approx(3600 / walk_log.attrs["cameras"]["normal_walk"]["duration_s"])
    for smoothed in ("k_of_n window_s=1 fraction=0.6", "median window_s=1", "ema half_life_s=1"):
        assert table.loc[smoothed, "false_alerts"] == 0 and table.loc[smoothed, "raised"] == 0
    assert math.isnan(table.loc["none", "recall"])  # nothing was due


def test_dataframe_replay_raises_what_the_worker_raised(down_log):
    """run_strategy with the config the log was made with reproduces CameraLogic's own alerts."""
    transitions = lab.run_strategy(down_log, "horse_down", BASE.rules.horse_down)
    replayed = transitions[["t", "state", "severity"]].apply(tuple, axis=1).tolist()
    worker = [
        (t, *text.split(":")[1:])
        for t, cell in zip(down_log["t"], down_log["alerts"], strict=True)
        for text in cell.split(";")
        if text.startswith("horse_down:")
    ]
    assert replayed == worker and ("raised" in [s for _, s, _ in worker])


def test_a_recorder_style_log_without_signal_columns_scores_the_same(down_log):
    grid = {"k_of_n": {"window_s": [2.0], "fraction": [0.8]}, "ema": {"ema_half_life_s": [2.0]}}
    with_raw = lab.evaluate_strategies(down_log, "horse_down", grid, BASE)
    recorded = down_log.drop(columns=[c for c in down_log if c.startswith(("raw_", "smoothed_", "open_"))])
    recorded = pd.concat([recorded, pd.DataFrame({"camera_id": ["down_long"], "t": [0.0], "track_id": [pd.NA]})])
    recorded.attrs = dict(down_log.attrs)
    without = lab.evaluate_strategies(recorded, "horse_down", grid, BASE)
    columns = ["strategy", "hits", "false_alerts", "tta_median_s"]
    pd.testing.assert_frame_equal(with_raw[columns], without[columns])


def test_raw_signal_recomputes_the_registered_feature_rules_as_the_worker_did(down_log, walk_log):
    derivable = [r.name for r in rule_registry.registered() if r.from_features]
    assert derivable == ["horse_down", "too_fast"]
    running = lab.detection_log(["running"], use_model=False, max_frames=150)
    assert (running["raw_too_fast"] == 1.0).any() and (running["raw_too_fast"] == 0.0).any()
    for log, config in ((down_log, BASE), (walk_log, LogicConfig()), (running, LogicConfig())):
        rows = log[log["track_id"].notna()]
        for rule in derivable:
            recorded = rows.drop(columns=[f"raw_{rule}"])
            pd.testing.assert_series_equal(
                lab.raw_signal(recorded, rule, config), rows[f"raw_{rule}"].astype(float), check_names=False
            )
    for rule in ("rolling", "horse_absent", "camera_offline", "horse_asleep"):
        with pytest.raises(ValueError, match="cannot be derived from features"):
            lab.raw_signal(down_log.drop(columns=[c for c in down_log if c.startswith("raw_")]), rule)
    for rule in ("rolling", "horse_absent", "camera_offline"):
        with pytest.raises(ValueError, match=r"ground truth scores only \['horse_down', 'too_fast'\]"):
            lab.evaluate_strategies(down_log, rule, {"none": [{}]}, BASE)


def test_default_grid_has_every_family_and_skips_invalid_combinations():
    strategies = lab.strategy_grid(None, BASE.rules.horse_down)
    assert {s.family for s in strategies} == set(lab.FAMILIES)
    assert all(0 < s.config.smoothing.fraction <= 1 for s in strategies)
    assert all(s.config.exit <= s.config.enter for s in strategies)
    by_label = {s.label: s.config for s in strategies}
    hysteresis = by_label["hysteresis half_life_s=2 enter=0.8 exit=0.2"]
    assert (hysteresis.smoothing.kind.value, hysteresis.enter, hysteresis.exit) == ("ema", 0.8, 0.2)
    shortest = by_label["min_duration min_s=10 gap_s=0"]
    assert [s.after_s for s in shortest.escalation] == [10.0, 30.0]  # the ladder moves as a whole
    assert shortest.smoothing.kind.value == "none" and shortest.exit_after_s == 0.0
    listed = lab.strategy_grid([SmoothingConfig(kind="median", window_s=1.4), ("mine", {"enter": 0.7})],
                               BASE.rules.horse_down)
    assert listed[0].config.smoothing.window_s == 1.4 and listed[1].label == "mine" and listed[1].config.enter == 0.7
    with pytest.raises(ValueError, match="unknown strategy family"):
        lab.strategy_grid({"kalman": [{}]}, BASE.rules.horse_down)


def test_grid_has_no_duplicate_settings():
    """``none`` and ``min_duration`` at the base rule's own minimum duration and gap are one setting: kept once."""
    base = BASE.rules.horse_down  # minimum duration 20 s, gap 5 s
    everything = lab.strategy_grid(None, base, dedupe=False)
    labels = [s.label for s in everything]
    assert "none" in labels and "min_duration min_s=20 gap_s=5" in labels  # the duplicate the grid used to hold
    assert lab.effective_setting(everything[labels.index("none")].config) == lab.effective_setting(
        everything[labels.index("min_duration min_s=20 gap_s=5")].config)
    strategies = lab.strategy_grid(None, base)
    keys = [lab.effective_setting(s.config) for s in strategies]
    assert len(keys) == len(set(keys)) and len(strategies) == len(everything) - 1
    assert [s.label for s in strategies if s.family in ("none", "min_duration")][:2] == ["none", "min_duration min_s=10 gap_s=0"]
    # Fields a kind does not read do not make a setting different; fields it reads do.
    listed = lab.strategy_grid([SmoothingConfig(kind="ema", ema_half_life_s=2.0, window_s=3.0),
                                SmoothingConfig(kind="ema", ema_half_life_s=2.0, window_s=9.0),
                                SmoothingConfig(kind="vote", window_s=3.0), SmoothingConfig(kind="vote", window_s=9.0)],
                               base)
    assert [s.config.smoothing.window_s for s in listed] == [3.0, 3.0, 9.0]


def test_best_strategy_prefers_recall_then_false_alerts_then_speed():
    table = pd.DataFrame(
        {
            "strategy": ["a", "b", "c", "d"],
            "recall": [0.5, 1.0, 1.0, 1.0],
            "false_alerts": [0, 2, 0, 0],
            "false_per_cam_h": [0.0, 20.0, 0.0, 0.0],
            "tta_median_s": [21.0, 21.0, 25.0, 23.0],
        }
    )
    assert lab.best_strategy(table)["strategy"] == "d"
    assert lab.best_strategy(table.iloc[:2], max_false_per_cam_h=1.0)["strategy"] == "a"


def test_config_snippet_round_trips_through_load_settings(tmp_path):
    chosen = lab.with_params(BASE.rules.horse_down, {"window_s": 2.0, "fraction": 0.8, "exit_after_s": 7.5}, "vote")
    text = lab.config_snippet("horse_down", chosen, header="chosen by notebooks/01_smoothing_rules.ipynb")
    assert text.startswith("# chosen by") and "logic:" in text
    path = tmp_path / "horse_down.yaml"
    path.write_text(text)
    settings = load_settings(path, environ={})
    assert settings.logic.rules.horse_down == chosen
    assert settings.logic.rules.too_fast == LogicConfig().rules.too_fast  # the rest keeps its defaults

    # The short form pastes under `logic: rules:` of an existing file.
    short = lab.config_snippet("horse_down", chosen, full=False)
    path.write_text("cameras: []\nlogic:\n  rules:\n" + textwrap.indent(short, "    "))
    assert load_settings(path, environ={}).logic.rules.horse_down == chosen

    with pytest.raises(ValueError, match="unknown rule"):
        lab.config_snippet("horse_asleep", chosen)
    with pytest.raises(ValueError):
        lab.config_snippet("horse_down", {"smoothing": {"kind": "vote", "fraction": 3.0}})


def test_plot_track_timeline_draws_features_bands_and_alerts(down_log):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alerts = {"base": lab.run_strategy(down_log, "horse_down", BASE.rules.horse_down)}
    fig = lab.plot_track_timeline(down_log, "down_long", alerts)
    assert len(fig.axes) == 5 and fig.axes[4].get_yticklabels()[0].get_text() == "base"
    plt.close(fig)


def _constant_yolo_model(path, box_xywh, score) -> None:
    """An ONNX 'detector' that finds one horse at a fixed place of its 320x320 input, for any batch."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    anchors = 4
    head = np.zeros((1, 5, anchors), np.float32)
    head[0, :4, 0] = box_xywh
    head[0, 4, 0] = score
    nodes = [
        helper.make_node("Slice", ["images", "starts", "ends", "axes"], ["patch"]),  # [B, 1, 5, anchors]
        helper.make_node("Mul", ["patch", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "head"], ["tiled"]),
        helper.make_node("Squeeze", ["tiled", "squeeze_axes"], ["output0"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([0, 0, 0], np.int64), "starts"),
        numpy_helper.from_array(np.array([1, 5, anchors], np.int64), "ends"),
        numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"),
        numpy_helper.from_array(np.array(0, np.float32), "zero"),
        numpy_helper.from_array(head[:, None], "head"),
        numpy_helper.from_array(np.array([1], np.int64), "squeeze_axes"),
    ]
    graph = helper.make_graph(
        nodes, "constant_horse",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 320, 320])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 5, anchors])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    path.with_suffix(".json").write_text(json.dumps({"class_names": ["horse"], "input_size": [320, 320], "max_batch": 8}))


def test_model_path_letterboxes_decodes_and_tracks(tmp_path):
    pytest.importorskip("onnxruntime")
    model = tmp_path / "constant.onnx"
    # down_long is 960x540 -> scale 1/3, 70 px padding top and bottom at 320x320.
    _constant_yolo_model(model, (160.0, 120.0, 80.0, 60.0), 0.9)
    log = lab.detection_log(["down_long"], model, max_frames=20, batch_size=8)
    assert log.attrs["source"] == lab.SOURCE_MODEL and "constant.onnx" in log.attrs["source_note"]
    present = log[log["present"]]
    assert len(present) == 18  # confirmed after 3 frames
    np.testing.assert_allclose(present[["x1", "y1", "x2", "y2"]].iloc[-1], [360, 60, 600, 240], atol=2)
    assert present["confidence"].iloc[-1] == pytest.approx(0.9, abs=1e-3)
