"""The PyTorch engine of the GPU check (fbvision/inference/engines/pytorch.py), kept honest on the CPU: the same ONNX file
through PyTorch and through ONNX Runtime gives the same head, and the inference worker runs on it.

Correctness, not speed: this is what lets benchmarks/gpu_check.sh trust its engine on a machine nobody can
debug on. Skipped where torch or onnx are missing.
"""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks import common

pytestmark = [pytest.mark.bench, pytest.mark.timeout(600)]


def _small_model(prof) -> object:
    # The smoke pass's tiny model either way: PyTorch on a shared CPU at 640 proves nothing more, slowly.
    return common.headline_model(common.profile() if prof.quick else dataclasses.replace(prof, quick=True, imgsz=64,
                                                                                           max_batch=4))


def test_torch_engine_matches_onnxruntime(benchmark, prof):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from fbvision.inference.engines.pytorch import compare_with_ort

    model = _small_model(prof)
    engine = common.make_engine(model, "torch-cpu")
    rows = benchmark.pedantic(compare_with_ort, args=(model, engine, (1, 3)), rounds=1, iterations=1)
    for row in rows:
        # onnx2torch against ONNX Runtime, float32 on the CPU: scores to 1e-4 (issue 24), boxes to 1/100 px
        assert row["max_box_diff_px"] < 0.01, rows
        assert row["max_score_diff"] < 1e-4, rows
    benchmark.extra_info.update(kind="torch_check", provider=engine.provider, vs_ort=rows)


def test_inference_worker_runs_on_the_torch_engine(benchmark, prof):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from benchmarks.test_batching import Sweep
    from fbvision.inference.batcher import AutotuneResult

    engine = common.make_engine(_small_model(prof), "torch-cpu")
    frames = common.frame_messages(4, int(engine.input_size[0]))
    sweep = Sweep(engine, frames, [engine.info.class_id("horse")], 0.05, 100, [2],
                  AutotuneResult(batch=2, max_wait_ms=0.0, table=[], seconds=0.0))
    benchmark.pedantic(sweep.round, rounds=1, iterations=1)
    assert all(len(v) == 1 for v in sweep.seconds.values())
    benchmark.extra_info.update(kind="torch_check", provider=engine.provider)
