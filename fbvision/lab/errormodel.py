"""The detector's error model: measured against synthetic ground truth, replayed on ground-truth boxes.

Running the real detector over hours of rendered scenes is too slow for CI (rendering ~0.1 s a frame on a CPU
core), but the smoothing strategies need hours of normal behaviour and tens of lie-downs to be told apart. So the
lab measures how the demo detector errs on rendered synthetic frames (:func:`measure_detector`: after the logic's
own NMS and score threshold, each visible horse matched to a detection at IoU >= 0.5) and degrades ground-truth
boxes the same way (:class:`~fbvision.lab.detections.TruthNoise` with those figures: :data:`DEMO_MODEL_ERRORS`).
A log made so says ``source = "error_model"``: neither the model nor clean ground truth.

:data:`DEMO_MODEL_ERRORS` was measured with :func:`measure_detector` on ``horse-demo-yolo11n-320.onnx``
(ONNX Runtime, CPU, letterbox + JPEG 85 as the camera manager does) over every built-in scenario re-seeded
(seeds 101 and 202), every 3rd frame; the run is in docs/notebooks.md ("The detector's error model") and
``python -m fbvision.lab.errormodel`` repeats it.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import supervision as sv

from fbvision.core.logic_config import LogicConfig
from fbvision.lab.detections import TruthNoise, _as_scenario, _Detector, _resolve_model
from fbvision.logic.filters import apply_nms, filter_candidates
from fbvision.synth import Scenario, SceneRenderer

#: IoU at which a detection counts as finding a horse (the usual detection-metric threshold).
MATCH_IOU = 0.5
#: A matched box whose height is off by more than this fraction of the true height is a posture glitch: the
#: lying/standing test compares the height to the standing baseline (lying below ~0.6 of it).
GLITCH_HEIGHT = 0.3


@dataclass(frozen=True)
class DetectorErrors:
    """What :func:`measure_detector` found (rates per visible horse-frame unless said otherwise)."""

    model: str
    frames: int
    horse_frames: int  # visible horses over all frames
    miss_rate: float  # visible horse with no detection at IoU >= MATCH_IOU
    miss_rate_standing: float
    miss_rate_lying: float
    false_positives_per_frame: float  # kept detections matching no horse
    jitter: float  # robust std-dev (1.4826 MAD) of the box edges, fraction of the true width/height
    bias_height: float  # median of (detected height / true height - 1)
    glitch_rate: float  # matched boxes with a height off by more than GLITCH_HEIGHT
    confidence: tuple[float, float]  # 5th and 95th percentile of the matched scores

    def as_noise(self, seed: int = 0) -> TruthNoise:
        """These figures as a :class:`TruthNoise` (``measured_from`` names the model)."""
        return TruthNoise(
            jitter=round(self.jitter, 4), dropout=round(self.miss_rate, 4), glitch=round(self.glitch_rate, 4),
            false_positive=round(self.false_positives_per_frame, 4),
            confidence=(round(self.confidence[0], 2), round(self.confidence[1], 2)), seed=seed,
            measured_from=self.model,
        )


def measure_detector(
    scenarios: Sequence[str | Scenario],
    model_path: str | Path | None = None,
    *,
    every: int = 3,
    max_frames: int | None = None,
    config: LogicConfig | None = None,
    batch_size: int = 8,
    threads: int = 2,
    jpeg_quality: int | None = 85,
) -> DetectorErrors:
    """Render every ``every``-th frame of ``scenarios`` (at most ``max_frames`` per scenario), run the detector
    as :func:`~fbvision.lab.detections.detection_log` does, keep what the logic keeps (class-aware NMS at
    ``config.nms_iou``, score >= ``config.conf_threshold``) and match it to the visible ground-truth horses."""
    config = config or LogicConfig()
    path = _resolve_model(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"no model at {path}")
    detector = _Detector(path, threads=threads, conf_floor=0.05, top_k=100, jpeg_quality=jpeg_quality)
    frames = horse_frames = fps_count = 0
    misses = {"standing": [0, 0], "lying": [0, 0], "other": [0, 0]}  # posture -> [missed, seen]
    edges: list[np.ndarray] = []
    height_ratio: list[float] = []
    scores: list[float] = []
    for item in scenarios:
        scenario = _as_scenario(item)
        renderer = SceneRenderer(scenario)
        indices = list(range(0, renderer.n_frames, max(1, every)))
        if max_frames is not None:
            indices = indices[: max(1, int(max_frames))]
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            batch = detector([renderer.frame(i) for i in chunk])
            for i, candidates in zip(chunk, batch, strict=True):
                frames += 1
                width, height = renderer.size
                kept = filter_candidates(
                    apply_nms(candidates, config.nms_iou), conf=config.conf_threshold,
                    class_ids=[detector.class_id], min_area=config.min_box_area_frac * width * height, polygon=None,
                )
                truths = [t for t in renderer.truth(i) if t.visible]
                horse_frames += len(truths)
                boxes = np.asarray(kept.xyxy, dtype=np.float64).reshape(-1, 4)
                matched_det: set[int] = set()
                matched_truth: set[int] = set()
                if truths and len(boxes):
                    iou = sv.box_iou_batch(np.array([t.box for t in truths], dtype=np.float64), boxes)
                else:
                    iou = np.zeros((len(truths), len(boxes)))
                while iou.size and iou.max() >= MATCH_IOU:
                    r, c = np.unravel_index(int(np.argmax(iou)), iou.shape)
                    truth, box = truths[r], boxes[c]
                    x1, y1, x2, y2 = truth.box
                    w, h = x2 - x1, y2 - y1
                    edges.append((box - np.array(truth.box)) / np.array([w, h, w, h]))
                    height_ratio.append((box[3] - box[1]) / h)
                    scores.append(float(np.asarray(kept.scores)[c]))
                    matched_det.add(int(c))
                    matched_truth.add(int(r))
                    iou[r, :], iou[:, c] = -1.0, -1.0
                    misses[_posture(truth.posture)][1] += 1
                for r, truth in enumerate(truths):
                    if r not in matched_truth:
                        misses[_posture(truth.posture)][0] += 1
                        misses[_posture(truth.posture)][1] += 1
                fps_count += len(boxes) - len(matched_det)
    all_edges = np.array(edges).reshape(-1, 4)
    mad = np.median(np.abs(all_edges - np.median(all_edges, axis=0)), axis=0) if len(all_edges) else np.full(4, np.nan)
    ratios = np.array(height_ratio)
    total_missed = sum(m for m, _ in misses.values())
    return DetectorErrors(
        model=path.name,
        frames=frames,
        horse_frames=horse_frames,
        miss_rate=total_missed / horse_frames if horse_frames else math.nan,
        miss_rate_standing=_rate(*misses["standing"]),
        miss_rate_lying=_rate(*misses["lying"]),
        false_positives_per_frame=fps_count / frames if frames else math.nan,
        jitter=float(1.4826 * np.mean(mad)),
        bias_height=float(np.median(ratios - 1.0)) if len(ratios) else math.nan,
        glitch_rate=float(np.mean(np.abs(ratios - 1.0) > GLITCH_HEIGHT)) if len(ratios) else math.nan,
        confidence=(float(np.percentile(scores, 5)), float(np.percentile(scores, 95))) if scores else (math.nan,) * 2,
    )


def _posture(posture: str) -> str:
    return posture if posture in ("standing", "lying") else "other"


def _rate(missed: int, seen: int) -> float:
    return missed / seen if seen else math.nan


#: The demo detector's measured errors (see the module docstring for how; figures in docs/notebooks.md).
#: ``python -m fbvision.lab.errormodel --seeds 101,202 --every 3`` (1256 frames, 1376 visible horse-frames):
#: no missed horse (0 of 1376: below 0.22 % at 95 %), 1 false positive (0.0008/frame), edge jitter 2.5 % of
#: the box, heights 1.4 % short (median; not modelled), no height off by more than 30 % (no posture glitch),
#: scores 0.63-0.93 (5th-95th percentile).
DEMO_MODEL_ERRORS = TruthNoise(
    jitter=0.0253, dropout=0.0, glitch=0.0, false_positive=0.0008, confidence=(0.63, 0.93), seed=0,
    measured_from="horse-demo-yolo11n-320.onnx",
)


def main(argv: Sequence[str] | None = None) -> None:
    from fbvision.lab.detections import variants
    from fbvision.synth import builtin_scenarios

    parser = argparse.ArgumentParser(description="measure the detector's error model on synthetic scenes")
    parser.add_argument("--model", default=None)
    parser.add_argument("--seeds", default="101,202")
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--max-frames", type=int, default=None)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    errors = measure_detector(variants(builtin_scenarios(), seeds), args.model, every=args.every,
                              max_frames=args.max_frames)
    print(json.dumps(asdict(errors), indent=2))
    print(errors.as_noise())


if __name__ == "__main__":
    main()
