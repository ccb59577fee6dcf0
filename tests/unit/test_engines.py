"""build_engine: the one place an engine is chosen (model.engine: ort | torch)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from fbvision.core.config import ConfigError, ModelConfig, load_settings
from fbvision.core.modelinfo import ModelError
from fbvision.inference.engines import Engine, build_engine

SIZE = 32
ANCHORS = 4


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """A dynamic-batch 'detector' ([B,3,32,32] -> [B,5,4], a constant head per image) made of ops both engines run."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Slice", ["images", "starts", "ends", "axes"], ["patch"]),  # [B, 1, 5, 4]
        helper.make_node("Mul", ["patch", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "head"], ["tiled"]),
        helper.make_node("Squeeze", ["tiled", "squeeze_axes"], ["output0"]),
    ]
    head = np.arange(5 * ANCHORS, dtype=np.float32).reshape(1, 1, 5, ANCHORS)
    inits = [
        numpy_helper.from_array(np.array([0, 0, 0], np.int64), "starts"),
        numpy_helper.from_array(np.array([1, 5, ANCHORS], np.int64), "ends"),
        numpy_helper.from_array(np.array([1, 2, 3], np.int64), "axes"),
        numpy_helper.from_array(np.array(0, np.float32), "zero"),
        numpy_helper.from_array(head, "head"),
        numpy_helper.from_array(np.array([1], np.int64), "squeeze_axes"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 5, ANCHORS])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("engines") / "tiny.onnx"
    onnx.save(model, str(path))
    path.with_suffix(".json").write_text(
        json.dumps({"class_names": ["horse"], "input_size": [SIZE, SIZE], "max_batch": 4})
    )
    return path


def test_engine_field_defaults_to_ort():
    assert ModelConfig().engine == "ort"
    assert ModelConfig.model_fields["engine"].description


