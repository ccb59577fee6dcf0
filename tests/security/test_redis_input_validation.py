"""Ids and values read back from Redis are validated, and flooding camera ids cannot grow state without bound.

Anyone with write access to Redis can put anything in the keys the stages read. Each bad value below is written
into a real redis-server under a running logic worker and the dashboard/report readers: they keep running, skip
the value and count it. (Before: ``ZADD logic:workers +inf "\\xff"`` crash-looped every logic worker with a
UnicodeDecodeError.)
"""

from __future__ import annotations

import time

import fbv_fault_harness as h
import numpy as np
import pytest
from fbv_testutil import Running, wait_until

from fbvision.core.config import Settings
from fbvision.core.logic_config import LogicConfig
from fbvision.core.transport import Transport
from fbvision.core.wire import ResultMessage, Timeline, encode_result
from fbvision.logic.worker import LogicWorker
from fbvision.run.redis_server import EmbeddedRedis

CLASS_IDS = {"horse": 0}
FAST_WORKER = dict(lease_ttl_s=1.0, heartbeat_s=0.2, read_count=16, tick_interval_s=0.3, report_interval_s=0.2)
QUIET_RULES = {"camera_offline": {"enabled": False}, "horse_absent": {"enabled": False}}


def result_bytes(camera: str, seq: int, t: float) -> bytes:
    msg = ResultMessage(
        camera_id=camera, seq=seq, src_w=640, src_h=480,
        timeline=Timeline(t, t + 0.01, t + 0.02, t + 0.03, t + 0.04, t + 0.05), batch_size=1,
        boxes=np.array([(100.0, 100.0, 200.0, 300.0)], dtype=np.float32), scores=np.array([0.9], dtype=np.float32),
        class_ids=np.array([0], dtype=np.int32),
    )
    return encode_result(msg)


def publish(t: Transport, cameras: list[str], frames: int, t0: float | None = None) -> None:
    t0 = time.time() if t0 is None else t0
    t.publish_results((cam, result_bytes(cam, seq, t0 + 0.2 * seq)) for seq in range(frames) for cam in cameras)


def logic_settings(**logic) -> Settings:
    return Settings(logic=LogicConfig.model_validate({"rules": QUIET_RULES, **logic}))


@pytest.fixture
def server():
    with EmbeddedRedis() as s:  # the default: a generated password
        yield s


@pytest.mark.timeout(60)
def test_bad_ids_from_redis_are_skipped_and_counted_never_a_crash(server, tmp_path):
    from fbvision.run.dashboard import Dashboard
    from fbvision.run.report import build_report, render_markdown
    from fbvision.run.runner import PipelineRun
    from fbvision.run.state import collect

    t = Transport(server.url, result_partitions=4)
    raw = server.client()
    k = t.keys
    worker = LogicWorker(logic_settings(), t, "logic-1", class_ids=CLASS_IDS, **FAST_WORKER)
    with Running(worker) as running:
        publish(t, ["barn-a"], 5)
        assert wait_until(lambda: t.stats("logic").get("results", 0) >= 5, 15)
        # -- the injections --------------------------------------------------------------------------
        raw.zadd(k.logic_workers, {b"\xff": float("inf"), b"has space": float("inf"), b"": 1e12,
                                   b"ghost-worker": float("inf")})  # well-formed, but a heartbeat from the future
        injected_at = time.monotonic()
        raw.hset(k.camera_status, mapping={b"\xff\xfe": b"{}", b"cam-int": b"5", b"cam-junk": b"not json",
                                           b"cam ok?": b'{"state": "online"}'})
        raw.hset(k.stats("logic"), mapping={b"\xff": b"1", b"results_junk": b"abc", b"nan_field": b"nan"})
        raw.hset(k.stats("inference"), mapping={b"batch_size:x": b"3", b"batch_size:4": b"2"})
        raw.hset(k.snapshots, mapping={b"\xff": b"{}", b"logic:evil": b"[1]", b"logic:half": b'{"latency_s": 5}',
                                       b"logic:rows": b'{"latency_s": {"logic": {"p50": "x"}}}'})
        # The stage counters and this worker's reported totals overwritten with garbage: every report runs the
        # totals script over them (it used to fail with a script error, every report, in every stage).
        raw.hset(k.stats("logic"), "results", "garbage")
        raw.hset(k.stats_writer("logic", worker.counters.writer), "results", "garbage")
        # -- it keeps working --------------------------------------------------------------------------
        publish(t, ["barn-a"], 10, t0=time.time() + 1.2)
        assert wait_until(lambda: worker.counters.get("results") >= 15, 15)
        assert wait_until(lambda: worker.counters.get("skipped:invalid_logic_worker") > 0
                          and worker.counters.get("skipped:invalid_camera_status") > 0, 10)
        assert running.thread.is_alive()
        assert worker.snapshot()["live_workers"] == 1  # the injected members are not workers
        assert raw.zrange(k.logic_workers, 0, -1) == [b"logic-1"]  # and they were removed
        assert worker.snapshot()["partitions"] == [0, 1, 2, 3]  # no partition left to a ghost
        removed_s = time.monotonic() - injected_at
        assert wait_until(lambda: t.stats("logic").get("skipped:invalid_logic_worker", 0) > 0, 10)
        # The garbage totals were replaced by a number again, and that was counted.
        assert wait_until(lambda: isinstance(t.stats("logic").get("results"), int), 10)
        assert t.stats("logic").get("invalid:stats_value", 0) >= 1

        # -- the dashboard and report readers ---------------------------------------------------------
        settings = h.make_settings({"cam-rtsp": "rtsp://127.0.0.1:1/stream"})
        run = PipelineRun(settings.model_copy(update={"redis": settings.redis.model_copy(update={"url": server.url})}),
                          tmp_path, dashboard=False)
        run.transport = Transport(server.url, result_partitions=4)
        run.redis_url = server.url
        run.started_at = time.time() - 5
        state = collect(run)
        assert state["ok"], state
        assert state["cameras"] == {}  # every injected status was malformed (id or value)
        assert "\xff" not in "".join(state["snapshots"]) and "logic:evil" not in state["snapshots"]
        for kind in ("camera_status", "stats_field", "snapshot"):
            assert state["invalid_ids"].get(kind, 0) > 0, (kind, state["invalid_ids"])
        Dashboard(run, enabled=False).render(state)  # renders, no exception
        report = build_report(run, time.time())
        assert report["batch_sizes"] == {4: 2}
        render_markdown(report)
        run.transport.close()
        print(f"\ninvalid ids: worker alive, {worker.counters.get('results')} results judged (10 after the "
              f"injection), skipped logic_worker={worker.counters.get('skipped:invalid_logic_worker')} "
              f"camera_status={worker.counters.get('skipped:invalid_camera_status')}; readers skipped "
              f"{dict(state['invalid_ids'])}; bad registry members gone within {removed_s:.1f} s")
    t.close()


