"""Fixtures of the camera-manager / inference-worker tests: a tiny real ONNX model and a real RTSP server.

The model is Ultralytics' ``yolo11n.yaml`` (random weights: no download) exported at a small image size with a
dynamic batch axis by the project's exporter, cached under ``.cache/models/`` (``export/model_cache.py``, shared
with the benchmarks), so only the first run pays for the export (~10-30 s on two cores).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
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
        import ultralytics  # noqa: F401
    except ImportError:
        pytest.skip("the export extra (ultralytics + torch) is not installed: pip install -e '.[export]'")
    from fbvision.export.model_cache import cached_yolo11n

    return cached_yolo11n(imgsz, max_batch)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """Path of a YOLO11n ONNX with random weights and the 80 COCO class names, input 160x160, dynamic batch
    up to 8. Untrained: every anchor scores about the same, so tests use ``conf_floor=0`` and compare boxes."""
    return _export_tiny_model(TEST_IMGSZ, TEST_MAX_BATCH)


@pytest.fixture(scope="session")
def tiny_model_info(tiny_model):
    from fbvision.core.modelinfo import load_model_info

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
