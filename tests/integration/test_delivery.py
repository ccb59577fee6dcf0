"""Alert delivery: outbox (real Redis) -> HTTP POST -> the embedded backend (real server on loopback)."""

import json
import random
import time

import pytest
import requests
from fbv_testutil import Running, wait_until

from fbvision.alerts.backend import EmbeddedBackend
from fbvision.alerts.delivery import AlertDelivery
from fbvision.core.config import AlertsConfig
from fbvision.core.events import AlertEvent, AlertState, Evidence, Severity

FAST = AlertsConfig(timeout_s=1.0, retry_initial_s=0.1, retry_max_s=0.5)


def alerts_for(camera, n, start=1000.0):
    """A camera's event stream: episodes of raised -> ongoing -> resolved, in order."""
    out = []
    for i in range(n):
        episode, step = divmod(i, 3)
        started = start + 100 * episode
        state = (AlertState.raised, AlertState.ongoing, AlertState.resolved)[step]
        severity = Severity.warning if step == 0 else Severity.critical
        out.append(
            AlertEvent.create(
                camera_id=camera, rule="horse_down", track_id=1, state=state, severity=severity,
                started_at=started, updated_at=started + 10 * (step + 1), evidence=Evidence(seq=i),
                resolved_at=started + 10 * (step + 1) if state is AlertState.resolved else None,
            )
        )
    return out


def to_outbox(transport, alerts):
    transport.add_alerts([a.to_json().encode() for a in alerts])


@pytest.fixture
def backend(tmp_path):
    with EmbeddedBackend(tmp_path / "alerts.sqlite") as b:
        yield b


def keys_in_order(backend, camera=None):
    return [a["idempotency_key"] for a in backend.alerts(camera)]


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_backend_down_10s_then_up_every_alert_arrives_exactly_once_in_order(transport, backend):
    # given: alerts waiting, a running delivery, then the backend goes away for 10 s while more alerts come
    cams = ["cam1", "cam2", "cam3"]
    before = {c: alerts_for(c, 3, start=1000) for c in cams}
    during = {c: alerts_for(c, 6, start=5000) for c in cams}
    after = {c: alerts_for(c, 3, start=9000) for c in cams}
    to_outbox(transport, [a for c in cams for a in before[c]])
    delivery = AlertDelivery(transport, FAST, "delivery-1", backend_url=backend.url)
    with Running(delivery):
        assert wait_until(lambda: len(backend.alerts()) == 9, 10)
        backend.stop()
        outage_start = time.monotonic()
        for i in range(6):  # alerts keep coming during the outage
            to_outbox(transport, [during[c][i] for c in cams])
            time.sleep(0.5)
        time.sleep(max(0.0, 10.0 - (time.monotonic() - outage_start)))
        assert len(backend.alerts()) == 9  # nothing could arrive
        assert transport.outbox_pending() >= 1  # the one it is retrying stays pending, nothing was acked
        backend.start()  # same port, same database
        to_outbox(transport, [a for c in cams for a in after[c]])
        expected = {c: before[c] + during[c] + after[c] for c in cams}
        total = sum(len(v) for v in expected.values())
        assert wait_until(lambda: len(backend.alerts()) == total and transport.outbox_pending() == 0, 20)
    # then: every alert exactly once, each camera's in order, and the outage was retried, not dropped
    for c in cams:
        assert keys_in_order(backend, c) == [a.idempotency_key for a in expected[c]]
    all_keys = keys_in_order(backend)
    assert len(all_keys) == len(set(all_keys)) == total
    assert delivery.counters.get("delivered") == total
    assert delivery.counters.get("retried") >= 5  # kept trying through the 10 s (back-off capped at 0.5 s)
    assert delivery.counters.get("failed_permanent") == 0
    assert transport.stats("delivery")["delivered"] == total
    assert transport.snapshots()["delivery:delivery-1"]["outbox_pending"] == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("status", [503, 429, 404])
