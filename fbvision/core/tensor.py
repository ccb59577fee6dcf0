"""The model's input tensor from OpenCV images: BGR HWC uint8 -> RGB CHW float32 in 0..1, batched.

One function, :func:`to_tensor`, used by the inference worker (into its preallocated batch tensor, one slot per
decode thread), the lab's detector, the synthetic-data evaluator, the export verification and the benchmarks.
The scale is ``x / 255`` computed in float32 - what Ultralytics (``img.float() / 255``) and PyTorch compute, so
the tensor is bit-identical to theirs (``x * (1/255)`` differs from it by one ulp for about half the values).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_255 = np.float32(255.0)


def _as_images(images_bgr: np.ndarray | Sequence[np.ndarray]) -> Sequence[np.ndarray]:
    if isinstance(images_bgr, np.ndarray):
        if images_bgr.ndim == 3:  # one image
            return [images_bgr]
        if images_bgr.ndim == 4:  # [B, H, W, 3]
            return images_bgr
        raise ValueError(f"expected an HxWx3 image or a [B, H, W, 3] batch, got shape {images_bgr.shape}")
    return images_bgr


def to_tensor(images_bgr: np.ndarray | Sequence[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
    """BGR images -> the model input: float32 ``[B, 3, H, W]``, RGB, ``x / 255`` (0..1 for uint8 images).

    ``images_bgr``: one ``HxWx3`` image, a ``[B, H, W, 3]`` array or a sequence of ``HxWx3`` images, all the same
    size (OpenCV's BGR channel order, any real dtype; uint8 is what decoders give). ``out``: a preallocated
    float32 ``[N, 3, H, W]`` tensor with ``N >= B``; its first ``B`` slots are written in place (one
    numpy pass per image, no temporary) and returned as a view. Without ``out`` a new tensor is returned.
    Raises ``ValueError`` for an empty batch, a wrong channel count, mixed sizes or an ``out`` that does not fit.
    """
    images = _as_images(images_bgr)
    n = len(images)
    if n == 0:
        raise ValueError("to_tensor: no images")
    first = np.asarray(images[0])
    if first.ndim != 3 or first.shape[2] != 3:
        raise ValueError(f"to_tensor: expected HxWx3 BGR images, got shape {first.shape}")
    h, w = first.shape[:2]
    if out is None:
        out = np.empty((n, 3, h, w), dtype=np.float32)
    elif out.dtype != np.float32 or out.ndim != 4 or out.shape[0] < n or tuple(out.shape[1:]) != (3, h, w):
        raise ValueError(f"to_tensor: out is {out.dtype} {list(out.shape)}; expected float32 [>={n}, 3, {h}, {w}]")
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.shape != (h, w, 3):
            raise ValueError(f"to_tensor: image {i} has shape {image.shape}; expected {(h, w, 3)} like the first")
        # BGR HWC -> RGB CHW as a view, cast and divided in one pass straight into the slot (releases the GIL).
        np.divide(image[:, :, ::-1].transpose(2, 0, 1), _255, out=out[i], dtype=np.float32)
    return out[:n]
