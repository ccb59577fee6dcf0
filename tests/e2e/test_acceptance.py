"""Acceptance on ground truth: the real runner (every stage its own process), real Redis, the committed demo
model on CPU, synthetic cameras whose scenarios say exactly when a horse lies down or runs.

One run serves the three scenario tests: three cameras side by side (the long lie-down, the runner, and a
normal horse with a short rest), as a stable would have them.
"""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest
from fbv_testutil import alive, descendants

from fbvision.core.config import DEMO_CONFIG, REPO_ROOT, load_settings
from fbvision.core.logic_config import effective_rules
from fbvision.lab.groundtruth import expected_alerts, smoothing_lag_s
from fbvision.run.runner import PipelineRun
from fbvision.synth import Scenario

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

RUN_S = 75.0
CAMERAS = {"cam-down": "down_long", "cam-run": "running", "cam-rest": "normal_rest"}


def settings_for(cameras: dict[str, str], **env):
    settings = load_settings(DEMO_CONFIG, environ=env)
    settings.cameras = [type(settings.cameras[0])(id=cid, source=f"synthetic:{name}", fps=5)
                        for cid, name in cameras.items()]
    settings.runner.dashboard = False
    return settings


@pytest.fixture(scope="module")
def acceptance_run(tmp_path_factory):
    if not (REPO_ROOT / "models" / "horse-demo-yolo11n-320.onnx").exists():
        pytest.fail("the committed demo model is missing")
    run = PipelineRun(settings_for(CAMERAS), tmp_path_factory.mktemp("acceptance"), dashboard=False)
    outcome = run.execute(RUN_S)
    return run, outcome


def raised(outcome, camera_id: str, rule: str | None = None) -> list[dict]:
    return [a for a in outcome.report["alerts"] if a["camera_id"] == camera_id and a["state"] == "raised"
            and (rule is None or a["rule"] == rule)]


def test_pipeline_ran_cleanly(acceptance_run):
    run, outcome = acceptance_run
    assert outcome.exit_reason == "duration"
    assert sum(outcome.restarts.values()) == 0, outcome.restarts
    frames = outcome.report["frames"]
    # 3 cameras x 5 fps for most of the run, every one judged by the logic stage.
    assert frames["inferred"] >= 3 * 5 * (RUN_S - 20), frames
    assert frames["judged"] >= frames["inferred"] * 0.95, frames
    assert (run.run_dir / "report.md").exists() and (run.run_dir / "report.json").exists()


def test_horse_down_longer_than_threshold_raises_exactly_one_alert_in_time(acceptance_run):
    run, outcome = acceptance_run
    alerts = raised(outcome, "cam-down")
    assert [a["rule"] for a in alerts] == ["horse_down"], alerts
    # within the configured window + 2 s of the ground-truth onset
    settings = run.settings
    rules = effective_rules(settings.logic, None)
    cam_status = outcome.report.get("ground_truth") or {}
    matches = [m for m in cam_status.get("matches", []) if m["camera_id"] == "cam-down" and m["rule"] == "horse_down"]
    assert matches and matches[0]["outcome"] == "hit", matches
    window = rules.horse_down.escalation[0].after_s + smoothing_lag_s(rules.horse_down, 5.0)
    assert 0 < matches[0]["time_to_alert_s"] <= window + 2.0, matches[0]
    delivered = [a for a in outcome.report["alerts"] if a["camera_id"] == "cam-down"]
    assert len({a["idempotency_key"] for a in delivered}) == len(delivered)  # delivered once each


def test_normal_behaviour_with_a_short_rest_raises_nothing(acceptance_run):
    _, outcome = acceptance_run
    assert raised(outcome, "cam-rest") == []


def test_running_horse_raises_too_fast(acceptance_run):
    _, outcome = acceptance_run
    alerts = raised(outcome, "cam-run", "too_fast")
    assert len(alerts) >= 1, outcome.report["alerts"]
    assert raised(outcome, "cam-run", "horse_down") == []


def test_ground_truth_scoring_in_the_report(acceptance_run):
    run, outcome = acceptance_run
    gt = outcome.report["ground_truth"]
    assert gt["summary"]["misses"] == 0 and gt["summary"]["false_alerts"] == 0, gt
    assert "Alerts versus ground truth" in (run.run_dir / "report.md").read_text()
    # the scenario really is what the expectations say
    exp = expected_alerts("cam-down", Scenario.builtin("down_long"), effective_rules(run.settings.logic, None),
                          0.0, 60.0)
    assert [e.rule for e in exp] == ["horse_down"]


