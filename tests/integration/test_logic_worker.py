"""Logic worker against a real Redis: order, leases and scale-out, crash safety, corrupt input, recorder.

The results are scripted so that CameraLogic raises horse_down: a horse stands (tall box), lies (low wide
box) longer than a short escalation threshold, and stands up again - several bouts per camera. The
expected alerts come from running CameraLogic directly over the same frames.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import threading
import time
from collections import Counter

import numpy as np
import pytest
from fbv_testutil import Running, wait_until

from fbvision.alerts.backend import EmbeddedBackend
from fbvision.alerts.delivery import AlertDelivery
from fbvision.core.candidates import Candidates
from fbvision.core.config import AlertsConfig, Settings
from fbvision.core.events import AlertEvent
from fbvision.core.logic_config import LogicConfig
from fbvision.core.transport import Transport
from fbvision.core.wire import ResultMessage, Timeline, encode_result
from fbvision.logic.camera_logic import CameraLogic
from fbvision.logic.recorder import Recorder, read_recording
from fbvision.logic.worker import UNSENT_KEY, LogicWorker

CLASS_IDS = {"horse": 0}
STAND = (100.0, 100.0, 200.0, 300.0)  # 100 x 200: standing
LIE = (90.0, 200.0, 250.0, 300.0)  # 160 x 100: half the standing height, wide -> lying
FRAME = (640, 480)
DT = 0.2  # 5 fps of capture time
FAST_WORKER = dict(lease_ttl_s=1.0, heartbeat_s=0.2, read_count=8, tick_interval_s=0.5, report_interval_s=0.2)


def logic_config(**rules) -> LogicConfig:
    base = {
        "horse_down": {
            "smoothing": {"kind": "none"}, "exit_after_s": 0.5, "cooldown_s": 0,
            "escalation": [{"after_s": 1.0, "severity": "warning"}, {"after_s": 2.0, "severity": "critical"}],
        },
        "rolling": {"enabled": False},
        "too_fast": {"enabled": False},
        "horse_absent": {"enabled": False},
        "camera_offline": {"enabled": False},
    }
    base.update(rules)
    return LogicConfig.model_validate(
        {
            "tracker": {"min_consecutive_frames": 1},
            "features": {"baseline_sample_interval_s": 0, "baseline_min_samples": 3},
            "rules": base,
        }
    )


def settings(**rules) -> Settings:
    return Settings(logic=logic_config(**rules))


def script(bouts=4, stand=10, lie=20, t0=1_700_000_000.0):
    """[(seq, capture time, box)]: stand, lie, stand, ... ending standing (every bout resolves)."""
    frames, seq = [], 0
    for _ in range(bouts):
        for box, n in ((STAND, stand), (LIE, lie)):
            for _ in range(n):
                frames.append((seq, t0 + seq * DT, box))
                seq += 1
    for _ in range(stand):
        frames.append((seq, t0 + seq * DT, STAND))
        seq += 1
    return frames


def result_bytes(camera, seq, t, box):
    msg = ResultMessage(
        camera_id=camera, seq=seq, src_w=FRAME[0], src_h=FRAME[1],
        timeline=Timeline(t, t + 0.01, t + 0.02, t + 0.03, t + 0.04, t + 0.05), batch_size=1,
        boxes=np.array([box], dtype=np.float32), scores=np.array([0.9], dtype=np.float32),
        class_ids=np.array([0], dtype=np.int32),
    )
    return encode_result(msg)


def expected_alerts(cameras, frames, cfg=None) -> list[AlertEvent]:
    cfg = cfg or logic_config()
    out = []
    for cam in cameras:
        logic = CameraLogic(cam, cfg, None, [0])
        for seq, t, box in frames:
            out += logic.process(seq=seq, t=t, candidates=Candidates.create([box], [0.9], [0]), frame_size=FRAME).alerts
    return out


def outbox_alerts(transport) -> list[AlertEvent]:
    entries = transport.client.xrange(transport.keys.outbox)
    return [AlertEvent.from_json(fields[b"a"]) for _id, fields in entries]


def signature(alerts):
    """What must match a run without crashes: per camera, the ordered lifecycle events.

    The exact onset time (hence the idempotency key) may move by a frame when a restart lands exactly on
    the first lying frame (the restored tracker re-links the horse one frame later); started_at is
    compared with a tolerance instead."""
    by_cam = {}
    for a in sorted(alerts, key=lambda a: (a.camera_id, a.updated_at, a.state != "raised")):
        by_cam.setdefault(a.camera_id, []).append((a.rule, a.track_id, a.state.value, a.severity.value))
    return by_cam


def assert_same_alerts(got, want):
    assert signature(got) == signature(want)
    got_sorted = sorted(got, key=lambda a: (a.camera_id, a.updated_at))
    want_sorted = sorted(want, key=lambda a: (a.camera_id, a.updated_at))
    for g, w in zip(got_sorted, want_sorted, strict=True):
        assert abs(g.started_at - w.started_at) <= DT + 1e-6, (g, w)


def cameras_covering_all_partitions(transport, per_partition=1):
    cams, count = [], Counter()
    i = 0
    while min(count[p] for p in range(transport.result_partitions)) < per_partition:
        cam = f"stall-{i}"
        p = transport.partition_of(cam)
        if count[p] < per_partition:
            cams.append(cam)
            count[p] += 1
        i += 1
    return cams


def publish_all(transport, cameras, frames):
    transport.publish_results(
        (cam, result_bytes(cam, seq, t, box)) for seq, t, box in frames for cam in cameras
    )


def drained(transport):
    transport.ensure_groups()  # before the group exists the backlog reads 0
    return transport.result_backlog() == 0


# ---------------------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_worker_processes_in_order_writes_alerts_records_and_reports(transport, tmp_path):
    cams = cameras_covering_all_partitions(transport)[:3]
    frames = script(bouts=2)
    publish_all(transport, cams, frames)
    want = expected_alerts(cams, frames)
    recorder = Recorder(tmp_path / "rec", rows_per_part=100)
    worker = LogicWorker(settings(), transport, "w1", class_ids=CLASS_IDS, recorder=recorder, **FAST_WORKER)
    with Running(worker):
        assert wait_until(lambda: drained(transport) and len(outbox_alerts(transport)) >= len(want), 20)
        time.sleep(0.5)  # let a report go out
    recorder.close()

    got = outbox_alerts(transport)
    assert sorted(a.idempotency_key for a in got) == sorted(a.idempotency_key for a in want)
    assert len(got) == 6 * len(cams)  # 2 bouts x raised, ongoing, resolved
    # each camera's alerts were written in the order they happened
    for cam in cams:
        mine = [a for a in got if a.camera_id == cam]
        assert [a.updated_at for a in mine] == sorted(a.updated_at for a in mine)
    stats = transport.stats("logic")
    assert stats["results"] == len(frames) * len(cams)
    assert stats["alerts"] == len(want)
    # latency of every stage, from the timeline plus the worker's own time
    snap = transport.snapshots()["logic:w1"]
    assert snap["latency_s"]["inference"]["p50"] == pytest.approx(0.01, abs=1e-3)
    assert snap["latency_s"]["logic"]["count"] == len(frames) * len(cams)
    assert set(snap["latency_s"]) >= {"queue_wait", "encode", "batch_decode", "inference", "publish", "to_logic",
                                      "logic", "end_to_end"}
    # the recording has every frame of every camera, with features and the alerts
    df = read_recording(tmp_path / "rec")
    assert len(df) == len(frames) * len(cams)
    assert set(df["camera_id"]) == set(cams)
    assert df.groupby("camera_id")["seq"].apply(lambda s: sorted(s) == list(range(len(frames)))).all()
    assert df["lying"].sum() == 2 * 20 * len(cams)
    assert (df["alerts"] == "horse_down:raised:warning").sum() == 2 * len(cams)
    # a clean stop leaves: no lease held, not in the live set
    assert all(transport.lease_owner(p) is None for p in range(transport.result_partitions))
    assert transport.heartbeat_logic_worker("probe", 10) == ["probe"]


@pytest.mark.timeout(60)
def test_corrupt_results_are_skipped_counted_and_dead_lettered(transport):
    cam = "stall-a"
    frames = script(bouts=1)
    good = [result_bytes(cam, seq, t, box) for seq, t, box in frames]
    truncated = good[5][:-7]
    garbage = b"GET / HTTP/1.1\r\n\r\n"
    newer = bytearray(good[6])
    newer[2] = 99  # a wire version from the future
    stream = good[:5] + [truncated] + good[5:20] + [garbage, bytes(newer)] + good[20:]
    transport.publish_results((cam, payload) for payload in stream)
    transport.publish_results([(cam, b"")])  # an empty entry
    worker = LogicWorker(settings(), transport, "w1", class_ids=CLASS_IDS, **FAST_WORKER)
    with Running(worker):
        assert wait_until(lambda: drained(transport), 20)
    stats = transport.stats("logic")
    assert stats["dropped:wire_truncated"] == 1
    assert stats["dropped:wire_garbage"] == 1
    assert stats["dropped:wire_version"] == 1
    assert stats["dropped:trimmed"] == 1  # no payload (trimmed away, or empty): nothing to dead-letter
    assert stats["results"] == len(frames)
    reasons = sorted(d["reason"] for d in transport.dead_letters())
    assert reasons == ["wire_garbage", "wire_truncated", "wire_version"]
    assert all(d["queue"] == f"batch_results:{transport.partition_of(cam)}" for d in transport.dead_letters())
    # the good results around them still raised and resolved the bout
    assert_same_alerts(outbox_alerts(transport), expected_alerts([cam], frames))


class Crash(BaseException):
    """A simulated process death (not an Exception: nothing in the worker may catch it)."""


#: What the worker calls on the transport; a process that died after its commit dies at the first of these.
_DEATH_POINTS = {"commit_results", "read_results", "read_results_fenced", "renew_leases", "heartbeat_logic_worker",
                 "camera_statuses", "report_totals", "load_episodes", "put_snapshot", "dead_letter"}


class CrashingTransport(Transport):
    """Dies at the n-th alert-bearing commit_results (ack + outbox + state in one script): before the script
    ran, or right after it (at the worker's next Redis call: the batch's recording is in memory, as in a real
    process, which loses only what it had not flushed)."""

    def __init__(self, *args, crash_at, when, **kwargs):
        super().__init__(*args, **kwargs)
        self.crash_at = crash_at
        self.when = when
        self.alert_batches = 0
        self.dead = False

    def __getattribute__(self, name):
        if name in _DEATH_POINTS and object.__getattribute__(self, "dead"):
            raise Crash()
        return super().__getattribute__(name)

    def commit_results(self, partition, token, *, entry_ids=(), alerts_json=(), states=None):
        if alerts_json:
            self.alert_batches += 1
            if self.alert_batches == self.crash_at:
                if self.when == "before_outbox":
                    raise Crash()
                self.dead = True  # from the next call on
                return super().commit_results(partition, token, entry_ids=entry_ids, alerts_json=alerts_json,
                                              states=states)
        return super().commit_results(partition, token, entry_ids=entry_ids, alerts_json=alerts_json, states=states)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("when", ["before_outbox", "after_outbox"])
@pytest.mark.parametrize("crash_at", [1, 2, 4])
def test_crash_around_the_outbox_write_loses_and_doubles_nothing(redis_url, tmp_path, when, crash_at):
    """Deterministic version of 'killed mid-stream': the process dies right around the outbox write."""
    cams = ["stall-a", "stall-b"]
    frames = script(bouts=2)
    crashing = CrashingTransport(redis_url, result_partitions=4, crash_at=crash_at, when=when)
    publish_all(crashing, cams, frames)
    want = expected_alerts(cams, frames)
    processed, lock = [], threading.Lock()
    w1 = LogicWorker(settings(), crashing, "w1", class_ids=CLASS_IDS, recorder=ProcessingLog("w1", processed, lock),
                     **FAST_WORKER)
    with pytest.raises(Crash):
        while True:
            w1.step()
    crashing.dead = False  # (the test goes on reading Redis through it)
    assert not drained(crashing)
    # the batch's ack, alerts and state are one script: all of it in Redis, or none of it
    saved = [crashing.load_episodes(c) for c in cams]
    assert not any(s.get(UNSENT_KEY) for s in saved)
    crashed_batch_written = len(outbox_alerts(crashing)) > 0 if crash_at == 1 else None
    if crashed_batch_written is not None:
        assert crashed_batch_written == (when == "after_outbox")
    # a new worker process (w1 never released its leases: w2 waits for them to expire)
    fresh = Transport(redis_url, result_partitions=4)
    w2 = LogicWorker(settings(), fresh, "w2", class_ids=CLASS_IDS, recorder=ProcessingLog("w2", processed, lock),
                     **FAST_WORKER)
    with Running(w2):
        assert wait_until(lambda: drained(fresh), 20)
    # every frame processed exactly once across the crash (the saved state says how far it got)
    assert sorted((cam, seq) for _, _, cam, seq in processed) == sorted((c, f[0]) for c in cams for f in frames)
    got = outbox_alerts(fresh)
    backend_view = {a.idempotency_key: a for a in got}  # what a deduplicating backend keeps
    assert_same_alerts(list(backend_view.values()), want)
    copies = Counter(a.idempotency_key for a in got)
    # written once: by the restarted worker (crash before the commit), or by the crashed one (after it: its
    # saved state covers the batch, so nothing is judged again)
    assert max(copies.values()) == 1
    fresh.close()
    crashing.close()


@pytest.mark.timeout(60)
def test_restart_does_not_raise_an_open_episode_again(transport):
    cam = "stall-a"
    frames = script(bouts=1, stand=10, lie=40)
    publish_all(transport, [cam], frames[:25])  # standing, then 15 lying frames: raised and ongoing
    w1 = LogicWorker(settings(), transport, "w1", class_ids=CLASS_IDS, **FAST_WORKER)
    with Running(w1):
        assert wait_until(lambda: drained(transport), 20)
    assert [a.state.value for a in outbox_alerts(transport)] == ["raised", "ongoing"]
    publish_all(transport, [cam], frames[25:])
    w2 = LogicWorker(settings(), transport, "w2", class_ids=CLASS_IDS, **FAST_WORKER)
    with Running(w2):
        assert wait_until(lambda: drained(transport), 20)
    got = outbox_alerts(transport)
    assert [a.state.value for a in got] == ["raised", "ongoing", "resolved"]
    assert len({a.episode_key for a in got}) == 1
    assert [a.idempotency_key for a in got] == [a.idempotency_key for a in expected_alerts([cam], frames)]


def test_leases_split_partitions_fairly_and_rebalance_when_workers_come_and_go(transport):
    p = transport.result_partitions  # 4
    kw = dict(class_ids=CLASS_IDS, lease_ttl_s=5.0, heartbeat_s=1.0)
    w1, w2, w3 = (LogicWorker(settings(), transport, f"w{i}", **kw) for i in (1, 2, 3))
    w1.rebalance()
    assert w1.held == set(range(p))
    w2.rebalance()  # joins: nothing free yet
    w1.rebalance()  # sees two live workers: gives back half
    w2.rebalance()
    assert len(w1.held) == len(w2.held) == 2 and w1.held.isdisjoint(w2.held)
    w3.rebalance()
    for w in (w1, w2, w3, w1, w2, w3):
        w.rebalance()
    held = [w.held for w in (w1, w2, w3)]
    assert set().union(*held) == set(range(p)) and sum(map(len, held)) == p
    assert all(len(h) <= 2 for h in held)  # ceil(4 / 3)
    for part in range(p):
        owners = [w.worker_id for w in (w1, w2, w3) if part in w.held]
        assert owners == [transport.lease_owner(part)]
    w2._shutdown()  # leaves cleanly: releases its leases at once
    for w in (w1, w3):
        w.rebalance()
    assert w1.held | w3.held == set(range(p)) and not w1.held & w3.held


class ProcessingLog:
    """A recorder stand-in that logs which worker processed which frame, and when."""

    def __init__(self, worker_id, events, lock):
        self.worker_id, self.events, self.lock = worker_id, events, lock

    def record_outcome(self, camera_id, outcome):
        with self.lock:
            self.events.append((time.monotonic(), self.worker_id, camera_id, outcome.seq))

    def flush(self):
        pass


@pytest.mark.timeout(90)
def test_two_workers_split_cameras_keep_order_and_one_takes_over_when_the_other_stops(transport):
    cams = cameras_covering_all_partitions(transport, per_partition=2)
    frames = script(bouts=3)
    want = expected_alerts(cams, frames)
    events, lock = [], threading.Lock()
    w1 = LogicWorker(settings(), transport, "w1", class_ids=CLASS_IDS, recorder=ProcessingLog("w1", events, lock),
                     **FAST_WORKER)
    w2 = LogicWorker(settings(), transport, "w2", class_ids=CLASS_IDS, recorder=ProcessingLog("w2", events, lock),
                     **FAST_WORKER)
    published, halted = threading.Event(), threading.Event()

    def publisher():  # a live stream: one frame per camera every 10 ms; the second half only once w2 has stopped
        for i, frame in enumerate(frames):
            if i == len(frames) // 2:
                halted.wait(30)
            publish_all(transport, cams, [frame])
            time.sleep(0.01)
        published.set()

    pub = threading.Thread(target=publisher, daemon=True)
    with Running(w1), Running(w2) as r2:
        pub.start()
        assert wait_until(lambda: len(w1.held) == 2 and len(w2.held) == 2, 5)
        assert wait_until(lambda: len(events) > len(frames), 10)  # both are working
        r2.halt()  # w2 stops mid-stream: every camera still has half its frames to come
        stopped_at = time.monotonic()
        halted.set()
        assert wait_until(lambda: len(w1.held) == 4, 5)
        assert published.wait(30)
        assert wait_until(lambda: drained(transport), 20)
    pub.join()

    assert {wid for _, wid, _, _ in events} == {"w1", "w2"}
    taken_over = 0
    for cam in cams:
        mine = sorted(e for e in events if e[2] == cam)
        # processed exactly once each, in capture order, across the handovers
        assert [seq for _, _, _, seq in mine] == list(range(len(frames))), cam
        before_stop = [wid for ts, wid, _, _ in mine if ts <= stopped_at]
        if before_stop and before_stop[-1] == "w2":
            assert any(wid == "w1" and ts > stopped_at for ts, wid, _, _ in mine), f"{cam} was not taken over"
            taken_over += 1
    assert taken_over >= 2  # w2 held two partitions, one camera or more each, when it stopped
    got = outbox_alerts(transport)
    assert sorted(a.idempotency_key for a in got) == sorted(a.idempotency_key for a in want)


def _worker_process(redis_url, worker_id, stop):
    transport = Transport(redis_url, result_partitions=4, retries=3, retry_max_s=0.5)
    LogicWorker(settings(), transport, worker_id, class_ids=CLASS_IDS, **{**FAST_WORKER, "read_count": 4}).run(stop)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_worker_killed_mid_stream_and_restarted_delivers_every_alert_exactly_once(transport, redis_url, tmp_path):
    # given: a backlog of results for four cameras
    cams = cameras_covering_all_partitions(transport)
    frames = script(bouts=4)
    want = expected_alerts(cams, frames)
    publish_all(transport, cams, frames)
    transport.ensure_groups()
    total = len(frames) * len(cams)
    assert transport.result_backlog() == total
    ctx = mp.get_context("fork")
    stop = ctx.Event()
    rng = random.Random(5)
    procs = []
    try:
        # when: the worker is SIGKILLed twice part-way through, and restarted each time
        for i, fraction_left in enumerate((0.75 - rng.random() * 0.1, 0.4 - rng.random() * 0.1)):
            proc = ctx.Process(target=_worker_process, args=(redis_url, f"w{i}", stop), daemon=True)
            proc.start()
            procs.append(proc)
            assert wait_until(lambda f=fraction_left: transport.result_backlog() < total * f, 30, 0.005)
            proc.kill()
            proc.join(5)
            assert 0 < transport.result_backlog() < total  # really mid-stream
        last = ctx.Process(target=_worker_process, args=(redis_url, "w-last", stop), daemon=True)
        last.start()
        procs.append(last)
        assert wait_until(lambda: drained(transport), 30)
        stop.set()
        last.join(10)
        assert last.exitcode == 0
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    # then: delivered to a real backend, each alert exactly once (by idempotency key), none missing
    n_outbox = transport.client.xlen(transport.keys.outbox)
    with EmbeddedBackend(tmp_path / "alerts.sqlite") as backend:
        delivery = AlertDelivery(transport, AlertsConfig(retry_initial_s=0.1, retry_max_s=0.5), "d", backend_url=backend.url)
        stop_delivery = threading.Event()
        thread = threading.Thread(target=delivery.run, args=(stop_delivery,), daemon=True)
        thread.start()
        try:
            assert wait_until(
                lambda: delivery.counters.get("delivered") + delivery.counters.get("duplicate") == n_outbox, 30
            )
        finally:
            stop_delivery.set()
            thread.join(10)
        stored = [AlertEvent.model_validate({k: v for k, v in a.items() if not k.startswith("_")})
                  for a in backend.alerts()]
    assert_same_alerts(stored, want)


@pytest.mark.timeout(30)
def test_tick_raises_camera_offline_from_the_producers_status(transport):
    cam = "stall-a"
    now = [1_700_000_100.0]
    s = Settings(
        logic=logic_config(camera_offline={"escalation": [{"after_s": 1.0, "severity": "warning"}]}),
        cameras=[{"id": cam, "source": "synthetic:empty"}],
    )
    worker = LogicWorker(s, transport, "w1", class_ids=CLASS_IDS, clock=lambda: now[0], **FAST_WORKER)
    worker.rebalance()
    transport.set_camera_status(cam, {"state": "offline", "since": now[0]})
    worker.tick_cameras()  # onset
    assert outbox_alerts(transport) == []
    now[0] += 1.5
    worker.tick_cameras()
    got = outbox_alerts(transport)
    assert [(a.camera_id, a.rule, a.state.value) for a in got] == [(cam, "camera_offline", "raised")]
    assert transport.load_episodes(cam)[UNSENT_KEY] == []
    # the camera manager says online again, a frame arrives: resolved
    transport.set_camera_status(cam, {"state": "online", "since": now[0]})
    transport.publish_results([(cam, result_bytes(cam, 0, now[0] + 0.1, STAND))])
    for _ in range(10):  # first the (empty) pending lists of the four partitions, then the new result
        worker.step()
    assert [a.state.value for a in outbox_alerts(transport)] == ["raised", "resolved"]
