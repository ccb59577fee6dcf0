"""The SIMULATED accelerator and the null engine (fbvision.inference.engines.sim): shape, timing, label, selection."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fbvision.core.config import ConfigError, ModelConfig
from fbvision.core.letterbox import Letterbox
from fbvision.core.modelinfo import load_model_info
from fbvision.inference.decode import decode_yolo
from fbvision.inference.engines import ENGINES, Engine, build_engine
from fbvision.inference.engines.sim import PROFILES, SIM_LABEL, SimEngine, anchors, null_engine


def test_profiles_are_a_plus_b_times_batch():
    p = PROFILES["t4-trt-fp16-640"]
    assert p.latency_ms(1) == pytest.approx(1.5, abs=0.01)  # the published YOLO11n T4 TensorRT10 batch-1 figure
    assert p.latency_ms(32) / 32 == pytest.approx(1.5 * 788 / 1242, rel=0.01)  # YOLOv6-n's batching curve
    assert PROFILES["t4-trt-fp16-320"].fixed_ms == p.fixed_ms
    assert PROFILES["t4-trt-fp16-320"].per_image_ms == pytest.approx(p.per_image_ms / 4, rel=0.01)
    assert PROFILES["null"].latency_ms(32) == 0.0
    engine = SimEngine("t4-trt-fp16-320", overhead_ms=5.0)
    assert engine.latency_ms(8) == pytest.approx(5.0 + 0.566 + 8 * 0.234)


def test_output_shape_is_an_empty_yolo_head():
    engine = SimEngine("null", input_size=(320, 320), class_names=("horse",), max_batch=8)
    assert isinstance(engine, Engine)
    out = engine.infer(np.zeros((3, 3, 320, 320), np.float32))
    assert out.shape == (3, 5, 2100) and out.dtype == np.float32 and not out.any()
    assert anchors((640, 640)) == 8400
    coco = SimEngine("null", input_size=(640, 640), class_names=[str(i) for i in range(80)])
    assert coco.infer(np.zeros((2, 3, 640, 640), np.float32)).shape == (2, 84, 8400)
    # decodes to no candidate at all
    box = Letterbox(640, 360, 320, 320, 0.5, 0.0, 70.0)
    cands = decode_yolo(out, [box] * 3, [0], 0.05, 100)
    assert all(len(c.scores) == 0 for c in cands)


def test_shapes_are_checked_like_a_real_engine():
    engine = SimEngine("null", max_batch=4)
    with pytest.raises(ValueError, match="batch size 5"):
        engine.infer(np.zeros((5, 3, 320, 320), np.float32))
    with pytest.raises(ValueError, match="expected"):
        engine.infer(np.zeros((1, 3, 160, 160), np.float32))
    with pytest.raises(ValueError, match="unknown simulated profile"):
        SimEngine("h100-magic")


def test_infer_sleeps_the_profile_time_within_tolerance():
    engine = SimEngine("t4-trt-fp16-320", fixed_ms=20.0, per_image_ms=2.0)
    batch = np.zeros((8, 3, 320, 320), np.float32)
    engine.infer(batch)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        engine.infer(batch)
        times.append((time.perf_counter() - started) * 1000.0)
    expected = 20.0 + 8 * 2.0
    assert min(times) >= expected * 0.98
    assert min(times) <= expected + 15.0  # sleep overshoot on a loaded machine
    assert engine.calls == 4 and engine.busy_s >= 4 * expected / 1000.0 * 0.98


def test_infer_releases_the_gil_and_uses_no_cpu():
    engine = SimEngine("null", fixed_ms=200.0, per_image_ms=0.0)
    cpu0 = time.process_time()
    counted = []

    def spin():  # a Python loop on another thread: it runs only while infer does not hold the GIL
        n, deadline = 0, time.perf_counter() + 0.15
        while time.perf_counter() < deadline:
            n += 1
        counted.append(n)

    t = threading.Thread(target=spin)
    started = time.perf_counter()
    t.start()
    engine.infer(np.zeros((1, 3, 320, 320), np.float32))
    t.join()
    assert time.perf_counter() - started < 0.2 + 0.15  # overlapped, not one after the other
    assert counted[0] > 1000
    # the spinner used ~0.15 s of CPU; the 0.2 s "inference" nearly none
    assert time.process_time() - cpu0 < 0.15 + 0.1


def test_label_says_simulated_everywhere():
    engine = SimEngine("t4-ort-cuda-320", overhead_ms=3.0)
    assert engine.simulated is True
    assert engine.provider.startswith(SIM_LABEL)
    assert "t4-ort-cuda-320" in engine.provider and "+3 ms per call" in engine.provider
    assert null_engine().provider.startswith(SIM_LABEL) and "'null'" in null_engine().provider


def test_selected_by_the_config_as_a_drop_in_for_the_model():
    assert {"sim", "null"} <= set(ENGINES)
    model = ModelConfig(engine="sim", sim_profile="t4-trt-fp16-320", sim_overhead_ms=2.0)
    info = load_model_info(model.resolved_path())
    engine = build_engine(model, max_batch=16)
    assert isinstance(engine, SimEngine) and engine.provider.startswith(SIM_LABEL)
    assert engine.input_size == info.input_size and list(engine.class_names) == list(info.class_names)
    assert engine.max_batch == min(16, info.max_batch) and engine.overhead_ms == 2.0
    null = build_engine(ModelConfig(engine="null"))
    assert null.profile.name == "null" and null.latency_ms(32) == 0.0
    with pytest.raises(ConfigError, match="sim_profile"):
        build_engine(ModelConfig(engine="sim", sim_profile="no-such-card"))


def test_benchmark_engine_specs_select_it():
    from benchmarks import common

    engine = common.make_engine(ModelConfig(), "sim:t4-ort-cuda-320:4")
    assert engine.profile.name == "t4-ort-cuda-320" and engine.overhead_ms == 4.0
    assert common.make_engine(ModelConfig(), "null").profile.name == "null"
    with pytest.raises(ValueError):
        common.make_engine(ModelConfig(), "null:x")


def test_dashboard_reads_busy_fraction_and_the_simulated_label_from_snapshots():
    from fbvision.run.state import any_simulated, engine_busy

    state = {"snapshots": {
        "inference:w1": {"engine_busy_fraction": 0.93, "engine_simulated": True},
        "inference:w2": {"engine_busy_fraction": "lots"},  # not a number: skipped (snapshots are untrusted JSON)
        "logic:l1": {"engine_busy_fraction": 0.5},
    }}
    assert engine_busy(state) == {"w1": 0.93}
    assert any_simulated(state) is True
    assert not any_simulated({"snapshots": {"inference:w": {"engine_simulated": "yes"}}})
