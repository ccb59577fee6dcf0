"""A horse's day (fbvision.logic.timebudget): time-based counters, gap policy, debouncing, bounded memory; the
lying_time_low and restless rules; the camera's budget in CameraLogic, the recording, the report, Prometheus."""

from __future__ import annotations

import json

import pytest
import requests

from fbvision.core import metrics
from fbvision.core.candidates import Candidates
from fbvision.core.logic_config import LogicConfig, LyingTimeLowRule, RestlessRule, TimeBudgetConfig
from fbvision.logic import rules
from fbvision.logic.camera_logic import CameraLogic
from fbvision.logic.recorder import TIME_BUDGET_COLUMNS, Recorder, read_recording
from fbvision.logic.timebudget import ABSENT, LYING, STANDING, TimeBudget
from fbvision.run.report import time_budget_lines, time_budget_section

H = 3600.0
STAND_BOX = (100.0, 100.0, 400.0, 400.0)  # 300 x 300 standing
LIE_BOX = (100.0, 300.0, 450.0, 400.0)  # low and wide
FRAME = (1280, 720)


def feed(budget: TimeBudget, spans, fps: float = 1.0, t0: float = 0.0, moving: bool = False) -> float:
    """Feed (posture, seconds) spans at ``fps``; returns the time after the last span."""
    t = t0
    for posture, seconds in spans:
        end = t + seconds
        while t < end - 1e-9:
            budget.observe(t, posture, moving)
            t += 1.0 / fps
    return t


@pytest.mark.parametrize("fps", [0.2, 1.0, 5.0])
def test_lying_time_and_bouts_are_seconds_at_any_frame_rate(fps):
    budget = TimeBudget(TimeBudgetConfig())
    feed(budget, [(STANDING, 600), (LYING, 1800), (STANDING, 900), (LYING, 600), (STANDING, 300)], fps)
    s = budget.summary(fresh=True)  # at the last frame (after it: unknown until the next frame)
    assert s.lying_min == pytest.approx(40.0, abs=0.1)
    assert s.bouts == 2 and s.lie_downs == 2 and s.get_ups == 2 and s.bouts_censored == 0
    assert s.longest_bout_min == pytest.approx(30.0, abs=0.1)
    assert s.mean_bout_min == pytest.approx(20.0, abs=0.1)
    assert s.observed_s == pytest.approx(4200 - 1 / fps, abs=0.5)  # float32 bins
    assert s.unknown_s == pytest.approx(0.0, abs=0.5)
    assert s.posture == STANDING


def test_short_spells_are_absorbed_and_confirmed_spells_count_from_their_first_frame():
    budget = TimeBudget(TimeBudgetConfig(min_posture_s=30))
    # 10 s "standing" inside a lying bout (head up, a glitch) and 20 s "lying" while standing: noise.
    t = feed(budget, [(STANDING, 300), (LYING, 20), (STANDING, 300), (LYING, 600), (STANDING, 10), (LYING, 600),
                      (STANDING, 300)])
    s = budget.summary(t, fresh=True)
    assert s.bouts == 1 and s.lie_downs == 1 and s.get_ups == 1
    assert s.lying_min == pytest.approx(1210 / 60, abs=0.05)  # the bout, its 10 s head-up included
    assert budget.bouts()[0].start == pytest.approx(620.0)  # back-dated to the first lying frame


def test_a_gap_is_unknown_time_and_cuts_the_bout():
    budget = TimeBudget(TimeBudgetConfig(max_gap_s=30))
    t = feed(budget, [(STANDING, 600), (LYING, 600)])
    t = feed(budget, [(LYING, 600), (STANDING, 600)], t0=t + 1800)  # 30 min without frames
    s = budget.summary(t, fresh=True)
    assert s.unknown_s == pytest.approx(1800 + 1, abs=1)  # neither lying nor standing
    assert s.lying_min == pytest.approx(20.0, abs=0.1)
    assert s.bouts == 2 and s.bouts_censored == 2  # cut by the gap: its end, then its start, unknown
    assert s.lie_downs == 1 and s.get_ups == 1  # nothing counted across the gap


def test_a_short_gap_inside_a_bout_is_unknown_time_but_does_not_split_it():
    budget = TimeBudget(TimeBudgetConfig(max_gap_s=30, bout_gap_s=300))
    t = feed(budget, [(STANDING, 600), (LYING, 600)])
    t = feed(budget, [(LYING, 600), (STANDING, 600)], t0=t + 119)  # 2 min without frames
    s = budget.summary(t, fresh=True)
    assert s.unknown_s == pytest.approx(120, abs=1)
    assert s.lying_min == pytest.approx(20.0, abs=0.1)  # the gap is not lying time
    assert s.bouts == 1 and s.bouts_censored == 0 and s.lie_downs == 1 and s.get_ups == 1
    assert budget.bouts()[0].duration_s == pytest.approx(1320, abs=1)  # wall time, gap included


