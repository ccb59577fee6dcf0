"""One log per run: real stage processes (spawn) log into the runner's queue; run.log, the dashboard's pane and
each stage's last error (with its traceback) get every record, native stderr lines included."""

from __future__ import annotations

import logging
import os
import time

import pytest

from fbvision.run.logs import RUN_LOG, RunLog
from fbvision.run.supervisor import CrashLoop, StageSpec, Supervisor

pytestmark = pytest.mark.timeout(60)


def warn_then_wait(stop):
    logging.getLogger("fbvision.camera.manager").warning("camera cam-x: connection refused, retrying in 1.0 s")
    logging.getLogger("fbvision.camera.manager").info("an info line for run.log only")
    # What OpenCV/FFmpeg do: write straight to file descriptor 2, past Python's logging.
    os.write(2, b"[tcp @ 0x55d0c0ffee00] Connection to tcp://127.0.0.1:9 failed: Connection refused\n")
    # OpenCV's FFmpeg log callback printf()s to stdout, through C's buffered stdio.
    import ctypes

    libc = ctypes.CDLL(None)
    libc.printf(b"[OPENCV:FFMPEG:16] Connection to tcp://127.0.0.1:9?timeout=0 failed: Connection refused\n")
    while not stop.wait(0.05):
        pass


def crash(stop):
    def load_the_model():
        raise FileNotFoundError("model file not found: /nowhere/model.onnx")

    load_the_model()


def wait_for(predicate, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_stage_warnings_and_native_stderr_reach_run_log_and_the_pane(tmp_path):
    log = RunLog(tmp_path, logging.INFO).start()
    sup = Supervisor([StageSpec("camera", warn_then_wait)], log_queue=log.queue)
    try:
        sup.start()
        wait_for(lambda: any("OPENCV:FFMPEG" in line[3] for line in log.pane.recent()))
        sup.stop(timeout_s=10)
    finally:
        sup.kill()
        log.stop()
    text = (tmp_path / RUN_LOG).read_text()
    assert "[camera] fbvision.camera.manager: camera cam-x: connection refused" in text
    assert "an info line for run.log only" in text
    assert "[camera] native: [tcp @ 0x55d0c0ffee00] Connection to tcp://127.0.0.1:9 failed" in text
    assert "[camera] native: [OPENCV:FFMPEG:16] Connection to tcp://127.0.0.1:9?timeout=0 failed" in text
    assert "[runner] fbvision.run.supervisor: started camera" in text  # the runner's own records too
    pane = [(level, stage, msg) for _, level, stage, msg in log.pane.recent()]
    assert ("WARNING", "camera", "camera cam-x: connection refused, retrying in 1.0 s") in pane
    assert all(level in ("WARNING", "ERROR", "CRITICAL") for level, _, _ in pane)  # no INFO in the pane


def test_a_crashed_stage_leaves_its_error_and_traceback_tail(tmp_path):
    log = RunLog(tmp_path, logging.INFO).start()
    sup = Supervisor([StageSpec("inference", crash)], max_restarts=1, window_s=60, log_queue=log.queue)
    try:
        sup.start()
        with pytest.raises(CrashLoop):
            wait_for(lambda: sup.poll() is None, timeout_s=30)
    finally:
        sup.kill()
        log.stop()
    err = log.pane.last_errors["inference"]
    assert err["level"] == "CRITICAL" and err["message"] == "stage inference crashed"
    tail = "\n".join(err["traceback_tail"])
    assert "Traceback (most recent call last)" in tail or "load_the_model" in tail
    assert tail.rstrip().endswith("FileNotFoundError: model file not found: /nowhere/model.onnx")
    text = (tmp_path / RUN_LOG).read_text()
    assert text.count("stage inference crashed") == 2  # the first run and the one restart
    assert "in load_the_model" in text