@pytest.mark.timeout(60)
def test_camera_cap_bounds_per_camera_state_and_counts_the_drops(server):
    t = Transport(server.url, result_partitions=2)
    settings = logic_settings(max_cameras=3)
    settings = settings.model_copy(update={"cameras": Settings.model_validate(
        {"cameras": [{"id": "stall-configured", "source": "synthetic:normal_walk"}]}).cameras})
    worker = LogicWorker(settings, t, "logic-1", class_ids=CLASS_IDS, **FAST_WORKER)
    flood = [f"flood-{i}" for i in range(40)]
    frames = 3
    with Running(worker) as running:
        publish(t, flood, frames)
        t.client.hset(t.keys.camera_status, mapping={f"status-flood-{i}": '{"state": "online"}' for i in range(40)})
        publish(t, ["stall-configured"], frames, t0=time.time() + 1)
        want_dropped = (len(flood) - 3) * frames
        assert wait_until(lambda: worker.counters.get("dropped:camera_cap") >= want_dropped
                          and worker.counters.get("results") >= 3 * frames + frames, 20)
        time.sleep(3 * FAST_WORKER["tick_interval_s"])  # ticks over the flooded statuses add no state either
        cameras = worker.snapshot()["cameras"]
        assert running.thread.is_alive()
    assert worker.counters.get("dropped:camera_cap") == want_dropped
    assert len(cameras) == 4 and "stall-configured" in cameras  # 3 (the cap) + the configured camera
    assert t.stats("logic").get("dropped:camera_cap") == want_dropped
    print(f"\ncamera cap: {len(flood)} flooded ids x {frames} results -> state for {len(cameras)} cameras "
          f"(cap 3 + 1 configured), dropped:camera_cap = {want_dropped}")
    t.close()


def test_embedded_redis_has_a_generated_password_by_default():
    import redis

    with EmbeddedRedis() as a, EmbeddedRedis() as b:
        assert a.password and b.password and a.password != b.password and len(a.password) >= 40
        assert f":{a.password}@" in a.url
        anonymous = redis.Redis(host="127.0.0.1", port=a.port, socket_timeout=2)
        with pytest.raises(redis.AuthenticationError):
            anonymous.set("x", "1")
        anonymous.close()
        assert a.client().ping()
        cmdline = open(f"/proc/{a.proc.pid}/cmdline", "rb").read()
        assert a.password.encode() not in cmdline  # not on the command line, where ps shows it
    with EmbeddedRedis(password="") as open_server:  # explicit opt-out, for the rare test that needs it
        assert "@" not in open_server.url and open_server.client().ping()


def test_logic_worker_refuses_an_id_the_registry_would_reject(server):
    t = Transport(server.url)
    with pytest.raises(ValueError, match="logic worker id"):
        LogicWorker(logic_settings(), t, "bad id", class_ids=CLASS_IDS, **FAST_WORKER)
    t.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_pipeline_run_embedded_redis_requires_its_generated_password(tmp_path, caplog):
    import logging

    import redis

    from fbvision.run.runner import PipelineRun

    caplog.set_level(logging.DEBUG)
    settings = h.make_settings({"cam-a": "synthetic:normal_walk"})
    assert not settings.redis.url  # no REDIS_URL: the run starts its own server
    run = PipelineRun(settings, tmp_path, dashboard=False, record=False)
    try:
        run.start()
        password = run.redis.password
        assert password and len(password) >= 40 and password in run.redis_url
        anonymous = redis.Redis(host="127.0.0.1", port=run.redis.port, socket_timeout=2)
        with pytest.raises(redis.AuthenticationError):
            anonymous.get("batch_frames")
        anonymous.close()
        # The stage processes got the password in their URL: the camera stage pushes frames.
        h.wait_for(lambda: run.transport.stats("camera").get("frames_pushed:cam-a", 0) > 0, 60,
                   what="camera stage pushing with the generated password")
    finally:
        run.cold_stop()
        run.close()
    assert password not in caplog.text and "redis://***@127.0.0.1" in caplog.text