def test_transient_http_errors_are_retried_and_nothing_is_dead_lettered(transport, backend, status):
    alerts = alerts_for("cam1", 6)
    to_outbox(transport, alerts)
    backend.fail_with(status)
    delivery = AlertDelivery(transport, FAST, "d", backend_url=backend.url)
    with Running(delivery):
        assert wait_until(lambda: delivery.counters.get("retried") >= 3, 10)
        assert backend.alerts() == [] and transport.outbox_pending() >= 1
        backend.fail_with(None)
        assert wait_until(lambda: len(backend.alerts()) == 6 and transport.outbox_pending() == 0, 10)
    assert keys_in_order(backend) == [a.idempotency_key for a in alerts]
    assert transport.dead_letters() == []


@pytest.mark.timeout(30)
def test_poison_alerts_are_dead_lettered_and_do_not_block_the_queue(transport, backend):
    good = alerts_for("cam1", 4)
    invalid_event = json.loads(good[0].to_json())
    invalid_event.update(idempotency_key="k-invalid", severity="apocalyptic")  # fails the schema: never POSTed
    refused = alerts_for("cam9", 1)[0]  # valid here, but the backend answers 400 to it
    transport.add_alerts([good[0].to_json().encode()])
    transport.add_alerts([b"{this is not json"])  # cannot even be keyed: dead-lettered without a POST
    transport.add_alerts([json.dumps(invalid_event).encode()])
    to_outbox(transport, [refused])
    to_outbox(transport, good[1:])
    backend.fail_with(400, key=refused.idempotency_key)
    delivery = AlertDelivery(transport, FAST, "d", backend_url=backend.url)
    with Running(delivery):
        assert wait_until(lambda: len(backend.alerts()) == 4 and transport.outbox_pending() == 0, 10)
    assert keys_in_order(backend) == [a.idempotency_key for a in good]
    assert delivery.counters.get("failed_permanent") == 3
    reasons = sorted(d["reason"] for d in transport.dead_letters())
    assert reasons == ["http_400", "invalid_event", "unparseable"]
    assert all(d["queue"] == "alerts:outbox" for d in transport.dead_letters())


def newer_writer(alert: AlertEvent) -> bytes:
    """``alert`` as a newer logic worker would write it: a field this version does not know, in the event and in
    its evidence (schema_version unchanged - an additive change)."""
    tree = json.loads(alert.to_json())
    tree["posture"] = {"class": "horse_lying", "confidence": 0.93}
    tree["evidence"]["posture_source"] = "model"
    return json.dumps(tree).encode()


@pytest.mark.timeout(30)
def test_a_newer_writers_alert_passes_delivery_and_backend_with_its_fields_kept(transport, backend):
    # Rolling upgrade: logic already new, delivery and backend still this version (docs/alerts.md: a consumer
    # accepts fields it does not know). Nothing is dead-lettered and the backend keeps the body verbatim.
    alerts = alerts_for("cam1", 3)
    transport.add_alerts([newer_writer(a) for a in alerts])
    with Running(AlertDelivery(transport, FAST, "d", backend_url=backend.url)):
        assert wait_until(lambda: len(backend.alerts()) == 3 and transport.outbox_pending() == 0, 10)
    assert transport.dead_letters() == []
    stored = backend.alerts()
    assert [a["idempotency_key"] for a in stored] == [a.idempotency_key for a in alerts]
    assert all(a["posture"] == {"class": "horse_lying", "confidence": 0.93} for a in stored)
    assert all(a["evidence"]["posture_source"] == "model" for a in stored)


def test_building_an_event_in_code_still_refuses_an_unknown_field():
    # Strict when written, tolerant when read: a typo in the producer is an error, not a silently dropped field.
    with pytest.raises(ValueError, match="severty"):
        AlertEvent(idempotency_key="k", camera_id="c", rule="r", severity=Severity.info, severty="x",
                   state=AlertState.raised, started_at=1.0, updated_at=1.0, evidence=Evidence(seq=1))
    with pytest.raises(ValueError, match="sqe"):
        Evidence(seq=1, sqe=2)


class CrashAfterPost(requests.Session):
    """POSTs for real, then 'dies' before the outbox entry is acknowledged."""

    class Crash(BaseException):
        pass

    def post(self, *args, **kwargs):
        super().post(*args, **kwargs)
        raise self.Crash()


class CrashBeforePost(requests.Session):
    def post(self, *args, **kwargs):
        raise CrashAfterPost.Crash()


