"""Redis AUTH and TLS, chosen by the URL alone: ``redis://:password@host/0`` and ``rediss://...`` with redis-py's
``ssl_*`` query arguments. Against a local redis-server that requires a password and serves TLS only, with a
throwaway CA and server certificate made by ``openssl`` at test time (never committed)."""

from __future__ import annotations

import threading

import fbv_fault_harness as h
import pytest
import redis

from fbvision.core.transport import Transport, TransportUnavailable
from fbvision.run.redis_server import EmbeddedRedis, make_test_tls_files

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PASSWORD = "tls-auth-pw-91c2"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return make_test_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_redis(tls_files):
    with EmbeddedRedis(password=PASSWORD, tls=tls_files) as server:
        yield server


def test_every_transport_operation_over_tls_with_auth(tls_redis):
    assert tls_redis.url.startswith("rediss://")
    t = Transport(tls_redis.url, frame_queue_cap=10, result_partitions=2)
    try:
        assert t.ping()
        assert t.push_frames([b"f1", b"f2"]).dropped_by_cap == 0 and t.pop_frames(5, 0.5) == [b"f1", b"f2"]
        t.ensure_groups()
        t.publish_results([("cam-a", b"r1")])
        entries = t.read_results([0, 1], pending=False, count=10, block_s=0.2)
        assert [e.payload for e in entries] == [b"r1"]
        t.add_alerts_and_ack([b'{"idempotency_key": "k"}'], entries[0].stream_index, [entries[0].entry_id])
        assert [e.payload for e in t.read_alerts("c", pending=False, count=5)] == [b'{"idempotency_key": "k"}']
        t.report_totals("camera", "w", {"frames_pushed": 2})
        assert t.stats("camera") == {"frames_pushed": 2}
        assert PASSWORD not in t.safe_url
    finally:
        t.close()


def test_plaintext_is_refused(tls_redis):
    plain = redis.Redis(host="127.0.0.1", port=tls_redis.port, password=PASSWORD, socket_timeout=1,
                        socket_connect_timeout=1)
    with pytest.raises(redis.ConnectionError):
        plain.ping()


def test_server_not_signed_by_our_ca_is_refused(tls_redis, tmp_path):
    other = make_test_tls_files(tmp_path / "other-ca")
    url = tls_redis.url.replace(str(tls_redis.tls.ca_cert), str(other.ca_cert))
    t = Transport(url, retries=0)
    try:
        with pytest.raises(TransportUnavailable, match="(?i)certificate|ssl"):
            t.ping()
    finally:
        t.close()


def _connections(server) -> int:
    c = server.client()
    try:
        return int(c.info("stats")["total_connections_received"])
    finally:
        c.close()


def _auth_attempts(server, url) -> int:
    """Connections a Transport makes before it gives up on a ping that fails authentication."""
    before = _connections(server)
    t = Transport(url, retries=5, retry_max_s=0.2)
    try:
        with pytest.raises(redis.AuthenticationError):
            t.ping()
    finally:
        t.close()
    return _connections(server) - before - 1  # minus _connections' own


@pytest.mark.parametrize("password", [None, "wrong-password"])
def test_wrong_or_missing_password_fails_at_once(tls_redis, password):
    url = tls_redis.url.replace(f":{PASSWORD}@", f":{password}@" if password else "")
    assert _auth_attempts(tls_redis, url) == 1


def test_camera_and_inference_stages_over_tls(tls_redis):
    """The real stage entry points (as the runners start them), in threads, on the rediss:// URL."""
    from fbvision.run.stages import camera_stage, inference_stage

    settings = h.make_settings({"cam-walk": "synthetic:normal_walk"}, inference={"autotune": False})
    cfg = settings.model_dump_json()
    stop = threading.Event()
    threads = [threading.Thread(target=fn, args=(cfg, tls_redis.url, stop), daemon=True)
               for fn in (camera_stage, inference_stage)]
    for th in threads:
        th.start()
    t = Transport(tls_redis.url, result_partitions=settings.redis.result_partitions)
    try:
        h.wait_for(lambda: sum(t.client.xlen(t.keys.results(p)) for p in range(t.result_partitions)) >= 10, 90,
                   what="10 frames inferred over TLS")
    finally:
        stop.set()
        for th in threads:
            th.join(30)
        t.close()
