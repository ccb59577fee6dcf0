"""Measure a horse detector (ONNX) on synthetic frames: mAP50, recall and precision at a working threshold.

A deliberately small, independent reference path - letterbox, ONNX Runtime, decode, OpenCV NMS, greedy IoU
matching, 101-point interpolated AP (the COCO/Ultralytics convention) - so the demo model's numbers are measured
by code that shares nothing with the pipeline's post-processing it is meant to check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fbvision.core.modelinfo import ModelInfo, load_model_info
from fbvision.core.tensor import to_tensor
from fbvision.synth.dataset import random_scenario, samples

logger = logging.getLogger(__name__)


def letterbox(image: np.ndarray, size_hw: tuple[int, int]) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize keeping aspect, pad with grey 114; returns the image, the scale and the (left, top) padding."""
    height, width = image.shape[:2]
    target_h, target_w = size_hw
    scale = min(target_h / height, target_w / width)
    new_w, new_h = round(width * scale), round(height * scale)
    left, top = (target_w - new_w) // 2, (target_h - new_h) // 2
    canvas = np.full((target_h, target_w, 3), 114, np.uint8)
    canvas[top : top + new_h, left : left + new_w] = cv2.resize(
        image, (new_w, new_h), interpolation=cv2.INTER_LINEAR
    )
    return canvas, scale, (float(left), float(top))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes a (n, 4) and b (m, 4), xyxy."""
    if a.size == 0 or b.size == 0:
        return np.zeros((len(a), len(b)), np.float64)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


class OnnxHorseDetector:
    """ONNX Runtime on CPU; returns horse boxes (x1, y1, x2, y2, score) in source pixels."""

    def __init__(self, model_path: str | Path, class_name: str = "horse", threads: int | None = None) -> None:
        import onnxruntime as ort

        self.info: ModelInfo = load_model_info(model_path)
        self.class_id = self.info.class_id(class_name)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.info.path), options, providers=["CPUExecutionProvider"])
        self._dtype = np.float16 if self.info.input_dtype == "float16" else np.float32

    def detect(
        self, images: Sequence[np.ndarray], conf: float = 0.001, nms_iou: float = 0.6
    ) -> list[np.ndarray]:
        results: list[np.ndarray] = []
        for start in range(0, len(images), self.info.max_batch):
            chunk = images[start : start + self.info.max_batch]
            boxed = [letterbox(image, self.info.input_size) for image in chunk]
            tensor = to_tensor([b[0] for b in boxed])
            raw = self.session.run(
                [self.info.output_name], {self.info.input_name: tensor.astype(self._dtype)}
            )[0]
            for prediction, (_, scale, (left, top)), image in zip(
                raw.astype(np.float32), boxed, chunk, strict=True
            ):
                results.append(self._decode(prediction, scale, left, top, image.shape, conf, nms_iou))
        return results

    def _decode(
        self,
        prediction: np.ndarray,
        scale: float,
        left: float,
        top: float,
        shape: tuple,
        conf: float,
        nms_iou: float,
    ) -> np.ndarray:
        scores = prediction[4 + self.class_id]
        keep = scores >= conf
        if not keep.any():
            return np.zeros((0, 5), np.float32)
        cx, cy, w, h = prediction[:4, keep]
        scores = scores[keep]
        x1 = (cx - w / 2 - left) / scale
        y1 = (cy - h / 2 - top) / scale
        boxes_xywh = np.stack([x1, y1, w / scale, h / scale], axis=1)
        order = cv2.dnn.NMSBoxes(boxes_xywh.tolist(), scores.tolist(), conf, nms_iou, top_k=100)
        order = np.asarray(order, dtype=np.int64).reshape(-1)
        height, width = shape[:2]
        x1, y1, bw, bh = boxes_xywh[order].T
        out = np.stack([x1, y1, x1 + bw, y1 + bh, scores[order]], axis=1)
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
        return out.astype(np.float32)


def average_precision(
    detections: list[np.ndarray], truths: list[np.ndarray], iou: float = 0.5
) -> dict[str, float]:
    """AP at ``iou`` over all images (101-point interpolation), plus the raw counts."""
    n_truth = int(sum(len(t) for t in truths))
    records = []  # (score, is_true_positive)
    for dets, gts in zip(detections, truths, strict=True):
        if len(dets) == 0:
            continue
        dets = dets[np.argsort(-dets[:, 4])]
        matched = np.zeros(len(gts), bool)
        ious = box_iou(dets[:, :4].astype(np.float64), gts.astype(np.float64))
        for k in range(len(dets)):
            best = -1
            if len(gts):
                candidates = np.where(~matched & (ious[k] >= iou))[0]
                if candidates.size:
                    best = int(candidates[np.argmax(ious[k, candidates])])
            if best >= 0:
                matched[best] = True
            records.append((float(dets[k, 4]), best >= 0))
    if n_truth == 0:
        return {"ap": float("nan"), "n_truth": 0, "n_detections": len(records)}
    records.sort(key=lambda r: -r[0])
    tp = np.cumsum([r[1] for r in records]) if records else np.zeros(0)
    fp = np.cumsum([not r[1] for r in records]) if records else np.zeros(0)
    recall = tp / n_truth if records else np.zeros(0)
    precision = tp / np.maximum(tp + fp, 1e-9) if records else np.zeros(0)
    # COCO: at each of 101 recall levels, the best precision reached at that recall or beyond (0 if never).
    envelope = np.flip(np.maximum.accumulate(np.flip(precision))) if records else np.zeros(0)
    points = np.linspace(0, 1, 101)
    index = np.searchsorted(recall, points, side="left")
    sampled = (
        np.where(index < len(envelope), envelope[np.minimum(index, max(len(envelope) - 1, 0))], 0.0)
        if records
        else np.zeros_like(points)
    )
    ap = float(np.mean(sampled))
    return {"ap": ap, "n_truth": n_truth, "n_detections": len(records)}


def recall_precision_at(
    detections: list[np.ndarray], truths: list[np.ndarray], conf: float, iou: float = 0.5
) -> tuple[float, float]:
    tp = fp = n_truth = 0
    for dets, gts in zip(detections, truths, strict=True):
        dets = dets[dets[:, 4] >= conf]
        n_truth += len(gts)
        if len(dets) == 0:
            continue
        dets = dets[np.argsort(-dets[:, 4])]
        ious = box_iou(dets[:, :4].astype(np.float64), gts.astype(np.float64))
        matched = np.zeros(len(gts), bool)
        for k in range(len(dets)):
            candidates = np.where(~matched & (ious[k] >= iou))[0] if len(gts) else np.zeros(0, int)
            if candidates.size:
                matched[candidates[np.argmax(ious[k, candidates])]] = True
                tp += 1
            else:
                fp += 1
    return (tp / n_truth if n_truth else float("nan"), tp / (tp + fp) if tp + fp else float("nan"))


def evaluate_detector(
    model_path: str | Path,
    seeds: Iterable[int],
    frames_per_seed: int = 1,
    conf: float = 0.25,
    threads: int | None = None,
) -> dict[str, Any]:
    """mAP50 and recall/precision at ``conf`` on frames of the random scenes of ``seeds``."""
    started = time.perf_counter()
    detector = OnnxHorseDetector(model_path, threads=threads)
    seeds = list(seeds)
    frames = list(samples(seeds, frames_per_seed))
    looks = [random_scenario(s.seed).look for s in frames]
    rendered = time.perf_counter()
    detections = detector.detect([f.image for f in frames])
    inferred = time.perf_counter()
    truths = [f.boxes for f in frames]
    summary = average_precision(detections, truths)
    recall, precision = recall_precision_at(detections, truths, conf)
    per_look = {}
    for look in ("day", "night"):
        idx = [k for k, lk in enumerate(looks) if lk == look]
        if idx:
            per_look[look] = {
                "images": len(idx),
                "map50": _rounded(
                    average_precision([detections[k] for k in idx], [truths[k] for k in idx])["ap"]
                ),
            }
    report = {
        "model": Path(model_path).name,
        "seeds": [min(seeds), max(seeds)] if seeds else [],
        "images": len(frames),
        "horses": summary["n_truth"],
        "map50": _rounded(summary["ap"]),
        f"recall@{conf}": _rounded(recall),
        f"precision@{conf}": _rounded(precision),
        "per_look": per_look,
        "render_s": round(rendered - started, 2),
        "inference_s": round(inferred - rendered, 2),
    }
    logger.info("evaluation: %s", report)
    return report


def _rounded(value: float) -> float | None:
    """JSON has no NaN: undefined metrics (no truth, no detection) become null."""
    return None if value != value else round(float(value), 4)