def test_short_absence_keeps_the_posture_long_absence_is_absent():
    budget = TimeBudget(TimeBudgetConfig(min_absent_s=120))
    t = feed(budget, [(STANDING, 300), (LYING, 600), (ABSENT, 60), (LYING, 600), (STANDING, 300), (ABSENT, 600),
                      (STANDING, 60)])
    s = budget.summary(t, fresh=True)
    assert s.bouts == 1 and s.lying_min == pytest.approx(21.0, abs=0.1)
    assert s.absent_min == pytest.approx(10.0, abs=0.1)


def test_rolling_window_forgets_the_oldest_day_and_memory_is_bounded():
    cfg = TimeBudgetConfig(max_bouts=8)
    budget = TimeBudget(cfg)
    nbytes = budget.nbytes()
    assert nbytes == 1440 * (7 * 4 + 8)  # one row of float32 counters + its bin number per minute
    t = 0.0
    for _ in range(30):  # 30 bouts of 10 min over ~2.5 days, one every 2 h
        t = feed(budget, [(STANDING, 6600), (LYING, 600)], fps=0.2, t0=t)
    s = budget.summary(t, fresh=True)
    assert s.bouts == 9  # the newest max_bouts = 8 ended bouts are kept, plus the one in progress
    assert len(budget.bouts()) == 8 and budget.nbytes() == nbytes
    assert s.lying_min == pytest.approx(120.0, abs=1.0)  # 12 bouts of 10 min in the last 24 h
    assert s.lie_downs == 12 and s.covered_s == 86_400.0


def test_night_hours_and_restlessness():
    cfg = TimeBudgetConfig(night_start_h=20, night_end_h=6, timezone="UTC")
    budget = TimeBudget(cfg)
    day = 19 * H  # 19:00 UTC on 1970-01-01
    t = feed(budget, [(STANDING, H)], t0=day, moving=True)  # an hour moving by day
    t = feed(budget, [(STANDING, 2 * H)], t0=t)  # 20:00-22:00 standing still
    t = feed(budget, [(STANDING, 600)], t0=t, moving=True)  # 10 min moving at night
    s = budget.summary(t, fresh=True)
    assert budget.is_night(21 * H) and not budget.is_night(12 * H) and budget.is_night(3 * H)
    assert s.night_observed_h == pytest.approx(2 + 600 / H, abs=0.02)
    assert s.restless_moving_min_per_h == pytest.approx(10 / (2 + 1 / 6), rel=0.02)
    assert s.moving_s == pytest.approx(H + 600, abs=2)
    with pytest.raises(ValueError, match="time zone"):
        TimeBudgetConfig(timezone="Mars/Olympus")


def test_lying_time_low_and_restless_scores():
    low = LyingTimeLowRule(enabled=True, min_lying_min=30, min_observed_h=20)
    assert rules.lying_time_low(10.0, 19.0, low) is None  # not enough observed time yet
    assert rules.lying_time_low(10.0, 23.0, low) == 1.0
    assert rules.lying_time_low(45.0, 23.0, low) == 0.0
    rest = RestlessRule(enabled=True, max_transitions=6, max_moving_min=20, night_only=True)
    assert rules.restless(8, 0, 3600, 3600, night=False, params=rest) == 0.0  # by day: not scored
    assert rules.restless(8, 0, 3600, 3600, night=True, params=rest) == 1.0
    assert rules.restless(2, 25 * 60, 3600, 3600, night=True, params=rest) == 1.0
    assert rules.restless(2, 5 * 60, 3600, 3600, night=True, params=rest) == 0.0
    assert rules.restless(8, 0, 1000, 3600, night=True, params=rest) is None  # mostly a gap
    assert not LyingTimeLowRule().enabled and not RestlessRule().enabled  # off by default


def _logic(**rule_overrides) -> CameraLogic:
    config = LogicConfig.model_validate({"rules": rule_overrides})
    return CameraLogic("cam", config, None, [0], frame_size=FRAME)


