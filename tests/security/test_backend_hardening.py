"""The embedded backend always answers, bounds what it returns, binds loopback and, when exposed, wants a token;
delivery sends the token. Real server over real sockets (``http.client`` / ``requests``)."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time

import pytest
import requests
from fbv_testutil import Running, wait_until

from fbvision.alerts import backend as backend_module
from fbvision.alerts.backend import EmbeddedBackend
from fbvision.alerts.delivery import AlertDelivery
from fbvision.core.config import AlertsConfig
from fbvision.core.events import AlertEvent, AlertState, Evidence, Severity

pytestmark = pytest.mark.timeout(60)

TOKEN = "t0ken-for-the-tests-0123456789"


def event(i: int = 0, camera: str = "cam1") -> AlertEvent:
    return AlertEvent.create(camera_id=camera, rule="horse_down", track_id=1, state=AlertState.raised,
                             severity=Severity.warning, started_at=1000.0 + i, updated_at=1005.0 + i,
                             evidence=Evidence(seq=i))


def body_with(**override) -> bytes:
    tree = json.loads(event().to_json())
    tree.update(override)
    return json.dumps(tree).encode()


def post(url, body: bytes, headers: dict | None = None) -> requests.Response:
    return requests.post(url, data=body, headers={"Content-Type": "application/json", **(headers or {})}, timeout=5)


@pytest.fixture
def backend(tmp_path):
    with EmbeddedBackend(tmp_path / "alerts.sqlite", request_timeout_s=1.0) as b:
        yield b


@pytest.mark.parametrize("body, status", [
    (body_with(track_id=2**70), 422),  # used to make SQLite raise and drop the connection
    (body_with(track_id=-(2**70)), 422),
    (b"not json at all", 400),
    (b"\xff\xfe\x00", 400),  # not UTF-8
    (b'{"camera_id": ', 400),  # truncated
    (body_with(severity="apocalyptic"), 422),
    (body_with(started_at="yesterday"), 422),
    (body_with(schema_version=99), 422),
    (json.dumps("a string").encode(), 422),
])
def test_bad_alerts_get_an_answer_and_store_nothing(backend, body, status):
    r = post(backend.url, body)
    assert r.status_code == status, r.text
    assert "error" in r.json()
    assert backend.alerts() == []
    assert requests.get(f"{backend.base_url}/health", timeout=5).json()["status"] == "ok"  # still serving


def test_an_unknown_field_is_accepted_and_kept_verbatim(backend):
    # Forward compatibility (docs/alerts.md, "accept fields it does not know"): a newer writer's additive field is
    # stored, not refused; only a different schema_version is (above).
    tree = json.loads(event().to_json())
    tree["unexpected_field"] = 1
    tree["evidence"]["also_new"] = [1, 2]
    assert post(backend.url, json.dumps(tree).encode()).status_code == 201
    (stored,) = backend.alerts()
    assert stored["unexpected_field"] == 1 and stored["evidence"]["also_new"] == [1, 2]


def test_largest_storable_track_id_is_stored(backend):
    big = event().model_copy(update={"track_id": 2**63 - 1})
    assert post(backend.url, big.to_json().encode()).status_code == 201
    assert backend.alerts()[0]["track_id"] == 2**63 - 1


def test_a_database_failure_is_a_500_not_a_dropped_connection(backend, tmp_path):
    # A real failure: somebody drops the table under the running backend.
    conn = sqlite3.connect(tmp_path / "alerts.sqlite")
    conn.execute("DROP TABLE alerts")
    conn.commit()
    conn.close()
    r = post(backend.url, event().to_json().encode())
    assert r.status_code == 500 and r.json() == {"error": "internal error"}
    assert requests.get(f"{backend.base_url}/alerts", timeout=5).status_code == 500


@pytest.mark.parametrize("limit, status", [("-1", 400), ("0", 400), ("abc", 400), ("10", 200), (str(10**12), 200)])
def test_limit_is_bounded(backend, monkeypatch, limit, status):
    monkeypatch.setattr(backend_module, "MAX_PAGE", 3)  # the clamp, without storing 10 000 alerts
    for i in range(5):
        post(backend.url, event(i).to_json().encode())
    r = requests.get(f"{backend.base_url}/alerts", params={"limit": limit}, timeout=5)
    assert r.status_code == status
    if status == 200:
        assert len(r.json()) == 3  # at most MAX_PAGE, however large the limit
    else:
        assert "error" in r.json()


def test_a_stalled_client_is_timed_out_and_does_not_stop_others(backend):
    # Headers promise 1000 bytes, 10 arrive, then nothing: the backend answers 408 after its request timeout.
    stalled = socket.create_connection(("127.0.0.1", backend.port), timeout=10)
    stalled.sendall(b"POST /alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1000\r\n\r\n{\"camera\":")
    half_headers = socket.create_connection(("127.0.0.1", backend.port), timeout=10)
    half_headers.sendall(b"GET /alerts HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
    # meanwhile others are served
    assert post(backend.url, event().to_json().encode()).status_code == 201
    t0 = time.monotonic()
    answer = stalled.recv(4096)
    assert answer.startswith(b"HTTP/1.0 408"), answer
    assert time.monotonic() - t0 < 5
    half_headers.settimeout(10)
    assert half_headers.recv(4096) == b""  # closed (stdlib: a request line/headers timeout closes)
    stalled.close()
    half_headers.close()
    assert len(backend.alerts()) == 1


def test_binds_loopback_by_default_and_refuses_a_public_bind_without_a_token(tmp_path):
    b = EmbeddedBackend(tmp_path / "a.sqlite")
    assert b.host == "127.0.0.1"
    for host in ("0.0.0.0", "::", "10.1.2.3", "backend.example"):
        with pytest.raises(ValueError, match="not loopback"):
            EmbeddedBackend(tmp_path / "a.sqlite", host=host)
    with pytest.raises(ValueError, match="16"):
        EmbeddedBackend(tmp_path / "a.sqlite", host="0.0.0.0", token="short")
    EmbeddedBackend(tmp_path / "a.sqlite", host="0.0.0.0", token=TOKEN)  # allowed with a token


def test_command_line_refuses_a_public_bind_without_a_token(tmp_path):
    env_without_token = {k: v for k, v in __import__("os").environ.items() if k != backend_module.TOKEN_ENV}
    proc = subprocess.run([sys.executable, "-m", "fbvision.alerts.backend", "--host", "0.0.0.0", "--port", "0",
                           "--db", str(tmp_path / "a.sqlite")], capture_output=True, text=True, timeout=30,
                          env=env_without_token)
    assert proc.returncode == 2 and "not loopback" in proc.stderr


def test_token_is_required_on_alerts_and_delivery_sends_it(tmp_path, transport):
    with EmbeddedBackend(tmp_path / "alerts.sqlite", host="0.0.0.0", token=TOKEN) as backend:
        url = f"http://127.0.0.1:{backend.port}"
        body = event().to_json().encode()
        assert post(f"{url}/alerts", body).status_code == 401
        r = post(f"{url}/alerts", body, {"Authorization": "Bearer wrong-token-0123456789"})
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert requests.get(f"{url}/alerts", timeout=5).status_code == 401
        assert requests.get(f"{url}/health", timeout=5).status_code == 200  # liveness stays open
        assert backend.alerts() == []
        # delivery without the token: 401 is "the backend is not right for us", retried, never dead-lettered
        events = [event(i) for i in range(3)]
        transport.add_alerts([e.to_json().encode() for e in events])
        fast = AlertsConfig(timeout_s=1.0, retry_initial_s=0.1, retry_max_s=0.3)
        without = AlertDelivery(transport, fast, "d", backend_url=f"{url}/alerts")
        with Running(without):
            assert wait_until(lambda: without.counters.get("retried") >= 2, 10)
        assert backend.alerts() == [] and transport.dead_letters() == []
        # with the token (from the config, as FBV_ALERTS__BACKEND_TOKEN would set it): all delivered
        with_token = AlertDelivery(transport, fast.model_copy(update={"backend_token": TOKEN}), "d",
                                   backend_url=f"{url}/alerts")
        with Running(with_token):
            assert wait_until(lambda: len(backend.alerts()) == 3 and transport.outbox_length() == 0, 10)
        listed = requests.get(f"{url}/alerts", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).json()
        assert [a["idempotency_key"] for a in listed] == [e.idempotency_key for e in events]
