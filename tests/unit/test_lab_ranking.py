"""fbvision.lab ranks honestly: re-seeded variants, the measured error model, ties, the minimum of events."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fbvision import lab
from fbvision.core.logic_config import LogicConfig
from fbvision.synth import HorseTruth, Scenario

BASE = LogicConfig.model_validate(
    {"rules": {"horse_down": {
        "escalation": [{"after_s": 20, "severity": "warning"}, {"after_s": 40, "severity": "critical"}],
        "exit_after_s": 5, "cooldown_s": 30,
    }}}
)


def test_variants_reseed_and_stretch_each_segment_within_the_jitter():
    base = Scenario.builtin("two_horses")
    plain = lab.variants(["two_horses"], [1, 2])
    assert [v.name for v in plain] == ["two_horses-s1", "two_horses-s2"] and plain[0].horses == base.horses
    stretched = lab.variants(["two_horses"], [1, 2], jitter=0.2)
    assert stretched == lab.variants(["two_horses"], [1, 2], jitter=0.2)  # seeded: the same every time
    assert stretched[0].horses != stretched[1].horses
    for variant in stretched:
        assert variant.seed in (1, 2)
        for horse, original in zip(variant.horses, base.horses, strict=True):
            assert [s.behaviour for s in horse.script] == [s.behaviour for s in original.script]
            for seg, orig in zip(horse.script, original.script, strict=True):
                assert 0.8 * orig.duration_s - 0.05 <= seg.duration_s <= 1.2 * orig.duration_s + 0.05
    with pytest.raises(ValueError, match="jitter"):
        lab.variants(["two_horses"], [1], jitter=1.0)


def test_measured_error_model_makes_an_error_model_log():
    noise = lab.DEMO_MODEL_ERRORS
    assert noise.measured_from == "horse-demo-yolo11n-320.onnx" and noise.jitter > 0
    log = lab.detection_log(["normal_rest"], use_model=False, noise=noise, max_frames=30)
    assert log.attrs["source"] == lab.SOURCE_ERROR_MODEL == "error_model"
    assert "measured on horse-demo-yolo11n-320.onnx" in log.attrs["source_note"]
    # Without a measured_from the same figures are plain ground truth with made-up noise.
    plain = lab.detection_log(["normal_rest"], use_model=False, max_frames=5)
    assert plain.attrs["source"] == lab.SOURCE_GROUND_TRUTH


def test_false_positives_are_drawn_only_when_asked_and_leave_the_other_errors_alone():
    truth = [HorseTruth("bay", (100.0, 100.0, 300.0, 300.0), "standing", "standing", True)]
    without = lab.truth_candidates(truth, np.random.default_rng(3), lab.TruthNoise(), (960, 540))
    with_zero = lab.truth_candidates(truth, np.random.default_rng(3), lab.TruthNoise(false_positive=0.0), (960, 540))
    assert np.array_equal(without.xyxy, with_zero.xyxy)
    rng = np.random.default_rng(4)
    many = [lab.truth_candidates(truth, rng, lab.TruthNoise(dropout=0.0, false_positive=2.0), (960, 540))
            for _ in range(200)]
    extra = np.mean([len(c.scores) - 1 for c in many])
    assert 1.6 < extra < 2.4  # Poisson(2) spurious boxes a frame
    boxes = np.concatenate([c.xyxy for c in many])
    assert (boxes[:, 2] <= 960).all() and (boxes[:, 3] <= 540).all() and (boxes[:, :2] >= 0).all()


def test_measure_detector_reports_rates_of_the_demo_model():
    errors = lab.measure_detector(["down_long"], every=60, max_frames=4)
    assert errors.frames == 4 and errors.horse_frames == 4
    assert 0.0 <= errors.miss_rate <= 1.0 and errors.false_positives_per_frame >= 0.0
    assert errors.miss_rate < 0.5 and 0.0 < errors.jitter < 0.2  # it finds the horse, roughly where it is
    noise = errors.as_noise()
    assert noise.measured_from == "horse-demo-yolo11n-320.onnx" and noise.dropout == round(errors.miss_rate, 4)


def _table(rows, *, base="k_of_n", source="error_model", hours=2.5) -> pd.DataFrame:
    """A scored table as evaluate_strategies returns it, from (label, family, params, hits, expected, false, tta)."""
    grid = {}
    for label, family, params, *_ in rows:
        grid[label] = (family, params)
    base_rule = BASE.rules.horse_down
    records = []
    for label, family, params, hits, expected, false, tta in rows:
        config = lab.with_params(base_rule, params, lab.FAMILIES[family])
        records.append({
            "strategy": label, "family": family, "expected": expected, "hits": hits, "misses": expected - hits,
            "false_alerts": false, "recall": hits / expected if expected else math.nan,
            "false_per_cam_h": false / hours, "false_rate": lab.false_rate_text(false, hours),
            "tta_median_s": tta, "tta_max_s": tta, "rule_config": config,
        })
    table = pd.DataFrame.from_records(records)
    table.attrs.update(source=source, camera_hours=hours, cameras=12,
                       base_setting=lab.effective_setting(lab.with_params(base_rule, {}, None)))
    return table


ROWS = [
    ("none", "none", {}, 24, 24, 0, 21.0),
    ("ema half_life_s=0.5", "ema", {"ema_half_life_s": 0.5}, 24, 24, 0, 21.4),
    ("median window_s=3", "median", {"window_s": 3.0}, 24, 24, 0, 23.5),
    ("k_of_n window_s=1 fraction=0.6", "k_of_n", {"window_s": 1.0, "fraction": 0.6}, 24, 24, 2, 21.2),
    ("k_of_n window_s=5 fraction=0.8", "k_of_n", {"window_s": 5.0, "fraction": 0.8}, 22, 24, 0, 25.0),
]


def test_ranking_reports_ties_as_ties():
    ranked = lab.rank_strategies(_table(ROWS))
    assert list(ranked["strategy"]) == ["none", "ema half_life_s=0.5", "median window_s=3",
                                        "k_of_n window_s=1 fraction=0.6", "k_of_n window_s=5 fraction=0.8"]
    # none and ema are within a second of each other: one group, one rank; median is 2.5 s slower: its own.
    assert list(ranked["rank"]) == [1, 1, 3, 4, 5] and list(ranked["tie_group"]) == [1, 1, 2, 3, 4]
    notices = lab.tie_notices(ranked)
    assert notices == ["these 2 settings are equivalent on this data (rank 1: 24/24 hits, 0 false alerts, median "
                       "time to alert 21-21.4 s): none, ema half_life_s=0.5"]
    assert lab.rank_strategies(_table(ROWS), tie_tta_s=3.0)["tie_group"].tolist() == [1, 1, 1, 2, 3]


def test_recommend_prefers_a_smoothed_setting_among_equivalent_ones_and_names_its_source():
    rec = lab.recommend(_table(ROWS))
    assert rec.refused is None and rec.strategy == "ema half_life_s=0.5" and rec.equivalent == ("none",)
    assert rec.rule_config.smoothing.kind.value == "ema" and rec.events == 24
    assert "measured error model" in rec.text and "2.50 camera-hours" in rec.text
    assert "Equivalent on this data: 2 settings (none, ema half_life_s=0.5)" in rec.text
    model = lab.recommend(_table(ROWS, source="model"))
    assert "the detector model's own detections" in model.text
    # Only none in the best group: it is recommended, and said to be the fastest.
    alone = lab.recommend(_table([ROWS[0], ROWS[2]]))
    assert alone.strategy == "none" and alone.equivalent == ()


def test_recommend_keeps_the_current_setting_when_it_is_among_the_best():
    current = ("k_of_n window_s=5 fraction=0.6", "k_of_n", {"window_s": 5.0, "fraction": 0.6}, 24, 24, 0, 21.9)
    rec = lab.recommend(_table([*ROWS, current]))
    assert rec.strategy == "k_of_n window_s=5 fraction=0.6" and "current setting" in rec.text
    assert set(rec.equivalent) == {"none", "ema half_life_s=0.5"}


def test_recommend_refuses_below_the_minimum_of_events():
    few = [(label, family, params, 3, 3, false, tta) for label, family, params, _, _, false, tta in ROWS]
    rec = lab.recommend(_table(few, hours=0.09))
    assert rec.row is None and rec.strategy is None and rec.rule_config is None
    assert rec.refused.startswith("only 3 true event(s) on 0.09 camera-hours (at least 20")
    assert lab.recommend(_table(few), min_events=3).strategy == "ema half_life_s=0.5"
    assert lab.MIN_EVENTS == 20


def test_false_rate_says_how_many_in_how_many_camera_hours():
    assert lab.false_rate_text(1, 0.0922) == "1 in 0.09 camera-hours (11/camera-hour)"
    assert lab.false_rate_text(0, 3.14) == "0 in 3.14 camera-hours"
    assert lab.false_rate_text(2, 0.0) == "2 in no camera time"


def test_evaluate_strategies_carries_what_the_recommendation_needs():
    log = lab.detection_log(lab.variants(["down_long", "normal_rest"], [1, 2], jitter=0.1), use_model=False,
                            config=BASE, noise=lab.DEMO_MODEL_ERRORS)
    table = lab.evaluate_strategies(log, "horse_down", {"none": [{}], "k_of_n": {"window_s": [5.0], "fraction": [0.6]}},
                                    BASE)
    assert table.attrs["source"] == "error_model" and table.attrs["cameras"] == 4
    assert table.attrs["base_setting"] == lab.effective_setting(BASE.rules.horse_down)
    assert table["false_rate"].str.contains("camera-hours").all()
    rec = lab.recommend(table)
    assert rec.refused is not None and "only 2 true event(s)" in rec.refused  # two lie-downs: too few
    rec = lab.recommend(table, min_events=2)
    assert rec.strategy in set(table["strategy"]) and rec.source == "error_model"
