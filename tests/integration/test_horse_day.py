"""A 24 h synthetic day per scenario family (fbvision.lab.horseday): the camera's time budget against the
scenario's ground truth, the off-by-default rules on the days they are for, and the report section.

The logic runs on ground-truth detections (jitter, 5 % dropouts, 2 % posture glitches) at 0.2 fps, no
pixels rendered: ~6 s a day. Tolerances: lying minutes within 2 % of the day's lying time + 2 min (the posture
flips mid-way through a 3 s transition; a bout is confirmed from its first frame, 5 s apart); bouts,
lie-downs and get-ups exact or +-1.
"""

from __future__ import annotations

import pytest

from fbvision.core.logic_config import LogicConfig
from fbvision.lab import horseday
from fbvision.run.report import time_budget_lines, time_budget_section


def _check(summary, truth) -> None:
    assert abs(summary.lying_min - truth.lying_min) <= 2.0 + 0.02 * truth.lying_min, (summary, truth)
    assert abs(summary.bouts - truth.bouts) <= 1, (summary, truth)
    assert abs(summary.lie_downs - truth.lie_downs) <= 1 and abs(summary.get_ups - truth.get_ups) <= 1
    if truth.bouts:
        assert summary.longest_bout_min == pytest.approx(truth.longest_bout_min, abs=2.0)
    assert summary.unknown_s == pytest.approx(0.0, abs=1.0)  # no frame lost: no unknown time
    assert summary.observed_s == pytest.approx(horseday.DAY_S - 5.0, abs=2.0)


def test_normal_day_budget_matches_the_script_and_the_report_shows_it():
    scenario = horseday.day_scenario("normal_rest")
    day = horseday.run_day(scenario)
    truth = horseday.truth_budget(scenario)
    assert truth.bouts >= 6 and 150 <= truth.lying_min <= 300  # a plausible healthy day
    _check(day.summary, truth)
    assert day.summary.night_observed_h == pytest.approx(10.0, abs=0.01)
    # The report: the logic worker publishes each camera's summary in its snapshot; the report renders it.
    state = {"snapshots": {"logic:w1": {"time_budget": {scenario.name: day.summary.to_dict()}}}}
    section = time_budget_section(state)
    assert section[scenario.name]["bouts"] == day.summary.bouts
    text = "\n".join(time_budget_lines(section))
    assert "A horse's day" in text and f"| {scenario.name} |" in text
    assert f"| {day.summary.lying_min:.1f} |" in text


@pytest.mark.slow
@pytest.mark.parametrize("family", [f for f in horseday.FAMILIES if f != "normal_rest"])
def test_every_family_day_budget_matches_the_script(family):
    scenario = horseday.day_scenario(family)
    day = horseday.run_day(scenario)
    _check(day.summary, horseday.truth_budget(scenario))


@pytest.mark.slow
def test_rules_fire_on_the_days_they_are_for():
    config = LogicConfig.model_validate({"rules": {"lying_time_low": {"enabled": True}, "restless": {"enabled": True}}})
    fired = {}
    for family in ("normal_rest", "rolling", "normal_walk"):
        day = horseday.run_day(horseday.day_scenario(family), config=config)
        fired[family] = sorted({a.rule for a in day.alerts if a.state.value == "raised"
                                and a.rule in ("lying_time_low", "restless")})
    assert fired == {"normal_rest": [], "rolling": ["restless"], "normal_walk": ["lying_time_low"]}


def test_moving_time_at_one_frame_per_second():
    """Moving time needs the track: at 0.2 fps the tracker loses a walking horse (1.5 body lengths between
    frames) and moving time comes out ~half; at 1 fps it is within 10 %."""
    scenario = horseday.day_scenario("normal_walk", fps=1.0).model_copy(update={"duration_s": 2 * 3600.0})
    day = horseday.run_day(scenario)
    ev = horseday.events(scenario)
    walking = ((ev["end_s"] - ev["start_s"])[ev["behaviour"] == "walking"]).sum()
    assert day.summary.moving_s == pytest.approx(walking, rel=0.10)


def test_frame_loss_is_unknown_time_not_lying_or_standing():
    """30 % of the frames lost at random: gaps over max_gap_s are unknown time; a bout goes on across a short
    gap, so the bout count holds (+-1); lying time loses at most the unknown time."""
    scenario = horseday.day_scenario("normal_rest")
    day = horseday.run_day(scenario, drop=0.3)
    truth = horseday.truth_budget(scenario)
    s = day.summary
    assert s.unknown_s > 0
    assert s.observed_s + s.unknown_s == pytest.approx(s.covered_s, abs=1.0)
    assert abs(s.lying_min - truth.lying_min) <= 2.0 + 0.02 * truth.lying_min + s.unknown_s / 60
    assert abs(s.bouts - truth.bouts) <= 1 and abs(s.lie_downs - truth.lie_downs) <= 1
