"""Transport against a real redis-server started by the project."""

import os
import signal
import threading
import time

import pytest
import redis

from fbvision.core.transport import Transport, TransportUnavailable, message_id
from fbvision.run.redis_server import EmbeddedRedis

pytestmark = pytest.mark.timeout(60)


def frames(n, start=0):
    return [f"frame-{i}".encode() for i in range(start, start + n)]


def test_bounded_queue_drops_oldest_and_counts(transport):
    cap = transport.frame_queue_cap
    assert transport.push_frames(frames(cap)).dropped_by_cap == 0
    assert transport.push_frames(frames(7, start=cap)).dropped_by_cap == 7
    assert transport.frame_queue_depth() == cap
    assert transport.stats("queue")["dropped:queue_full"] == 7
    # The 7 oldest are gone; FIFO order of the rest is intact.
    got = transport.pop_frames(cap + 10, timeout_s=0.1)
    assert got == frames(cap, start=7)


def test_pop_returns_at_most_n_in_fifo_order(transport):
    transport.push_frames(frames(10))
    assert transport.pop_frames(4, timeout_s=0.1) == frames(4)
    assert transport.pop_frames(4, timeout_s=0.1) == frames(4, start=4)
    assert transport.pop_frames(4, timeout_s=0.1) == frames(2, start=8)


def test_blocking_pop_on_empty_queue_returns_within_timeout(transport):
    t0 = time.monotonic()
    assert transport.pop_frames(8, timeout_s=0.3) == []
    elapsed = time.monotonic() - t0
    assert 0.25 <= elapsed < 1.5


