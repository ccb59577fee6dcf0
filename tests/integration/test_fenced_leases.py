"""Fenced leases against a real redis-server: the commit script (ack + outbox + episode state) checks the lease
token and is all or nothing; the read and the take-over of pending entries are fenced too; per-process tokens
make two processes with the same --id two owners; long batches renew their lease as they go."""

from __future__ import annotations

import json
import time

import pytest
from redis.exceptions import ResponseError
from test_logic_worker import CLASS_IDS, FAST_WORKER, STAND, outbox_alerts, result_bytes, script, settings

from fbvision.core.transport import RESULTS_GROUP, Transport
from fbvision.logic.worker import LogicWorker

pytestmark = pytest.mark.timeout(60)


def _pending(transport, p) -> dict[str, int]:
    """consumer -> pending entries of partition ``p``'s stream."""
    info = transport.client.xinfo_consumers(transport.keys.results(p), RESULTS_GROUP)
    return {c["name"].decode(): int(c["pending"]) for c in info}


def _setup(transport, n=3, cam="camF"):
    transport.publish_results([(cam, f"r{i}".encode()) for i in range(n)])
    return transport.partition_of(cam)


def test_commit_is_refused_without_the_lease_and_does_all_three_with_it(transport):
    p = _setup(transport)
    assert transport.try_lease(p, "w1@aaaa.1", ttl_s=5)
    entries, lost = transport.read_results_fenced({p: "w1@aaaa.1"}, "w1@aaaa", count=10)
    assert lost == set() and [e.payload for e in entries] == [b"r0", b"r1", b"r2"]
    ids = [e.entry_id for e in entries]
    state = {"horse_down": {"started_at": 5.0}, "through": {"partition": p, "entry_id": ids[-1]}}

    # a zombie of the same worker id (other process instance) and an earlier acquisition by this one: refused
    for stale in ("w1@bbbb.1", "w1@aaaa.0", "w1"):
        assert not transport.commit_results(p, stale, entry_ids=ids, alerts_json=[b'{"k":1}'], states={"camF": state})
        assert _pending(transport, p) == {"w1@aaaa": 3}
        assert outbox_alerts_raw(transport) == []
        assert transport.load_episodes("camF") == {}

    # the holder's token: the ack, the alert and the state, all three
    assert transport.commit_results(p, "w1@aaaa.1", entry_ids=ids, alerts_json=[b'{"k":1}'], states={"camF": state})
    assert _pending(transport, p) == {"w1@aaaa": 0}
    assert outbox_alerts_raw(transport) == [b'{"k":1}']
    assert transport.load_episodes("camF") == state

    # the lease expired (nobody holds it): refused as well
    transport.client.delete(transport.keys.lease(p))
    assert not transport.commit_results(p, "w1@aaaa.1", alerts_json=[b'{"k":2}'])
    assert outbox_alerts_raw(transport) == [b'{"k":1}']


def outbox_alerts_raw(transport) -> list[bytes]:
    return [fields[b"a"] for _id, fields in transport.client.xrange(transport.keys.outbox)]


def test_commit_that_fails_on_its_input_writes_nothing(transport):
    p = _setup(transport)
    assert transport.try_lease(p, "w1@aaaa.1", ttl_s=5)
    entries, _ = transport.read_results_fenced({p: "w1@aaaa.1"}, "w1@aaaa", count=10)
    ids = [e.entry_id for e in entries]
    with pytest.raises(ResponseError):  # a malformed id among good ones: the script stops before any write
        transport.commit_results(p, "w1@aaaa.1", entry_ids=[*ids, "not-an-id"], alerts_json=[b'{"k":1}'],
                                 states={"camF": {"x": 1}})
    assert _pending(transport, p) == {"w1@aaaa": 3}
    assert outbox_alerts_raw(transport) == []
    assert transport.load_episodes("camF") == {}


def test_fenced_read_does_not_take_entries_after_the_lease_is_lost(transport):
    p = _setup(transport, n=2)
    assert transport.try_lease(p, "w2@cccc.1", ttl_s=5)  # w1's lease expired, w2 took the partition
    entries, lost = transport.read_results_fenced({p: "w1@aaaa.1"}, "w1@aaaa", count=10, block_s=0.2)
    assert entries == [] and lost == {p}
    assert "w1@aaaa" not in _pending(transport, p)
    # the owner still gets them as new entries
    entries, lost = transport.read_results_fenced({p: "w2@cccc.1"}, "w2@cccc", count=10)
    assert [e.payload for e in entries] == [b"r0", b"r1"] and lost == set()


