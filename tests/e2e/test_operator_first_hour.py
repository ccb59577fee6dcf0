"""The operator's first hour (issue 17), with the real ``fbvision run`` in real processes:

* under a pseudo-terminal the dashboard shows a stage's warnings (here FFmpeg's own "Connection refused" on the
  camera stage's stderr) in its log pane, run.log has them, and Ctrl-C shows the stop progress on screen;
* with stdout piped, one line says the dashboard is off and how to force it;
* a stage that crashes leaves its last error and traceback tail in report.md.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fbvision_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fbvision", *args]


def test_dashboard_log_pane_run_log_and_stop_progress_under_a_pty(tmp_path):
    pexpect = pytest.importorskip("pexpect")
    cfg = tmp_path / "pty.yaml"
    cfg.write_text(
        "cameras:\n"
        "  - {id: stall-a, source: 'synthetic:normal_walk', fps: 5}\n"
        f"  - {{id: gate, source: 'rtsp://viewer:pw-secret@127.0.0.1:{closed_port()}/live', fps: 5}}\n"
        "inference: {autotune: false, max_batch: 2}\n"
        "camera: {reconnect_initial_s: 0.2, reconnect_max_s: 1}\n"
    )
    run_dir = tmp_path / "run"
    env = {**os.environ, "COLUMNS": "200", "LINES": "60", "TERM": "xterm-256color"}
    child = pexpect.spawn(fbvision_cmd("run", "--config", str(cfg), "--run-dir", str(run_dir))[0],
                          fbvision_cmd("run", "--config", str(cfg), "--run-dir", str(run_dir))[1:],
                          env=env, dimensions=(60, 200), encoding="utf-8", codec_errors="replace", timeout=90)
    screen = []
    try:
        child.expect("fbvision.*running", timeout=90)  # the dashboard is up
        # FFmpeg's message, printf()ed by OpenCV's log callback in the camera stage, shows in the log pane.
        child.expect(r"camera\S*\s+\S*\s*\[OPENCV:FFMPEG:\d+\] Connection to tcp://127\.0\.0\.1:\d+\S* failed: "
                     r"Connection refused", timeout=60)
        screen.append(child.before + child.after)
        t_int = time.monotonic()
        child.sendintr()  # Ctrl-C once
        child.expect("stop requested|stopping:", timeout=30)
        child.expect(r"draining|stopping camera|stopping inference|stopped", timeout=60)
        screen.append(child.before + child.after)
        child.expect(pexpect.EOF, timeout=90)
        t_exit = time.monotonic()
        screen.append(child.before)
    finally:
        if child.isalive():
            child.terminate(force=True)
    child.close()
    assert child.exitstatus == 0, "".join(screen)[-3000:]
    assert "pw-secret" not in "".join(screen)
    log = (run_dir / "run.log").read_text()
    assert "[camera] native: [OPENCV:FFMPEG:" in log and "Connection refused" in log  # the stage's name on it
    assert "[runner] fbvision.run.runner: stopping: finishing in-flight work" in log  # the Ctrl-C acknowledgement
    assert "stop: cameras stopped; draining the queues" in log and "stop: all stages stopped" in log
    for stage in ("camera", "inference", "logic", "delivery"):
        assert f"[{stage}] " in log, stage
    assert "pw-secret" not in log
    report = (run_dir / "report.md").read_text()
    assert "ended by: signal SIGINT" in report
    print(f"figure: Ctrl-C to exit (report written) {t_exit - t_int:.1f} s; run.log: {log.count(chr(10))} lines, "
          f"{log.count('] native: ')} native (OpenCV/FFmpeg) lines, {log.count(' stop: ')} stop-progress lines")


def test_piped_stdout_says_the_dashboard_is_off_and_a_crash_is_explained_in_the_report(tmp_path):
    cfg = tmp_path / "crash.yaml"
    cfg.write_text(
        "model: {path: /nonexistent/missing-model.onnx}\n"
        "cameras:\n  - {id: stall-a, source: 'synthetic:normal_walk', fps: 5}\n"
        "runner: {max_restarts: 0}\n"
    )
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    done = subprocess.run(fbvision_cmd("run", "--config", str(cfg), "--run-dir", str(run_dir), "--duration", "60"),
                          capture_output=True, text=True, timeout=150)
    elapsed = time.monotonic() - t0
    assert elapsed < 120
    print(f"figure: crashing stage to exit 1 with the traceback in report.md: {elapsed:.1f} s")
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.splitlines()[0] == ("dashboard off: stdout is not a terminal (plain logs follow; --dashboard "
                                           "forces it, --no-dashboard silences this line)")
    report = (run_dir / "report.md").read_text()
    assert "ended by: crash loop: stage" in report
    assert "## Stage errors" in report
    section = report.split("## Stage errors", 1)[1]
    assert "crashed" in section and "model file not found: /nonexistent/missing-model.onnx" in section
    assert "```" in section  # the traceback tail
    for line in ("- CPU flags:", "- ONNX Runtime ", "- batch size:", "- log: `run.log`"):
        assert line in report, line
    log = (run_dir / "run.log").read_text()
    assert "Traceback (most recent call last)" in log and "ModelError" in log
    # With --no-dashboard the line is not printed.
    quiet = subprocess.run(fbvision_cmd("config", "check", str(Path(cfg))), capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 1 and "model.path: model file not found" in quiet.stderr
