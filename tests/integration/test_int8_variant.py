"""The INT8 variant of the demo model: quantized and checked (fbvision.export.quantize), then chosen or refused by
model.precision (fbvision.inference.engines.variants) - real ONNX Runtime, the real demo model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from fbvision.core.config import ConfigError, ModelConfig
from fbvision.inference.engines import build_engine
from fbvision.inference.engines.variants import choose, int8_variant, quant_record

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    from fbvision.core.config import DEMO_MODEL as demo_model_path
    from fbvision.export import quantize

    folder = tmp_path_factory.mktemp("int8")
    fp32 = folder / "demo.onnx"
    shutil.copy(demo_model_path, fp32)
    int8 = quantize.quantize(fp32, int8_variant(fp32), calibration=8)
    record = quantize.check(fp32, int8, eval_seeds=12, max_map_loss=0.05)
    quant_record(int8).write_text(json.dumps(record))
    return fp32, int8, record


def build(path):
    return build_engine(ModelConfig(path=path, providers=["cpu"], intra_op_threads=1))


def test_the_int8_model_keeps_the_contract_and_nearly_the_boxes(quantized):
    fp32, int8, record = quantized
    a, b = build(fp32), build(int8)
    assert (a.input_size, a.max_batch, list(a.class_names)) == (b.input_size, b.max_batch, list(b.class_names))
    from benchmarks.common import stall_images
    from fbvision.core.letterbox import letterbox
    from fbvision.core.tensor import to_tensor

    x = to_tensor([letterbox(im, a.input_size)[0] for im in stall_images(2, seed=77)])
    ya, yb = a.infer(x), b.infer(x)
    assert ya.shape == yb.shape
    best = ya[:, 4, :].argmax(axis=1)  # each image's best anchor: the same horse, box within a few pixels
    for i, k in enumerate(best):
        assert abs(float(ya[i, 4, k]) - float(yb[i, 4, k])) < 0.15
        assert np.abs(ya[i, :4, k] - yb[i, :4, k]).max() < 8.0
    assert record["source_sha256"] and record["map50_int8"] is not None and record["passed"] is True
    assert abs(record["map50_loss"] - (record["map50_fp32"] - record["map50_int8"])) < 1e-3


def test_precision_fp32_int8_and_auto(quantized):
    fp32, int8, _ = quantized
    plain = choose(ModelConfig(path=fp32, providers=["cpu"]), "CPUExecutionProvider", build)
    assert (plain.precision, plain.path) == ("fp32", str(fp32))
    forced = choose(ModelConfig(path=fp32, providers=["cpu"], precision="int8"), "CPUExecutionProvider", build)
    assert (forced.precision, forced.path) == ("int8", str(int8))
    auto = choose(ModelConfig(path=fp32, providers=["cpu"], precision="auto"), "CPUExecutionProvider", build)
    assert auto.ms_fp32 > 0 and auto.ms_int8 > 0 and auto.reason.startswith("auto: ")
    assert auto.precision == ("int8" if auto.ms_int8 * 1.05 <= auto.ms_fp32 else "fp32")
    gpu = choose(ModelConfig(path=fp32, precision="auto"), "CUDAExecutionProvider", build)
    assert gpu.precision == "fp32" and "CUDAExecutionProvider" in gpu.reason


def test_a_failed_missing_or_stale_variant_is_never_run(quantized, tmp_path):
    fp32, int8, record = quantized
    folder = tmp_path / "m"
    folder.mkdir()
    alone = folder / "alone.onnx"
    shutil.copy(fp32, alone)
    auto = choose(ModelConfig(path=alone, precision="auto"), "CPUExecutionProvider", build)
    assert auto.precision == "fp32" and "no INT8 variant" in auto.reason
    with pytest.raises(ConfigError, match="model.precision: int8 cannot run: no INT8 variant"):
        choose(ModelConfig(path=alone, precision="int8"), "CPUExecutionProvider", build)

    shutil.copy(int8, int8_variant(alone))
    quant_record(int8_variant(alone)).write_text(json.dumps({**record, "passed": False}))
    auto = choose(ModelConfig(path=alone, precision="auto"), "CPUExecutionProvider", build)
    assert auto.precision == "fp32" and "failed its accuracy check" in auto.reason
    with pytest.raises(ConfigError, match="failed its accuracy check"):
        choose(ModelConfig(path=alone, precision="int8"), "CPUExecutionProvider", build)

    quant_record(int8_variant(alone)).write_text(json.dumps({**record, "source_sha256": "0" * 64}))
    auto = choose(ModelConfig(path=alone, precision="auto"), "CPUExecutionProvider", build)
    assert auto.precision == "fp32" and "another FP32 model" in auto.reason

    quant_record(int8_variant(alone)).write_text("{broken")
    auto = choose(ModelConfig(path=alone, precision="auto"), "CPUExecutionProvider", build)
    assert auto.precision == "fp32" and "no readable check record" in auto.reason
