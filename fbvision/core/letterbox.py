"""Letterbox a camera frame to the model's input size, and map boxes back.

Matches Ultralytics' ``LetterBox`` (centred padding, ``scale = min(dst_w/src_w, dst_h/src_h)``, each side
of the resized image rounded, padding split with the same ``round(d -/+ 0.1)`` rule) so a model trained or
validated with Ultralytics sees the same pixels here. The camera manager calls :func:`letterbox` on every frame;
the inference worker calls :meth:`Letterbox.to_source` on every candidate box.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Letterbox:
    """How one source frame was placed into the model input (all in pixels)."""

    src_w: int
    src_h: int
    dst_w: int
    dst_h: int
    scale: float
    pad_x: float
    pad_y: float

    @property
    def resized_w(self) -> int:
        """Width of the resized (unpadded) image inside the model input."""
        return max(round(self.src_w * self.scale), 1)

    @property
    def resized_h(self) -> int:
        """Height of the resized (unpadded) image inside the model input."""
        return max(round(self.src_h * self.scale), 1)

    def to_source(self, xyxy: np.ndarray) -> np.ndarray:
        """Map ``[n, 4]`` boxes in model-input pixels to source pixels, clipped to the source frame.

        Uses the per-axis gain of the rounded resize (as Ultralytics' ``scale_boxes`` does), so a box on the
        image's edge maps exactly onto the source's edge.
        """
        boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
        gain_x = self.resized_w / self.src_w
        gain_y = self.resized_h / self.src_h
        offset = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], dtype=np.float32)
        gain = np.array([gain_x, gain_y, gain_x, gain_y], dtype=np.float32)
        out = (boxes - offset) / gain
        np.clip(out[:, 0::2], 0.0, float(self.src_w), out=out[:, 0::2])
        np.clip(out[:, 1::2], 0.0, float(self.src_h), out=out[:, 1::2])
        return out

    def to_model(self, xyxy: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_source` (no clipping): source pixels to model-input pixels."""
        boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
        gain_x = self.resized_w / self.src_w
        gain_y = self.resized_h / self.src_h
        return boxes * np.array([gain_x, gain_y, gain_x, gain_y], dtype=np.float32) + np.array(
            [self.pad_x, self.pad_y, self.pad_x, self.pad_y], dtype=np.float32
        )


def compute_letterbox(src_size: tuple[int, int], dst_size: tuple[int, int]) -> Letterbox:
    """The :class:`Letterbox` geometry for a ``(w, h)`` source placed into a ``(w, h)`` model input."""
    src_w, src_h = int(src_size[0]), int(src_size[1])
    dst_w, dst_h = int(dst_size[0]), int(dst_size[1])
    if min(src_w, src_h, dst_w, dst_h) <= 0:
        raise ValueError(f"letterbox sizes must be positive, got src={src_size} dst={dst_size}")
    scale = min(dst_w / src_w, dst_h / src_h)
    new_w, new_h = max(round(src_w * scale), 1), max(round(src_h * scale), 1)
    # Same split as Ultralytics: the odd pixel goes to the right/bottom.
    pad_x = round((dst_w - new_w) / 2 - 0.1)
    pad_y = round((dst_h - new_h) / 2 - 0.1)
    return Letterbox(src_w, src_h, dst_w, dst_h, float(scale), float(pad_x), float(pad_y))


def letterbox(
    image: np.ndarray, dst_size: tuple[int, int], color: tuple[int, int, int] = (114, 114, 114)
) -> tuple[np.ndarray, Letterbox]:
    """Resize ``image`` (HxW or HxWxC) into ``dst_size`` = ``(w, h)`` keeping its aspect, pad the rest.

    Returns the padded image (same dtype and channel count) and the geometry to map boxes back.
    Greyscale (infrared night) frames stay single-channel.
    """
    src_h, src_w = image.shape[:2]
    box = compute_letterbox((src_w, src_h), dst_size)
    new_w, new_h = box.resized_w, box.resized_h
    resized = image
    if (src_w, src_h) != (new_w, new_h):
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    left, top = int(box.pad_x), int(box.pad_y)
    right, bottom = box.dst_w - new_w - left, box.dst_h - new_h - top
    out = cv2.copyMakeBorder(resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    if image.ndim == 3 and out.ndim == 2:  # cv2 drops a trailing channel axis of size 1
        out = out[..., None]
    return out, box
