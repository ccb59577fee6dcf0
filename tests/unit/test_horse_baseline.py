"""The per-camera horse baseline (fbvision.logic.baseline) and horse_down's baseline mode: days rolling over,
p95, readiness, JSON round trip, bounded size, closing days from a time budget, the adaptive raise age, and
the config checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from fbvision.core.config import Settings
from fbvision.core.logic_config import BaselineConfig, HorseDownRule, LogicConfig, TimeBudgetConfig
from fbvision.logic.baseline import DaySummary, HorseBaseline
from fbvision.logic.rules import horse_down_raise_after
from fbvision.logic.smoothing import EpisodeTracker
from fbvision.logic.timebudget import LYING, STANDING, TimeBudget

MIDNIGHT = 1_700_006_400.0  # 2023-11-15 00:00 UTC


def day(n: int, bouts_min=(10, 12, 8), observed_h: float = 24.0, lying_min: float = 180.0) -> DaySummary:
    return DaySummary(n, observed_h, lying_min, tuple(60.0 * b for b in bouts_min))


def baseline(**cfg) -> HorseBaseline:
    return HorseBaseline(BaselineConfig(enabled=True, **cfg), camera_id="stall-1")


def test_days_roll_over_by_date_and_by_count():
    b = baseline(days=7)
    for n in range(10):
        b.add_day(day(n))
    assert [d.day for d in b.counted_days()] == list(range(3, 10))  # the last 7
    b.add_day(day(30))  # a camera off for three weeks: the old days are stale
    assert [d.day for d in b.counted_days()] == [30]


def test_ready_needs_min_days_with_enough_observed_hours_and_bouts():
    b = baseline(min_days=3, min_observed_h=16, min_bouts=5)
    b.add_day(day(0))
    b.add_day(day(1, observed_h=10))  # a short day (restart, outage): kept, not counted
    assert not b.ready and b.p95_bout_s() is None
    b.add_day(day(2))
    assert not b.ready  # two counted days
    b.add_day(day(3))
    assert b.ready
    assert [d.day for d in b.counted_days()] == [0, 2, 3]
    few = baseline(min_days=1, min_bouts=5)
    few.add_day(day(0, bouts_min=(10, 20)))
    assert not few.ready  # one day, two bouts: too few for a p95


def test_p95_is_the_counted_days_bout_percentile():
    b = baseline(min_days=2, min_bouts=1)
    rng = np.random.default_rng(0)
    bouts = [tuple(rng.uniform(5, 15, 6)) for _ in range(3)]
    for n, mins in enumerate(bouts):
        b.add_day(day(n, mins))
    b.add_day(day(3, (90,), observed_h=2))  # not counted: its 90 min bout does not move the p95
    want = np.percentile(60.0 * np.concatenate(bouts), 95)
    assert b.p95_bout_s() == pytest.approx(want)
    summary = b.summary()
    assert summary["ready"] and summary["days"] == 3 and summary["bouts"] == 18
    assert summary["p95_bout_min"] == pytest.approx(want / 60)


def test_json_round_trip_and_refusals():
    b = baseline(min_days=2, min_bouts=1)
    for n in range(4):
        b.add_day(day(n, (10 + n, 5)))
    raw = json.loads(json.dumps(b.to_dict()))
    again = HorseBaseline.from_dict(raw, BaselineConfig(enabled=True, min_days=2, min_bouts=1), camera_id="stall-1")
    assert again.to_dict() == b.to_dict()
    assert again.p95_bout_s() == pytest.approx(b.p95_bout_s())
    assert not again.changed
    with pytest.raises(ValueError, match="version"):
        again.load({**raw, "version": 99})
    with pytest.raises(ValueError, match="camera"):
        HorseBaseline(BaselineConfig(), camera_id="other").load(raw)
    with pytest.raises(ValueError, match="finite"):
        again.load({**raw, "days": [{"day": 1, "observed_h": float("nan"), "lying_min": 1, "bouts_s": []}]})


def test_state_is_bounded():
    b = baseline(days=3, max_bouts_per_day=4)
    budget = TimeBudget(TimeBudgetConfig(min_posture_s=0))
    t = MIDNIGHT + 12 * 3600
    b.update(t, budget)
    for i in range(20):  # 20 bouts of 1..20 min in one day: the 4 longest are kept
        for posture, minutes in ((STANDING, 5), (LYING, i + 1)):
            for _ in range(int(minutes * 6)):
                budget.observe(t, posture)
                t += 10.0
    budget.observe(t, STANDING)
    budget.observe(t + 10.0, STANDING)  # the stand is confirmed: the last bout ends
    b.update(MIDNIGHT + 36 * 3600 + 1, budget)
    (closed,) = b.counted_days() or b._days
    assert sorted(closed.bouts_s, reverse=True) == pytest.approx([1200, 1140, 1080, 1020], abs=11)
    for n in range(10):
        b.add_day(day(closed.day + 1 + n, bouts_min=tuple(range(1, 60))))
    assert len(b.to_dict()["days"]) == 3
    assert len(json.dumps(b.to_dict())) < 3 * 64 * 12 + 1000


def test_a_day_closes_from_the_time_budget_at_day_start_h():
    """Noon to noon (default): the night's bouts are in one day; a bout belongs to the day it ended in."""
    b = baseline(min_days=1, min_bouts=1, min_observed_h=1)
    budget = TimeBudget(TimeBudgetConfig(min_posture_s=0))
    t = MIDNIGHT + 11 * 3600  # 11:00: day "-1" (before noon)
    script = [(STANDING, 1.5 * 3600), (LYING, 20 * 60), (STANDING, 10 * 3600), (LYING, 40 * 60),
              (STANDING, 14 * 3600)]
    closed = []
    for posture, seconds in script:
        end = t + seconds
        while t < end:
            if b.update(t, budget):
                closed.append(b.day_of(t) - 1)
            budget.observe(t, posture)
            t += 10.0
    assert len(closed) == 2  # at noon on both days
    first, second = b._days
    assert first.observed_h == pytest.approx(1.0, abs=0.02) and first.bouts_s == ()
    assert second.observed_h == pytest.approx(24.0, abs=0.02)
    assert sorted(second.bouts_s) == pytest.approx([1200.0, 2400.0], abs=11)
    assert second.lying_min == pytest.approx(60.0, abs=0.5)
    assert b.ready and b.p95_bout_s() > 1200


