"""YOLO11 head decode (inference worker) and final detection filtering (logic worker).

The raw head is ``[B, 4 + nc, N]`` floats (84 x 8400 for COCO at 640): far too big to ship through Redis, so
the inference worker reduces it here to a handful of :class:`Candidates` per image with a low confidence
floor, an optional class subset and a top-k. The logic worker then runs class-aware NMS (OpenCV's batched
NMS), the final confidence threshold, the class filter, a minimum box area and the optional stall polygon.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from fbvision.letterbox import Letterbox

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidates:
    """Detections of one image before tracking: boxes in SOURCE pixels, best-class score and class id."""

    xyxy: np.ndarray  # float32 [n, 4]
    scores: np.ndarray  # float32 [n]
    class_ids: np.ndarray  # int32 [n]

    def __post_init__(self) -> None:
        # Canonical dtypes whatever the producer of the arrays used (no copy when already right).
        object.__setattr__(self, "xyxy", np.asarray(self.xyxy, dtype=np.float32))
        object.__setattr__(self, "scores", np.asarray(self.scores, dtype=np.float32))
        object.__setattr__(self, "class_ids", np.asarray(self.class_ids, dtype=np.int32))
        n = len(self.scores)
        if self.xyxy.shape != (n, 4) or self.class_ids.shape != (n,):
            raise ValueError(
                f"Candidates shapes disagree: xyxy {self.xyxy.shape}, scores {self.scores.shape}, "
                f"class_ids {self.class_ids.shape}"
            )

    @classmethod
    def create(cls, xyxy: object, scores: object, class_ids: object) -> Candidates:
        """Build from array-likes, coercing to the canonical dtypes."""
        return cls(
            xyxy=np.asarray(xyxy, dtype=np.float32).reshape(-1, 4),
            scores=np.asarray(scores, dtype=np.float32).reshape(-1),
            class_ids=np.asarray(class_ids, dtype=np.int32).reshape(-1),
        )

    @classmethod
    def empty(cls) -> Candidates:
        return cls.create(np.zeros((0, 4)), np.zeros(0), np.zeros(0))

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, index: np.ndarray) -> Candidates:
        """Subset by boolean mask or integer index array."""
        return Candidates(self.xyxy[index], self.scores[index], self.class_ids[index])

    @property
    def areas(self) -> np.ndarray:
        wh = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0.0, None)
        return wh[:, 0] * wh[:, 1]


def class_ids_by_name(model_names: Mapping[int, str] | Sequence[str], wanted: Collection[str]) -> list[int]:
    """Model class ids of the ``wanted`` class names (model metadata names, e.g. ``{17: "horse"}``).

    Raises ``ValueError`` naming what is missing, so a model without a horse class fails at start.
    """
    names = dict(model_names) if isinstance(model_names, Mapping) else dict(enumerate(model_names))
    by_name = {str(name): int(class_id) for class_id, name in names.items()}
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise ValueError(f"classes {missing} not in the model's classes {sorted(by_name)}")
    return sorted(by_name[name] for name in wanted)


def decode_yolo(
    output: np.ndarray,
    letterboxes: Sequence[Letterbox],
    class_ids: Sequence[int] | None,
    conf_floor: float,
    top_k: int,
) -> list[Candidates]:
    """Reduce a YOLO11 ONNX head ``[B, 4 + nc, N]`` to per-image candidates in source pixels.

    Per anchor: best class (among ``class_ids`` when given), kept if its score ``>= conf_floor``; then the
    ``top_k`` best by score (sorted, best first), ``cxcywh -> xyxy`` and ``letterboxes[b].to_source``.
    Boxes are in model-input pixels and class scores already sigmoid-activated, as Ultralytics exports them.
    """
    if output.ndim != 3 or output.shape[1] <= 4:
        raise ValueError(f"expected a YOLO head of shape [B, 4+nc, N], got {output.shape}")
    batch, channels, _ = output.shape
    if len(letterboxes) != batch:
        raise ValueError(f"{len(letterboxes)} letterboxes for a batch of {batch}")
    if top_k <= 0:
        return [Candidates.empty() for _ in range(batch)]
    n_classes = channels - 4
    if class_ids is None:
        class_index = None
        class_scores = output[:, 4:, :]
    else:
        class_index = np.asarray(class_ids, dtype=np.int64)
        if class_index.size == 0:
            return [Candidates.empty() for _ in range(batch)]
        if class_index.min() < 0 or class_index.max() >= n_classes:
            raise ValueError(f"class_ids {list(class_ids)} outside the model's {n_classes} classes")
        # A single class (the usual 'horse') is a cheap view; a subset is a small gather.
        class_scores = output[:, 4 + class_index, :]
    # Max first on the whole batch, argmax later only on the few anchors above the floor.
    best_scores = class_scores.max(axis=1)  # [B, N]

    results: list[Candidates] = []
    for b in range(batch):
        keep = np.flatnonzero(best_scores[b] >= conf_floor)
        if keep.size > top_k:
            keep = keep[np.argpartition(best_scores[b, keep], keep.size - top_k)[keep.size - top_k :]]
        if keep.size == 0:
            results.append(Candidates.empty())
            continue
        scores = best_scores[b, keep]
        order = np.argsort(-scores, kind="stable")
        keep, scores = keep[order], scores[order]
        best = class_scores[b][:, keep].argmax(axis=0)
        cls = best if class_index is None else class_index[best]
        cx, cy, w, h = output[b, 0, keep], output[b, 1, keep], output[b, 2, keep], output[b, 3, keep]
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        results.append(
            Candidates(
                xyxy=letterboxes[b].to_source(xyxy),
                scores=scores.astype(np.float32, copy=False),
                class_ids=cls.astype(np.int32, copy=False),
            )
        )
    return results


def apply_nms(c: Candidates, iou: float) -> Candidates:
    """Class-aware non-maximum suppression (OpenCV ``NMSBoxesBatched``); kept boxes sorted by score."""
    if len(c) == 0:
        return c
    xywh = c.xyxy.copy()
    xywh[:, 2:] -= xywh[:, :2]
    # score_threshold below any real score: thresholds are filter_candidates' job, not NMS's.
    kept = cv2.dnn.NMSBoxesBatched(xywh, c.scores, c.class_ids, -1.0, float(iou))
    kept = np.asarray(kept, dtype=np.int64).reshape(-1)
    return c.select(kept[np.argsort(-c.scores[kept], kind="stable")])


def filter_candidates(
    c: Candidates,
    *,
    conf: float,
    class_ids: Collection[int],
    min_area: float,
    polygon: np.ndarray | None,
) -> Candidates:
    """Final thresholds: score ``>= conf``, class in ``class_ids``, area ``>= min_area`` (source pixels²),
    and, with a stall ``polygon`` ([k, 2] source pixels), box bottom-centre inside or on its edge."""
    if len(c) == 0:
        return c
    keep = (c.scores >= conf) & np.isin(c.class_ids, np.fromiter(class_ids, dtype=np.int32))
    keep &= c.areas >= min_area
    if polygon is not None and keep.any():
        contour = np.asarray(polygon, dtype=np.float32).reshape(-1, 1, 2)
        for i in np.flatnonzero(keep):
            x1, _, x2, y2 = c.xyxy[i]
            bottom_centre = (float((x1 + x2) / 2), float(y2))
            keep[i] = cv2.pointPolygonTest(contour, bottom_centre, False) >= 0
    return c.select(keep)
