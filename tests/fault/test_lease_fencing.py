"""A logic worker paused past its lease (SIGSTOP) while another takes its partitions over, then resumed (SIGCONT).

Real processes (two forked logic workers), a real redis-server, a real HTTP backend. Results are published live
by the test, scripted so that horse_down episodes are raised, escalated and resolved; the expected alerts come
from running CameraLogic directly over the same frames. Worker 1 is stopped at the worst moment: it has judged a
batch that raised alerts and is about to commit it (ack + outbox + state). Worker 2 takes its partitions over,
claims the unacknowledged results and judges them again. On SIGCONT, worker 1's commit is refused by the lease
fence (counted), it drops those partitions' state and carries on with partitions it takes afresh; the outbox
holds every expected alert exactly once, and so does the backend.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import fbv_fault_harness as h
import numpy as np
import pytest
from fbv_testutil import wait_for

from fbvision.alerts.backend import EmbeddedBackend
from fbvision.alerts.delivery import AlertDelivery
from fbvision.core.candidates import Candidates
from fbvision.core.config import AlertsConfig, Settings
from fbvision.core.events import AlertEvent
from fbvision.core.logic_config import LogicConfig
from fbvision.core.transport import Transport
from fbvision.core.wire import ResultMessage, Timeline, encode_result
from fbvision.logic.camera_logic import CameraLogic
from fbvision.logic.worker import LogicWorker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PARTITIONS = 4
STAND = (100.0, 100.0, 200.0, 300.0)  # tall box: standing
LIE = (90.0, 200.0, 250.0, 300.0)  # low wide box: lying
FRAME = (640, 480)
DT = 0.2  # capture-time step (5 fps)
WORKER = dict(lease_ttl_s=1.0, heartbeat_s=0.2, read_count=8, tick_interval_s=0.5, report_interval_s=0.2)
HOLD_MAX_S = 60.0  # how long worker 1 waits, before its commit, for the test to stop and resume it


def _logic_config() -> LogicConfig:
    return LogicConfig.model_validate({
        "tracker": {"min_consecutive_frames": 1},
        "features": {"baseline_sample_interval_s": 0, "baseline_min_samples": 3},
        "rules": {
            "horse_down": {
                "smoothing": {"kind": "none"}, "exit_after_s": 0.5, "cooldown_s": 0,
                "escalation": [{"after_s": 1.0, "severity": "warning"}, {"after_s": 2.0, "severity": "critical"}],
            },
            "rolling": {"enabled": False}, "too_fast": {"enabled": False},
            "horse_absent": {"enabled": False}, "camera_offline": {"enabled": False},
        },
    })


def _frames(bouts: int, seq0: int = 0, stand: int = 10, lie: int = 20) -> list[tuple[int, float, tuple]]:
    """[(seq, capture time, box)]: stand, lie, ... ending standing, so every bout resolves."""
    out, seq, t0 = [], seq0, 1_700_000_000.0
    for box, n in [(b, m) for _ in range(bouts) for b, m in ((STAND, stand), (LIE, lie))] + [(STAND, stand)]:
        for _ in range(n):
            out.append((seq, t0 + seq * DT, box))
            seq += 1
    return out


def _result(camera: str, seq: int, t: float, box) -> bytes:
    return encode_result(ResultMessage(
        camera_id=camera, seq=seq, src_w=FRAME[0], src_h=FRAME[1],
        timeline=Timeline(t, t + 0.01, t + 0.02, t + 0.03, t + 0.04, t + 0.05), batch_size=1,
        boxes=np.array([box], np.float32), scores=np.array([0.9], np.float32), class_ids=np.array([0], np.int32),
    ))


def _expected(cameras, frames) -> list[AlertEvent]:
    out = []
    for cam in cameras:
        logic = CameraLogic(cam, _logic_config(), None, [0])
        for seq, t, box in frames:
            out += logic.process(seq=seq, t=t, candidates=Candidates.create([box], [0.9], [0]),
                                 frame_size=FRAME).alerts
    return out


def _cameras(transport, per_partition: int = 2) -> list[str]:
    cams, count, i = [], Counter(), 0
    while min(count[p] for p in range(PARTITIONS)) < per_partition:
        cam, i = f"stall-{i}", i + 1
        p = transport.partition_of(cam)
        if count[p] < per_partition:
            cams.append(cam)
            count[p] += 1
    return cams


class _PausingTransport(Transport):
    """Worker 1's transport: before its first commit that carries alerts, it says so and holds until the test has
    SIGSTOPped and SIGCONTed the process (so the stop lands between judging a batch and committing it, however
    slow the machine)."""

    def __init__(self, *args, about_to_commit, resumed, **kwargs):
        super().__init__(*args, **kwargs)
        self.about_to_commit, self.resumed = about_to_commit, resumed

    def commit_results(self, partition, token, *, entry_ids=(), alerts_json=(), states=None, **more):
        if alerts_json and not self.about_to_commit.is_set():
            self.about_to_commit.set()
            self.resumed.wait(HOLD_MAX_S)
        return super().commit_results(partition, token, entry_ids=entry_ids, alerts_json=alerts_json, states=states,
                                      **more)


def _logic_process(redis_url: str, worker_id: str, stop, hold, log_path: str) -> None:
    logging.basicConfig(filename=log_path, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    kw = dict(result_partitions=PARTITIONS, retries=3, retry_max_s=0.5)
    transport = (_PausingTransport(redis_url, about_to_commit=hold[0], resumed=hold[1], **kw) if hold is not None
                 else Transport(redis_url, **kw))
    settings = Settings(logic=_logic_config())
    LogicWorker(settings, transport, worker_id, class_ids={"horse": 0}, **WORKER).run(stop)


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def _drained(transport) -> bool:
    transport.ensure_groups()
    return transport.result_backlog() == 0


def _publish(transport, cameras, frames, pace_s: float) -> None:
    for seq, t, box in frames:
        transport.publish_results((cam, _result(cam, seq, t, box)) for cam in cameras)
        time.sleep(pace_s)


def _holders(transport) -> dict[int, str | None]:
    return {p: transport.lease_holder(p) for p in range(PARTITIONS)}


def _owned_by(transport, worker: str) -> int:
    return [transport.lease_owner(p) for p in range(PARTITIONS)].count(worker)


@pytest.mark.parametrize("when", ["mid_commit", "mid_stream"])
def test_worker_paused_past_its_lease_is_fenced_off_and_no_alert_is_lost_or_doubled(redis_url, tmp_path, when):
    """``mid_commit``: stopped between judging a batch with alerts and committing it (the worst moment: its
    late commit must be refused). ``mid_stream``: stopped wherever it happens to be once alerts flow (mostly
    waiting in a read): its lease is found lost at its next read or renewal."""
    transport = Transport(redis_url, result_partitions=PARTITIONS)
    cams = _cameras(transport)
    round1 = _frames(bouts=3)
    round2 = _frames(bouts=2, seq0=len(round1))
    want = _expected(cams, round1 + round2)
    ctx = mp.get_context("fork")
    stop, about_to_commit, resumed = ctx.Event(), ctx.Event(), ctx.Event()
    w1 = ctx.Process(target=_logic_process, args=(redis_url, "logic-1", stop,
                                                  (about_to_commit, resumed) if when == "mid_commit" else None,
                                                  str(tmp_path / "logic-1.log")), daemon=True)
    w2 = ctx.Process(target=_logic_process, args=(redis_url, "logic-2", stop, None, str(tmp_path / "logic-2.log")),
                     daemon=True)
    procs = [w1, w2]
    figures: dict[str, float] = {}
    try:
        for proc in procs:
            proc.start()
        wait_for(lambda: _owned_by(transport, "logic-1") == 2 and _owned_by(transport, "logic-2") == 2, 15,
                 what="the two workers splitting the partitions")
        publisher = threading.Thread(target=_publish, args=(transport, cams, round1, 0.03), daemon=True)
        publisher.start()

        if when == "mid_commit":  # worker 1 judged a batch with alerts and is about to commit it: stop it there
            assert about_to_commit.wait(30), "worker 1 never raised an alert"
        else:  # alerts are flowing: stop worker 1 wherever it is
            wait_for(lambda: transport.client.xlen(transport.keys.outbox) >= len(cams), 30, interval_s=0.01,
                     what="alerts flowing")
        os.kill(w1.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        wait_for(lambda: _stopped(w1.pid), 5, interval_s=0.01, what="worker 1 stopped")
        w1_tokens = {p: tok for p, tok in _holders(transport).items() if tok and tok.startswith("logic-1@")}
        assert w1_tokens, "worker 1 held no lease when stopped"
        # past its lease, worker 2 takes everything over (and claims what worker 1 had read but not acked)
        wait_for(lambda: all(transport.lease_owner(p) == "logic-2" for p in range(PARTITIONS)), 15, interval_s=0.05,
                 what="worker 2 taking over every partition")
        figures["takeover_s"] = time.monotonic() - stopped_at
        publisher.join(30)
        wait_for(lambda: _drained(transport), 30, what="round 1 judged")
        outbox_before = transport.client.xlen(transport.keys.outbox)
        os.kill(w1.pid, signal.SIGCONT)
        resumed.set()
        figures["paused_s"] = time.monotonic() - stopped_at

        # it finds its leases gone (its late commit refused by the fence), and counts it
        counter = "fenced:refused" if when == "mid_commit" else "leases:lost"
        wait_for(lambda: transport.stats("logic").get(counter, 0) >= 1, 15, what=f"{counter} counted")
        assert transport.client.xlen(transport.keys.outbox) == outbox_before  # nothing written by the zombie
        assert all(transport.lease_holder(p) != tok for p, tok in w1_tokens.items())
        # it carries on: rejoins, takes its fair share afresh (new tokens) and judges round 2 with worker 2
        wait_for(lambda: _owned_by(transport, "logic-1") == 2, 15, what="worker 1 back to its fair share")
        assert not set(_holders(transport).values()) & set(w1_tokens.values())
        results_before = transport.snapshots()["logic:logic-1"]["counters"].get("results", 0)
        _publish(transport, cams, round2, 0.01)
        wait_for(lambda: _drained(transport), 30, what="round 2 judged")
        wait_for(lambda: transport.snapshots()["logic:logic-1"]["counters"].get("results", 0) > results_before, 10,
                 what="worker 1 judging again")
        stop.set()
        for proc in procs:
            proc.join(15)
            assert proc.exitcode == 0, (proc.name, proc.exitcode)
    finally:
        for proc in procs:
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
                proc.join(5)

    stats = transport.stats("logic")
    outbox = [AlertEvent.from_json(fields[b"a"]) for _id, fields in transport.client.xrange(transport.keys.outbox)]
    copies = Counter(a.idempotency_key for a in outbox)
    # none doubled in the outbox, none missing
    assert max(copies.values()) == 1, [k for k, n in copies.items() if n > 1]
    assert sorted(copies) == sorted(a.idempotency_key for a in want)
    if when == "mid_commit":
        assert stats["fenced:refused"] >= 1 and stats["fenced:alerts_refused"] >= 1, stats
    assert stats["leases:lost"] >= len(w1_tokens), stats
    assert stats["results"] == len(cams) * (len(round1) + len(round2)), stats  # each judged once, as committed

    # delivered to a real backend: each expected alert exactly once
    with EmbeddedBackend(tmp_path / "alerts.sqlite") as backend:
        delivery = AlertDelivery(transport, AlertsConfig(retry_initial_s=0.1, retry_max_s=0.5), "d",
                                 backend_url=backend.url)
        stop_delivery = threading.Event()
        thread = threading.Thread(target=delivery.run, args=(stop_delivery,), daemon=True)
        thread.start()
        try:
            wait_for(lambda: delivery.counters.get("delivered") >= len(want), 30, what="delivery")
        finally:
            stop_delivery.set()
            thread.join(10)
        stored = backend.alerts()
    assert delivery.counters.get("duplicate") == 0
    assert sorted(a["idempotency_key"] for a in stored) == sorted(a.idempotency_key for a in want)

    figures.update(refused_commits=stats.get("fenced:refused", 0), refused_alerts=stats.get("fenced:alerts_refused", 0),
                   refused_results=stats.get("fenced:results_refused", 0),
                   leases_lost=stats.get("leases:lost", 0), claimed=stats.get("leases:claimed_pending", 0),
                   expected=len(want), outbox=len(outbox),
                   delivered=len(stored))
    print(f"fenced lease figures ({when}):", figures)
    h.add_row(f"logic worker SIGSTOPped past its lease ({when.replace('_', ' ')}), SIGCONTed after takeover",
              recovered_s=round(figures["takeover_s"], 1), expected=len(want), delivered=len(stored), duplicated=0,
              drops={}, test="test_lease_fencing",
              notes=f"late commits refused {figures['refused_commits']} ({figures['refused_alerts']} alerts, "
                    f"{figures['refused_results']} results); leases lost {figures['leases_lost']}; pending taken "
                    f"over {figures['claimed']}")
    h.FIGURES.append(f"fenced leases ({when}): {figures}")
    transport.close()
