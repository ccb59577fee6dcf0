"""YOLO head decode, class-aware NMS (against torchvision) and the final filters."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fbvision.core.candidates import Candidates, class_ids_by_name
from fbvision.core.letterbox import compute_letterbox
from fbvision.inference.decode import decode_yolo
from fbvision.logic.filters import apply_nms, filter_candidates

HORSE = 17


def head(batch: int, n_classes: int, anchors: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros((batch, 4 + n_classes, anchors), dtype=np.float32)
    out[:, 0:2] = rng.uniform(50, 590, size=(batch, 2, anchors))
    out[:, 2:4] = rng.uniform(5, 100, size=(batch, 2, anchors))
    out[:, 4:] = rng.uniform(0, 0.2, size=(batch, n_classes, anchors)) ** 2  # mostly background
    return out


def reference_decode(output, letterbox, class_ids, conf_floor, top_k):
    """Straightforward per-anchor loop, written independently of the vectorised decode."""
    rows = []
    classes = range(output.shape[0] - 4) if class_ids is None else class_ids
    for a in range(output.shape[1]):
        best = max(classes, key=lambda c: output[4 + c, a])
        score = output[4 + best, a]
        if score >= conf_floor:
            cx, cy, w, h = output[:4, a]
            rows.append((score, best, [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]))
    rows.sort(key=lambda r: -r[0])
    rows = rows[:top_k]
    if not rows:
        return Candidates.empty()
    boxes = letterbox.to_source(np.array([r[2] for r in rows]))
    return Candidates.create(boxes, [r[0] for r in rows], [r[1] for r in rows])


@pytest.mark.parametrize(
    ("class_ids", "conf_floor", "top_k"),
    [
        pytest.param(None, 0.02, 50, id="all-classes"),
        pytest.param([HORSE], 0.01, 10, id="horse-only-topk"),
        pytest.param([HORSE, 0], 0.02, 1000, id="subset"),
        pytest.param([HORSE], 0.99, 10, id="nothing-above-floor"),
    ],
)
def test_decode_matches_reference(class_ids, conf_floor, top_k):
    rng = np.random.default_rng(0)
    output = head(3, 80, 400, rng)
    output[1, 4 + HORSE, 7] = 0.9  # a clear horse in image 1
    boxes = [
        compute_letterbox((1920, 1080), (640, 640)),
        compute_letterbox((640, 480), (640, 640)),
        compute_letterbox((1280, 720), (640, 640)),
    ]
    got = decode_yolo(output, boxes, class_ids, conf_floor, top_k)
    assert len(got) == 3
    for b in range(3):
        want = reference_decode(output[b], boxes[b], class_ids, conf_floor, top_k)
        assert len(got[b]) == len(want)
        np.testing.assert_allclose(got[b].scores, want.scores)
        np.testing.assert_array_equal(got[b].class_ids, want.class_ids)
        np.testing.assert_allclose(got[b].xyxy, want.xyxy, atol=1e-3)
        assert got[b].xyxy.dtype == np.float32 and got[b].class_ids.dtype == np.int32


def test_decode_rejects_bad_input():
    lb = compute_letterbox((640, 640), (640, 640))
    with pytest.raises(ValueError):
        decode_yolo(np.zeros((2, 84, 10), np.float32), [lb], None, 0.1, 10)
    with pytest.raises(ValueError):
        decode_yolo(np.zeros((1, 84, 10), np.float32), [lb], [80], 0.1, 10)


def test_decode_full_batch_is_fast():
    rng = np.random.default_rng(1)
    output = rng.random((32, 84, 8400), dtype=np.float32) * 0.05
    boxes = [compute_letterbox((1920, 1080), (640, 640))] * 32
    decode_yolo(output, boxes, [HORSE], 0.01, 100)  # warm-up
    start = time.perf_counter()
    results = decode_yolo(output, boxes, None, 0.01, 100)
    elapsed = time.perf_counter() - start
    assert all(len(r) == 100 for r in results)
    assert elapsed < 1.0, f"decode of a 32-image batch took {elapsed:.3f} s"


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("iou", [0.3, 0.5, 0.7])
def test_nms_matches_torchvision_batched_nms(seed, iou):
    torch = pytest.importorskip("torch", reason="torch is in the export extra")
    ops = pytest.importorskip("torchvision.ops", reason="torchvision is in the export extra")
    rng = np.random.default_rng(seed)
    n = 60
    centres = rng.uniform(150, 230, size=(n, 2))
    sizes = rng.uniform(40, 120, size=(n, 2))
    xyxy = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1).astype(np.float32)
    scores = rng.permutation(np.linspace(0.1, 0.99, n)).astype(np.float32)  # distinct: no tie order issue
    classes = rng.integers(0, 3, size=n).astype(np.int32)
    got = apply_nms(Candidates.create(xyxy, scores, classes), iou)
    keep = ops.batched_nms(torch.from_numpy(xyxy), torch.from_numpy(scores), torch.from_numpy(classes), iou)
    np.testing.assert_array_equal(got.xyxy, xyxy[keep.numpy()])
    assert 0 < len(got) < n  # the case is not trivial


def test_nms_is_class_aware_and_handles_empty():
    same_box = [(0, 0, 100, 100), (1, 1, 100, 100)]
    assert len(apply_nms(Candidates.create(same_box, [0.9, 0.8], [HORSE, HORSE]), 0.5)) == 1
    assert len(apply_nms(Candidates.create(same_box, [0.9, 0.8], [HORSE, 0]), 0.5)) == 2
    assert len(apply_nms(Candidates.empty(), 0.5)) == 0


STALL = np.array([(100, 100), (900, 100), (900, 700), (100, 700)], dtype=np.float32)


@pytest.mark.parametrize(
    ("box", "score", "cls", "polygon", "kept"),
    [
        pytest.param((200, 200, 500, 500), 0.9, HORSE, None, True, id="horse"),
        pytest.param((200, 200, 500, 500), 0.2, HORSE, None, False, id="below-conf"),
        pytest.param((200, 200, 500, 500), 0.9, 0, None, False, id="other-class"),
        pytest.param((200, 200, 220, 220), 0.9, HORSE, None, False, id="too-small"),
        pytest.param((200, 200, 500, 500), 0.9, HORSE, STALL, True, id="inside-stall"),
        pytest.param((950, 200, 1200, 500), 0.9, HORSE, STALL, False, id="next-stall"),
        pytest.param((50, 200, 350, 700), 0.9, HORSE, STALL, True, id="bottom-centre-on-edge"),
        pytest.param((300, 500, 600, 710), 0.9, HORSE, STALL, False, id="feet-outside-in-aisle"),
    ],
)
def test_filter_table(box, score, cls, polygon, kept):
    c = Candidates.create([box], [score], [cls])
    out = filter_candidates(c, conf=0.3, class_ids={HORSE}, min_area=1000.0, polygon=polygon)
    assert len(out) == int(kept)


def test_candidates_validate_shapes():
    with pytest.raises(ValueError):
        Candidates(np.zeros((2, 4), np.float32), np.zeros(3, np.float32), np.zeros(3, np.int32))


@pytest.mark.parametrize(
    ("names", "wanted", "expected"),
    [
        pytest.param({0: "person", 17: "horse"}, ["horse"], [17], id="mapping"),
        pytest.param(["horse", "foal"], ["foal", "horse"], [0, 1], id="list"),
        pytest.param({0: "person"}, ["horse"], ValueError, id="no-horse-class"),
    ],
)
def test_class_ids_by_name(names, wanted, expected):
    if expected is ValueError:
        with pytest.raises(ValueError, match="horse"):
            class_ids_by_name(names, wanted)
    else:
        assert class_ids_by_name(names, wanted) == expected
