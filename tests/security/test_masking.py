"""RTSP credentials and Redis passwords never show in logs, camera status, `fbvision config show` or run
reports. (The fault suite also greps every stage log of its runs for the Redis password and an RTSP password.)"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time

import fbv_fault_harness as h
import pytest

from fbvision.core.config import REPO_ROOT
from fbvision.core.transport import Transport
from fbvision.run.redis_server import EmbeddedRedis, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

RTSP_PW = "cam-pass-5ab0"
REDIS_PW = "redis-pass-77e1"


def test_rtsp_credentials_masked_in_logs_and_status(caplog):
    from fbvision.camera.manager import CameraManager

    port = free_port()  # nothing listens there: the camera fails to connect, and logs it
    source = f"rtsp://admin:{RTSP_PW}@127.0.0.1:{port}/stream?token={RTSP_PW}"
    settings = h.make_settings({"cam-rtsp": source}, camera={"reconnect_initial_s": 0.2, "reconnect_max_s": 0.5})
    caplog.set_level(logging.DEBUG)
    with EmbeddedRedis(password=REDIS_PW) as server:
        t = Transport(server.url)
        manager = CameraManager(settings, t, (320, 320), offline_after_s=1.0)
        stop = threading.Event()
        th = threading.Thread(target=manager.run, args=(stop,), daemon=True)
        th.start()
        h.wait_for(lambda: t.camera_statuses().get("cam-rtsp", {}).get("state") == "offline", 30,
                   what="camera reported offline")
        stop.set()
        th.join(20)
        status = json.dumps(t.camera_statuses())
        t.close()
    assert "rtsp://***@127.0.0.1" in status and RTSP_PW not in status
    assert "cam-rtsp" in caplog.text and RTSP_PW not in caplog.text and REDIS_PW not in caplog.text


def test_config_show_masks_secrets_from_the_environment():
    env = {**os.environ, "REDIS_URL": f"redis://:{REDIS_PW}@127.0.0.1:6390/0",
           "FBV_CAMERAS__0__SOURCE": f"rtsp://viewer:{RTSP_PW}@127.0.0.1:8554/stall"}
    proc = subprocess.run([sys.executable, "-m", "fbvision.cli", "config", "show"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "rtsp://***@127.0.0.1:8554/stall" in proc.stdout and "redis://***@127.0.0.1:6390" in proc.stdout
    assert RTSP_PW not in proc.stdout + proc.stderr and REDIS_PW not in proc.stdout + proc.stderr


def test_config_errors_mask_secrets():
    from fbvision.core.config import ConfigError, load_settings

    with pytest.raises(ConfigError) as err:
        load_settings(environ={"REDIS_URL": f"http://:{REDIS_PW}@127.0.0.1/0"})  # wrong scheme: rejected
    assert REDIS_PW not in str(err.value) and "***" in str(err.value)


def test_run_report_masks_secrets(tmp_path):
    from fbvision.run.report import build_report, render_markdown
    from fbvision.run.runner import PipelineRun

    source = f"rtsp://admin:{RTSP_PW}@127.0.0.1:1/stream"
    settings = h.make_settings({"cam-rtsp": source})
    with EmbeddedRedis(password=REDIS_PW) as server:
        run = PipelineRun(settings.model_copy(update={"redis": settings.redis.model_copy(update={"url": server.url})}),
                          tmp_path, dashboard=False)
        run.transport = Transport(server.url)
        run.redis_url = server.url
        run.started_at = time.time() - 5
        report = build_report(run, time.time())
        run.transport.close()
    text = json.dumps(report, default=str) + render_markdown(report)
    assert RTSP_PW not in text and REDIS_PW not in text
    assert "rtsp://***@127.0.0.1:1/stream" in text
