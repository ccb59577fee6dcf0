"""One runner per stage, as on separate hosts: three processes against one shared Redis (REDIS_URL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from fbvision.core.config import REPO_ROOT
from fbvision.core.transport import Transport
from fbvision.run.redis_server import EmbeddedRedis

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CONFIG = """
cameras:
  - {id: barn-a, source: "synthetic:normal_walk", fps: 5}
  - {id: barn-b, source: "synthetic:running", fps: 5}
inference: {autotune: false, max_batch: 4}
runner: {dashboard: false}
"""


def test_three_stage_runners_share_one_redis(tmp_path):
    cfg = tmp_path / "stages.yaml"
    cfg.write_text(CONFIG)
    with EmbeddedRedis(password="pw-for-test") as redis_server:
        env = {**os.environ, "REDIS_URL": redis_server.url}
        procs = {
            name: subprocess.Popen([sys.executable, str(REPO_ROOT / "runners" / f"run_{name}.py"), "--config", str(cfg)],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for name in ("camera", "inference", "logic")
        }
        try:
            t = Transport(redis_server.url)
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                judged = t.stats("logic").get("results", 0)
                if judged >= 40:
                    break
                assert all(p.poll() is None for p in procs.values()), {n: p.poll() for n, p in procs.items()}
                time.sleep(1)
            assert t.stats("logic").get("results", 0) >= 40
            statuses = t.camera_statuses()
            assert set(statuses) == {"barn-a", "barn-b"}
            assert all(s["state"] == "online" for s in statuses.values())
            pushed = t.stats("camera")
            assert pushed.get("frames_pushed:barn-a", 0) > 0 and pushed.get("frames_pushed:barn-b", 0) > 0
        finally:
            outputs = {}
            for p in procs.values():
                p.send_signal(signal.SIGTERM)
            for name, p in procs.items():
                try:
                    outputs[name] = p.communicate(timeout=30)[0]
                except subprocess.TimeoutExpired:
                    p.kill()
                    outputs[name] = p.communicate()[0]
        for name, p in procs.items():
            assert p.returncode == 0, f"{name} exited {p.returncode}:\n{outputs[name][-3000:]}"
            assert "pw-for-test" not in outputs[name]  # the password never reaches the logs
