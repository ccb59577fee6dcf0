"""The logic stage's first step: NMS and thresholds on the inference worker's candidates."""

from __future__ import annotations

import logging
from collections.abc import Collection

import cv2
import numpy as np

from fbvision.core.candidates import Candidates

logger = logging.getLogger(__name__)


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
    wanted = np.fromiter(class_ids, dtype=np.int32)
    # (a broadcast compare: np.isin's set machinery costs ~0.2 ms a frame for the one or two classes kept here)
    keep = (c.scores >= conf) & (c.class_ids[:, None] == wanted[None, :]).any(axis=1)
    keep &= c.areas >= min_area
    if polygon is not None and keep.any():
        contour = np.asarray(polygon, dtype=np.float32).reshape(-1, 1, 2)
        for i in np.flatnonzero(keep):
            x1, _, x2, y2 = c.xyxy[i]
            bottom_centre = (float((x1 + x2) / 2), float(y2))
            keep[i] = cv2.pointPolygonTest(contour, bottom_centre, False) >= 0
    return c.select(keep)
