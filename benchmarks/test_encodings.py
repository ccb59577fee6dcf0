"""Frame encodings side by side (wire v2: ``jpeg`` q85 vs ``raw`` uint8 HxWx3): bytes per frame, Redis throughput,
CPU per frame (encode + decode, as the camera manager and the inference worker do them) and box agreement with the
unencoded path on the demo model.

    .venv/bin/python -m benchmarks.test_encodings [--frames 48] [--redis-frames 3000]   # the table
    pytest benchmarks/test_encodings.py                                               # smoke pass (quick)

Frames: the demo's synthetic scenes (:mod:`fbvision.synth`), letterboxed to the model input (320x320). Box
agreement: the demo model (``models/horse-demo-yolo11n-320.onnx``, ONNX Runtime CPU) on the letterboxed image as
rendered (the unencoded path) and on what inference gets after each encoding; detections are the candidates at
score >= 0.25 after class-agnostic NMS (IoU 0.45), and each unencoded box is matched to the best-overlapping box of
the same frame: median IoU, the share of boxes below 0.95 IoU, boxes lost or gained. Redis throughput: push (4 per
round trip, once ids, as the camera manager) and pop (up to 32, as the inference worker) through a private
redis-server, one thread each, frames/s and MB/s.
"""

from __future__ import annotations

import argparse
import threading
import time

import cv2
import numpy as np
import pytest

from benchmarks import common
from benchmarks.aof_cost import synthetic_images
from fbvision.core.config import DEMO_MODEL
from fbvision.core.letterbox import Letterbox
from fbvision.core.tensor import to_tensor
from fbvision.core.transport import Transport, message_id, new_token
from fbvision.core.wire import FrameMessage, decode_frame, encode_frame
from fbvision.inference.decode import decode_image, decode_yolo
from fbvision.run.redis_server import EmbeddedRedis

SIZE = 320
ENCODINGS = ("jpeg", "raw")
JPEG_QUALITY = 85


def encode(image: np.ndarray, encoding: str) -> bytes:
    """What the camera manager does after the letterbox."""
    if encoding == "raw":
        return np.ascontiguousarray(image).tobytes()
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()


def message(image: np.ndarray, encoding: str, seq: int = 0) -> FrameMessage:
    now = time.time()
    return FrameMessage("cam-000", seq, now, now, Letterbox(960, 540, SIZE, SIZE, 1 / 3, 0.0, 70.0), encode(image, encoding),
                        encoding)


def cpu_per_frame(images: list[np.ndarray], encoding: str, repeat: int = 3) -> dict:
    """CPU ms per frame (process time, one thread): encode, then wire decode + image decode + tensor, as inference."""
    tensor = np.empty((1, 3, SIZE, SIZE), np.float32)
    enc = dec = 0.0
    n = 0
    for _ in range(repeat):
        for i, image in enumerate(images):
            t0 = time.process_time()
            data = encode_frame(message(image, encoding, i))
            t1 = time.process_time()
            to_tensor(decode_image(decode_frame(data), SIZE, SIZE), out=tensor)
            t2 = time.process_time()
            enc += t1 - t0
            dec += t2 - t1
            n += 1
    return {"encode_ms": 1000 * enc / n, "decode_ms": 1000 * dec / n, "cpu_ms": 1000 * (enc + dec) / n}


def redis_throughput(payloads: list[bytes], url: str, n: int, per_push: int = 4) -> dict:
    """Push and pop ``n`` frames through Redis as fast as one pusher and one popper go."""
    pusher = Transport(url, frame_queue_cap=100_000)
    popper = Transport(url, frame_queue_cap=100_000)
    popper.client.delete(popper.keys.frames)
    got = [0]
    run = new_token()  # once ids of this run only (a previous run's would make these pushes duplicates)
    deadline = time.monotonic() + 120

    def pop() -> None:
        while got[0] < n and time.monotonic() < deadline:
            got[0] += len(popper.pop_frames(32, 0.2))

    thread = threading.Thread(target=pop, daemon=True)
    t0 = time.perf_counter()
    thread.start()
    for start in range(0, n, per_push):
        batch = payloads[start % len(payloads): start % len(payloads) + per_push] or payloads[:per_push]
        pusher.push_frames(batch, once=[message_id(f"cam-{run}", start + k, 1.0) for k in range(len(batch))])
    thread.join(120)
    elapsed = time.perf_counter() - t0
    pusher.close()
    popper.close()
    mean = float(np.mean([len(p) for p in payloads]))
    return {"redis_frames_per_s": got[0] / elapsed, "redis_mb_per_s": got[0] * mean / elapsed / 1e6}


