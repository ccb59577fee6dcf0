"""The per-stage Redis ACL users of docs/deploy.md are enough to run the pipeline and refuse what they do not grant.

The ``ACL SETUSER`` lines are read from docs/deploy.md itself (so the documentation is what is tested), created on a
real redis-server, and each stage runs as its own process with its own user: camera -> inference -> logic, and
delivery posting to a real local HTTP backend. Normal operation must leave ``ACL LOG`` empty (no command refused);
then, for each user, commands outside its grant are refused with NOPERM.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time

import pytest
import redis
from fbv_testutil import wait_for

from fbvision.alerts.backend import EmbeddedBackend
from fbvision.core.config import REPO_ROOT
from fbvision.core.events import AlertEvent, AlertState, Evidence, Severity
from fbvision.core.transport import Transport
from fbvision.run.redis_server import EmbeddedRedis

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

DEPLOY_MD = REPO_ROOT / "docs" / "deploy.md"
STAGES = {"camera": "camera", "inference": "infer", "logic": "logic", "delivery": "delivery"}  # user -> CLI command
CONFIG = """
cameras:
  - {id: barn-a, source: "synthetic:normal_walk", fps: 5}
  - {id: barn-b, source: "synthetic:running", fps: 5}
inference: {autotune: false, max_batch: 4}
runner: {dashboard: false}
"""


def acl_lines() -> dict[str, str]:
    """user name -> its ``ACL SETUSER`` line, as documented."""
    found = re.findall(r"^(ACL SETUSER (fbv-[a-z]+) .*)$", DEPLOY_MD.read_text(), flags=re.MULTILINE)
    out = {user: line for line, user in found}
    assert set(out) == {"fbv-camera", "fbv-inference", "fbv-logic", "fbv-delivery", "fbv-runner"}, sorted(out)
    return out


def create_users(admin: redis.Redis) -> dict[str, str]:
    """Create the documented users with fresh passwords; returns user -> password."""
    passwords = {}
    for user, line in acl_lines().items():
        password = secrets.token_urlsafe(24)
        args = [f">{password}" if re.fullmatch(r">[A-Z]+_PASSWORD", a) else a for a in shlex.split(line)]
        assert admin.execute_command(*args) in (b"OK", "OK", True), line
        passwords[user] = password
    return passwords


def user_url(server: EmbeddedRedis, user: str, password: str) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


def refused(client: redis.Redis, *command) -> bool:
    try:
        client.execute_command(*command)
    except redis.exceptions.NoPermissionError:
        return True
    return False


def acl_log(admin: redis.Redis) -> list[tuple]:
    """Every refusal since the last reset: (user, command or key, why, count)."""
    return [(e["username"], e["object"], e["reason"], e["count"]) for e in admin.acl_log(count=100)]


def test_documented_acl_users_run_every_stage_and_refuse_the_rest(tmp_path):
    cfg = tmp_path / "acl.yaml"
    cfg.write_text(CONFIG)
    with EmbeddedRedis() as server, EmbeddedBackend(tmp_path / "alerts.sqlite") as backend:
        admin = server.client()
        passwords = create_users(admin)
        admin.acl_log_reset()
        # One alert already in the outbox (as a logic worker would have written it): delivery must deliver it.
        seeded = AlertEvent.create(
            camera_id="barn-a", rule="horse_down", track_id=1, state=AlertState.raised, severity=Severity.warning,
            started_at=time.time() - 5, updated_at=time.time(), evidence=Evidence(seq=1, features={}),
        )
        Transport(user_url(server, "fbv-logic", passwords["fbv-logic"])).add_alerts([seeded.to_json().encode()])
        procs, logs = {}, {}

        def start(user_stage: str, log_name: str, *extra: str) -> None:
            user = f"fbv-{user_stage}"
            env = {**os.environ, "REDIS_URL": user_url(server, user, passwords[user]),
                   "FBV_ALERTS__BACKEND_URL": backend.url}
            logs[log_name] = open(tmp_path / f"{log_name}.log", "w+")
            args = [sys.executable, "-m", "fbvision.cli", STAGES[user_stage], "--config", str(cfg), *extra]
            procs[log_name] = subprocess.Popen(args, env=env, cwd=REPO_ROOT, stdout=logs[log_name],
                                               stderr=subprocess.STDOUT, text=True)

        for user_stage in STAGES:
            start(user_stage, user_stage, *(["--id", "logic-acl-1"] if user_stage == "logic" else []))
        runner = Transport(user_url(server, "fbv-runner", passwords["fbv-runner"]))
        try:
            def flowing():
                dead = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
                assert not dead, (dead, {n: (tmp_path / f"{n}.log").read_text()[-3000:] for n in dead})
                assert not acl_log(admin), acl_log(admin)
                return (runner.stats("logic").get("results", 0) >= 10
                        and any(a["idempotency_key"] == seeded.idempotency_key for a in backend.alerts()))

            wait_for(flowing, 150, interval_s=1.0, what="frames judged and the seeded alert delivered")
            assert set(runner.camera_statuses()) == {"barn-a", "barn-b"}
            assert runner.stats("camera").get("frames_pushed:barn-a", 0) > 0
            assert runner.stats("delivery").get("delivered", 0) >= 1

            # A lease move: another logic worker takes the partitions over (claims the pending entries, deletes
            # the old consumers - XAUTOCLAIM, XINFO CONSUMERS, XGROUP DELCONSUMER), with the same user.
            first = procs.pop("logic")
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=30) == 0, (tmp_path / "logic.log").read_text()[-3000:]
            judged = runner.stats("logic").get("results", 0)
            start("logic", "logic-2", "--id", "logic-acl-2")
            wait_for(lambda: flowing() and runner.stats("logic").get("results", 0) >= judged + 10
                     and runner.snapshots().get("logic:logic-acl-2", {}).get("partitions"), 90, interval_s=1.0,
                     what="the second logic worker judging")
            stats = admin.info("commandstats")
            assert stats.get("cmdstat_xgroup|delconsumer", {}).get("calls", 0) > 0, sorted(stats)  # it did run

            # The dashboard/report readers, as fbv-runner (read-only).
            from fbvision.run.state import collect

            class _Run:
                transport = runner
            state = collect(_Run())
            assert state["ok"], state
            assert state["cameras"] and state["snapshots"]
        finally:
            for p in procs.values():
                p.send_signal(signal.SIGTERM)
            for p in procs.values():
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        outputs = {n: (tmp_path / f"{n}.log").read_text() for n in logs}
        for name, p in procs.items():
            assert p.returncode == 0, f"{name} exited {p.returncode}:\n{outputs[name][-3000:]}"
        for name, output in outputs.items():
            for password in passwords.values():
                assert password not in output, name
        assert not acl_log(admin), acl_log(admin)  # a clean shutdown needs nothing outside the grants either

        # -- what each user may not do ------------------------------------------------------------------
        c = {user: redis.Redis.from_url(user_url(server, user, pw)) for user, pw in passwords.items()}
        denied = {
            "fbv-camera": [("XADD", "alerts:outbox", "*", "a", "{}"), ("XREADGROUP", "GROUP", "logic", "x",
                           "STREAMS", "batch_results:0", ">"), ("SET", "logic:lease:0", "me"), ("FLUSHALL",),
                           ("GET", "dead_letter")],
            "fbv-inference": [("HSET", "cameras:status", "barn-a", '{"state":"offline"}'),
                              ("XADD", "alerts:outbox", "*", "a", "{}"), ("XRANGE", "batch_results:0", "-", "+"),
                              ("CONFIG", "GET", "requirepass")],
            "fbv-logic": [("HSET", "cameras:status", "barn-a", '{"state":"online"}'), ("RPUSH", "batch_frames", "x"),
                          ("XGROUP", "DESTROY", "alerts:outbox", "delivery"), ("KEYS", "*")],
            "fbv-delivery": [("XADD", "alerts:outbox", "*", "a", "{}"), ("XADD", "batch_results:0", "*", "r", "x"),
                             ("HGETALL", "logic:episodes"), ("DEL", "alerts:outbox"), ("ACL", "LIST")],
            "fbv-runner": [("SET", "x", "1"), ("HSET", "cameras:status", "barn-a", "{}"), ("DEL", "batch_frames"),
                           ("FLUSHALL",), ("CLIENT", "KILL", "TYPE", "normal")],
        }
        for user, commands in denied.items():
            for command in commands:
                assert refused(c[user], *command), (user, command)
            assert c[user].ping()  # its own grant still works
        print(f"\nACL: 4 stages ran with their own users, 0 commands refused in operation; "
              f"{sum(map(len, denied.values()))} commands outside the grants refused")
        for client in c.values():
            client.close()
        runner.close()
        for f in logs.values():
            f.close()
