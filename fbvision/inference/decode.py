"""Decoding on the inference worker: a frame's image (JPEG or raw, :func:`decode_image`), and the raw YOLO head
(confidence floor, class subset, top-k, boxes in source coordinates, :func:`decode_yolo`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np

from fbvision.core.candidates import Candidates
from fbvision.core.letterbox import Letterbox
from fbvision.core.wire import FrameMessage
from fbvision.inference.jpeg import JpegHeaderError, jpeg_size

logger = logging.getLogger(__name__)


class FrameRefused(ValueError):
    """A frame whose image cannot go into the model: ``reason`` (the drop counter's name: ``bad_size``,
    ``corrupt``) and a human ``detail``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode_image(frame: FrameMessage, input_w: int, input_h: int) -> np.ndarray:
    """The frame's letterboxed image as uint8 ``input_h x input_w x 3`` BGR, or :class:`FrameRefused`.

    ``jpeg``: the header is checked first - a JPEG declaring another size than the model input (a JPEG bomb) is
    refused before ``cv2.imdecode`` allocates for it. ``raw``: no decoding at all; the image must be exactly
    ``input_h x input_w x 3`` bytes (a read-only view of the message's bytes is returned, no copy)."""
    model = f"model {input_w}x{input_h}"
    if (frame.input_w, frame.input_h) != (input_w, input_h):
        raise FrameRefused("bad_size", f"input {frame.input_w}x{frame.input_h}, {model}")
    data = frame.jpeg
    if frame.encoding == "raw":
        if len(data) != input_w * input_h * 3:
            raise FrameRefused("bad_size", f"raw image of {len(data)} bytes, {model} needs {input_w * input_h * 3}")
        return np.frombuffer(data, dtype=np.uint8).reshape(input_h, input_w, 3)
    if frame.encoding != "jpeg":
        raise FrameRefused("corrupt", f"unknown encoding {frame.encoding!r}")
    try:
        width, height = jpeg_size(data)
    except JpegHeaderError as exc:
        raise FrameRefused("corrupt", f"no readable JPEG header ({exc})") from None
    if (width, height) != (input_w, input_h):
        raise FrameRefused("bad_size", f"JPEG header says {width}x{height}, {model}; not decoded")
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise FrameRefused("corrupt", f"JPEG could not be decoded ({exc})") from None
    if image is None:
        raise FrameRefused("corrupt", "JPEG could not be decoded")
    if image.shape[:2] != (input_h, input_w):
        raise FrameRefused("bad_size", f"decoded {image.shape[1]}x{image.shape[0]}, {model}")
    return image


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


