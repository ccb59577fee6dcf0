"""The horse baseline survives a logic worker restart, through the durable Redis (real redis-server).

Worker 1 sees days 0 and 1 of a camera (day 0 closes when day 1's first frame arrives, and is saved with the
commit); worker 2 - a new process as far as state goes - takes the camera over and sees days 2 and 3. Day 0
can be in the final baseline only because worker 2 loaded it. Day 1, whose frames went to worker 1 after the
baseline's last save, is in worker 1's time budget, which worker 1 saved on its warm stop
(``time_budget.persist_interval_s``) and worker 2 loaded: so day 1 closes from it and counts too. With the
time budget not saved (``persist_interval_s: 0``) a restart mid-day loses that day.
"""

from __future__ import annotations

import pytest
from fbv_testutil import Running, wait_until
from test_logic_worker import CLASS_IDS, FAST_WORKER, LIE, STAND, drained, publish_all

from fbvision.core.config import Settings
from fbvision.core.logic_config import LogicConfig
from fbvision.logic.baseline import HorseBaseline
from fbvision.logic.worker import LogicWorker

MIDNIGHT = 1_700_006_400.0  # 2023-11-15 00:00 UTC
CAM = "stall-b"


def settings(persist_interval_s: float = 60.0) -> Settings:
    off = {"enabled": False}
    logic = LogicConfig.model_validate({
        "tracker": {"min_consecutive_frames": 1},
        "features": {"baseline_sample_interval_s": 0, "baseline_min_samples": 3},
        "time_budget": {"min_posture_s": 0, "min_absent_s": 0, "persist_interval_s": persist_interval_s},
        "baseline": {"enabled": True, "days": 7, "min_days": 2, "min_observed_h": 0.01, "min_bouts": 1,
                     "day_start_h": 0},
        "rules": {"horse_down": {"mode": "baseline"}, "rolling": off, "too_fast": off, "horse_absent": off,
                  "camera_offline": off},
    })
    return Settings(logic=logic)


def day_frames(day: int, seq0: int, lie_s: float) -> list[tuple[int, float, tuple]]:
    """One hour of day ``day`` at 1 fps: 10 min standing, a ``lie_s`` bout, standing to the hour."""
    t0 = MIDNIGHT + day * 86_400.0 + 3600.0
    frames = []
    for i in range(3600):
        box = LIE if 600 <= i < 600 + lie_s else STAND
        frames.append((seq0 + i, t0 + i, box))
    return frames


@pytest.mark.timeout(120)
@pytest.mark.parametrize("persist_interval_s", [60.0, 0.0], ids=["time-budget-saved", "time-budget-not-saved"])
def test_baseline_survives_a_worker_restart(transport, persist_interval_s):
    frames = [day_frames(d, d * 10_000, lie_s) for d, lie_s in enumerate((300, 400, 500, 600))]
    publish_all(transport, [CAM], frames[0] + frames[1])
    w1 = LogicWorker(settings(persist_interval_s), transport, "w1", class_ids=CLASS_IDS, **FAST_WORKER)
    with Running(w1):
        assert wait_until(lambda: drained(transport), 60)
    saved = transport.load_baseline(CAM)
    assert [d["day"] for d in saved["days"]] == [19676]  # day 0 closed when day 1 began
    assert saved["days"][0]["bouts_s"] == [pytest.approx(300.0, abs=2)]
    assert bool(transport.load_time_budget(CAM)) == (persist_interval_s > 0)  # saved on the warm stop

    publish_all(transport, [CAM], frames[2] + frames[3])
    w2 = LogicWorker(settings(persist_interval_s), transport, "w2", class_ids=CLASS_IDS, **FAST_WORKER)
    with Running(w2):
        assert wait_until(lambda: drained(transport), 60)
    assert w2.counters.snapshot().get("baseline:loaded") == 1
    assert w2.counters.snapshot().get("baseline:saved") == 2  # day 1 and day 2 closed
    cfg = settings(persist_interval_s).logic
    baseline = HorseBaseline.from_dict(transport.load_baseline(CAM), cfg.baseline, camera_id=CAM)
    assert baseline.ready
    counted = [d.day for d in baseline.counted_days()]
    bouts = sorted(b for d in baseline.counted_days() for b in d.bouts_s)
    if persist_interval_s > 0:
        assert w2.counters.snapshot().get("time_budget:loaded") == 1
        assert counted == [19676, 19677, 19678]  # day 1 from worker 1's saved time budget
        assert bouts == pytest.approx([300.0, 400.0, 500.0], abs=2)
    else:
        assert not w2.counters.snapshot().get("time_budget:loaded")
        assert counted == [19676, 19678]  # day 0 from worker 1, day 2 its own; day 1 lost with the restart
        assert bouts == pytest.approx([300.0, 500.0], abs=2)