def test_fenced_read_blocks_until_an_entry_arrives(transport):
    p = _setup(transport, n=1)
    assert transport.try_lease(p, "w1@aaaa.1", ttl_s=5)
    assert len(transport.read_results_fenced({p: "w1@aaaa.1"}, "w1@aaaa", count=10)[0]) == 1
    t0 = time.monotonic()
    assert transport.read_results_fenced({p: "w1@aaaa.1"}, "w1@aaaa", count=10, block_s=0.3) == ([], set())
    assert time.monotonic() - t0 >= 0.25  # waited in Redis, not spinning
    other = Transport(transport.url, result_partitions=transport.result_partitions)
    import threading

    threading.Timer(0.1, lambda: other.publish_results([("camF", b"late")])).start()
    t0 = time.monotonic()
    entries, _ = transport.read_results_fenced({p: "w1@aaaa.1"}, "w1@aaaa", count=10, block_s=2.0)
    assert [e.payload for e in entries] == [b"late"] and time.monotonic() - t0 < 1.0
    other.close()


def test_taking_over_moves_the_previous_owners_pending_entries_and_drops_its_consumer(transport):
    p = _setup(transport, n=4)
    assert transport.try_lease(p, "w1@aaaa.1", ttl_s=5)
    entries, _ = transport.read_results_fenced({p: "w1@aaaa.1"}, "w1@aaaa", count=3)
    assert len(entries) == 3
    transport.client.xdel(transport.keys.results(p), entries[0].entry_id)  # trimmed while pending
    transport.client.delete(transport.keys.lease(p))  # w1's lease expires
    assert transport.try_lease(p, "w2@cccc.1", ttl_s=5)
    assert transport.claim_partition(p, "w1@aaaa.1", "w1@aaaa") is None  # the old holder cannot claim
    assert transport.claim_partition(p, "w2@cccc.1", "w2@cccc") == (2, 1)
    assert _pending(transport, p) == {"w2@cccc": 2}  # w1's consumer is gone with nothing pending
    again = transport.read_results([p], pending=True, count=10, consumer="w2@cccc")
    assert [e.payload for e in again] == [b"r1", b"r2"]
    # the old holder's late commit of what it read is refused; the new owner's goes through
    assert not transport.commit_results(p, "w1@aaaa.1", entry_ids=[e.entry_id for e in entries])
    assert transport.commit_results(p, "w2@cccc.1", entry_ids=[e.entry_id for e in again])
    assert _pending(transport, p) == {"w2@cccc": 0}
    assert [e.payload for e in transport.read_results_fenced({p: "w2@cccc.1"}, "w2@cccc", count=10)[0]] == [b"r3"]


def test_renew_leases_and_owner_names(transport):
    assert transport.try_lease(0, "w1@aaaa.1", ttl_s=0.3) and transport.try_lease(1, "w1@aaaa.2", ttl_s=0.3)
    assert transport.lease_owner(0) == "w1" and transport.lease_holder(0) == "w1@aaaa.1"
    assert transport.renew_leases({0: "w1@aaaa.1", 1: "w1@aaaa.1"}, ttl_s=5) == {1}  # 1 was taken as .2
    time.sleep(0.4)
    assert transport.lease_holder(0) == "w1@aaaa.1" and transport.lease_holder(1) is None


def test_two_processes_with_the_same_id_are_two_owners(redis_url):
    t1, t2 = (Transport(redis_url, result_partitions=4) for _ in range(2))
    a = LogicWorker(settings(), t1, "logic-1", class_ids=CLASS_IDS, **FAST_WORKER)
    b = LogicWorker(settings(), t2, "logic-1", class_ids=CLASS_IDS, **FAST_WORKER)  # the zombie's twin
    assert a.instance != b.instance
    a.rebalance()
    b.rebalance()  # one live id -> share 4 each, but every lease is a's: b gets none
    assert a.held == set(range(4)) and b.held == set()
    holders = {t1.lease_holder(p) for p in range(4)}
    assert all(h.startswith(a.instance + ".") for h in holders)
    # b cannot write for a's partitions even with the same id
    cam = "stall-0"
    p = t1.partition_of(cam)
    assert not t2.commit_results(p, f"{b.instance}.1", alerts_json=[b'{"k":1}'])
    assert outbox_alerts_raw(t1) == []
    t1.close()
    t2.close()


class SlowStateTransport(Transport):
    """Loading a camera's saved state takes a while (a slow Redis, a big state): a batch of many new cameras
    takes longer than the lease. Records the lease's remaining TTL at each load."""

    def __init__(self, *args, delay_s, **kwargs):
        super().__init__(*args, **kwargs)
        self.delay_s = delay_s
        self.ttls: list[int] = []

    def load_episodes(self, camera_id):
        time.sleep(self.delay_s)
        self.ttls.append(int(self.client.pttl(self.keys.lease(self.partition_of(camera_id)))))
        return super().load_episodes(camera_id)


