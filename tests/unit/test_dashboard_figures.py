"""Dashboard and report figures that reconcile: fps over a stated window, latency over the last minute and since
start (the warm-up no longer dominates the dashboard's p95), self-explaining evidence names, the machine's CPU."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest

from fbvision.core.metrics import LatencyStats, snapshot
from fbvision.lab.replay import snapshot_name
from fbvision.run.dashboard import FPS_WINDOW_S, Dashboard
from fbvision.run.report import machine, onnxruntime_build
from fbvision.run.state import latency_table


def test_fps_is_a_rate_over_a_stated_window_and_does_not_flicker():
    dash = Dashboard(SimpleNamespace(run_dir="runs/x"), enabled=False)
    # A 5 fps camera sampled every ~1 s, the counter flushed at whole frames: 4, 6, 5, 5, 4, 6 ... per second.
    rng = np.random.default_rng(1)
    t, n, seen = 0.0, 0, []
    for _ in range(40):
        t += 1.0 + rng.uniform(-0.05, 0.05)
        n = int(5 * t) + int(rng.integers(-1, 2))
        fps, window = dash.rate(t, {"cam": n})
        if t > FPS_WINDOW_S + 1:
            seen.append(fps["cam"])
            assert FPS_WINDOW_S - 1.1 <= window <= FPS_WINDOW_S + 1.1
    assert min(seen) >= 4.75 and max(seen) <= 5.25  # a 1 s window reads 4.0 .. 6.0 here


def test_latency_over_the_last_minute_leaves_the_warm_up_out_and_since_start_keeps_it():
    lat = LatencyStats(window=4096)
    for _ in range(50):
        lat.add("end_to_end", 0.5)  # warm-up: 500 ms
    time.sleep(0.3)
    for _ in range(950):
        lat.add("end_to_end", 0.02)
    recent = lat.summary_recent("end_to_end", window_s=0.25)
    assert recent["count"] == 950 and recent["p95"] == pytest.approx(0.02)
    everything = lat.summary_all("end_to_end")
    assert everything["count"] == 1000 and everything["max"] == 0.5
    assert everything["p50"] == pytest.approx(0.02, rel=0.03) and everything["p99"] == pytest.approx(0.5, rel=0.03)
    assert everything["mean"] == pytest.approx((50 * 0.5 + 950 * 0.02) / 1000)
    snap = json.loads(json.dumps(snapshot(lat)))  # what the logic worker publishes
    assert set(snap) >= {"latency_s", "latency_s_1m", "latency_s_all"}
    assert latency_table({"logic:w1": snap}, "latency_s_1m")["end_to_end"]["count"] == 1000
    assert latency_table({"logic:w1": snap}, "latency_s_all")["end_to_end"]["count"] == 1000


def test_since_start_percentiles_are_within_two_percent():
    lat = LatencyStats(window=16)
    values = np.random.default_rng(2).lognormal(np.log(0.03), 0.6, 5000)
    for v in values:
        lat.add("inference", float(v))
    got = lat.summary_all("inference")
    for p in (50, 95, 99):
        assert got[f"p{p}"] == pytest.approx(np.percentile(values, p), rel=0.02)


def test_snapshot_names_say_what_their_number_is():
    alert = {"camera_id": "stall-01", "rule": "horse_down", "track_id": 3, "state": "raised", "severity": "warning",
             "evidence": {"seq": 123}, "idempotency_key": "abcdef0123456789", "updated_at": 1764700000.25}
    assert snapshot_name(alert) == "stall-01_horse_down_t3_raised_warning_frame000123_abcdef01.jpg"
    no_seq = {**alert, "evidence": {}}
    assert snapshot_name(no_seq) == "stall-01_horse_down_t3_raised_warning_at20251202T182640250Z_abcdef01.jpg"


def test_machine_and_onnxruntime_describe_what_decides_the_model_time():
    m = machine()
    assert m["cores"] and m["usable_cpus"] >= 1 and isinstance(m["cpu_flags"], list)
    if m["cpu"] and "x86" in __import__("platform").machine().replace("_", "x86"):
        assert "sse4_2" in m["cpu_flags"] or not m["cpu_flags"]
    ort = onnxruntime_build()
    assert ort["version"] and "CPUExecutionProvider" in ort["available_providers"]
