"""A horse's day survives a restart: TimeBudget.to_dict / load (the logic worker saves it in Redis)."""

from __future__ import annotations

import json

import pytest

from fbvision.core.logic_config import TimeBudgetConfig
from fbvision.logic.timebudget import TimeBudget

T0 = 1_800_000_000.0
CFG = TimeBudgetConfig(min_posture_s=0, min_absent_s=0)


def feed(budget: TimeBudget, start: float, spans: list[tuple[str, float]], fps: float = 1.0) -> float:
    t = start
    for posture, seconds in spans:
        for _ in range(int(seconds * fps)):
            budget.observe(t, posture, moving=False)
            t += 1.0 / fps
    return t


def restored(budget: TimeBudget, cfg: TimeBudgetConfig = CFG) -> TimeBudget:
    fresh = TimeBudget(cfg)
    fresh.load(json.loads(json.dumps(budget.to_dict())))  # through JSON, as in Redis
    return fresh


def test_the_counters_and_bouts_come_back_as_they_were():
    budget = TimeBudget(CFG)
    end = feed(budget, T0, [("standing", 1800), ("lying", 1200), ("standing", 600), ("lying", 900),
                            ("standing", 300)])
    before = budget.summary(end, fresh=True)
    again = restored(budget)
    after = again.summary(end, fresh=True)
    assert after is not None and before is not None
    for field in ("observed_s", "lying_s", "standing_s", "bouts", "lie_downs", "get_ups", "longest_bout_min"):
        assert getattr(after, field) == pytest.approx(getattr(before, field), abs=0.2), field
    assert [(b.start, b.end) for b in again.bouts()] == [(b.start, b.end) for b in budget.bouts()]
    assert after.lying_min == pytest.approx(35.0, abs=0.5) and after.bouts == 2


def test_a_lying_bout_goes_on_across_a_short_restart_and_the_gap_is_unknown_time():
    budget = TimeBudget(CFG)
    end = feed(budget, T0, [("standing", 600), ("lying", 600)])
    again = restored(budget)
    # 60 s later (the restart), still lying for 10 min, then up
    end2 = feed(again, end + 60.0, [("lying", 600), ("standing", 120)])
    summary = again.summary(end2, fresh=True)
    assert summary.bouts == 1  # one bout, not two: the restart is a gap inside it (bout_gap_s 300 s)
    assert summary.longest_bout_min == pytest.approx(21.0, abs=0.2)  # wall time, gap included
    assert summary.lying_min == pytest.approx(20.0, abs=0.2)  # the gap itself is not lying
    assert summary.unknown_s == pytest.approx(60.0, abs=2.0)
    assert summary.lie_downs == 1 and summary.get_ups == 1


def test_a_long_restart_ends_the_bout_as_censored():
    budget = TimeBudget(CFG)
    end = feed(budget, T0, [("standing", 600), ("lying", 600)])
    again = restored(budget)
    end2 = feed(again, end + 3600.0, [("standing", 600)])  # an hour away: longer than bout_gap_s
    bouts = again.bouts()
    assert len(bouts) == 1 and bouts[0].censored and bouts[0].duration_s == pytest.approx(599.0, abs=1.0)
    assert again.summary(end2, fresh=True).get_ups == 0  # the get-up was not seen


def test_the_state_is_small_and_refused_when_it_does_not_fit():
    budget = TimeBudget(CFG)
    feed(budget, T0, [("standing", 3600 * 6), ("lying", 3600)], fps=0.2)
    text = json.dumps(budget.to_dict())
    assert len(text) < 40_000  # 7 h of 1-minute bins
    with pytest.raises(ValueError, match="version"):
        TimeBudget(CFG).load({**budget.to_dict(), "v": 99})
    with pytest.raises(ValueError, match="bins"):
        TimeBudget(TimeBudgetConfig(min_posture_s=0, min_absent_s=0, bin_s=120)).load(budget.to_dict())
