"""The review page's camera view reads a horse's day from what the logic workers publish in Redis (issue 15)."""

from __future__ import annotations

import requests

from fbvision.alerts.backend import EmbeddedBackend
from fbvision.core.logic_config import TimeBudgetConfig
from fbvision.logic.timebudget import TimeBudget
from fbvision.run.stages import horse_days


def test_horse_days_come_from_the_logic_snapshots_and_reach_the_camera_page(transport, tmp_path):
    budget = TimeBudget(TimeBudgetConfig())
    t0 = 1_800_000_000.0
    for i in range(600):  # 10 min standing, then 20 min lying, one frame a second
        budget.observe(t0 + i, "standing", moving=False)
    for i in range(600, 1800):
        budget.observe(t0 + i, "lying", moving=False)
    summary = budget.summary(t0 + 1800).to_dict()
    transport.put_snapshot("logic:logic-1", {"time_budget": {"cam-1": summary}})
    transport.put_snapshot("logic:logic-2", {"time_budget": {"cam-2": {**summary, "lying_min": 3.0}}})
    transport.put_snapshot("camera", {"time_budget": {"cam-x": summary}})  # not a logic worker's: ignored

    days = horse_days(transport)
    assert set(days) == {"cam-1", "cam-2"}
    assert abs(days["cam-1"]["lying_min"] - 20.0) < 1.0 and days["cam-1"]["bouts"] == 1

    with EmbeddedBackend(tmp_path / "a.sqlite", horse_day_source=lambda: horse_days(transport)) as b:
        page = requests.get(f"{b.base_url}/review/camera/cam-1", timeout=5).text
        assert "<table id=horse-day>" in page and f"{days['cam-1']['lying_min']:.1f} min" in page
        assert "3.0 min" in requests.get(f"{b.base_url}/review/camera/cam-2", timeout=5).text
