"""horse_down against the horse's own normal on multi-day synthetic scenarios (fbvision.lab.horseday): the
real CameraLogic on ground-truth detections at 0.2 fps, no pixels (~7 s a day), fixed vs baseline mode.

The behaviour, not the numbers: for a horse whose bouts never pass ~12 min, the baseline mode catches a
27 min bout (abnormal for it) that the fixed 30 min misses; for a horse that sleeps flat for 35-50 min every
night, the fixed mode alerts every night and the baseline mode stops doing so once it has learnt the horse,
and still catches its abnormal 100 min bout.
"""

from __future__ import annotations

import pytest

from fbvision.lab import horseday

LEARN = {"min_days": 2}  # two learning days keep the scenarios short


@pytest.mark.slow
@pytest.mark.timeout(900)  # ~150 s alone; two of these share the parallel pass's two cores with everything else
def test_baseline_catches_a_bout_abnormal_for_a_short_napper_that_fixed_misses():
    fixed, adaptive = horseday.evaluate_baseline(("short_napper",), n_days=3, **LEARN)
    assert fixed["events"] == adaptive["events"] == 1
    assert fixed["caught"] == 0 and fixed["false_alerts"] == 0
    assert adaptive["caught"] == 1 and adaptive["false_alerts"] == 0
    assert all(20.0 <= t < 30.0 for t in adaptive["threshold_min"])  # the floor, under the fixed 30 min


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_baseline_stops_the_long_sleepers_nightly_false_alarms_and_still_catches_its_long_bout():
    fixed, adaptive = horseday.evaluate_baseline(("long_sleeper",), n_days=4, **LEARN)
    assert fixed["caught"] == adaptive["caught"] == 1
    assert fixed["false_after_learning"] >= 2  # every normal night
    assert adaptive["false_after_learning"] == 0
    assert adaptive["false_alerts"] <= fixed["false_alerts"] - fixed["false_after_learning"]  # learning: as fixed
    assert max(adaptive["threshold_min"]) > 30.0 and adaptive["p95_bout_min"] > 30.0


def test_habit_days_script_the_abnormal_bout_on_the_last_day():
    days = horseday.habit_days("short_napper", n_days=3)
    assert days.scenario.effective_duration_s == pytest.approx(3 * horseday.DAY_S)
    ((start, end),) = days.abnormal
    assert 2 * horseday.DAY_S < start < end < 3 * horseday.DAY_S
    assert (end - start) / 60 == pytest.approx(27.0, abs=0.2)
    assert horseday.habit_days("long_sleeper", n_days=2, abnormal_day=None).abnormal == ()
    with pytest.raises(KeyError, match="habit"):
        horseday.habit_days("lazy", n_days=1)
