"""The run report never raises over a camera that could not run (issue 13): a misspelt ``synthetic:`` scene and
a scenario file gone by report time are "not run" with the reason, not misses and not an exception that leaves
the run without any report. A real redis-server holds the run's counters and camera statuses."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fault"))

import fbv_fault_harness as h  # noqa: E402

from fbvision.core.transport import Transport  # noqa: E402
from fbvision.run.report import build_report, render_markdown, write_report  # noqa: E402
from fbvision.run.runner import PipelineRun  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def test_unknown_scenes_are_not_run_and_the_report_is_written(redis_url, tmp_path):
    gone = tmp_path / "gone.yaml"
    settings = h.make_settings({"cam-typo": "synthetic:normal_wlak", "cam-gone": f"synthetic:{gone}",
                                "cam-missing": "/no/such/video.mp4"})
    run = PipelineRun(settings.model_copy(update={"redis": settings.redis.model_copy(update={"url": redis_url})}),
                      tmp_path / "run", dashboard=False)
    run.transport = Transport(redis_url)
    run.redis_url = redis_url
    run.started_at = time.time() - 30
    try:
        # cam-gone ran (its scenario file was there then), the other two never did
        run.transport.report_totals("camera", "w1", {"frames_pushed": 40, "frames_pushed:cam-gone": 40})
        run.transport.set_camera_status("cam-typo", {
            "state": "closed", "detail": "closed", "failed": True, "updated": time.time(),
            "problem": "camera cam-typo: no built-in scenario 'normal_wlak'; available: normal_walk"})
        report = build_report(run, time.time())
    finally:
        run.transport.close()
    md_path, json_path = write_report(report, run.run_dir)
    md = md_path.read_text()
    runs = report["camera_runs"]
    assert runs["cam-typo"]["ran"] is False and "no built-in scenario" in runs["cam-typo"]["not_run_reason"]
    assert runs["cam-missing"]["ran"] is False  # no status at all: still reported, with a reason
    assert runs["cam-missing"]["not_run_reason"]
    assert runs["cam-gone"]["ran"] is True
    gt = report["ground_truth"]
    assert set(gt["not_run"]) == {"cam-typo", "cam-gone"} and gt["cameras"] == [] and gt["matches"] == []
    assert "not found" in gt["not_run"]["cam-gone"]
    assert gt["summary"]["misses"] == 0
    assert "**not run**: camera cam-typo: no built-in scenario" in md
    assert "not run: camera cam-typo" in md and json_path.exists()
    assert render_markdown(report) == md