def test_a_batch_longer_than_the_lease_renews_it_and_commits(redis_url):
    slow = SlowStateTransport(redis_url, result_partitions=1, delay_s=0.15)
    t0 = 1_700_000_000.0
    cams = [f"stall-{i}" for i in range(16)]  # one partition: 16 new cameras, 16 x 0.15 s = 2.4 s > 1 s lease
    slow.publish_results((cam, result_bytes(cam, 0, t0, STAND)) for cam in cams)
    worker = LogicWorker(settings(), slow, "w1", class_ids=CLASS_IDS, **{**FAST_WORKER, "read_count": 64})
    worker.rebalance()
    t_start = time.monotonic()
    while worker.step() == 0 and time.monotonic() - t_start < 10:
        pass
    assert time.monotonic() - t_start > worker.lease_ttl_s * 2  # the batch did outlast the lease...
    assert min(slow.ttls) > 0, slow.ttls  # ...which never lapsed meanwhile
    assert worker.counters.get("fenced:refused") == 0 and worker.counters.get("results") == len(cams)
    slow.ensure_groups()
    assert slow.result_backlog() == 0
    assert all(json.loads(slow.client.hget(slow.keys.episodes, c))["through"]["partition"] == 0 for c in cams)
    assert outbox_alerts(slow) == []
    slow.close()


def test_a_worker_that_lost_its_lease_mid_batch_gives_the_batch_up(redis_url):
    """Without a chance to renew (paused), the commit is refused: counted, the partition and its state dropped,
    and the results stay pending for the new owner."""
    t = Transport(redis_url, result_partitions=1)
    cam = "stall-a"
    frames = script(bouts=1)
    t.publish_results((cam, result_bytes(cam, seq, ts, box)) for seq, ts, box in frames)
    w1 = LogicWorker(settings(), t, "w1", class_ids=CLASS_IDS, **{**FAST_WORKER, "read_count": len(frames)})
    w1.rebalance()
    entries, _ = t.read_results_fenced({0: w1._tokens[0]}, w1.instance, count=len(frames))
    assert len(entries) == len(frames)
    w1._renew_if_due = lambda force=False: None  # a pause: no renewal happens from here on
    t.client.delete(t.keys.lease(0))  # ... and the lease lapses meanwhile
    assert t.try_lease(0, "w2@cccc.1", ttl_s=5)  # another worker takes the partition
    assert w1._process_batch(0, entries) == 0
    assert w1.counters.get("fenced:refused") == 1
    assert w1.counters.get("fenced:results_refused") == len(frames)
    assert w1.counters.get("fenced:alerts_refused") == 3  # the bout's raised, ongoing, resolved
    assert w1.counters.get("results") == 0 and w1.counters.get("alerts") == 0
    assert w1.held == set() and w1._logics == {}
    assert outbox_alerts(t) == [] and t.load_episodes(cam) == {}
    assert t.claim_partition(0, "w2@cccc.1", "w2@cccc") == (len(frames), 0)
    t.close()


class StolenMidBatchTransport(SlowStateTransport):
    """While the worker is half-way through a slow batch, another worker takes the partition (the lease lapsed:
    think of a pause the renewal did not survive)."""

    def load_episodes(self, camera_id):
        if len(self.ttls) == 3:
            self.client.set(self.keys.lease(0), "w2@cccc.1", px=5000)
        return super().load_episodes(camera_id)


def test_a_lease_found_lost_mid_batch_abandons_the_batch(redis_url):
    t = StolenMidBatchTransport(redis_url, result_partitions=1, delay_s=0.25)
    t0 = 1_700_000_000.0
    cams = [f"stall-{i}" for i in range(8)]
    t.publish_results((cam, result_bytes(cam, 0, t0, STAND)) for cam in cams)
    worker = LogicWorker(settings(), t, "w1", class_ids=CLASS_IDS, **{**FAST_WORKER, "read_count": 64})
    worker.rebalance()
    worker.step()  # the (empty) pending list
    assert worker.step() == 0  # the batch: renewed while the lease was ours, then found it gone
    assert worker.counters.get("fenced:batches_abandoned") == 1 and worker.counters.get("leases:lost") == 1
    assert worker.counters.get("fenced:refused") == 0  # given up before the commit: nothing even tried
    assert worker.held == set() and worker._logics == {}
    assert len(t.ttls) < len(cams)  # it stopped loading cameras once the lease was gone
    assert t.client.hlen(t.keys.episodes) == 0
    assert t.claim_partition(0, "w2@cccc.1", "w2@cccc") == (len(cams), 0)  # all pending, for the new owner
    t.close()
