"""Cached exports of YOLO11n with random weights (``yolo11n.yaml``: no download) for tests and benchmarks.

Random weights cost exactly the compute of COCO ``yolo11n.pt``; the 80 COCO class names are attached (so
``horse`` is class 17 and is looked up by name, as with the real model) and the seed is fixed. Each export
goes through the project's exporter (``export_onnx.export_model``: dynamic batch, sidecar metadata,
verification against PyTorch) in a subprocess, so torch threads and Ultralytics' settings stay out of the
caller's process, and is cached under ``.cache/models/`` keyed by the Ultralytics version, the exporter's
source and the arguments. A lock file keeps two sessions sharing the cache from exporting the same model twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fbvision.core.config import REPO_ROOT

MODEL_CACHE = REPO_ROOT / ".cache" / "models"  # in the checkout (tests and benchmarks run from one)


def _export_key(imgsz: int, max_batch: int) -> str:
    try:
        ultralytics_version = version("ultralytics")
    except PackageNotFoundError:
        ultralytics_version = "?"
    exporter = Path(__file__).with_name("export_onnx.py").read_bytes()
    blob = json.dumps({"ultralytics": ultralytics_version, "imgsz": imgsz, "max_batch": max_batch,
                       "exporter": hashlib.sha256(exporter).hexdigest()[:16]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cached_yolo11n(imgsz: int, max_batch: int, *, timeout_s: float = 900, cache_dir: Path = MODEL_CACHE) -> Path:
    """Path of YOLO11n exported at ``imgsz`` with a dynamic batch 1..``max_batch`` (first call: 10-60 s)."""
    target = cache_dir / f"yolo11n-{imgsz}-b{max_batch}-{_export_key(imgsz, max_batch)}.onnx"

    def ready() -> bool:
        return target.is_file() and target.with_suffix(".json").is_file()

    if ready():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    lock = target.with_suffix(".lock")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            break
        except FileExistsError:
            if ready():
                return target
            if time.monotonic() > deadline:
                raise RuntimeError(f"waited {timeout_s:.0f} s for another export holding {lock}") from None
            time.sleep(1.0)
    try:
        workdir = cache_dir / f"export-{os.getpid()}"
        workdir.mkdir(exist_ok=True)
        script = (
            "import torch\n"
            "from fbvision.export import export_onnx\n"
            "torch.manual_seed(0)\n"
            f"r = export_onnx.export_model('yolo11n.yaml', {str(workdir / target.name)!r}, imgsz={imgsz}, "
            f"max_batch={max_batch}, names='coco', verify_batches=[1, 2], "
            "extra_metadata={'note': 'random weights: same FLOPs as COCO yolo11n'})\n"
            "print('EXPORTED', r.onnx_path)\n"
        )
        env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(workdir / "cfg")}
        proc = subprocess.run([sys.executable, "-c", script], cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=timeout_s)
        if proc.returncode != 0 or "EXPORTED" not in proc.stdout:
            raise RuntimeError(f"export of yolo11n@{imgsz} failed ({proc.returncode}):\n"
                               f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        exported = workdir / target.name
        # The sidecar names the model file: keep its name, move both, the sidecar last (it marks completion).
        shutil.move(str(exported), target)
        shutil.move(str(exported.with_suffix(".json")), target.with_suffix(".json"))
        shutil.rmtree(workdir, ignore_errors=True)
        return target
    finally:
        lock.unlink(missing_ok=True)