def test_every_raised_alert_has_its_snapshot_and_clip(acceptance_run):
    """Synthetic cameras get their evidence through the camera manager like any camera (docs/evidence-and-review.md):
    listed in report.json relative to the run directory, linked from report.md."""
    run, outcome = acceptance_run
    raised = [a for a in outcome.report["alerts"] if a["state"] == "raised"]
    assert raised
    md = (run.run_dir / "report.md").read_text()
    for a in raised:
        for kind in ("snapshot", "clip"):
            assert a[kind] == f"evidence/{a['episode_key']}.{'jpg' if kind == 'snapshot' else 'mp4'}", a
            assert (run.run_dir / a[kind]).stat().st_size > 1000
            assert f"({a[kind]})" in md
    assert not (run.run_dir / "snapshots").exists()  # the old re-rendering is gone from the alert path


@pytest.mark.timeout(240)
def test_start_and_stop_twice_leaves_nothing_behind(tmp_path):
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()  # the test process's own helper (spawn): it lives as long as pytest does
    before = descendants(os.getpid())
    for i in range(2):
        run = PipelineRun(settings_for({"cam-a": "normal_walk"}), tmp_path / f"run{i}", dashboard=False)
        outcome = run.execute(25.0)
        assert outcome.exit_reason == "duration"
        assert outcome.report["frames"]["inferred"] > 0
        time.sleep(0.5)
        left = descendants(os.getpid()) - before
        assert alive(left) == {}, f"processes left after run {i}"
        port = int(run.redis_url.rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()


def test_sigterm_twice_is_a_cold_exit(tmp_path):
    """A second SIGTERM to the runner stops everything now (no orphans)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "runners" / "run_all.py"), "--no-dashboard",
                             "--run-dir", str(tmp_path / "r"), "--duration", "120"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        time.sleep(8)
        kids = descendants(proc.pid)
        assert kids, "the runner started no stage processes"
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        time.sleep(1.0)
        assert alive(kids) == {}
        assert proc.returncode != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_one_sigterm_finishes_in_flight_work_and_writes_the_report(tmp_path):
    import subprocess
    import sys

    run_dir = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "runners" / "run_all.py"), "--no-dashboard",
                             "--run-dir", str(run_dir), "--duration", "300", "--preview"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (run_dir / "recording").exists():
            time.sleep(0.5)
        time.sleep(5)
        kids = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0, out[-3000:]
        report = (run_dir / "report.md").read_text()
        assert "ended by: signal SIGTERM" in report
        assert "# fbvision run report" in out
        time.sleep(1.0)
        assert alive(kids) == {}
        assert_previews_match_the_recording(run_dir, report)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def assert_previews_match_the_recording(run_dir, report_md: str) -> None:
    """--preview: one MP4 per synthetic camera of the demo config, a video frame per recorded result."""
    import cv2

    from fbvision.lab.draw import recorded_frames
    from fbvision.logic.recorder import read_recording

    recording = read_recording(run_dir / "recording")
    cameras = [c for c in load_settings(DEMO_CONFIG).cameras if c.enabled]
    assert "## Annotated previews" in report_md
    for cam in cameras:
        path = run_dir / "previews" / f"{cam.id}.mp4"
        assert f"previews/{cam.id}.mp4" in report_md
        video = cv2.VideoCapture(str(path))
        try:
            assert video.isOpened(), path
            frames = 0
            while True:
                ok, image = video.read()
                if not ok:
                    break
                frames += 1
                assert image.shape[2] == 3 and image.std() > 5  # a rendered scene, not a blank frame
            assert video.get(cv2.CAP_PROP_FPS) == pytest.approx(cam.fps, abs=0.01)
        finally:
            video.release()
        expected = len(recorded_frames(recording, cam.id))
        assert expected > 0 and frames == expected, (cam.id, frames, expected)


def test_preview_without_the_recording_is_refused_before_anything_starts(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(REPO_ROOT / "runners" / "run_all.py"), "--no-dashboard",
                           "--run-dir", str(tmp_path / "r"), "--preview", "--no-record"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--preview needs the recording" in done.stderr
    assert not (tmp_path / "r").exists()
