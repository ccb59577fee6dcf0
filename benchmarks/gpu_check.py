"""The GPU check (run by benchmarks/gpu_check.sh): batching ratio and end-to-end latency on one CUDA card.

No onnxruntime-gpu there (its wheel is 255 MB) and no TensorRT: the same exported YOLO11n ONNX file runs through
PyTorch on CUDA in FP16 behind the project's Engine interface (:class:`fbvision.inference.engines.pytorch.TorchEngine`),
checked against ONNX Runtime (CPU) on the same inputs first. Two engine variants:

* ``eager``  - one kernel launch per operator, as PyTorch runs a model by default;
* ``graphs`` - one CUDA graph per batch size (what TensorRT or ORT's CUDA graphs would also remove: the
  launch overhead that dominates batch 1).

Measured, for batch 1 (sequential: one frame per call) and 8 / 16 / 32:
  host -> host   ``engine.infer`` on float32 numpy, as the inference worker calls it (copies included);
  model only     ``infer_device`` on tensors already on the card (the compute alone);
  worker path    the inference worker on JPEG frames (decode, tensor, model, head decode, result encoding).
Then, when a ``redis-server`` can be found, the real pipeline at 32 cameras x 15 fps (benchmarks/pipeline.py).

    python -m benchmarks.gpu_check --out DIR [--model X.onnx] [--device cuda|cpu] [--quick] [--no-e2e]

Writes ``DIR/gpu-<card>.json`` (read by benchmarks/report.py) and prints a summary naming the card.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent  # run as python -m benchmarks.gpu_check from here


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def find_model(explicit: str | None, imgsz: int) -> Path:
    if explicit:
        return Path(explicit)
    from benchmarks.common import MODEL_CACHE

    found = sorted(MODEL_CACHE.glob(f"yolo11n-{imgsz}-b*.onnx"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no yolo11n-{imgsz} model under {MODEL_CACHE}: run benchmarks/gpu_prepare.sh where "
                         "Ultralytics is installed, and carry .cache/models")
    return found[-1]


def redis_runs() -> bool:
    import subprocess

    path = shutil.which("redis-server")
    if not path:
        return False
    try:
        return subprocess.run([path, "--version"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def timed(fn, sync, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` (synchronised)."""
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def batching(engine, host_frames: np.ndarray, sizes: list[int], repeats: int) -> list[dict]:
    """frames/s of the same frames at each batch size: host->host (infer) and model only (infer_device)."""
    torch = engine.torch
    n = host_frames.shape[0]
    device_frames = torch.from_numpy(host_frames).to(engine.device).to(engine.dtype)
    engine.warmup(sizes)
    rows = []
    for b in sizes:
        chunks = [slice(i, i + b) for i in range(0, n - n % b or n, b)]
        frames = sum(c.stop - c.start for c in chunks)

        def host(chunks=chunks):
            for c in chunks:
                engine.infer(host_frames[c])

        def device(chunks=chunks):
            for c in chunks:
                engine.infer_device(device_frames[c])

        host_s = timed(host, engine.synchronize, repeats)
        device_s = timed(device, engine.synchronize, repeats)
        rows.append({"batch": b, "frames": frames, "host_fps": round(frames / host_s, 1),
                     "device_fps": round(frames / device_s, 1),
                     "host_ms_per_batch": round(host_s / len(chunks) * 1000, 3),
                     "device_ms_per_batch": round(device_s / len(chunks) * 1000, 3)})
    base_h, base_d = rows[0]["host_fps"], rows[0]["device_fps"]
    for row in rows:
        row["host_ratio"] = round(row["host_fps"] / base_h, 2)
        row["device_ratio"] = round(row["device_fps"] / base_d, 2)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--model", default=None, help="ONNX model (default: the cached yolo11n-640 export)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny counts (a CPU dry run of the script)")
    parser.add_argument("--no-e2e", action="store_true")
    parser.add_argument("--cameras", type=int, default=32)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--e2e-seconds", type=float, default=30.0)
    parser.add_argument("--camera-procs", type=int, default=4, help="camera managers sharing the cameras")
    parser.add_argument("--capacity", default="64x10,128x5",
                        help="capacity rows after the end-to-end one, cameras x fps, comma-separated ('' for none)")
    parser.add_argument("--capacity-seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    started = time.monotonic()

    import torch

    from benchmarks import common
    from fbvision.core.config import ModelConfig
    from fbvision.core.tensor import to_tensor
    from fbvision.inference.batcher import autotune, format_table
    from fbvision.inference.engines import build_engine
    from fbvision.inference.engines.pytorch import compare_with_ort

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("torch sees no CUDA device")
    card = torch.cuda.get_device_name(0) if cuda else f"cpu ({common.machine_info()['cpu']})"
    log(f"card: {card}; torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
        f"{torch.backends.cudnn.version() if cuda else '-'}")
    model = find_model(args.model, args.imgsz)
    info_model = common.describe_model(model)
    log(f"model {model.name}: {info_model}")
    sizes = [1, 2] if args.quick else [1, 8, 16, 32]
    sizes = [b for b in sizes if b <= info_model["max_batch"]]
    n = max(sizes) * (1 if args.quick else 3)
    repeats = 1 if args.quick else 5

    frames = common.frame_messages(n, int(info_model["imgsz"]))
    import cv2

    host = to_tensor([cv2.imdecode(np.frombuffer(f.jpeg, np.uint8), cv2.IMREAD_COLOR) for f in frames])
    result: dict = {"gpu": card, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "torch": torch.__version__, "cuda": torch.version.cuda, "model": info_model,
                    "machine": common.machine_info(), "variants": {}}

    variants = {"eager": False, "graphs": True} if cuda else {"eager": False}
    engines = {}
    for name, graphs in variants.items():
        engine = build_engine(ModelConfig(path=model, engine="torch"), device=args.device, half=cuda,
                              cuda_graphs=graphs)
        engines[name] = engine
        check = compare_with_ort(model, engine, batch_sizes=(1, 2))
        log(f"{engine.provider} vs ONNX Runtime CPU: {check}")
        rows = batching(engine, host, sizes, repeats)
        result["variants"][name] = {"provider": engine.provider, "vs_ort": check, "batching": rows}
        log(f"batching, {engine.provider} ({n} frames):")
        print(f"  {'batch':>5} {'host->host/s':>13} {'vs b1':>6} {'model only/s':>13} {'vs b1':>6}")
        for r in rows:
            print(f"  {r['batch']:>5} {r['host_fps']:>13.1f} {r['host_ratio']:>5.2f}x {r['device_fps']:>13.1f} "
                  f"{r['device_ratio']:>5.2f}x")
    best = "graphs" if "graphs" in engines else "eager"
    engine = engines[best]
    result["engine_note"] = (f"{engine.provider}: the ONNX graph run by PyTorch (fbvision/inference/engines/pytorch.py) - "
                             "ONNX Runtime GPU / TensorRT not available on this machine")
    result["batching"] = result["variants"][best]["batching"]
    by_b = {r["batch"]: r for r in result["batching"]}
    top = max(by_b)
    result["ratios"] = {"host_b32": by_b[top]["host_ratio"], "device_b32": by_b[top]["device_ratio"],
                        "largest_batch": top}

    # The worker path: JPEG frames through the real inference worker (CPU decode + GPU model + CPU head decode).
    from benchmarks.test_batching import Sweep, format_rows

    tuned = autotune(engine, sizes, max_wait_ms=10.0, budget_s=0.5 if args.quick else 4.0)
    log(f"autotune on {engine.provider}:\n{format_table(tuned.table)}\n-> max_batch {tuned.batch}, "
        f"max_wait_ms {tuned.max_wait_ms:.2f}")
    result["autotune"] = {"batch": tuned.batch, "max_wait_ms": tuned.max_wait_ms, "table": tuned.table}
    sweep = Sweep(engine, frames, [engine.info.class_id("horse")], 0.05, 100, sizes, tuned)
    sweep.round(record=False)
    for _ in range(1 if args.quick else 3):
        sweep.round()
    worker_rows = sweep.table()
    log(f"worker path (JPEG -> results), {n} frames:\n{format_rows(worker_rows)}")
    result["worker_path"] = worker_rows

    # End to end through Redis.
    if args.no_e2e:
        log("end to end skipped (--no-e2e)")
    elif not redis_runs():
        log("end to end skipped: no working redis-server on PATH (gpu_check.sh unpacks the carried Debian packages)")
        result["e2e_skipped"] = "no redis-server"
    else:
        from benchmarks.pipeline import RunSpec, format_summary, run_pipeline
        from fbvision.run.redis_server import EmbeddedRedis

        for e in engines.values():  # the worker builds its own engine in its process: free the card's memory
            e.graph._plans.clear()
        engines.clear()
        if cuda:
            torch.cuda.empty_cache()
        spec = RunSpec(model_path=str(model), cameras=2 if args.quick else args.cameras,
                       fps=5.0 if args.quick else args.fps, max_batch=int(tuned.batch),
                       max_wait_ms=float(tuned.max_wait_ms),
                       engine=f"torch-{'cuda' if cuda else 'cpu'}{'-fp16-graphs' if cuda else ''}",
                       camera_procs=1 if args.quick else args.camera_procs, warmup_s=1.0 if args.quick else 5.0,
                       measure_s=2.0 if args.quick else args.e2e_seconds, sample_interval_s=1.0)
        try:
            with EmbeddedRedis(maxmemory_mb=2048) as server:
                summary = run_pipeline(spec, server.url, server.proc.pid)
            log(f"end to end:\n{format_summary(summary)}")
            result["e2e"] = summary
        except Exception as exc:  # keep the batching numbers: write the JSON whatever happens here
            log(f"end to end FAILED: {type(exc).__name__}: {exc}")
            result["e2e_skipped"] = f"failed: {type(exc).__name__}: {exc}"
        # Capacity on the card (benchmarks/test_capacity.py's pipeline with the real model): how many cameras
        # one GPU carries before the CPU side or the card saturates; the pipelined worker's engine busy fraction.
        rows = [r for r in (args.capacity.split(",") if args.capacity else []) if r.strip()]
        result["capacity"] = []
        for row in rows[:1] if args.quick else rows:
            cams, fps = row.lower().split("x")
            if time.monotonic() - started > 380:
                log(f"capacity {row} skipped: the 470 s limit is near")
                break
            cap = dataclasses.replace(spec, cameras=2 if args.quick else int(cams), fps=5.0 if args.quick else float(fps),
                                      measure_s=2.0 if args.quick else args.capacity_seconds)
            try:
                with EmbeddedRedis(maxmemory_mb=2048) as server:
                    summary = run_pipeline(cap, server.url, server.proc.pid)
                log(f"capacity {row}:\n{format_summary(summary)}")
                result["capacity"].append(summary)
            except Exception as exc:
                log(f"capacity {row} FAILED: {type(exc).__name__}: {exc}")
                result["capacity"].append({"row": row, "failed": f"{type(exc).__name__}: {exc}"})

    args.out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", card).strip("-").lower()[:40]
    path = args.out / f"gpu-{slug}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    e2e = (result.get("e2e") or {}).get("stages_ms", {}).get("end_to_end", {})
    busy = (result.get("e2e") or {}).get("engine_busy_fraction")
    log(f"SUMMARY on {card}: batch {top} vs sequential {result['ratios']['host_b32']}x host->host, "
        f"{result['ratios']['device_b32']}x model only (target >= 4x, aim 6x); end to end p95 "
        f"{e2e.get('p95', float('nan')):.1f} ms (target < 50, aim 30), engine busy "
        f"{'-' if busy is None else f'{busy:.0%}'} (pipelined worker); wrote {path} in "
        f"{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
