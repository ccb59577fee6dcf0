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


# -- redact_url, table-driven: every form of secret the issue found leaking, and text that must stay as it is --------

MASKED = [
    # (text, what must be gone, what the result must be)
    ("rtsp://admin:p@ssw0rd@10.0.0.5:554/live", "p@ssw0rd", "rtsp://***@10.0.0.5:554/live"),
    ("rtsp://admin:a/b/c@10.0.0.5/live", "a/b/c", "rtsp://***@10.0.0.5/live"),
    ("rtsp://admin:with space@10.0.0.5/live", "with space", "rtsp://***@10.0.0.5/live"),
    ("rtsp://admin:p@ss/w rd:x@10.0.0.5/live", "p@ss/w rd:x", "rtsp://***@10.0.0.5/live"),
    ("redis://:s3cr@t/pw@127.0.0.1:6379/0", "s3cr@t/pw", "redis://***@127.0.0.1:6379/0"),
    ("rediss://default:a b@c@redis.internal:6380", "a b@c", "rediss://***@redis.internal:6380"),
    ("rtsp://onlytoken@cam/stream", "onlytoken", "rtsp://***@cam/stream"),
    ("http://h/x?api_key=K1&y=2", "K1", "http://h/x?api_key=***&y=2"),
    ("http://h/x?access_token=K2", "K2", "http://h/x?access_token=***"),
    ("http://h/x?apikey=K3&refresh_token=K4", "K3", "http://h/x?apikey=***&refresh_token=***"),
    ("http://h/x?client_secret=K5", "K5", "http://h/x?client_secret=***"),
    ("https://b.s3/x?X-Amz-Signature=K6&X-Amz-Date=1", "K6", "https://b.s3/x?X-Amz-Signature=***&X-Amz-Date=1"),
    ("http://h/x?password=K7&pwd=K8", "K7", "http://h/x?password=***&pwd=***"),
    ("connect failed: --api_key=K9 given", "K9", "connect failed: --api_key=*** given"),
    ("Authorization: Bearer eyJhbGciOi.K10", "K10", "Authorization: Bearer ***"),
    ("Authorization: Basic dXNlcjpLMTE=", "dXNlcjpLMTE=", "Authorization: Basic ***"),
    ('{"backend_token": "K12", "password": "K13"}', "K12", '{"backend_token": "***", "password": "***"}'),
    ("{'api_key': 'K14'}", "K14", "{'api_key': '***'}"),
    # two URLs on one line: each masked, the text between them kept
    ("rtsp://u:p@1@h1/a -> rtsp://v:q/2@h2/b", "p@1", "rtsp://***@h1/a -> rtsp://***@h2/b"),
    # inside a JSON document the mask stops at the quote: the JSON stays JSON
    ('{"a":"redis://:x@y@h:1/0","b":"rtsp://u:z z@h2/s"}', "x@y", '{"a":"redis://***@h:1/0","b":"rtsp://***@h2/s"}'),
]

UNCHANGED = [
    "no secrets here",
    "rtsp://10.0.0.5:554/stream connected",
    "http://host:8088/alerts?camera=cam1&since=4&limit=10",
    '{"idempotency_key": "0123abcd", "episode_key": "ffee"}',
    "idempotency_key=0123abcd monkey=banana keyframe_interval=10",
    "basic checks passed",
    "file:///var/lib/fbv/stall.mp4",
]


@pytest.mark.parametrize("text, secret, expected", MASKED)
def test_redact_masks_every_form(text, secret, expected):
    from fbvision.core.redact import redact_url

    out = redact_url(text)
    assert out == expected
    assert secret not in out


@pytest.mark.parametrize("text", UNCHANGED)
def test_redact_leaves_ordinary_text_alone(text):
    from fbvision.core.redact import redact_url

    assert redact_url(text) == text


def test_redacted_config_dump_is_still_json_without_the_token():
    from fbvision.core.config import Settings
    from fbvision.core.redact import redact_url

    token = "backend-token-abcdef0123456789"
    settings = Settings(alerts={"backend_token": token}, redis={"url": "redis://:p@ss word/x@127.0.0.1:6379/0"})
    text = redact_url(settings.model_dump_json())
    tree = json.loads(text)
    assert tree["alerts"]["backend_token"] == "***" and tree["redis"]["url"] == "redis://***@127.0.0.1:6379/0"
    assert token not in text and "ss word" not in text
