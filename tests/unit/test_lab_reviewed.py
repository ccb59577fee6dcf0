"""Verdicts feed the lab: a run reviewed through the review page's HTTP API by a scripted reviewer (who answers
from the synthetic truth) scores every smoothing strategy exactly as the ground truth does."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import requests

from fbvision import lab
from fbvision.alerts.backend import EmbeddedBackend
from fbvision.core.events import AlertEvent, AlertState, Evidence, Severity
from fbvision.core.logic_config import LogicConfig

pytestmark = pytest.mark.timeout(240)

BASE = LogicConfig.model_validate({"rules": {"horse_down": {
    "escalation": [{"after_s": 20, "severity": "warning"}, {"after_s": 40, "severity": "critical"}],
    "exit_after_s": 5, "cooldown_s": 30}}})
SCENARIOS = ["down_long", "normal_rest", "rolling", "night_down"]
#: The setting that ran: warns 50 s into a bout - after the 20 s + 10 s the lab allows (late: a miss *and* a false
#: alert for the ground truth, "true" for a person watching the clip), and never for night_down's 48 s (missed).
DEPLOYED = type(BASE.rules.horse_down).model_validate(
    {**BASE.rules.horse_down.model_dump(), "escalation": [{"after_s": 50, "severity": "warning"}]})
GRID = {"none": [{}], "k_of_n": {"window_s": [1.0, 5.0], "fraction": [0.6, 0.8]}, "ema": {"ema_half_life_s": [0.5, 2.0]},
        "min_duration": {"after_s": [10.0], "exit_after_s": [0.0]}}
COMPARED = ["strategy", "expected", "hits", "misses", "false_alerts", "recall", "precision", "raised"]


def deliver(backend: EmbeddedBackend, transitions: pd.DataFrame) -> None:
    """The deployed setting's alerts, as the pipeline would have delivered them."""
    for row in transitions.itertuples(index=False):
        state = AlertState(row.state)
        event = AlertEvent.create(
            camera_id=row.camera_id, rule="horse_down", track_id=int(row.track_id), state=state,
            severity=Severity(row.severity), started_at=float(row.started_at), updated_at=float(row.t),
            resolved_at=float(row.ended_at) if state is AlertState.resolved else None, evidence=Evidence(seq=0))
        r = requests.post(backend.url, data=event.to_json(), headers={"Content-Type": "application/json"}, timeout=5)
        assert r.status_code in (200, 201), r.text


def test_scores_from_scripted_verdicts_equal_the_ground_truth_scores(tmp_path):
    log = lab.detection_log(SCENARIOS, use_model=False, config=BASE)
    run_dir = tmp_path / "run"
    (run_dir / "recording").mkdir(parents=True)
    log.to_parquet(run_dir / "recording" / "part-000000.parquet", index=False)
    with EmbeddedBackend(run_dir / "alerts.sqlite") as backend:
        deliver(backend, lab.run_strategy(log, "horse_down", DEPLOYED, BASE))
        raised = [a for a in requests.get(f"{backend.base_url}/alerts", timeout=5).json() if a["state"] == "raised"]
        assert raised
        truth = lab.expected_for(log, "horse_down", BASE, max_delay_s=10.0)
        verdicts, missed = lab.scripted_review(raised, truth)
        assert [v["verdict"] for v in verdicts] == ["true"] and [m["camera_id"] for m in missed] == ["night_down"]
        for v in verdicts:
            assert requests.post(f"{backend.base_url}/api/verdicts", json=v, timeout=5).status_code == 201
        for m in missed:
            assert requests.post(f"{backend.base_url}/api/missed", json=m, timeout=5).status_code == 201
        csv_text = requests.get(f"{backend.base_url}/verdicts.csv", timeout=5).text
        missed_text = requests.get(f"{backend.base_url}/missed.csv", timeout=5).text
    recording, reviews = lab.load_reviewed_run(run_dir)
    assert reviews.summary()["true"] >= 1 and reviews.summary()["true"] + reviews.summary()["false"] == len(raised)
    scenarios = {name: name for name in SCENARIOS}
    from_truth = lab.evaluate_strategies(recording, "horse_down", GRID, BASE, scenarios=scenarios)
    from_reviews = lab.evaluate_reviewed(recording, reviews, "horse_down", GRID, BASE)
    pd.testing.assert_frame_equal(from_truth[COMPARED], from_reviews[COMPARED])
    assert from_truth["false_per_cam_h"].tolist() == pytest.approx(from_reviews["false_per_cam_h"].tolist())
    assert not math.isnan(from_reviews["precision"].iloc[0])
    # the same from the exported CSV files
    (tmp_path / "verdicts.csv").write_text(csv_text)
    (tmp_path / "missed.csv").write_text(missed_text)
    from_csv = lab.evaluate_reviewed(recording, lab.load_reviews(tmp_path / "verdicts.csv"), "horse_down", GRID, BASE)
    pd.testing.assert_frame_equal(from_truth[COMPARED], from_csv[COMPARED])


def test_without_missed_events_recall_only_counts_what_was_confirmed(tmp_path):
    reviews = lab.Reviews(
        verdicts=pd.DataFrame([{"episode_key": "k", "camera_id": "c", "rule": "horse_down", "track_id": 1,
                                "started_at": 100.0, "raised_at": 120.0, "resolved_at": 200.0, "severity": "warning",
                                "verdict": "true", "start_at": math.nan, "end_at": math.nan}]),
        missed=pd.DataFrame(columns=lab.reviewed.MISSED_COLUMNS))
    expected = lab.reviewed_expected(reviews, "horse_down", BASE, max_delay_s=10.0, cameras=["c", "d"])
    assert expected["d"] == [] and len(expected["c"]) == 1
    e = expected["c"][0]
    assert (e.onset, e.deadline, e.condition_end) == (100.0, 130.0, 200.0)  # the episode's own times


def test_scripted_reviewer_says_false_outside_events_and_missed_for_silent_ones():
    from fbvision.lab.groundtruth import ExpectedAlert

    events = {"c": [ExpectedAlert("c", "horse_down", 10.0, 40.0, 60.0), ExpectedAlert("c", "horse_down", 100.0, 130.0,
                                                                                       150.0)]}
    alerts = [{"episode_key": "a", "camera_id": "c", "rule": "horse_down", "updated_at": 35.0},
              {"episode_key": "b", "camera_id": "c", "rule": "horse_down", "updated_at": 80.0}]
    verdicts, missed = lab.scripted_review(alerts, events)
    assert [(v["episode_key"], v["verdict"]) for v in verdicts] == [("a", "true"), ("b", "false")]
    assert verdicts[0]["start_at"] == 10.0 and verdicts[0]["end_at"] == 60.0
    assert [(m["start_at"], m["end_at"]) for m in missed] == [(100.0, 150.0)]
