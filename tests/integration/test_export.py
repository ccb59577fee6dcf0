"""Export round trip on the yolo11n architecture (offline, random weights) at a small input size."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from fbvision.core.modelinfo import ModelError, load_model_info

pytestmark = [
    pytest.mark.export,
    pytest.mark.skipif(
        importlib.util.find_spec("ultralytics") is None, reason="needs the export extra (ultralytics)"
    ),
    pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime"),
]

EXPORT_DIR = Path(__file__).resolve().parents[2] / "export"  # the script wrappers (the code: fbvision/export/)
IMGSZ, MAX_BATCH = 64, 4
SIDECAR_KEYS = {
    "class_names",
    "input_name",
    "input_size",
    "max_batch",
    "dynamic_batch",
    "output_name",
    "output_shape_desc",
    "fp16",
    "source_weights",
    "source_sha256",
    "export",
    "exported_at",
    "verification",
    "model_sha256",
}


@pytest.fixture(scope="module")
def export_module():
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from fbvision.export import export_onnx

    return export_onnx


@pytest.fixture(scope="module")
def exported(export_module, tmp_path_factory):
    output = tmp_path_factory.mktemp("export") / "yolo11n-64.onnx"
    return export_module.export_model("yolo11n.yaml", output, imgsz=IMGSZ, max_batch=MAX_BATCH)


def test_round_trip_is_verified_at_batch_one_and_max(exported):
    assert exported.verified
    rows = {row["batch"]: row for row in exported.verification}
    assert set(rows) == {1, MAX_BATCH}
    for batch, row in rows.items():
        assert row["shape"] == [batch, 84, sum((IMGSZ // s) ** 2 for s in (8, 16, 32))]
        assert row["max_box_diff_px"] <= 0.05 and row["max_score_diff"] <= 1e-3


def test_sidecar_is_complete(exported):
    meta = json.loads(exported.sidecar_path.read_text())
    assert SIDECAR_KEYS <= set(meta)
    assert meta["input_size"] == [IMGSZ, IMGSZ] and meta["max_batch"] == MAX_BATCH and meta["dynamic_batch"]
    assert len(meta["class_names"]) == 80 and meta["class_names"][17] == "horse"
    assert meta["source_weights"].startswith("yolo11n.yaml")
    assert meta["source_sha256"] and len(meta["source_sha256"]) == 64
    assert meta["export"]["opset"] >= 11 and meta["export"]["nms"] is False
    assert meta["verification"]["ok"] and meta["verification"]["tolerance"]["score_atol"] == 1e-3


def test_loader_reads_the_export(exported):
    info = load_model_info(exported.onnx_path)
    assert info.dynamic_batch and info.input_size == (IMGSZ, IMGSZ) and info.max_batch == MAX_BATCH
    assert info.class_id("horse") == 17  # looked up by name: COCO layout
    assert not info.fp16


def test_onnx_runs_at_any_batch_up_to_max(exported):
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported.onnx_path), providers=["CPUExecutionProvider"])
    (image_input,) = session.get_inputs()
    assert isinstance(image_input.shape[0], str) and image_input.shape[1:] == [3, IMGSZ, IMGSZ]
    rng = np.random.default_rng(0)
    single = rng.random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    batch = np.concatenate([single, rng.random((MAX_BATCH - 1, 3, IMGSZ, IMGSZ), dtype=np.float32)])
    out_single = session.run(None, {"images": single})[0]
    out_batch = session.run(None, {"images": batch})[0]
    assert out_batch.shape[0] == MAX_BATCH
    np.testing.assert_allclose(
        out_batch[:1], out_single, atol=1e-4
    )  # batching does not change an image's output


def test_fixed_batch_export_is_rejected_by_the_loader(tmp_path):
    """A plain Ultralytics export without dynamic=True cannot serve the batcher: the loader says so."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    previous = Path.cwd()
    os.chdir(tmp_path)  # Ultralytics writes yolo11n.onnx into the working directory for a .yaml model
    try:
        path = Path(
            YOLO("yolo11n.yaml").export(
                format="onnx", imgsz=IMGSZ, dynamic=False, simplify=False, device="cpu", verbose=False
            )
        )
    finally:
        os.chdir(previous)
    with pytest.raises(ModelError, match="re-export with dynamic batch"):
        load_model_info(tmp_path / path.name if not path.is_absolute() else path)


def test_fp16_export_verifies(export_module, tmp_path):
    result = export_module.export_model(
        "yolo11n.yaml", tmp_path / "h.onnx", imgsz=IMGSZ, max_batch=2, half=True
    )
    assert result.verified
    info = load_model_info(result.onnx_path)
    assert info.fp16 and info.input_dtype == "float32"  # Ultralytics' CPU FP16 export keeps float32 I/O
    assert result.onnx_path.stat().st_size < 0.6 * (11 * 1024 * 1024)


def test_script_prints_its_verification(tmp_path):
    import subprocess

    completed = subprocess.run(
        [
            sys.executable,
            str(EXPORT_DIR / "export_onnx.py"),
            "--weights",
            "yolo11n.yaml",
            "--imgsz",
            str(IMGSZ),
            "--max-batch",
            "2",
            "--output",
            str(tmp_path / "cli.onnx"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "YOLO_OFFLINE": "1"},
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "verification (ONNX Runtime vs PyTorch" in completed.stdout
    assert "batch  1:" in completed.stdout and "batch  2:" in completed.stdout and "OK" in completed.stdout
    assert (tmp_path / "cli.json").is_file()