def _run(logic: CameraLogic, spans, fps: float = 0.5, t0: float = 20 * H):
    t, seq, outcomes = t0, 0, []
    for box, seconds in spans:
        end = t + seconds
        while t < end - 1e-9:
            cands = Candidates.create([box], [0.9], [0]) if box is not None else Candidates.empty()
            outcomes.append(logic.process(seq=seq, t=t, candidates=cands, frame_size=FRAME))
            t += 1 / fps
            seq += 1
    return outcomes


def test_camera_logic_keeps_the_camera_and_track_budgets():
    logic = _logic()
    outcomes = _run(logic, [(STAND_BOX, 600), (LIE_BOX, 1200), (STAND_BOX, 600)])
    s = logic.time_budget()
    assert s.lying_min == pytest.approx(20.0, abs=0.2) and s.bouts == 1 and s.lie_downs == 1 and s.get_ups == 1
    assert outcomes[-1].time_budget is not None and outcomes[-1].time_budget.bouts == 1
    tracks = logic.track_time_budgets()
    assert len(tracks) == 1 and next(iter(tracks.values())).bouts == 1
    json.dumps(s.to_dict(), allow_nan=False)  # JSON-able: undefined values are null


def test_lying_time_low_alerts_on_a_day_with_too_little_lying():
    logic = _logic(lying_time_low={"enabled": True, "min_observed_h": 2.5})  # (a day by default: kept short)
    outcomes = _run(logic, [(STAND_BOX, H), (LIE_BOX, 10 * 60), (STAND_BOX, 2 * H)], fps=0.2)
    raised = [a for o in outcomes for a in o.alerts if a.rule == "lying_time_low" and a.state.value == "raised"]
    assert len(raised) == 1
    assert raised[0].started_at - outcomes[0].t >= 2.5 * H  # not before min_observed_h were observed
    assert raised[0].evidence.features["lying_min"] == pytest.approx(10.0, abs=0.5)


def test_restless_alerts_on_repeated_lie_downs_at_night_only_when_enabled():
    spans = [(STAND_BOX, 600)] + [(LIE_BOX, 120), (STAND_BOX, 180)] * 6
    quiet = _run(_logic(), spans)
    assert not [a for o in quiet for a in o.alerts if a.rule == "restless"]  # off by default
    logic = _logic(restless={"enabled": True, "max_transitions": 6, "min_observed_frac": 0.3})
    outcomes = _run(logic, spans, t0=22 * H)
    raised = [a for o in outcomes for a in o.alerts if a.rule == "restless" and a.state.value == "raised"]
    assert len(raised) == 1 and raised[0].evidence.features["transitions"] >= 6
    day = _run(_logic(restless={"enabled": True, "max_transitions": 6, "min_observed_frac": 0.3}), spans, t0=10 * H)
    assert not [a for o in day for a in o.alerts if a.rule == "restless"]  # night_only


def test_recording_and_report_carry_the_time_budget(tmp_path):
    logic = _logic()
    outcomes = _run(logic, [(STAND_BOX, 300), (LIE_BOX, 600), (STAND_BOX, 120)])
    with Recorder(tmp_path / "rec") as rec:
        for o in outcomes:
            rec.record_outcome("cam", o)
    df = read_recording(tmp_path / "rec")
    assert set(TIME_BUDGET_COLUMNS) <= set(df.columns)
    assert df["tb_bouts"].iloc[-1] == 1 and df["tb_lying_min"].iloc[-1] == pytest.approx(10.0, abs=0.2)
    summary = logic.time_budget().to_dict()
    state = {"snapshots": {"logic:w1": {"time_budget": {"cam": summary, "evil|cam": {"lying_min": "x", "t": 1}}},
                           "inference:x": {"time_budget": {"nope": {}}}}}
    section = time_budget_section(state)
    assert section["cam"]["lying_min"] == summary["lying_min"] and section["evil|cam"]["lying_min"] is None
    text = "\n".join(time_budget_lines(section))
    assert "A horse's day" in text and "| cam |" in text and "evil/cam" in text


@pytest.mark.timeout(30)
def test_time_budget_is_exported_as_prometheus_gauges():
    logic = _logic()
    _run(logic, [(STAND_BOX, 300), (LIE_BOX, 600), (STAND_BOX, 120)])
    port = metrics.enable_prometheus(0)
    try:
        metrics.set_time_budget("cam", logic.time_budget().gauges())
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'fbvision_horse_day{camera="cam",measure="bouts"} 1.0' in text
        assert 'fbvision_horse_day{camera="cam",measure="lying_min"}' in text
    finally:
        metrics.disable_prometheus()
    metrics.set_time_budget("cam", {"bouts": 1.0})  # off: a no-op