def _detections(engine, images: list[np.ndarray]) -> list[np.ndarray]:
    box = Letterbox(SIZE, SIZE, SIZE, SIZE, 1.0, 0.0, 0.0)
    out = []
    for image in images:
        cand = decode_yolo(engine.infer(to_tensor(image)), [box], None, 0.25, 100)[0]
        xywh = [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in cand.xyxy.tolist()]
        keep = cv2.dnn.NMSBoxes(xywh, cand.scores.tolist(), 0.25, 0.45) if len(xywh) else []
        out.append(cand.xyxy[np.asarray(keep, int).reshape(-1)])
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def box_agreement(engine, images: list[np.ndarray], encoding: str) -> dict:
    """Boxes on the unencoded images vs boxes after ``encoding`` (through the wire and the worker's decode)."""
    received = [decode_image(decode_frame(encode_frame(message(im, encoding))), SIZE, SIZE) for im in images]
    ref, got = _detections(engine, images), _detections(engine, received)
    ious, lost, gained = [], 0, 0
    for a, b in zip(ref, got, strict=True):
        if len(a) and len(b):
            best = _iou(a, b).max(axis=1)
            ious += best.tolist()
            lost += int((best < 0.5).sum())
            gained += max(0, len(b) - int((_iou(b, a).max(axis=1) >= 0.5).sum()))
        else:
            lost += len(a)
            ious += [0.0] * len(a)
            gained += len(b)
    ious_arr = np.asarray(ious) if ious else np.zeros(0)
    return {"boxes": len(ious), "median_iou": float(np.median(ious_arr)) if len(ious_arr) else None,
            "share_below_0.95": float((ious_arr < 0.95).mean()) if len(ious_arr) else None,
            "boxes_lost": lost, "boxes_gained": gained}


def measure(encoding: str, images: list[np.ndarray], url: str, redis_frames: int, engine=None) -> dict:
    payloads = [encode_frame(message(im, encoding, i)) for i, im in enumerate(images)]
    row = {"encoding": encoding, "bytes_per_frame": float(np.mean([len(p) for p in payloads])),
           **cpu_per_frame(images, encoding), **redis_throughput(payloads, url, redis_frames)}
    if engine is not None:
        row.update(box_agreement(engine, images, encoding))
    return row


def demo_engine():
    from fbvision.inference.engines.ort import OrtEngine

    return OrtEngine(DEMO_MODEL, providers=["cpu"], intra_op_threads=1) if DEMO_MODEL.is_file() else None


def format_rows(rows: list[dict]) -> str:
    cols = [("encoding", "{}"), ("bytes_per_frame", "{:.0f}"), ("encode_ms", "{:.2f}"), ("decode_ms", "{:.2f}"),
            ("cpu_ms", "{:.2f}"), ("redis_frames_per_s", "{:.0f}"), ("redis_mb_per_s", "{:.0f}"), ("boxes", "{}"),
            ("median_iou", "{:.4f}"), ("share_below_0.95", "{:.3f}"), ("boxes_lost", "{}"), ("boxes_gained", "{}")]
    lines = ["| " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join("" if r.get(c) is None else f.format(r[c]) for c, f in cols) + " |")
    return "\n".join(lines)


# -- the pytest-benchmark suite (smoke pass: a few frames) ----------------------------------------------------------


@pytest.fixture(scope="module")
def images(prof) -> list[np.ndarray]:
    return synthetic_images(8 if prof.quick else 48, SIZE)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_encodings(benchmark, encoding, images, bench_redis, prof):
    engine = demo_engine()
    row = benchmark.pedantic(measure, args=(encoding, images, bench_redis.url, 200 if prof.quick else 3000),
                             kwargs={"engine": engine}, rounds=1, iterations=1)
    print("\n" + format_rows([row]))
    if encoding == "raw":
        assert row["bytes_per_frame"] >= SIZE * SIZE * 3
        if engine is not None:  # the same pixels: the same boxes, exactly
            assert row["median_iou"] in (None, 1.0) and row["boxes_lost"] == 0 and row["boxes_gained"] == 0
    benchmark.extra_info.update(kind="encodings", quick=common.quick_mode(),
                                **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description="frame encodings side by side")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--redis-frames", type=int, default=3000)
    args = parser.parse_args(argv)
    imgs = synthetic_images(args.frames, SIZE)
    engine = demo_engine()
    with EmbeddedRedis(maxmemory_mb=2048) as server:
        rows = [measure(e, imgs, server.url, args.redis_frames, engine) for e in ENCODINGS]
    print(format_rows(rows))
    return rows


if __name__ == "__main__":
    main()
