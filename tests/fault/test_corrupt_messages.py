"""Corrupt, truncated, oversized and wrong-version messages in every queue of a running pipeline: each is
skipped, counted under its reason, and dead-lettered (a bounded sample for inspection); the pipeline goes on.

Queues: ``batch_frames`` (inference worker), ``batch_results:<p>`` (logic worker), ``alerts:outbox``
(delivery; what the backend rejects as invalid is dead-lettered there). Injected in run A, before its
Redis faults.
"""

from __future__ import annotations

import json

import fbv_fault_harness as h
import fbv_fault_runs as runs
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def _delta(rec, stage, name):
    return int(rec.after[stage].get(name, 0)) - int(rec.before[stage].get(name, 0))


def test_pipeline_carried_on(redis_run):
    rec = redis_run.faults["corrupt"]
    h.add_row(rec.fault, recovered_s=rec.recovered_s, expected=None, delivered=None, duplicated=None,
              drops=rec.drops(), test="test_corrupt_messages", notes="; ".join(rec.notes))
    assert rec.recovered_s is not None and rec.recovered_s <= 10.0, rec
    assert sum(redis_run.run.supervisor.restart_counts.values()) == 0


@pytest.mark.parametrize("queue,kind", list(runs.EXPECTED_COUNTERS))
def test_skipped_and_counted(redis_run, queue, kind):
    rec = redis_run.faults["corrupt"]
    stage, counter = runs.EXPECTED_COUNTERS[(queue, kind)]
    assert _delta(rec, stage, counter) >= rec.extra["expected"][(stage, counter)], rec.after


def test_frames_and_results_dead_lettered(redis_run):
    rec = redis_run.faults["corrupt"]
    dead = rec.extra["dead_letters"]
    by_queue: dict[str, set] = {}
    for d in dead:
        by_queue.setdefault(d["queue"].split(":")[0], set()).add(d["reason"])
    assert {"wire_garbage", "wire_truncated", "wire_too_large", "wire_version", "corrupt"} <= by_queue.get("batch_frames", set())
    assert {"wire_garbage", "wire_truncated", "wire_too_large", "wire_version"} <= by_queue.get("batch_results", set())
    # the sample is bounded: a 4 MB message leaves 512 bytes of itself
    assert all(len(d["head"]) <= 1024 for d in dead)


def test_invalid_alerts_dead_lettered_not_delivered(redis_run):
    rec = redis_run.faults["corrupt"]
    dead = [d for d in rec.extra["dead_letters"] if d["queue"] == "alerts:outbox"]
    reasons = sorted(d["reason"] for d in dead)
    assert "unparseable" in reasons and "http_413" in reasons, reasons
    assert reasons.count("unparseable") == 2, reasons
    assert _delta(rec, "delivery", "failed_permanent") >= 3


def test_wrong_version_alert_is_dead_lettered(redis_run):
    rec = redis_run.faults["corrupt"]
    stored = [a for a in redis_run.run.alerts if a["camera_id"] == "cam-injected"]
    assert stored == [], [json.dumps({k: a[k] for k in ("schema_version", "idempotency_key")}) for a in stored]
    assert _delta(rec, "delivery", "failed_permanent") == 4
