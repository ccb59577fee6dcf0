"""Fixtures of the camera-manager / inference-worker tests: a tiny real ONNX model and a real RTSP server.

The model is Ultralytics' ``yolo11n.yaml`` (random weights: no download) exported at a small image size with a
dynamic batch axis, cached under ``.cache/test-models/`` keyed by the Ultralytics version and the export
arguments, so only the first run pays for the export (~10-30 s on two cores).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_CACHE = REPO_ROOT / ".cache" / "test-models"
TEST_IMGSZ = 160
TEST_MAX_BATCH = 8


def _load_rtsp_helper():
    spec = importlib.util.spec_from_file_location("fbv_test_rtsp_server", REPO_ROOT / "tests" / "rtsp_server.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


rtsp_helper = _load_rtsp_helper()


def _export_tiny_model(imgsz: int, max_batch: int) -> Path:
    try:
        import ultralytics
    except ImportError:
        pytest.skip("the export extra (ultralytics + torch) is not installed: pip install -e '.[export]'")
    args = {"model": "yolo11n.yaml", "format": "onnx", "imgsz": imgsz, "dynamic": True, "batch": max_batch,
            "simplify": True, "names": "coco", "seed": 0}
    key = hashlib.sha256(json.dumps({"ultralytics": ultralytics.__version__, **args}, sort_keys=True).encode())
    target = MODEL_CACHE / f"yolo11n-{imgsz}-b{max_batch}-{key.hexdigest()[:12]}.onnx"
    if target.is_file():
        return target
    MODEL_CACHE.mkdir(parents=True, exist_ok=True)
    # Export in a subprocess: torch threads and Ultralytics' global settings stay out of the test process.
    # The lock file keeps parallel sessions (xdist, two CI jobs on one cache) from exporting twice.
    lock = target.with_suffix(".lock")
    deadline = time.monotonic() + 600
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
            break
        except FileExistsError:
            if target.is_file():
                return target
            if time.monotonic() > deadline:
                raise RuntimeError(f"waited 10 min for another export holding {lock}") from None
            time.sleep(1)
    try:
        workdir = MODEL_CACHE / f"export-{os.getpid()}"
        workdir.mkdir(exist_ok=True)
        # COCO class names (so 'horse' is class 17, looked up by name like the real model); fixed seed.
        script = (
            "import torch\n"
            "from ultralytics import YOLO\n"
            "from ultralytics.utils import ROOT, YAML\n"
            "torch.manual_seed(0)\n"
            "model = YOLO('yolo11n.yaml')\n"
            "model.model.names = dict(YAML.load(ROOT / 'cfg/datasets/coco.yaml')['names'])\n"
            f"path = model.export(format='onnx', imgsz={imgsz}, dynamic=True, batch={max_batch}, simplify=True,"
            " device='cpu', verbose=False)\n"
            "print('EXPORTED', path)\n"
        )
        env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(workdir / "cfg")}
        proc = subprocess.run(
            [sys.executable, "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=900
        )
        produced = [line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("EXPORTED ")]
        if proc.returncode != 0 or not produced:
            raise RuntimeError(f"tiny model export failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        exported = Path(produced[-1])
        if not exported.is_absolute():
            exported = workdir / exported
        tmp = target.with_suffix(".tmp")
        shutil.copyfile(exported, tmp)
        os.replace(tmp, target)
        shutil.rmtree(workdir, ignore_errors=True)
        return target
    finally:
        lock.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """Path of a YOLO11n ONNX with random weights and the 80 COCO class names, input 160x160, dynamic batch
    up to 8. Untrained: every anchor scores about the same, so tests use ``conf_floor=0`` and compare boxes."""
    return _export_tiny_model(TEST_IMGSZ, TEST_MAX_BATCH)


@pytest.fixture(scope="session")
def tiny_model_info(tiny_model):
    from fbvision.modelinfo import load_model_info

    return load_model_info(tiny_model)


@pytest.fixture(scope="session")
def rtsp_video(tmp_path_factory) -> Path:
    """A short synthetic stall clip as H.264 MP4 (what the RTSP server serves)."""
    reason = rtsp_helper.missing_requirements()
    if reason:
        pytest.skip(reason)
    return rtsp_helper.make_test_video(tmp_path_factory.mktemp("rtsp") / "stall.mp4")


@pytest.fixture
def rtsp_server(rtsp_video):
    """A real GStreamer RTSP server (``/usr/bin/python3`` + GstRtspServer) on a free port, looping the clip.
    ``server.url`` / ``server.stop()`` / ``server.start()`` (same port)."""
    with rtsp_helper.RtspServer(rtsp_video) as server:
        yield server