def test_unknown_engine_is_rejected_by_the_config_naming_the_field(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  engine: tensorflow\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(p, environ={})
    msg = str(exc.value)
    assert "model.engine" in msg and "tensorflow" in msg
    assert all(f"'{name}'" in msg for name in ("ort", "torch", "sim", "null"))


def test_engine_from_the_environment(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("{}\n")
    assert load_settings(p, environ={"FBV_MODEL__ENGINE": "torch"}).model.engine == "torch"
    with pytest.raises(ConfigError, match="model.engine"):
        load_settings(p, environ={"FBV_MODEL__ENGINE": "onnx"})


def test_ort_is_the_default_engine(tiny_onnx):
    pytest.importorskip("onnxruntime")
    from fbvision.inference.engines.ort import OrtEngine

    engine = build_engine(ModelConfig(path=tiny_onnx, providers=["cpu"], intra_op_threads=1))
    assert isinstance(engine, OrtEngine) and isinstance(engine, Engine)
    assert engine.provider == "CPUExecutionProvider"
    assert engine.input_size == (SIZE, SIZE) and engine.max_batch == 4 and list(engine.class_names) == ["horse"]
    out = engine.infer(np.zeros((3, 3, SIZE, SIZE), np.float32))
    assert out.shape == (3, 5, ANCHORS) and out.dtype == np.float32
    assert build_engine(ModelConfig(path=tiny_onnx, providers=["cpu"]), max_batch=2).max_batch == 2


def test_ort_threads_do_not_spin_unless_asked(tiny_onnx):
    """model.intra_op_spinning (default off): the session is created with allow_spinning 0, or 1 when asked."""
    pytest.importorskip("onnxruntime")
    quiet = build_engine(ModelConfig(path=tiny_onnx, providers=["cpu"], intra_op_threads=2))
    spinning = build_engine(ModelConfig(path=tiny_onnx, providers=["cpu"], intra_op_threads=2, intra_op_spinning=True))
    entry = "session.intra_op.allow_spinning"
    assert quiet.session.get_session_options().get_session_config_entry(entry) == "0"
    assert spinning.session.get_session_options().get_session_config_entry(entry) == "1"
    assert (quiet.intra_op_spinning, spinning.intra_op_spinning) == (False, True)


def test_ort_provider_order_is_tensorrt_cuda_cpu(tiny_onnx, monkeypatch):
    """The default config asks ONNX Runtime for TensorRT, then CUDA, then CPU (what a build lacks is skipped)."""
    ort = pytest.importorskip("onnxruntime")
    seen = {}

    def spy(path, sess_options=None, providers=None, provider_options=None, **kw):
        seen["providers"], seen["options"] = list(providers), list(provider_options)
        raise RuntimeError("stop here")  # no GPU needed: the order asked for is what counts

    all_three = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: all_three)
    monkeypatch.setattr(ort, "InferenceSession", spy)
    with pytest.raises(ModelError, match="stop here"):
        build_engine(ModelConfig(path=tiny_onnx, tensorrt_cache_dir=tiny_onnx.parent / "trt"))
    assert seen["providers"] == all_three
    assert seen["options"][0]["trt_profile_max_shapes"] == f"images:4x3x{SIZE}x{SIZE}"
    assert seen["options"][1]["cudnn_conv_algo_search"] == "HEURISTIC"


def test_missing_model_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        build_engine(ModelConfig(path=tmp_path / "nope.onnx"))
    with pytest.raises(ModelError, match="model file not found"):
        build_engine(ModelConfig(path=tmp_path / "nope.onnx", engine="torch"))


def test_torch_only_options_are_refused_for_ort(tiny_onnx):
    with pytest.raises(ValueError, match="model.engine: torch"):
        build_engine(ModelConfig(path=tiny_onnx, providers=["cpu"]), device="cuda")


@pytest.mark.parametrize("missing", ["torch", "onnx", "onnx2torch"])
def test_torch_engine_without_torch_is_a_config_error(tiny_onnx, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # `import <missing>` now raises ImportError
    with pytest.raises(ConfigError) as exc:
        build_engine(ModelConfig(path=tiny_onnx, engine="torch"))
    msg = str(exc.value)
    assert msg.startswith("model.engine: 'torch' needs torch, onnx and onnx2torch installed")
    assert missing in msg and "model.engine: ort" in msg and "pip install" in msg


def test_torch_engine_is_built_when_torch_is_there(tiny_onnx):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from fbvision.inference.engines.pytorch import TorchEngine

    engine = build_engine(ModelConfig(path=tiny_onnx, engine="torch"), device="cpu", max_batch=3)
    assert isinstance(engine, TorchEngine) and isinstance(engine, Engine)
    assert engine.provider.startswith("torch-cpu-fp32") and engine.max_batch == 3
    out = engine.infer(np.zeros((2, 3, SIZE, SIZE), np.float32))
    assert out.shape == (2, 5, ANCHORS) and out.dtype == np.float32
    np.testing.assert_array_equal(out[1], np.arange(5 * ANCHORS, dtype=np.float32).reshape(5, ANCHORS))


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_torch_engines_module_reads_nothing_back_from_the_device(channels_last):
    # onnx2torch reads shape inputs (reshape targets, resize scales, split sizes) on the host; on a CUDA device each
    # would be a sync, and inside a CUDA-graph capture an error. On the `meta` device any such read fails ("cannot
    # copy out of meta tensor"), so a forward that runs there reads nothing back: the CPU-checkable proxy for
    # "capturable", on the demo model (opset 18: Split-18 and Resize-18 through fbvision's converters).
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx2torch")
    from fbvision.core.config import DEMO_MODEL
    from fbvision.inference.engines.pytorch import convert_module

    module = convert_module(DEMO_MODEL, 2, "meta", torch.float16, channels_last=channels_last)
    x = torch.empty(2, 3, 320, 320, device="meta", dtype=torch.float16)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = module(x)
    assert out.device.type == "meta" and tuple(out.shape) == (2, 5, 2100)
