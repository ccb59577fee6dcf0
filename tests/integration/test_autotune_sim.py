"""Auto-tune against the SIMULATED accelerator (real sleeps, real clock): it picks what the cost model says it
should. The expectation is derived from the engine's profile (a + b x batch ms per call) by the same rule the
auto-tune applies: a size > 1 must beat batch 1 by the margin; then the smallest within 5 % of the best."""

from __future__ import annotations

import time

import pytest

from fbvision.core.config import InferenceConfig, ModelConfig, Settings
from fbvision.inference.batcher import AUTOTUNE_MARGIN, autotune
from fbvision.inference.engines.sim import SimEngine
from fbvision.inference.worker import InferenceWorker
from fbvision.run.report import autotune_lines

SIZES = [1, 2, 4, 8]


def expected_batch(engine: SimEngine, sizes=SIZES, margin=AUTOTUNE_MARGIN, tolerance=0.95) -> int:
    fps = {b: b / engine.latency_ms(b) for b in sizes}
    eligible = [b for b in sizes if b == 1 or fps[b] / fps[1] >= 1.0 + margin]
    best = max(fps[b] for b in eligible)
    return next(b for b in eligible if fps[b] >= tolerance * best)


class _Clockless:
    """What the worker needs of a transport before it takes traffic: the reference clock's source."""

    def server_time(self) -> float:
        return time.time()


CASES = [
    # per-call overhead dominates (a remote accelerator's round trip): 20.5 / 21 / 22 / 24 ms -> b8 is 6.8x b1
    ("overhead dominates", dict(profile="t4-trt-fp16-320", overhead_ms=20.0, fixed_ms=0.0, per_image_ms=0.5), 8),
    # pure per-image cost, no fixed part: every size is exactly as fast as batch 1 -> stays at 1
    ("pure per-image cost", dict(profile="null", fixed_ms=0.0, per_image_ms=5.0), 1),
    # a moderate fixed part: 12.9 / 22.9 / 42.9 / 82.9 ms; b2..b8 all clear the margin (1.13x, 1.20x, 1.24x), and
    # b4 is within 5 % of b8's throughput (0.966) -> the smaller, b4
    ("moderate fixed part", dict(profile="null", fixed_ms=2.9, per_image_ms=10.0), 4),
    # a small fixed part: b8 only 1.08x b1 (< the 10 % margin) -> stays at 1 although batching is a bit faster
    ("gain below the margin", dict(profile="null", fixed_ms=0.4, per_image_ms=5.0), 1),
    # the published profiles themselves (T4 TensorRT FP16 / ORT CUDA at 320): the fixed part dominates
    ("t4-trt-fp16-320", dict(profile="t4-trt-fp16-320"), None),
    ("t4-ort-cuda-320", dict(profile="t4-ort-cuda-320"), None),
]


class FakeTime:
    """The simulated accelerator's sleeps on a fake clock: the profile's times exactly, whatever the machine's load."""

    def __init__(self):
        self.t = 0.0

    def sleep(self, seconds: float) -> None:
        self.t += seconds

    def clock(self) -> float:
        return self.t


@pytest.mark.parametrize("label,kwargs,expect", CASES, ids=[c[0] for c in CASES])
def test_autotune_picks_what_the_sim_profile_says(label, kwargs, expect):
    fake = FakeTime()
    engine = SimEngine(input_size=(32, 32), max_batch=8, sleep=fake.sleep, **kwargs)
    derived = expected_batch(engine)
    if expect is not None:
        assert derived == expect, label  # the cost model itself says so
    result = autotune(engine, SIZES, budget_s=1.0, clock=fake.clock)
    assert result.batch == derived, label
    for row in result.table:
        assert row["ms_per_batch"] == pytest.approx(engine.latency_ms(row["batch"]), rel=1e-6)
    assert result.max_wait_ms == pytest.approx(0.0 if derived == 1 else min(10.0, engine.latency_ms(1)), abs=1e-9)


def test_autotune_on_real_sleeps_leaves_batch_1_when_the_overhead_dominates():
    # Real time.sleep (GIL released, as a GPU call): robust to a loaded machine, whose sleep overshoot only adds to
    # the per-call overhead that already dominates.
    engine = SimEngine("t4-trt-fp16-320", overhead_ms=20.0, fixed_ms=0.0, per_image_ms=0.5, input_size=(32, 32),
                       max_batch=8)
    assert expected_batch(engine) == 8
    result = autotune(engine, SIZES, budget_s=1.0)
    assert result.batch == 8, format_rows(result.table)
    for row in result.table:  # sleeps never undershoot
        assert row["ms_per_batch"] >= engine.latency_ms(row["batch"]) * 0.98


def format_rows(rows) -> str:
    return "; ".join(f"b{r['batch']} {r['ms_per_batch']:.1f} ms p25 {r['ratio_p25']:.2f}" for r in rows)


def test_worker_autotune_through_the_config_reports_rounds_and_margin():
    settings = Settings(
        model=ModelConfig(engine="sim", sim_profile="t4-trt-fp16-320", sim_overhead_ms=20.0),
        inference=InferenceConfig(max_batch=8, autotune=True, autotune_budget_s=1.0, decode_threads=1),
    )
    worker = InferenceWorker(settings, _Clockless(), autotune_budget_s=1.0)
    worker.prepare()
    expect = expected_batch(worker.engine)
    assert expect == 8  # 20 ms per call dominates 0.234 ms per image
    assert worker.batcher.max_batch == expect
    stats = worker.stats()
    assert stats["engine_simulated"] is True
    assert [r["batch"] for r in stats["autotune"]] == SIZES
    info = stats["autotune_info"]
    assert info["batch"] == expect and info["rounds"] >= 5 and info["margin"] == pytest.approx(0.10)
    # the run report shows the chosen batch, how it was measured and the table (report.build_report copies these)
    lines = autotune_lines({"autotune": stats["autotune"], "autotune_info": info,
                            "batch": {"chosen": stats["max_batch"]}})
    text = "\n".join(lines)
    assert f"batch {expect} chosen" in text and f"Median of {info['rounds']} interleaved rounds" in text
    assert "must beat batch 1 by 10%" in text and "| p25 vs b1 | pairs won | eligible |" in text
    assert sum("**yes**" in line for line in lines) == 1