@pytest.mark.timeout(30)
def test_restart_between_post_and_ack_redelivers_and_the_backend_keeps_one(transport, backend):
    alerts = alerts_for("cam1", 5)
    to_outbox(transport, alerts)
    crashing = AlertDelivery(transport, FAST, "delivery-1", backend_url=backend.url, session=CrashAfterPost())
    with pytest.raises(CrashAfterPost.Crash):
        crashing.step(block_s=0.1)
    assert len(backend.alerts()) == 1  # the first one reached the backend, but was never acked
    assert transport.outbox_pending() == 5
    # the restarted process (same consumer name) starts with its own pending entries
    restarted = AlertDelivery(transport, FAST, "delivery-1", backend_url=backend.url)
    with Running(restarted):
        assert wait_until(lambda: transport.outbox_pending() == 0 and len(backend.alerts()) == 5, 10)
    assert keys_in_order(backend) == [a.idempotency_key for a in alerts]
    assert restarted.counters.get("duplicate") == 1
    assert restarted.counters.get("delivered") == 4


@pytest.mark.timeout(30)
def test_entries_of_a_dead_consumer_are_claimed_by_another(transport, backend):
    alerts = alerts_for("cam1", 4)
    to_outbox(transport, alerts)
    dead = AlertDelivery(transport, FAST, "delivery-dead", backend_url=backend.url, session=CrashBeforePost())
    with pytest.raises(CrashAfterPost.Crash):
        dead.step(block_s=0.1)
    assert transport.outbox_pending() == 4
    other = AlertDelivery(transport, FAST, "delivery-2", backend_url=backend.url, claim_idle_s=0.3, claim_interval_s=0.1)
    with Running(other):
        assert wait_until(lambda: transport.outbox_pending() == 0 and len(backend.alerts()) == 4, 10)
    assert keys_in_order(backend) == [a.idempotency_key for a in alerts]
    assert other.counters.get("claimed") == 4


def test_claim_idle_default_outlasts_a_live_consumers_back_off(transport):
    slow = AlertsConfig(retry_max_s=60.0, timeout_s=10.0)
    d = AlertDelivery(transport, slow, "d", backend_url="http://127.0.0.1:9/alerts")
    assert d.claim_idle_s >= 2 * 60.0 + 10.0
    with pytest.raises(ValueError, match="backend URL"):
        AlertDelivery(transport, AlertsConfig(), "d")


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.mark.timeout(30)
def test_back_off_doubles_with_jitter_up_to_the_cap_and_resets_on_success(transport, backend):
    cfg = AlertsConfig(timeout_s=1.0, retry_initial_s=1.0, retry_max_s=8.0)
    clock = FakeClock()
    to_outbox(transport, alerts_for("cam1", 2))
    backend.fail_with(503)
    d = AlertDelivery(transport, cfg, "d", backend_url=backend.url, clock=clock, rng=random.Random(1))
    delays = []
    for _ in range(6):
        assert d.step(block_s=0.1) == 0
        delays.append(d._retry_at - clock.now)
        assert d.step(block_s=0.1) == 0  # still backing off: no request is made
        clock.now = d._retry_at
    nominal = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    for got, cap in zip(delays, nominal, strict=True):
        assert cap * 0.5 <= got <= cap
    assert d.counters.get("retried") == 6
    backend.fail_with(None)
    assert d.step(block_s=0.1) == 2
    assert not d.backing_off and d._failures == 0


class FlakyOnce(requests.Session):
    """The first POST fails with a connection error (a blip), every later one goes through."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def post(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 1:
            raise requests.ConnectionError("blip")
        return super().post(*args, **kwargs)


@pytest.mark.timeout(30)
def test_a_failed_event_holds_back_the_later_ones_so_order_is_kept(transport, backend):
    alerts = alerts_for("cam1", 6)
    to_outbox(transport, alerts)
    delivery = AlertDelivery(transport, FAST, "d", backend_url=backend.url, session=FlakyOnce())
    with Running(delivery):
        assert wait_until(lambda: len(backend.alerts()) == 6 and transport.outbox_pending() == 0, 10)
    assert keys_in_order(backend) == [a.idempotency_key for a in alerts]
    assert delivery.counters.get("retried") == 1
