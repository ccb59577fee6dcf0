"""to_tensor: BGR HWC images -> RGB float32 [B, 3, H, W] in 0..1, bit-identical to x / 255, in place when asked."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fbvision.core.tensor import to_tensor


def images(n=3, h=24, w=40, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def test_channel_order_is_rgb_and_layout_chw():
    img = np.zeros((4, 6, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 20, 30  # B, G, R
    img[1, 2] = (40, 50, 60)
    t = to_tensor(img)
    assert t.shape == (1, 3, 4, 6)
    np.testing.assert_array_equal(t[0, :, 0, 0] * 255, [30, 20, 10])  # R, G, B
    np.testing.assert_array_equal(t[0, :, 1, 2] * 255, [60, 50, 40])


def test_scale_is_x_over_255_exactly():
    values = np.arange(256, dtype=np.uint8)
    img = np.repeat(values[None, :, None], 3, axis=2)  # 1 x 256 x 3
    t = to_tensor(img)
    assert t.dtype == np.float32
    assert t[0, 0, 0, 0] == 0.0 and t[0, 0, 0, 255] == 1.0
    expected = values.astype(np.float32) / np.float32(255.0)
    for c in range(3):
        np.testing.assert_array_equal(t[0, c, 0], expected)  # bit-identical, not approximately


def test_same_as_cv2_reference_and_torch():
    batch = images()
    t = to_tensor(batch)
    reference = np.stack([cv2.cvtColor(i, cv2.COLOR_BGR2RGB).transpose(2, 0, 1) for i in batch]).astype(np.float32)
    np.testing.assert_array_equal(t, reference / 255.0)
    torch = pytest.importorskip("torch")
    theirs = torch.from_numpy(batch[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255  # Ultralytics' division
    np.testing.assert_array_equal(t, theirs.numpy())


@pytest.mark.parametrize("form", ["array", "list", "tuple"])
def test_batch_forms_give_the_same_tensor(form):
    batch = images()
    arg = {"array": batch, "list": list(batch), "tuple": tuple(batch)}[form]
    t = to_tensor(arg)
    assert t.shape == (3, 3, 24, 40) and t.dtype == np.float32 and t.flags.c_contiguous
    np.testing.assert_array_equal(t, to_tensor(batch))


def test_single_image_is_a_batch_of_one():
    img = images(1)[0]
    t = to_tensor(img)
    assert t.shape == (1, 3, 24, 40)
    np.testing.assert_array_equal(t, to_tensor([img]))


def test_non_contiguous_input_views():
    big = images(2, 48, 80)
    view = big[:, ::2, ::2]  # strided
    np.testing.assert_array_equal(to_tensor(view), to_tensor(np.ascontiguousarray(view)))


def test_out_buffer_is_written_in_place_and_reused():
    out = np.full((5, 3, 24, 40), -1.0, dtype=np.float32)
    first = images(3, seed=1)
    t = to_tensor(first, out=out)
    assert t.shape == (3, 3, 24, 40) and np.shares_memory(t, out) and t.base is out
    np.testing.assert_array_equal(out[:3], to_tensor(first))
    assert (out[3:] == -1.0).all()  # slots beyond the batch untouched
    second = images(2, seed=2)
    t2 = to_tensor(second, out=out)  # same buffer again: overwritten, nothing allocated for the result
    assert np.shares_memory(t2, out)
    np.testing.assert_array_equal(out[:2], to_tensor(second))
    np.testing.assert_array_equal(out[2], to_tensor(first)[2])


def test_out_slot_of_a_larger_tensor():
    """The inference worker's use: each decode thread fills one slot of the preallocated batch tensor."""
    tensor = np.zeros((4, 3, 24, 40), dtype=np.float32)
    batch = images(4, seed=3)
    for slot in (2, 0, 3, 1):
        to_tensor(batch[slot], out=tensor[slot : slot + 1])
    np.testing.assert_array_equal(tensor, to_tensor(batch))


@pytest.mark.parametrize(
    "out",
    [
        np.empty((3, 3, 24, 40), np.float64),  # dtype
        np.empty((2, 3, 24, 40), np.float32),  # too few slots
        np.empty((3, 3, 40, 24), np.float32),  # H and W swapped
        np.empty((3, 24, 40, 3), np.float32),  # HWC
    ],
)
def test_out_that_does_not_fit_is_rejected(out):
    with pytest.raises(ValueError, match="out"):
        to_tensor(images(), out=out)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="no images"):
        to_tensor([])
    with pytest.raises(ValueError, match="HxWx3"):
        to_tensor(np.zeros((8, 8), np.uint8))  # greyscale
    with pytest.raises(ValueError, match="HxWx3"):
        to_tensor([np.zeros((8, 8, 4), np.uint8)])  # BGRA
    with pytest.raises(ValueError, match="image 1"):
        to_tensor([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)])
