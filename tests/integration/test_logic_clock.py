"""The logic worker on the reference clock (real redis-server): stale camera statuses, removed cameras,
impossible capture times, the skew each worker reports, heartbeats scored on the reference clock."""

from __future__ import annotations

import numpy as np
import pytest

from fbvision.core.config import Settings
from fbvision.core.events import AlertEvent
from fbvision.core.logic_config import LogicConfig
from fbvision.core.wire import ResultMessage, Timeline, encode_result
from fbvision.logic.worker import LogicWorker

CLASS_IDS = {"horse": 0}
FAST_WORKER = dict(lease_ttl_s=1.0, heartbeat_s=0.2, read_count=8, tick_interval_s=0.5, report_interval_s=0.2)
NOW = 1_800_000_000.0


def settings(*cameras: str) -> Settings:
    rules = {rule: {"enabled": False} for rule in ("horse_down", "rolling", "too_fast", "horse_absent")}
    rules["camera_offline"] = {"escalation": [{"after_s": 1.0, "severity": "warning"}], "exit_after_s": 0}
    return Settings(logic=LogicConfig.model_validate({"rules": rules}),
                    cameras=[{"id": c, "source": "synthetic:empty"} for c in cameras])


def result(camera: str, seq: int, t: float) -> bytes:
    return encode_result(ResultMessage(
        camera_id=camera, seq=seq, src_w=640, src_h=480, timeline=Timeline(t, t, t, t, t, t), batch_size=1,
        boxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32), class_ids=np.zeros(0, np.int32)))


def outbox(transport) -> list[tuple[str, str, str]]:
    out = []
    for _id, fields in transport.client.xrange(transport.keys.outbox):
        a = AlertEvent.from_json(fields[b"a"])
        out.append((a.camera_id, a.rule, a.state.value))
    return out


def worker_at(transport, s: Settings, now: list[float]) -> LogicWorker:
    worker = LogicWorker(s, transport, "w1", class_ids=CLASS_IDS, clock=lambda: now[0], **FAST_WORKER)
    worker.rebalance()
    worker._need_pending.clear()  # nothing pending in a fresh Redis: tick at once
    worker._backlogged.clear()
    return worker


@pytest.mark.timeout(30)
def test_a_status_frozen_at_online_is_not_trusted(transport):
    """The camera host died saying "online" and never sent a frame since this worker started: after 5 status
    intervals the status is unknown, and a camera never heard of is offline."""
    now = [NOW]
    worker = worker_at(transport, settings("stall-a"), now)
    transport.set_camera_status("stall-a", {"state": "online", "updated": now[0]})
    worker.tick_cameras()
    now[0] += 1.5
    worker.tick_cameras()
    assert outbox(transport) == []  # a fresh "online" status is believed
    now[0] += 10.0  # no status update for 10 s (5 intervals of 1 s, at least 5 s)
    worker.tick_cameras()
    now[0] += 1.5
    worker.tick_cameras()
    assert outbox(transport) == [("stall-a", "camera_offline", "raised")]
    assert worker.counters.get("camera_status:stale") >= 2


@pytest.mark.timeout(30)
def test_cameras_removed_from_the_config_are_forgotten(transport):
    now = [NOW]
    transport.set_camera_status("gone", {"state": "offline", "updated": now[0]})
    worker = worker_at(transport, settings("stall-a"), now)
    transport.set_camera_status("stall-a", {"state": "online", "updated": now[0]})
    for _ in range(5):
        worker.tick_cameras()
        now[0] += 1.0
        transport.set_camera_status("stall-a", {"state": "online", "updated": now[0]})
        transport.set_camera_status("gone", {"state": "offline", "updated": now[0]})
    assert outbox(transport) == []
    assert "gone" not in worker._logics


@pytest.mark.timeout(30)
def test_future_capture_time_counted_and_camera_judged_on(transport):
    now = [NOW]
    worker = worker_at(transport, settings("stall-a"), now)
    transport.publish_results([("stall-a", result("stall-a", 1, NOW - 0.3))])
    transport.publish_results([("stall-a", result("stall-a", 2, NOW + 7200))])  # injected, two hours ahead
    transport.publish_results([("stall-a", result("stall-a", 3, NOW - 0.1))])
    for _ in range(4):
        worker.step()
    assert worker.counters.get("dropped:future_ts") == 1
    assert worker.counters.get("results") == 2
    saved = transport.load_episodes("stall-a")["clock"]
    assert saved["last_frame_t"] == pytest.approx(NOW - 0.1) and saved["last_seq"] == 3
    # and the camera is still ticked: silence from here raises camera_offline once
    for _ in range(8):
        now[0] += 0.5
        worker.tick_cameras()
    assert outbox(transport) == [("stall-a", "camera_offline", "raised")]


@pytest.mark.timeout(30)
def test_worker_reports_its_skew_and_heartbeats_on_the_reference_clock(transport):
    worker = LogicWorker(settings("stall-a"), transport, "w1", class_ids=CLASS_IDS, **FAST_WORKER)
    worker.rebalance()
    score = transport.client.zscore(transport.keys.logic_workers, "w1")
    assert score == pytest.approx(transport.server_time(), abs=1.0)
    clock = worker.snapshot()["clock"]
    assert clock["synced"] is True and abs(clock["skew_ms"]) < 50.0  # one host: the skew is the error
