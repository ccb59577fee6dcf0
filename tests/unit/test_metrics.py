"""Latency percentiles, counters, snapshots and the optional Prometheus endpoint."""

import json
import math
import threading

import numpy as np
import pytest
import requests

from fbvision.core import metrics
from fbvision.core.metrics import STAGE_NAMES, Counters, LatencyStats, snapshot, stage_durations
from fbvision.core.wire import Timeline


def test_stage_durations_follow_the_timeline():
    tl = Timeline(captured=100.0, pushed=100.01, popped=100.05, infer_start=100.06, infer_end=100.08, published=100.09)
    d = stage_durations(tl, logic_start=100.1, logic_end=100.102)
    expected = {
        "encode": 0.01, "queue_wait": 0.04, "batch_decode": 0.01, "inference": 0.02, "publish": 0.01,
        "to_logic": 0.01, "logic": 0.002, "end_to_end": 0.102,
    }
    assert set(d) == set(STAGE_NAMES) == set(expected)
    for stage, seconds in expected.items():
        assert d[stage] == pytest.approx(seconds, abs=1e-9), stage


def test_stages_with_a_missing_timestamp_are_left_out():
    # A producer that does not stamp push time: encode and queue_wait cannot be known.
    tl = Timeline(captured=10.0, pushed=0.0, popped=10.5, infer_start=10.6, infer_end=10.7, published=10.8)
    d = stage_durations(tl, 10.9, 11.0)
    assert "encode" not in d and "queue_wait" not in d
    assert d["end_to_end"] == pytest.approx(1.0)


@pytest.mark.parametrize("window, n", [(10, 5), (10, 10), (10, 37), (1, 3)])
def test_ring_buffer_keeps_the_last_window_and_counts_everything(window, n):
    stats = LatencyStats(window=window)
    values = [float(i) for i in range(n)]
    for v in values:
        stats.add("logic", v)
    kept = values[-window:]
    assert stats.values("logic").tolist() == kept
    summary = stats.summary("logic")
    assert summary["count"] == n
    for p in (50, 95, 99):
        assert summary[f"p{p}"] == pytest.approx(np.percentile(kept, p))
    assert summary["max"] == max(kept)


def test_non_finite_durations_are_ignored_and_unknown_stage_is_empty():
    stats = LatencyStats(window=4)
    stats.add("logic", math.nan)
    stats.add("logic", math.inf)
    assert stats.summary("logic") == {"count": 0}
    assert stats.summary("nope") == {"count": 0}


def test_snapshot_is_json_and_orders_stages_like_the_pipeline():
    stats = LatencyStats()
    counters = Counters()
    stats.add_many({"end_to_end": 0.2, "encode": 0.01, "custom": 1.0})
    counters.incr("results", 3)
    counters.incr("dropped:wire_truncated")
    snap = snapshot(stats, counters, worker_id="w1")
    again = json.loads(json.dumps(snap))
    assert list(again["latency_s"]) == ["encode", "end_to_end", "custom"]
    assert again["counters"] == {"dropped:wire_truncated": 1, "results": 3}
    assert again["worker_id"] == "w1" and again["ts"] > 0


def test_counters_keep_running_totals_under_a_writer_name_unique_per_instance():
    c, other = Counters(), Counters()
    c.incr("a", 2)
    c.incr("b")
    c.incr("a", 0)  # nothing to count: no key appears
    c.incr("z", 0)
    assert c.snapshot() == {"a": 2, "b": 1}
    c.incr("a")
    assert c.get("a") == 3 and c.get("missing") == 0
    assert c.writer and other.writer and c.writer != other.writer


def test_counters_and_stats_are_thread_safe():
    c, stats = Counters(), LatencyStats(window=100)

    def hammer():
        for _ in range(2000):
            c.incr("n")
            stats.add("s", 0.001)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.get("n") == 8000
    assert stats.count("s") == 8000


@pytest.mark.timeout(30)
def test_prometheus_endpoint_exports_histograms_and_counters():
    assert not metrics.prometheus_enabled()
    port = metrics.enable_prometheus(0)
    try:
        assert metrics.enable_prometheus(0) == port  # idempotent
        LatencyStats().add("inference", 0.02)
        Counters(prometheus_stage="logic").incr("results", 5)
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'fbvision_stage_latency_seconds_count{stage="inference"} 1.0' in text
        assert 'fbvision_events_total{name="results",stage="logic"} 5.0' in text
    finally:
        metrics.disable_prometheus()
    assert not metrics.prometheus_enabled()


@pytest.mark.timeout(30)
def test_declared_counters_show_at_zero_and_queue_depth_is_a_gauge():
    port = metrics.enable_prometheus(0)
    try:
        c = Counters(prometheus_stage="delivery")
        c.declare("delivered", "retried")
        c.incr("retried", 2)
        metrics.set_queue_depth("delivery", "alerts:outbox", 7)
        metrics.set_queue_depth("delivery", "alerts:outbox", 3)  # a level, not a sum
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'fbvision_events_total{name="delivered",stage="delivery"} 0.0' in text
        assert 'fbvision_events_total{name="retried",stage="delivery"} 2.0' in text
        assert 'fbvision_queue_depth{queue="alerts:outbox",stage="delivery"} 3.0' in text
        assert c.snapshot() == {"retried": 2}  # declaring adds nothing to the totals that go to Redis
    finally:
        metrics.disable_prometheus()
    metrics.set_queue_depth("x", "y", 1)  # off: a no-op


@pytest.mark.timeout(30)
def test_the_grafana_dashboard_queries_only_exported_metrics():
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\bfbvision_[a-z_]+", e)}
    port = metrics.enable_prometheus(0)
    try:
        LatencyStats(prometheus_stage_prefix="camera_").add("encode", 0.01)
        Counters(prometheus_stage="inference").incr("frames_out")
        metrics.set_queue_depth("inference", "batch_frames", 0)
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        metrics.disable_prometheus()
    exported = set(re.findall(r"^(fbvision_[a-z_]+)[{ ]", text, flags=re.M))
    assert used and used <= exported, used - exported
    assert "histogram_quantile(0.95" in " ".join(exprs)
