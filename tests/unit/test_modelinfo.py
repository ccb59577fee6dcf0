"""Model metadata loader: what it reads (sidecar, Ultralytics metadata) and what it rejects, with which message."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from fbvision.core.modelinfo import ModelError, ModelInfo, load_model_info, sidecar_path

onnx = pytest.importorskip("onnx", reason="building test models needs the onnx package")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def make_model(
    path,
    *,
    batch="batch",
    channels=3,
    size=(64, 64),
    num_classes=1,
    props: dict[str, str] | None = None,
    rank=4,
    output_rank=3,
):
    """A tiny runnable detector-shaped graph: 1x1 conv to 4 + nc channels, flattened to [B, 4 + nc, H*W]."""
    rows = 4 + num_classes
    height, width = size
    input_shape = [batch, channels, height, width][:rank]
    weight = numpy_helper.from_array(np.full((rows, channels, 1, 1), 0.1, np.float32), "w")
    shape = numpy_helper.from_array(
        np.array([0, rows, -1] if output_rank == 3 else [0, -1], np.int64), "shape"
    )
    nodes = [
        helper.make_node("Conv", ["images", "w"], ["features"]),
        helper.make_node("Reshape", ["features", "shape"], ["output0"]),
    ]
    anchors = height * width if isinstance(height, int) and isinstance(width, int) else "anchors"
    output_shape = [batch, rows, anchors] if output_rank == 3 else [batch, "flat"]
    graph = helper.make_graph(
        nodes,
        "detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, output_shape)],
        initializer=[weight, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (props or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def write_sidecar(model_path, **overrides):
    meta = {
        "format": "fbvision-model/1",
        "class_names": ["horse"],
        "input_size": [64, 64],
        "max_batch": 16,
        "fp16": False,
        "source_weights": "best.pt",
        "source_sha256": "ab" * 32,
    }
    meta.update(overrides)
    sidecar_path(model_path).write_text(json.dumps(meta))
    return meta


def test_dynamic_model_with_sidecar(tmp_path):
    path = make_model(tmp_path / "demo.onnx")
    write_sidecar(path)
    info = load_model_info(path)
    assert isinstance(info, ModelInfo)
    assert info.input_name == "images" and info.output_name == "output0"
    assert info.input_size == (64, 64) and info.max_batch == 16 and info.dynamic_batch
    assert info.class_names == ("horse",) and info.class_id("horse") == 0
    assert info.source_weights == "best.pt" and info.source_sha256 == "ab" * 32
    assert not info.fp16 and info.input_dtype == "float32"
    assert info.metadata["sidecar"]["format"] == "fbvision-model/1"


def test_ultralytics_metadata_without_sidecar(tmp_path):
    """A plain Ultralytics export (dynamic H/W too): names/imgsz/batch come from metadata_props."""
    names = {i: f"class{i}" for i in range(18)}
    names[17] = "horse"
    path = make_model(
        tmp_path / "yolo11n.onnx",
        size=("height", "width"),
        num_classes=18,
        props={"names": repr(names), "imgsz": "[640, 640]", "batch": "8", "stride": "32"},
    )
    info = load_model_info(path)
    assert info.class_id("horse") == 17
    assert info.input_size == (640, 640)
    assert info.max_batch == 8
    assert info.source_weights is None


def test_ultralytics_batch_one_means_no_maximum(tmp_path):
    path = make_model(tmp_path / "m.onnx", props={"names": "{0: 'horse'}", "imgsz": "[64, 64]", "batch": "1"})
    assert load_model_info(path).max_batch == 32


def test_missing_class_lists_the_available_names(tmp_path):
    path = make_model(tmp_path / "m.onnx", num_classes=2)
    write_sidecar(path, class_names=["cow", "sheep"])
    info = load_model_info(path)
    with pytest.raises(ModelError, match=r"no class named 'horse'.*cow, sheep"):
        info.class_id("horse")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch": 1}, r"batch dimension is fixed at 1.*re-export with dynamic batch"),
        ({"batch": 8}, r"fixed at 8"),
        ({"rank": 3}, r"expected 4-D \[batch, 3, height, width\]"),
        ({"channels": 1}, r"1 channels; expected 3"),
        ({"output_rank": 2}, r"expected the YOLO detection head"),
    ],
)
def test_unusable_models_are_rejected_clearly(tmp_path, kwargs, message):
    path = make_model(tmp_path / "bad.onnx", **kwargs)
    write_sidecar(path)
    with pytest.raises(ModelError, match=message):
        load_model_info(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        load_model_info(tmp_path / "nope.onnx")


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x00not a model at all" * 10)
    with pytest.raises(ModelError):
        load_model_info(path)


def test_no_class_names(tmp_path):
    path = make_model(tmp_path / "anon.onnx", props={"imgsz": "[64, 64]"})
    with pytest.raises(ModelError, match="no class names"):
        load_model_info(path)


def test_class_count_must_match_the_head(tmp_path):
    path = make_model(tmp_path / "m.onnx", num_classes=1)
    write_sidecar(path, class_names=["horse", "person"])
    with pytest.raises(ModelError, match="1 class|2 class names"):
        load_model_info(path)


def test_sidecar_that_belongs_to_another_model(tmp_path):
    path = make_model(tmp_path / "m.onnx")
    write_sidecar(path, input_size=[320, 320])
    with pytest.raises(ModelError, match="does not belong to this model"):
        load_model_info(path)


def test_dynamic_size_without_metadata_is_rejected(tmp_path):
    path = make_model(tmp_path / "m.onnx", size=("height", "width"), props={"names": "{0: 'horse'}"})
    with pytest.raises(ModelError, match="input size"):
        load_model_info(path)


def test_onnxruntime_fallback_reads_the_same(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    path = make_model(tmp_path / "demo.onnx")
    write_sidecar(path)
    with_onnx = load_model_info(path)
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    without_onnx = load_model_info(path)
    assert without_onnx == with_onnx
