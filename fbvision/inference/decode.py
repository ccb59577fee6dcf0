"""Decoding the raw YOLO head on the inference worker: confidence floor, class subset, top-k, boxes in source coordinates."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from fbvision.core.candidates import Candidates
from fbvision.core.letterbox import Letterbox

logger = logging.getLogger(__name__)


logger = logging.getLogger(__name__)


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