def test_short_pops_do_not_wait_for_the_redis_timer(transport):
    """Redis checks blocking timeouts only `hz` (10) times a second: a 5 ms BLPOP takes ~100 ms."""
    waits = []
    for _ in range(10):
        t0 = time.monotonic()
        assert transport.pop_frames(7, timeout_s=0.005) == []
        waits.append(time.monotonic() - t0)
    assert sorted(waits)[len(waits) // 2] < 0.04, waits
    transport.push_frames(frames(3))
    assert transport.pop_frames(7, timeout_s=0.005) == frames(3)


def test_blocking_pop_wakes_on_push(transport, redis_url):
    other = Transport(redis_url)
    timer = threading.Timer(0.2, lambda: other.push_frame(b"late"))
    timer.start()
    t0 = time.monotonic()
    got = transport.pop_frames(8, timeout_s=3.0)
    assert got == [b"late"]
    assert time.monotonic() - t0 < 2.0
    other.close()


def test_blocking_timeout_is_kept_below_socket_timeout(redis_url):
    t = Transport(redis_url, socket_timeout_s=1.0)
    t0 = time.monotonic()
    assert t.pop_frames(1, timeout_s=30) == []  # would be a socket timeout error if not capped
    assert time.monotonic() - t0 < 1.0
    t.close()


def test_results_are_partitioned_by_camera_and_ordered(transport):
    msgs = [(f"cam{i % 3}", f"r{i}".encode()) for i in range(30)]
    transport.publish_results(msgs)
    seen = {}
    for p in range(transport.result_partitions):
        for e in transport.read_results([p], pending=False, count=100):
            seen.setdefault(p, []).append(e.payload)
    for cam in ("cam0", "cam1", "cam2"):
        p = transport.partition_of(cam)
        mine = [m for c, m in msgs if c == cam]
        assert [x for x in seen[p] if x in mine] == mine


def test_unacked_results_are_redelivered_to_the_next_owner(transport, redis_url):
    transport.publish_results([("camA", b"1"), ("camA", b"2"), ("camA", b"3")])
    p = transport.partition_of("camA")
    first = transport.read_results([p], pending=False, count=10)
    assert [e.payload for e in first] == [b"1", b"2", b"3"]
    transport.ack_results(p, [first[0].entry_id])
    # A new process (after a crash) reads the pending ones, in order, then nothing new.
    t2 = Transport(redis_url, result_partitions=transport.result_partitions)
    again = t2.read_results([p], pending=True, count=10)
    assert [e.payload for e in again] == [b"2", b"3"]
    assert t2.read_results([p], pending=False, count=10) == []
    t2.ack_results(p, [e.entry_id for e in again])
    assert t2.read_results([p], pending=True, count=10) == []
    t2.close()


def test_leases_are_exclusive_and_expire(transport):
    assert transport.try_lease(0, "w1", ttl_s=0.3)
    assert not transport.try_lease(0, "w2", ttl_s=0.3)
    assert transport.try_lease(0, "w1", ttl_s=0.3)  # renewal
    assert transport.lease_owner(0) == "w1"
    time.sleep(0.45)
    assert transport.try_lease(0, "w2", ttl_s=5)
    transport.release_lease(0, "w1")  # not ours any more: no effect
    assert transport.lease_owner(0) == "w2"
    transport.release_lease(0, "w2")
    assert transport.lease_owner(0) is None


def test_alert_outbox_add_read_ack_and_claim(transport):
    ids = transport.add_alerts([b'{"a":1}', b'{"a":2}'])
    assert len(ids) == 2
    got = transport.read_alerts("d1", pending=False, count=10)
    assert [e.payload for e in got] == [b'{"a":1}', b'{"a":2}']
    transport.ack_alerts([got[0].entry_id])
    assert transport.outbox_pending() == 1
    # d1 dies; d2 claims what d1 left pending once it is idle long enough.
    assert transport.claim_stale_alerts("d2", min_idle_s=60) == []
    time.sleep(0.05)
    claimed = transport.claim_stale_alerts("d2", min_idle_s=0.01)
    assert [e.payload for e in claimed] == [b'{"a":2}']


def test_add_alerts_and_ack_is_atomic(transport):
    transport.publish_results([("camZ", b"x")])
    p = transport.partition_of("camZ")
    entry = transport.read_results([p], pending=False, count=1)[0]
    transport.add_alerts_and_ack([b'{"alert":1}'], p, [entry.entry_id])
    assert transport.read_results([p], pending=True, count=10) == []
    assert [e.payload for e in transport.read_alerts("d", pending=False, count=10)] == [b'{"alert":1}']


def test_camera_status_counters_dead_letters_and_episodes(transport):
    transport.set_camera_status("cam1", {"state": "online", "since": 1.0})
    assert transport.camera_statuses() == {"cam1": {"state": "online", "since": 1.0}}
    transport.report_totals("inference", "w1", {"frames_in": 3, "busy_s": 0.5})
    transport.report_totals("inference", "w1", {"frames_in": 5, "busy_s": 0.75, "zero": 0})
    transport.report_totals("inference", "w2", {"frames_in": 2})
    assert transport.stats("inference") == {"frames_in": 7, "busy_s": 0.75}
    transport.dead_letter("batch_frames", "garbage", b"\x00" * 1000)
    (dl,) = transport.dead_letters()
    assert dl["reason"] == "garbage" and dl["size"] == 1000 and len(dl["head"]) == 1024
    transport.save_episodes("cam1", {"horse_down": {"started_at": 5.0}})
    assert transport.load_episodes("cam1") == {"horse_down": {"started_at": 5.0}}
    assert transport.load_episodes("nope") == {}


def test_namespace_hash_tags_every_key(redis_url):
    t = Transport(redis_url, namespace="barnA")
    t.push_frame(b"x")
    t.publish_results([("cam", b"y")])
    keys = {k.decode() for k in redis.Redis.from_url(redis_url).keys("*")}
    assert keys and all(k.startswith("{barnA}:") for k in keys), keys
    t.close()


@pytest.mark.slow
def test_restarted_server_is_reconnected_without_crashing_the_caller(private_redis):
    t = Transport(private_redis.url, retries=2, retry_max_s=0.2)
    t.push_frame(b"before")
    private_redis.kill()
    with pytest.raises(TransportUnavailable) as exc:
        t.push_frame(b"during")
    assert "127.0.0.1" in str(exc.value)
    private_redis.start()
    # Same Transport object: it reconnects by itself.
    t.push_frame(b"after")
    assert t.pop_frames(5, timeout_s=0.2) == [b"after"]  # no persistence: 'before' went with the server
    t.close()


@pytest.mark.slow
def test_blocking_pop_survives_a_restart_while_waiting(private_redis):
    t = Transport(private_redis.url, retries=8, retry_max_s=0.3)
    results = []

    def consumer():
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and not results:
            try:
                results.extend(t.pop_frames(1, timeout_s=0.5))
            except TransportUnavailable:
                time.sleep(0.1)

    th = threading.Thread(target=consumer)
    th.start()
    time.sleep(0.3)
    private_redis.restart(down_s=0.5)
    Transport(private_redis.url).push_frame(b"hello")
    th.join(10)
    assert results == [b"hello"]


def test_password_protected_server(tmp_path):
    with EmbeddedRedis(password="s3cret-pw") as server:
        ok = Transport(server.url)
        ok.push_frame(b"x")
        assert ok.frame_queue_depth() == 1
        bad = Transport(server.url.replace("s3cret-pw", "wrong"), retries=0)
        with pytest.raises(redis.AuthenticationError):
            bad.ping()
        assert "s3cret-pw" not in ok.safe_url and "***@" in ok.safe_url


def test_once_ids_tell_a_retry_of_ours_from_a_duplicate(transport):
    ids = [message_id("cam", seq, 100.0 + seq) for seq in range(3)]
    first = transport.push_frames(frames(3), once=ids, token="attempt-1")
    assert (first.retried, first.duplicates) == (0, 0)
    again = transport.push_frames(frames(4), once=[*ids, message_id("cam", 3, 103.0)], token="attempt-1")
    assert (again.retried, again.duplicates) == (3, 0)  # the retry wrote only the new frame
    other = transport.push_frames(frames(1), once=ids[:1], token="attempt-2")
    assert (other.retried, other.duplicates) == (0, 1)
    assert transport.pop_frames(10, timeout_s=0.1) == frames(3) + [b"frame-3"]
    # the same capture id of a camera whose producer restarted with the same seq is another frame
    assert transport.push_frames(frames(1), once=[message_id("cam", 0, 999.0)], token="t3").duplicates == 0

    first = transport.publish_results([("a", b"r0"), ("b", b"r1")], once=ids[:2], token="p1")
    assert all("-" in entry_id for entry_id in first)
    # A result and the frame it came from have the same message id: their once keys are apart.
    assert transport.publish_results([("a", b"r0"), ("b", b"r1"), ("a", b"r2")], once=ids, token="p1")[:2] == ["=", "="]
    assert transport.publish_results([("a", b"r0-again")], once=ids[:1], token="p2") == ["!"]
    read = transport.read_results(range(transport.result_partitions), pending=False, count=10)
    assert sorted(e.payload for e in read) == [b"r0", b"r1", b"r2"]
    with pytest.raises(ValueError, match="once ids"):
        transport.publish_results([("a", b"x")], once=[], token="p3")


def test_counter_totals_reported_twice_count_once(transport):
    transport.report_totals("logic", "w1", {"results": 10, "time_ms:x": 1.5})
    transport.report_totals("logic", "w1", {"results": 10, "time_ms:x": 1.5})  # a repeat after a lost reply
    transport.report_totals("logic", "w2", {"results": 1})  # another writer (or a restarted one) adds up
    transport.report_totals("logic", "w1", {"results": 12, "time_ms:x": 2.0})
    assert transport.stats("logic") == {"results": 13, "time_ms:x": 2.0}


@pytest.mark.slow
def test_writes_retried_after_a_lost_reply_land_once(private_redis):
    """A frozen server (SIGSTOP past the socket timeout) runs the original command *and* redis-py's retry when it
    wakes up. The plain XADD path shows the duplicate; the once ids and running totals do not have it."""
    t = Transport(private_redis.url, socket_timeout_s=1.0, retries=8, retry_max_s=0.3, result_partitions=1)
    t.ping()

    def frozen(write):
        pid = private_redis.proc.pid
        thaw = threading.Timer(2.5, lambda: os.kill(pid, signal.SIGCONT))
        os.kill(pid, signal.SIGSTOP)
        thaw.start()
        try:
            return write()
        finally:
            thaw.join()

    stream = t.keys.results(0)
    frozen(lambda: t.publish_results([("cam", b"plain")]))
    if t.client.xlen(stream) != 2:
        pytest.skip("the freeze did not make redis-py write twice this time: nothing to show")
    t.client.delete(stream)
    frozen(lambda: t.publish_results([("cam", b"once")], once=[message_id("cam", 1, 1.0)], token="x"))
    assert t.client.xlen(stream) == 1
    frozen(lambda: t.push_frames([b"f1", b"f2"], once=["f1", "f2"], token="y"))
    assert t.pop_frames(10, timeout_s=0.1) == [b"f1", b"f2"]
    frozen(lambda: t.report_totals("inference", "w", {"frames_out": 7, "time_ms:infer": 3.5}))
    assert t.stats("inference") == {"frames_out": 7, "time_ms:infer": 3.5}
    t.close()
