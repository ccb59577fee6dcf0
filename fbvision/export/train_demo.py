#!/usr/bin/env python3
"""Train the demo horse detector: YOLO11n from scratch on synthetic stall frames, then export it to ONNX.

    python export/train_demo.py                       # dataset + training (~25 min on 2 CPU cores) + export + eval
    python export/train_demo.py --epochs 1 --train-seeds 50 --val-seeds 10 --workdir /tmp/fbv-smoke   # smoke run

Nothing is downloaded: the network is built from ``yolo11n.yaml``; plots (which would fetch a font) and the AMP
check (which would fetch yolo11n.pt) are off. The dataset and the Ultralytics run live in ``--workdir``
(outside the repository); only the exported model, its sidecar and the evaluation JSON go to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is imported: no update checks, no downloads

from fbvision.core.config import DEMO_MODEL  # noqa: E402
from fbvision.synth.dataset import EVAL_SEED_START, TRAIN_SEED_START, VAL_SEED_START, write_yolo_split  # noqa: E402

logger = logging.getLogger("train_demo")

DEFAULT_OUTPUT = DEMO_MODEL  # the demo model in the package's data (models/ in the checkout links to it)


def _write_chunk(job: tuple[str, int, int, int, int]) -> int:
    folder, first, last, frames_per_seed, long_side = job
    return write_yolo_split(Path(folder), range(first, last), frames_per_seed, long_side)


def build_dataset(
    root: Path, train_seeds: int, val_seeds: int, frames_per_seed: int, imgsz: int, workers: int
) -> Path:
    """Render the train/val splits with ``workers`` processes; returns the dataset YAML."""
    if root.exists():
        shutil.rmtree(root)
    jobs = []
    for split, start, count in (("train", TRAIN_SEED_START, train_seeds), ("val", VAL_SEED_START, val_seeds)):
        step = max(1, count // (workers * 4))
        for first in range(start, start + count, step):
            jobs.append((str(root / split), first, min(first + step, start + count), frames_per_seed, imgsz))
    started = time.perf_counter()
    total = 0
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for done, count in enumerate(pool.imap_unordered(_write_chunk, jobs), 1):
            total += count
            logger.info(
                "dataset: %d/%d chunks, %d images, %.0f s",
                done,
                len(jobs),
                total,
                time.perf_counter() - started,
            )
    data_yaml = root / "data.yaml"
    data_yaml.write_text(
        f"path: {root}\ntrain: train/images\nval: val/images\nnames:\n  0: horse\n", encoding="utf-8"
    )
    logger.info("dataset ready: %d images in %.0f s (%s)", total, time.perf_counter() - started, root)
    return data_yaml


def train(data_yaml: Path, run_dir: Path, args: argparse.Namespace) -> Path:
    from ultralytics import YOLO

    model = YOLO("yolo11n.yaml")
    started = time.perf_counter()
    model.train(
        data=str(data_yaml),
        epochs=args.epochs,
        imgsz=args.imgsz,
        batch=args.batch,
        workers=args.workers,
        device="cpu",
        amp=False,  # the AMP check would download yolo11n.pt; CPU trains in FP32 anyway
        plots=False,  # plotting fetches Arial.ttf
        pretrained=False,
        seed=args.seed,
        deterministic=True,
        cache="ram",
        close_mosaic=max(1, args.epochs // 5),
        patience=args.epochs,
        project=str(run_dir.parent),
        name=run_dir.name,
        exist_ok=True,
        verbose=False,
        lr0=0.01,
        warmup_epochs=1.0,
        mosaic=1.0,
        degrees=0.0,
        scale=0.5,
        fliplr=0.5,
    )
    elapsed = time.perf_counter() - started
    best = run_dir / "weights" / "best.pt"
    if not best.exists():
        best = run_dir / "weights" / "last.pt"
    logger.info("training done in %.1f min: %s", elapsed / 60, best)
    (run_dir / "train_time_s.txt").write_text(f"{elapsed:.1f}\n", encoding="utf-8")
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("/tmp/fbv-train"), help="dataset and runs (not in the repo)"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="exported ONNX path")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="dataloader and dataset-rendering processes")
    parser.add_argument("--train-seeds", type=int, default=600)
    parser.add_argument("--val-seeds", type=int, default=40)
    parser.add_argument("--frames-per-seed", type=int, default=4)
    parser.add_argument(
        "--eval-seeds", type=int, default=300, help="unseen seeds for the model card's numbers"
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--skip-dataset", action="store_true", help="reuse the dataset already in --workdir")
    parser.add_argument("--skip-train", action="store_true", help="export the weights of an earlier run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    data_root = args.workdir / "data"
    run_dir = args.workdir / "run"
    data_yaml = data_root / "data.yaml"
    if not args.skip_dataset and not args.skip_train:
        data_yaml = build_dataset(
            data_root, args.train_seeds, args.val_seeds, args.frames_per_seed, args.imgsz, args.workers
        )
    best = run_dir / "weights" / "best.pt"
    if not args.skip_train:
        best = train(data_yaml, run_dir, args)

    from fbvision.export.export_onnx import export_model

    train_time = (
        (run_dir / "train_time_s.txt").read_text().strip() if (run_dir / "train_time_s.txt").exists() else "?"
    )
    # Record how the weights were made, not how this (possibly re-export-only) run was invoked.
    given = [
        a for a in (argv if argv is not None else sys.argv[1:]) if a not in ("--skip-train", "--skip-dataset")
    ]
    command = "python export/train_demo.py " + " ".join(given)
    export_model(
        weights=best,
        output=args.output,
        imgsz=args.imgsz,
        max_batch=args.max_batch,
        names=str(data_yaml),  # the dataset's names ({0: horse}), whatever the checkpoint carries
        extra_metadata={
            "training": {
                "command": command.strip(),
                "seed": args.seed,
                "epochs": args.epochs,
                "imgsz": args.imgsz,
                "train_seeds": [TRAIN_SEED_START, TRAIN_SEED_START + args.train_seeds],
                "val_seeds": [VAL_SEED_START, VAL_SEED_START + args.val_seeds],
                "frames_per_seed": args.frames_per_seed,
                "train_time_s": train_time,
                "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
            }
        },
    )

    from fbvision.synth.evaluate import evaluate_detector

    report = evaluate_detector(args.output, range(EVAL_SEED_START, EVAL_SEED_START + args.eval_seeds))
    evaluation = args.output.with_suffix(".eval.json")
    evaluation.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    logger.info("evaluation on unseen seeds: %s", json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
