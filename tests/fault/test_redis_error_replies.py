"""Redis error replies that used to crash-loop stages: OOM (maxmemory under noeviction), READONLY (the server
turned into a replica, as after a failover), MISCONF (a failed snapshot with stop-writes-on-bgsave-error) and
NOGROUP (result streams and their consumer group gone, as after a restart without persistence).

Each test runs a real camera manager (one camera), a real logic worker and a real alert delivery (to the
embedded HTTP backend) on threads against a private real redis-server, puts the server into the condition,
checks that every stage is still running and counted the outage under its reason
(``redis_unavailable:<reason>``), clears the condition and measures how long until frames are pushed, results
judged and alerts delivered again. Figures print as ``FIGURE ...`` lines (``pytest -s``). The inference worker
runs the same StageLoop over the same guarded transport (tests/fault/test_bad_frames.py runs it for real).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from fbv_testutil import Running, wait_for

from fbvision.alerts.backend import EmbeddedBackend
from fbvision.alerts.delivery import AlertDelivery
from fbvision.camera.manager import CameraManager
from fbvision.camera.source import FrameSource
from fbvision.core.config import AlertsConfig, CameraConfig, CameraManagerConfig, Settings
from fbvision.core.events import AlertEvent, AlertState, Evidence, Severity
from fbvision.core.transport import Transport, TransportUnavailable, outage_reason
from fbvision.core.wire import ResultMessage, Timeline, encode_result
from fbvision.logic.worker import LogicWorker
from fbvision.run.redis_server import EmbeddedRedis

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

INPUT = (96, 96)
RECOVERY_BOUND_S = 10.0  # generous for a busy 2-core runner; each stage's back-off is capped at 1-5 s


class _Pattern:
    """A small grey frame at 10 fps (real time): the cheapest real capture for the FrameSource."""

    def __init__(self):
        self.frame = np.full((72, 96, 3), 90, dtype=np.uint8)

    def grab(self, timeout_s):
        time.sleep(0.1)
        return True

    def retrieve(self):
        return self.frame

    def close(self):
        pass


def _pattern_factory(camera, producer, *, status_sink=None, offline_after_s=None):
    return FrameSource(camera.id, _Pattern, fps=camera.fps, description="pattern", status_sink=status_sink,
                       watchdog_s=producer.watchdog_s, status_interval_s=producer.status_interval_s)


def _result(camera: str, seq: int) -> bytes:
    t = time.time()
    return encode_result(ResultMessage(
        camera_id=camera, seq=seq, src_w=96, src_h=72, timeline=Timeline(t, t, t, t, t, t), batch_size=1,
        boxes=np.zeros((0, 4), dtype=np.float32), scores=np.zeros(0, dtype=np.float32),
        class_ids=np.zeros(0, dtype=np.int32),
    ))


def _transport(url: str) -> Transport:
    # short client retries: the stage loop's back-off does the waiting
    return Transport(url, result_partitions=2, retries=1, retry_max_s=0.2, socket_timeout_s=2.0)


def _alert(track_id: int) -> bytes:
    now = time.time()
    return AlertEvent.create(camera_id="cam", rule="horse_down", track_id=track_id, state=AlertState.raised,
                             severity=Severity.warning, started_at=now - 60, updated_at=now,
                             evidence=Evidence(seq=track_id)).to_json().encode()


class Rig:
    """Camera manager + logic worker + alert delivery on threads, a publisher standing in for inference, an
    admin client."""

    def __init__(self, server: EmbeddedRedis, tmp_path: Path):
        self.server = server
        self.admin = server.client()
        self.cam_t, self.logic_t, self.pub_t, self.del_t = (_transport(server.url) for _ in range(4))
        self.backend = EmbeddedBackend(tmp_path / "alerts.sqlite")
        self.manager = CameraManager([CameraConfig(id="cam", source="x", fps=10)], self.cam_t, INPUT,
                                     CameraManagerConfig(status_interval_s=0.5), source_factory=_pattern_factory,
                                     name="m")
        self.worker = LogicWorker(Settings(), self.logic_t, "w1", lease_ttl_s=1.0, heartbeat_s=0.2, read_count=8,
                                  tick_interval_s=0.5, report_interval_s=0.2)
        self.backend.start()
        self.delivery = AlertDelivery(self.del_t, AlertsConfig(retry_initial_s=0.1, retry_max_s=0.5), "d",
                                      backend_url=self.backend.url)
        self.runs = [Running(self.manager), Running(self.worker), Running(self.delivery)]
        self.seq = 0
        self.track = 0

    def __enter__(self) -> Rig:
        for r in self.runs:
            r.__enter__()
        wait_for(lambda: self.manager.counters.get("frames_pushed") >= 3, 15, what="frames pushed")
        self.assert_judges(timeout_s=15)
        self.assert_delivers(timeout_s=15)
        return self

    def __exit__(self, *exc) -> None:
        for r in reversed(self.runs):
            r.halt()
        for t in (self.cam_t, self.logic_t, self.pub_t, self.del_t):
            t.close()
        self.backend.stop()
        self.admin.close()

    def assert_delivers(self, timeout_s: float) -> float:
        """Add an alert to the outbox (retrying while Redis refuses) until the delivery posted it."""
        t0 = time.monotonic()
        before = self.delivery.counters.get("delivered")
        added = False

        def delivered() -> bool:
            nonlocal added
            if not added:
                try:
                    self.track += 1
                    self.pub_t.add_alerts([_alert(self.track)])
                    added = True
                except TransportUnavailable:
                    return False
            return self.delivery.counters.get("delivered") > before

        wait_for(delivered, timeout_s, interval_s=0.2, what="alert delivered")
        return time.monotonic() - t0

    def publish(self, n: int = 3) -> None:
        self.pub_t.publish_results([("cam", _result("cam", self.seq + i)) for i in range(n)])
        self.seq += n

    def assert_judges(self, timeout_s: float) -> float:
        """Publish results until the logic worker has judged some of them; returns the seconds it took."""
        t0 = time.monotonic()
        before = self.worker.counters.get("results")

        def judged() -> bool:
            try:
                self.publish(1)
            except TransportUnavailable:
                return False
            return self.worker.counters.get("results") > before

        wait_for(judged, timeout_s, interval_s=0.2, what="results judged")
        return time.monotonic() - t0

    def alive(self) -> None:
        for r in self.runs:
            assert r.thread.is_alive(), f"{r.target} died"

    def outages(self, reason: str) -> tuple[int, int, int]:
        key = f"redis_unavailable:{reason}"
        return self.manager.counters.get(key), self.worker.counters.get(key), self.delivery.counters.get(key)

    def hold_and_recover(self, reason: str, clear, hold_s: float = 2.0) -> dict:
        """With the condition set: wait until every stage counted it, hold it, check all alive, clear it,
        and measure the recovery (frames pushed again; results judged again; an alert delivered again)."""
        wait_for(lambda: all(n >= 1 for n in self.outages(reason)), 15, what=f"every stage counted {reason}")
        pushed = self.manager.counters.get("frames_pushed")
        time.sleep(hold_s)
        self.alive()
        during = self.manager.counters.get("frames_pushed") - pushed
        counted = self.outages(reason)
        clear()
        t0 = time.monotonic()
        pushed = self.manager.counters.get("frames_pushed")
        wait_for(lambda: self.manager.counters.get("frames_pushed") > pushed, RECOVERY_BOUND_S, what="pushing again")
        push_s = time.monotonic() - t0
        self.assert_judges(RECOVERY_BOUND_S)
        judged_s = time.monotonic() - t0
        self.assert_delivers(RECOVERY_BOUND_S)
        recovered_s = time.monotonic() - t0
        self.alive()
        figure = {"reason": reason, "outages_counted_camera_logic_delivery": counted,
                  "pushed_while_refused": during, "push_recovered_s": round(push_s, 2),
                  "judging_recovered_s": round(judged_s, 2), "all_recovered_s": round(recovered_s, 2)}
        print("FIGURE", figure)
        assert during == 0, "the server took writes while it should have refused them"
        assert recovered_s <= RECOVERY_BOUND_S
        return figure


def test_error_replies_are_classified():
    """The reply codes as redis-py hands them over (known codes become classes; unknown ones stay in the text,
    behind a pipeline prefix)."""
    from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

    assert outage_reason(OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")) == "oom"
    assert outage_reason(ReadOnlyError("You can't write against a read only replica.")) == "readonly"
    assert outage_reason(ResponseError("MISCONF Redis is configured to save RDB snapshots")) == "misconf"
    assert outage_reason(ResponseError(
        "Command # 1 (SET a 1) of pipeline caused error: MISCONF Redis is configured to save")) == "misconf"
    assert outage_reason(ResponseError("NOGROUP No such key 's' or consumer group 'g'")) == "nogroup"
    assert outage_reason(ResponseError("BUSY Redis is busy running a script.")) == "busy"
    assert outage_reason(ResponseError("BUSYGROUP Consumer Group name already exists")) is None
    assert outage_reason(ResponseError("WRONGTYPE Operation against a key holding the wrong kind")) is None
    assert outage_reason(ResponseError("ERR syntax error")) is None


def test_oom_under_noeviction_backs_off_and_recovers(private_redis, tmp_path):
    with Rig(private_redis, tmp_path) as rig:
        rig.admin.config_set("maxmemory-policy", "noeviction")
        rig.admin.config_set("maxmemory", 1)  # every write refused with OOM
        rig.hold_and_recover("oom", lambda: rig.admin.config_set("maxmemory", "512mb"))


def test_readonly_after_failover_backs_off_and_recovers(private_redis, tmp_path):
    with Rig(private_redis, tmp_path) as rig:
        # The server becomes a replica of a master that does not exist (a closed port): writes get READONLY.
        rig.admin.replicaof("127.0.0.1", 1)
        rig.hold_and_recover("readonly", lambda: rig.admin.replicaof("NO", "ONE"))


def test_misconf_after_failed_snapshot_backs_off_and_recovers(tmp_path):
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    with EmbeddedRedis(extra_args=["--dir", str(snapshots)]) as server, Rig(server, tmp_path) as rig:
        rig.admin.config_set("save", "3600 1")
        rig.admin.config_set("stop-writes-on-bgsave-error", "yes")
        Path(snapshots).rmdir()  # the server's working directory is gone: the snapshot cannot be written
        rig.admin.bgsave()
        wait_for(lambda: rig.admin.info("persistence")["rdb_last_bgsave_status"] == "err", 10, what="bgsave failed")
        rig.hold_and_recover("misconf", lambda: rig.admin.config_set("stop-writes-on-bgsave-error", "no"))


def test_nogroup_after_streams_vanish_recreates_the_group(private_redis, tmp_path):
    with Rig(private_redis, tmp_path) as rig:
        keys = [rig.pub_t.keys.results(p) for p in range(rig.pub_t.result_partitions)] + [rig.pub_t.keys.outbox]
        judged = rig.worker.counters.get("results")
        t0 = time.monotonic()
        # Streams and their groups ("logic", "delivery") gone, as after a Redis restart without persistence.
        rig.admin.delete(*keys)
        rig.publish(3)  # XADD creates the stream again, without a group
        wait_for(lambda: rig.worker.counters.get("results") >= judged + 3, RECOVERY_BOUND_S, what="judged again")
        judged_s = time.monotonic() - t0
        rig.assert_delivers(RECOVERY_BOUND_S)  # the outbox too: a new alert is delivered
        recovered_s = time.monotonic() - t0
        rig.alive()
        nogroup = (rig.worker.counters.get("redis_unavailable:nogroup"),
                   rig.delivery.counters.get("redis_unavailable:nogroup"))
        groups = [g["name"] for g in rig.admin.xinfo_groups(rig.pub_t.keys.results(rig.pub_t.partition_of("cam")))]
        out_groups = [g["name"] for g in rig.admin.xinfo_groups(rig.pub_t.keys.outbox)]
        print("FIGURE", {"reason": "nogroup", "outages_counted_logic_delivery": nogroup,
                         "judging_recovered_s": round(judged_s, 2), "all_recovered_s": round(recovered_s, 2)})
        assert all(n >= 1 for n in nogroup)
        assert groups in ([b"logic"], ["logic"]) and out_groups in ([b"delivery"], ["delivery"])
        assert recovered_s <= RECOVERY_BOUND_S

