"""The embedded alert backend: HTTP contract, deduplication by idempotency key, limits, restart."""

import http.client
import json

import pytest
import requests

from fbvision.alerts.backend import MAX_BODY_BYTES, EmbeddedBackend
from fbvision.core.events import AlertEvent, AlertState, Evidence, Severity

pytestmark = pytest.mark.timeout(30)


def make_alert(camera="cam1", started=1000.0, state=AlertState.raised, severity=Severity.warning, track=1):
    return AlertEvent.create(
        camera_id=camera, rule="horse_down", track_id=track, state=state, severity=severity,
        started_at=started, updated_at=started + 5, evidence=Evidence(seq=7, features={"rel_height": 0.4}),
        resolved_at=started + 5 if state is AlertState.resolved else None,
    )


def post(backend, body, key=None, content_type="application/json"):
    headers = {"Content-Type": content_type}
    if key is not None:
        headers["Idempotency-Key"] = key
    return requests.post(backend.url, data=body, headers=headers, timeout=5)


@pytest.fixture
def backend(tmp_path):
    with EmbeddedBackend(tmp_path / "alerts.sqlite") as b:
        yield b


def test_new_alert_is_stored_and_listed(backend):
    alert = make_alert()
    r = post(backend, alert.to_json(), alert.idempotency_key)
    assert r.status_code == 201 and r.json() == {"stored": True, "duplicate": False}
    listed = requests.get(f"{backend.base_url}/alerts", timeout=5).json()
    assert len(listed) == 1
    assert listed[0]["idempotency_key"] == alert.idempotency_key
    assert AlertEvent.model_validate({k: v for k, v in listed[0].items() if not k.startswith("_")}) == alert


def test_same_idempotency_key_twice_is_one_row_and_says_duplicate(backend):
    alert = make_alert()
    assert post(backend, alert.to_json(), alert.idempotency_key).status_code == 201
    # A redelivery after a crash carries a new event id but the same deterministic key.
    again = alert.model_copy(update={"id": "another-id"})
    r = post(backend, again.to_json(), again.idempotency_key)
    assert r.status_code == 200 and r.json()["duplicate"] is True
    assert len(backend.alerts()) == 1
    assert backend.alerts()[0]["id"] == alert.id


def test_different_states_of_one_episode_are_separate_alerts(backend):
    raised = make_alert()
    resolved = make_alert(state=AlertState.resolved, severity=Severity.warning)
    for a in (raised, resolved):
        assert post(backend, a.to_json(), a.idempotency_key).status_code == 201
    assert [a["state"] for a in backend.alerts()] == ["raised", "resolved"]


@pytest.mark.parametrize(
    "body, content_type, key, status",
    [
        (b"{not json", "application/json", None, 400),
        (json.dumps({"camera_id": "x"}).encode(), "application/json", None, 422),  # JSON, but not an AlertEvent
        (json.dumps([1, 2]).encode(), "application/json", None, 422),
        (b"", "application/json", None, 400),  # empty body: not JSON
        (b"\xff\xfe", "application/json", None, 400),
        ("ALERT", "text/plain", None, 415),
        (None, "application/json", "wrong-key", 400),  # header and body disagree
        (b"x" * (MAX_BODY_BYTES + 1), "application/json", None, 413),
    ],
)
def test_bad_requests_are_refused_and_store_nothing(backend, body, content_type, key, status):
    if body is None:
        body = make_alert().to_json()
    r = post(backend, body, key, content_type)
    assert r.status_code == status
    assert "error" in r.json()
    assert backend.alerts() == []


def test_missing_content_length_is_411(backend):
    conn = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=5)
    conn.putrequest("POST", "/alerts")
    conn.putheader("Content-Type", "application/json")
    conn.endheaders()
    assert conn.getresponse().status == 411
    conn.close()


def test_health_filter_and_unknown_path(backend):
    for cam in ("cam1", "cam2", "cam1"):
        a = make_alert(camera=cam, started=1000.0 + len(backend.alerts()))
        post(backend, a.to_json(), a.idempotency_key)
    health = requests.get(f"{backend.base_url}/health", timeout=5).json()
    assert health == {"status": "ok", "alerts": 3}
    cam1 = requests.get(f"{backend.base_url}/alerts", params={"camera": "cam1"}, timeout=5).json()
    assert [a["camera_id"] for a in cam1] == ["cam1", "cam1"]
    after = requests.get(f"{backend.base_url}/alerts", params={"since": cam1[0]["_row"]}, timeout=5).json()
    assert len(after) == 2
    assert requests.get(f"{backend.base_url}/nope", timeout=5).status_code == 404
    assert requests.post(f"{backend.base_url}/nope", data=b"{}", timeout=5).status_code == 404


def test_restart_on_the_same_port_keeps_alerts_and_dedup(tmp_path):
    backend = EmbeddedBackend(tmp_path / "a.sqlite").start()
    alert = make_alert()
    try:
        post(backend, alert.to_json(), alert.idempotency_key)
        port = backend.port
        backend.stop()
        with pytest.raises(requests.ConnectionError):
            post(backend, alert.to_json(), alert.idempotency_key)
        assert len(backend.alerts()) == 1  # readable while stopped
        backend.start()
        assert backend.port == port
        assert post(backend, alert.to_json(), alert.idempotency_key).json()["duplicate"] is True
        assert len(backend.alerts()) == 1
    finally:
        backend.stop()


def test_fail_with_answers_like_a_broken_backend(backend):
    alert = make_alert()
    backend.fail_with(503)
    assert post(backend, alert.to_json(), alert.idempotency_key).status_code == 503
    backend.fail_with(None)
    assert post(backend, alert.to_json(), alert.idempotency_key).status_code == 201
    assert len(backend.alerts()) == 1


def test_command_line_entry_parses_its_options(monkeypatch, tmp_path):
    from fbvision.alerts import backend as module

    seen = {}

    def serve_then_interrupt():
        seen["health"] = requests.get(f"{seen['base']}/health", timeout=5).json()
        raise KeyboardInterrupt

    real_start = module.EmbeddedBackend.start

    def start(self):
        backend = real_start(self)
        seen["base"] = backend.base_url
        return backend

    monkeypatch.setattr(module.EmbeddedBackend, "start", start)
    monkeypatch.setattr(module, "_wait_forever", serve_then_interrupt)
    module.main(["--port", "0", "--db", str(tmp_path / "cli.sqlite")])
    assert seen["health"] == {"status": "ok", "alerts": 0}
    assert (tmp_path / "cli.sqlite").exists()
