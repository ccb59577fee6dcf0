"""Random stall scenes for training and evaluating a horse detector (YOLO label format).

Every image comes from :func:`random_scenario` (seed -> stall, look, 0-2 horses with random scripts covering
all postures) sampled at a few random instants, so seed ranges never overlap between training, validation and
evaluation: the demo model card's accuracy is measured on seeds the model never saw.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fbvision.synth.horse import COATS
from fbvision.synth.renderer import SceneRenderer
from fbvision.synth.scenario import CameraSettings, HorseScript, Scenario, Segment

logger = logging.getLogger(__name__)

# Seed ranges used by export/train_demo.py; evaluation (tests, model card) draws from EVAL_SEED_START up.
TRAIN_SEED_START = 0
VAL_SEED_START = 500_000
EVAL_SEED_START = 1_000_000

_SIZES = ((960, 540), (1280, 720), (640, 480), (800, 600), (1024, 576), (704, 576))
_UP = ("standing", "walking", "running")
_DOWN = ("lying_sternal", "lying_flat", "rolling")


def _random_script(rng: np.random.Generator, n_segments: int) -> list[Segment]:
    segments: list[Segment] = []
    down = bool(rng.random() < 0.35)
    for _ in range(n_segments):
        if down:
            if segments and rng.random() < 0.35:
                segments.append(Segment(behaviour="getting_up", duration_s=float(rng.uniform(2, 4))))
                down = False
                continue
            behaviour = str(rng.choice(_DOWN, p=(0.4, 0.4, 0.2)))
        else:
            if segments and rng.random() < 0.35:
                segments.append(Segment(behaviour="lying_down", duration_s=float(rng.uniform(2, 4))))
                down = True
                continue
            behaviour = str(rng.choice(_UP, p=(0.4, 0.35, 0.25)))
        segments.append(Segment(behaviour=behaviour, duration_s=float(rng.uniform(2, 6))))
    return segments


def random_scenario(seed: int, *, night_fraction: float = 0.3, fps: float = 2.0) -> Scenario:
    """A random stall with 0-2 horses doing random things; deterministic by ``seed``."""
    rng = np.random.default_rng([seed, 0xDA7A])
    size = _SIZES[int(rng.integers(len(_SIZES)))]
    look = "night" if rng.random() < night_fraction else "day"
    roll = rng.random()
    n_horses = 0 if roll < 0.04 else (1 if roll < 0.74 else 2)
    horses = []
    for k in range(n_horses):
        high = 0.6 if n_horses == 1 else 0.45
        horses.append(
            HorseScript(
                id=f"h{k}",
                script=_random_script(rng, int(rng.integers(4, 9))),
                coat=str(rng.choice(list(COATS))),
                height_frac=float(rng.uniform(0.16, high)),
            )
        )
    return Scenario(
        name=f"random-{seed}",
        seed=int(seed),
        fps=fps,
        duration_s=None if horses else 10.0,
        size=size,
        look=look,
        camera=CameraSettings(noise=float(rng.uniform(0, 9))),
        horses=horses,
    )


@dataclass(frozen=True)
class Sample:
    """One frame and its horse boxes (x1, y1, x2, y2 in the frame's pixels)."""

    seed: int
    index: int
    image: np.ndarray
    boxes: np.ndarray  # (n, 4) float32


def samples(seeds: range | list[int], frames_per_seed: int = 4) -> Iterator[Sample]:
    """Frames drawn at seeded random instants of each seed's random scenario, with their visible boxes."""
    for seed in seeds:
        scenario = random_scenario(seed)
        renderer = SceneRenderer(scenario, precompute=False)
        rng = np.random.default_rng([seed, 0x5A3])
        count = min(frames_per_seed, renderer.n_frames)
        for index in sorted(rng.choice(renderer.n_frames, size=count, replace=False).tolist()):
            boxes = [t.box for t in renderer.truth(index) if t.visible]
            yield Sample(
                seed=seed,
                index=int(index),
                image=renderer.frame(index),
                boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
            )


def write_yolo_split(
    folder: Path,
    seeds: range | list[int],
    frames_per_seed: int,
    long_side: int,
    jpeg_quality: tuple[int, int] = (35, 95),
) -> int:
    """Write ``images/`` and ``labels/`` (class 0 = horse) for ``seeds``; returns the number of images.

    Frames are downscaled so the long side is ``long_side`` (the detector's input size: it would letterbox
    them to that anyway) and JPEG-compressed at a random quality, like the camera manager's wire format.
    """
    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    count = 0
    for sample in samples(seeds, frames_per_seed):
        height, width = sample.image.shape[:2]
        scale = long_side / max(width, height)
        image = cv2.resize(
            sample.image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA
        )
        quality = int(np.random.default_rng([sample.seed, sample.index, 0x1A6]).integers(*jpeg_quality))
        stem = f"s{sample.seed:07d}_{sample.index:04d}"
        cv2.imwrite(str(images / f"{stem}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        lines = []
        for x1, y1, x2, y2 in sample.boxes:
            if (x2 - x1) * scale < 2 or (y2 - y1) * scale < 2:
                continue
            lines.append(
                f"0 {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
                f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}"
            )
        (labels / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
        count += 1
    return count
