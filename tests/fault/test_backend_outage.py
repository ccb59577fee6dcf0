"""The alert backend down for 30 s (run B): two cameras' horse_down alerts are raised meanwhile; the alerts
wait in the durable outbox and are delivered once it is back - each exactly once."""

from __future__ import annotations

import fbv_fault_harness as h
import fbv_fault_runs as runs
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]


def test_alerts_delivered_afterwards_exactly_once(workers_run):
    run, rec = workers_run.run, workers_run.faults["backend"]
    during = [a for a in run.alerts if rec.started <= a["_received_at"] and a["updated_at"] <= rec.ended]
    waited = [a for a in run.alerts if rec.started <= a["updated_at"] <= rec.ended]
    stats = h.counter_delta(rec.before, rec.after)
    h.add_row(rec.fault, recovered_s=rec.recovered_s, expected=len(waited), delivered=len(during),
              duplicated=stats.get("delivery:duplicate", 0), drops=rec.drops(), test="test_backend_outage",
              notes="; ".join(rec.notes) + f"; {stats.get('delivery:retried', 0)} retries")
    assert len(waited) >= 1, "no alert fell into the outage window"
    assert all(a["_received_at"] >= rec.ended - 0.5 for a in waited), "delivered while the backend was down?"
    assert rec.recovered_s is not None
    # delivery backs off up to alerts.retry_max_s; it must be back within that plus a margin
    assert rec.recovered_s <= run.settings.alerts.retry_max_s + 15.0, rec
    keys = [a["idempotency_key"] for a in run.alerts]
    assert len(keys) == len(set(keys))
    assert h.episode_lifecycles_ok([a for a in run.alerts if a["camera_id"] in runs.WORKER_CAMERAS]) == []


def test_outbox_empty_at_the_end(workers_run):
    final = workers_run.run.final
    assert final["outbox_pending"] == 0
    assert int(final["delivery"].get("lost_trimmed", 0)) == 0
