"""Poison in the alert outbox cannot stop delivery, and the outbox stays bounded.

Real parts: a real redis-server (the session's), the delivery stage in its own process under the project's
supervisor (``fbvision.run.stages.delivery_stage``, restart budget and all), the embedded backend over HTTP.

One poison entry of each kind sits in front of good alerts: an idempotency key that is not latin-1 (``"€..."``,
which used to raise UnicodeEncodeError out of the stage: crash loop), a key with a newline (used to be retried
for ever, blocking everything behind it), ``track_id`` 2**70 (used to make the backend's SQLite raise and drop
the connection), a payload that is not JSON, an event that fails the schema, and one the backend answers
``500`` to every time (the retry budget). Every good alert must arrive exactly once and in order, every poison
must be dead-lettered with its full payload and a reason, and the stage must never restart.
"""

from __future__ import annotations

import json
import time

import fbv_fault_harness as h
import pytest
from fbv_testutil import Running, wait_until

from fbvision.alerts.backend import EmbeddedBackend
from fbvision.alerts.delivery import AlertDelivery
from fbvision.core.config import AlertsConfig, Settings
from fbvision.core.events import AlertEvent, AlertState, Evidence, Severity
from fbvision.core.transport import Transport
from fbvision.run.stages import _setup, delivery_stage
from fbvision.run.supervisor import StageSpec, Supervisor

FAST = {"timeout_s": 1.0, "retry_initial_s": 0.1, "retry_max_s": 0.5, "max_attempts": 3}


def alert(camera: str, i: int, **fields) -> AlertEvent:
    started = 1000.0 + 100 * i
    event = AlertEvent.create(
        camera_id=camera, rule="horse_down", track_id=1, state=AlertState.raised, severity=Severity.warning,
        started_at=started, updated_at=started + 5, evidence=Evidence(seq=i),
    )
    return event.model_copy(update=fields) if fields else event


def raw(event: AlertEvent, **override) -> bytes:
    """The event's JSON with fields overridden without validation (how a bad writer would produce it)."""
    tree = json.loads(event.to_json())
    tree.update(override)
    return json.dumps(tree).encode()


