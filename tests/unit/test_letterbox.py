"""Letterbox: same pixels and geometry as Ultralytics, exact inverse for boxes."""

from __future__ import annotations

import numpy as np
import pytest

from fbvision.core.letterbox import Letterbox, compute_letterbox, letterbox

SIZES = [
    pytest.param((1920, 1080), (640, 640), id="1080p"),
    pytest.param((640, 480), (640, 640), id="vga"),
    pytest.param((1280, 720), (640, 384), id="rect-input"),
    pytest.param((333, 517), (640, 640), id="odd-portrait-upscale"),
    pytest.param((640, 640), (640, 640), id="no-resize"),
]


def image(size, channels=3, seed=0):
    w, h = size
    shape = (h, w) if channels == 1 else (h, w, channels)
    return np.random.default_rng(seed).integers(0, 255, size=shape, dtype=np.uint8)


@pytest.mark.parametrize(("src", "dst"), SIZES)
def test_same_pixels_as_ultralytics(src, dst):
    augment = pytest.importorskip("ultralytics.data.augment", reason="ultralytics is in the export extra")
    img = image(src)
    ours, box = letterbox(img, dst)
    theirs = augment.LetterBox(new_shape=(dst[1], dst[0]), auto=False, scaleup=True)(image=img)
    assert ours.shape == theirs.shape == (dst[1], dst[0], 3)
    np.testing.assert_array_equal(ours, theirs)
    assert (box.src_w, box.src_h, box.dst_w, box.dst_h) == (*src, *dst)


@pytest.mark.parametrize(("src", "dst"), SIZES)
def test_boxes_map_back_like_ultralytics_scale_boxes(src, dst):
    ops = pytest.importorskip("ultralytics.utils.ops", reason="ultralytics is in the export extra")
    box = compute_letterbox(src, dst)
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, min(dst), size=(20, 2))
    model_boxes = np.concatenate([xy, xy + rng.uniform(1, 200, size=(20, 2))], axis=1).astype(np.float32)
    theirs = ops.scale_boxes((dst[1], dst[0]), model_boxes.copy(), (src[1], src[0]))
    np.testing.assert_allclose(box.to_source(model_boxes), theirs, atol=1e-3)


@pytest.mark.parametrize(("src", "dst"), SIZES)
def test_round_trip_and_clipping(src, dst):
    box = compute_letterbox(src, dst)
    w, h = src
    source_boxes = np.array([[0, 0, w, h], [w * 0.2, h * 0.3, w * 0.6, h * 0.9]], dtype=np.float32)
    np.testing.assert_allclose(box.to_source(box.to_model(source_boxes)), source_boxes, atol=1e-2)
    outside = np.array([[-50, -50, w + 50, h + 50]], dtype=np.float32)
    np.testing.assert_allclose(box.to_source(box.to_model(outside)), [[0, 0, w, h]], atol=1e-3)


def test_padding_is_centred_and_coloured():
    out, box = letterbox(np.zeros((100, 200, 3), np.uint8), (200, 200), color=(1, 2, 3))
    assert box == Letterbox(200, 100, 200, 200, 1.0, 0.0, 50.0)
    assert (
        tuple(out[0, 0]) == (1, 2, 3) and tuple(out[50, 0]) == (0, 0, 0) and tuple(out[150, 0]) == (1, 2, 3)
    )


def test_greyscale_night_frame_stays_single_channel():
    out, _ = letterbox(image((320, 240), channels=1), (640, 640))
    assert out.shape == (640, 640) and out[0, 0] == 114
    out3, _ = letterbox(image((320, 240))[..., :1], (640, 640))
    assert out3.shape == (640, 640, 1)


def test_rejects_empty_sizes():
    with pytest.raises(ValueError):
        compute_letterbox((0, 10), (640, 640))
