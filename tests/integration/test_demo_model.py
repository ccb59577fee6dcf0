"""The committed demo detector, measured (not read from a file) on synthetic frames from seeds it never saw."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest

from fbvision.core.modelinfo import load_model_info
from fbvision.synth.dataset import EVAL_SEED_START

pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime")

MODEL = Path(__file__).resolve().parents[2] / "models" / "horse-demo-yolo11n-320.onnx"
# The model card's numbers use EVAL_SEED_START + 0..; this test uses a disjoint, also unseen, range.
TEST_SEEDS = range(EVAL_SEED_START + 10_000, EVAL_SEED_START + 10_060)


def test_demo_model_is_committed_small_and_described():
    assert MODEL.is_file(), f"{MODEL} is missing: run python export/train_demo.py"
    assert MODEL.stat().st_size <= 12 * 1024 * 1024
    info = load_model_info(MODEL)
    assert info.class_names == ("horse",) and info.class_id("horse") == 0
    assert info.input_size == (320, 320) and info.dynamic_batch and info.max_batch == 32
    meta = json.loads(MODEL.with_suffix(".json").read_text())
    assert meta["verification"]["ok"]
    card = (MODEL.parent / "MODEL_CARD.md").read_text()
    assert "mAP50" in card and "train_demo.py" in card


def test_demo_model_detects_synthetic_horses_on_unseen_seeds():
    from fbvision.synth.evaluate import evaluate_detector

    started = time.perf_counter()
    report = evaluate_detector(MODEL, TEST_SEEDS, frames_per_seed=1, conf=0.25)
    elapsed = time.perf_counter() - started
    print(f"demo model on seeds {TEST_SEEDS.start}..{TEST_SEEDS.stop - 1}: {report} ({elapsed:.1f} s)")
    assert report["images"] == 60 and report["horses"] >= 60
    assert report["map50"] >= 0.8 or report["recall@0.25"] >= 0.9, report
    assert elapsed < 60