def poison_entries() -> dict[str, tuple[bytes, str]]:
    """kind -> (payload, the dead-letter reason it must get)."""
    return {
        "non_latin1_key": (raw(alert("cam-p", 1), idempotency_key="€-not-latin-1"), "invalid_idempotency_key"),
        "newline_key": (raw(alert("cam-p", 2), idempotency_key="abc\r\nX-Injected: 1"), "invalid_idempotency_key"),
        "track_id_2_70": (raw(alert("cam-p", 3), track_id=2**70), "invalid_event"),
        "not_json": (b"\x80\x04 this is not JSON {", "unparseable"),
        "schema_invalid": (raw(alert("cam-p", 4), severity="apocalyptic", rule=""), "invalid_event"),
        "backend_500": (alert("cam-p", 5).to_json().encode(), "http_500"),
    }


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_poison_of_every_kind_is_dead_lettered_and_good_alerts_arrive_once_stage_never_restarts(
    redis_url, tmp_path, capsys
):
    settings = Settings(alerts=FAST)
    transport = Transport(redis_url)
    poison = poison_entries()
    good = {c: [alert(c, i) for i in range(4)] for c in ("cam1", "cam2", "cam3")}
    with EmbeddedBackend(tmp_path / "alerts.sqlite") as backend:
        backend_500_key = json.loads(poison["backend_500"][0])["idempotency_key"]
        backend.fail_with(500, key=backend_500_key)
        # Poison first, then good alerts, with more poison between them.
        order: list[bytes] = [poison["non_latin1_key"][0], poison["backend_500"][0], poison["newline_key"][0]]
        order += [good[c][i].to_json().encode() for i in range(2) for c in good]
        order += [poison["track_id_2_70"][0], poison["not_json"][0], poison["schema_invalid"][0]]
        order += [good[c][i].to_json().encode() for i in range(2, 4) for c in good]
        transport.add_alerts(order)
        sup = Supervisor([StageSpec("delivery", delivery_stage, (settings.model_dump_json(), redis_url, backend.url))],
                         max_restarts=5, window_s=60.0)
        t0 = time.monotonic()
        sup.start()
        try:
            pid = sup.pids()["delivery"]
            total_good = sum(len(v) for v in good.values())

            def settled() -> bool:
                sup.poll()
                return len(backend.alerts()) == total_good and transport.outbox_length() == 0

            h.wait_for(settled, 45, what="good alerts delivered and the outbox empty")
            seconds = time.monotonic() - t0
            h.wait_for(lambda: transport.stats("delivery").get("failed_permanent", 0) == len(poison), 10,
                       what="delivery counters reported")
            assert sup.poll() == [] and sup.restart_counts == {"delivery": 0}
            assert sup.pids()["delivery"] == pid and sup.running["delivery"].process.is_alive()
        finally:
            sup.stop(timeout_s=15)
    stored = backend.alerts()
    keys = [a["idempotency_key"] for a in stored]
    assert len(keys) == len(set(keys)) == total_good  # exactly once
    for c, events in good.items():
        assert [a["idempotency_key"] for a in stored if a["camera_id"] == c] == [e.idempotency_key for e in events]
    assert not any(a["camera_id"] == "cam-p" for a in stored)
    dead = [d for d in transport.dead_letters(1000) if d["queue"] == "alerts:outbox"]
    assert len(dead) == len(poison)
    by_payload = {d.get("payload", d.get("payload_b64")): d for d in dead}
    for kind, (payload, reason) in poison.items():
        try:
            as_stored = payload.decode("utf-8")
        except UnicodeDecodeError:
            import base64

            as_stored = base64.b64encode(payload).decode()
        assert as_stored in by_payload, kind  # the FULL payload, byte for byte
        record = by_payload[as_stored]
        assert record["reason"] == reason, (kind, record)
        assert record["detail"], kind
    stats = transport.stats("delivery")
    assert stats["delivered"] == total_good and stats.get("duplicate", 0) == 0
    assert stats["failed_permanent:http_500"] == 1 and stats["entry_failures"] == FAST["max_attempts"]
    transport.close()
    with capsys.disabled():
        print(f"\n[poison] {len(poison)} poison entries in front of {total_good} good alerts: all good delivered "
              f"once in {seconds:.1f} s (incl. process start), {len(dead)} dead-lettered, 0 restarts")
    h.add_row("outbox poison (6 kinds)", recovered_s=round(seconds, 1), expected=total_good,
              delivered=total_good, duplicated=0, drops={"dead_lettered": len(dead)},
              test="test_poison_outbox", notes="stage never restarted; full payloads in dead_letter")


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_backend_that_fails_on_every_alert_is_an_outage_at_most_one_dead_letter(redis_url, tmp_path, capsys):
    transport = Transport(redis_url)
    events = [alert("cam1", i) for i in range(5)]
    transport.add_alerts([e.to_json().encode() for e in events])
    cfg = AlertsConfig(**{**FAST, "max_attempts": 2})
    with EmbeddedBackend(tmp_path / "alerts.sqlite") as backend:
        backend.fail_with(500)
        delivery = AlertDelivery(transport, cfg, "d", backend_url=backend.url)
        with Running(delivery):
            assert wait_until(lambda: delivery.counters.get("entry_failures") >= 8, 20)
            assert delivery.counters.get("failed_permanent") == 1  # the first one, not one per budget
            assert transport.outbox_length() == 4
            backend.fail_with(None)
            t0 = time.monotonic()
            assert wait_until(lambda: len(backend.alerts()) == 4 and transport.outbox_length() == 0, 10)
            recovered_s = time.monotonic() - t0
    with capsys.disabled():
        print(f"\n[500-everything] {delivery.counters.get('entry_failures')} failed tries, 1 dead-lettered, "
              f"4 delivered {recovered_s:.1f} s after the backend recovered")
    assert [a["idempotency_key"] for a in backend.alerts()] == [e.idempotency_key for e in events[1:]]
    (dead,) = transport.dead_letters()
    assert dead["reason"] == "http_500" and dead["payload"] == events[0].to_json()
    transport.close()


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_outbox_maxlen_is_wired_and_delivered_entries_are_deleted(redis_url, tmp_path, capsys):
    settings = Settings(alerts={**FAST, "outbox_maxlen": 1000})
    _settings, transport = _setup(settings.model_dump_json(), redis_url, "logic")  # what every stage gets
    assert transport.outbox_maxlen == 1000
    # 1) the cap: 5000 alerts nobody delivers leave at most the cap plus one stream node (approximate MAXLEN)
    transport.add_alerts([alert("cam1", i).to_json().encode() for i in range(5000)])
    length = transport.outbox_length()
    assert 1000 <= length <= 1100, length
    transport.client.delete(transport.keys.outbox)
    # 2) N acked alerts leave nothing behind: ack deletes (XACK + XDEL)
    n = 300
    events = [alert("cam2", i) for i in range(n)]
    transport.add_alerts([e.to_json().encode() for e in events])
    with EmbeddedBackend(tmp_path / "alerts.sqlite") as backend:
        delivery = AlertDelivery(transport, settings.alerts, "d", backend_url=backend.url)
        with Running(delivery):
            assert wait_until(lambda: len(backend.alerts()) == n, 30)
            assert wait_until(lambda: transport.outbox_length() == 0, 5)
    assert transport.outbox_pending() == 0
    assert delivery.counters.get("delivered") == n
    transport.close()
    with capsys.disabled():
        print(f"\n[outbox] maxlen 1000: 5000 undelivered alerts leave XLEN {length}; {n} delivered leave XLEN 0")