def test_raise_age_fixed_until_ready_then_clamped_k_times_p95():
    fixed = HorseDownRule()
    assert horse_down_raise_after(fixed, None).after_s == 1800.0
    params = HorseDownRule(mode="baseline", baseline_k=1.5, baseline_min_s=1200, baseline_max_s=5400)
    learning = horse_down_raise_after(params, baseline())
    assert learning.after_s == 1800.0 and learning.details["baseline_ready"] == 0.0
    b = baseline(min_days=1, min_bouts=1)
    b.add_day(day(0, (8, 8, 8)))  # p95 8 min: 1.5 x = 12 min, below the floor
    assert horse_down_raise_after(params, b).after_s == 1200.0
    b.add_day(day(1, (40, 40, 40)))
    b.add_day(day(2, (40, 40, 40)))
    got = horse_down_raise_after(params, b)
    assert got.after_s == pytest.approx(1.5 * b.p95_bout_s()) and got.details["baseline_ready"] == 1.0
    b.add_day(day(3, (200, 200, 200, 200, 200, 200, 200, 200, 200, 200)))
    assert horse_down_raise_after(params, b).after_s == 5400.0  # the cap


def test_episode_shift_moves_the_whole_ladder():
    tracker = EpisodeTracker(escalation=[(10.0, "warning"), (20.0, "critical")])
    tracker.shift_s = -5.0
    states = {}
    for t in range(0, 30):
        for tr in tracker.update(1.0, float(t)):
            states[tr.state.value + ":" + tr.severity.value] = t
    assert states == {"raised:warning": 5, "ongoing:critical": 15}


def test_config_is_checked_with_clear_messages():
    with pytest.raises(ValidationError, match="needs logic.baseline.enabled"):
        LogicConfig.model_validate({"rules": {"horse_down": {"mode": "baseline"}}})
    with pytest.raises(ValidationError, match="baseline_min_s"):
        HorseDownRule(baseline_min_s=4000, baseline_max_s=3000)
    with pytest.raises(ValidationError, match="min_days"):
        BaselineConfig(days=2, min_days=3)
    with pytest.raises(ValidationError, match="time_budget.enabled"):
        LogicConfig.model_validate({"baseline": {"enabled": True}, "time_budget": {"enabled": False}})
    with pytest.raises(ValidationError, match="mode"):
        HorseDownRule(mode="adaptive")
    with pytest.raises(ValidationError, match="camera 'a'.*needs logic.baseline.enabled"):
        Settings.model_validate({"cameras": [{"id": "a", "source": "synthetic:normal_rest",
                                              "logic": {"rules": {"horse_down": {"mode": "baseline"}}}}]})
    ok = LogicConfig.model_validate({"baseline": {"enabled": True}, "rules": {"horse_down": {"mode": "baseline"}}})
    assert ok.baseline.days == 7 and ok.rules.horse_down.baseline_k == 1.5
    assert not LogicConfig().baseline.enabled and LogicConfig().rules.horse_down.mode.value == "fixed"
