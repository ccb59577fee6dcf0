"""Micro-benchmarks of the per-frame steps, each on one frame (640² letterboxed synthetic stall, JPEG q85).

Producer: letterbox, JPEG encode, wire encode. Redis: push + pop of one frame message, XADD of one result.
Inference worker: wire decode, JPEG decode, tensor (BGR HWC uint8 -> RGB CHW float32), head decode
(``decode_yolo`` on a [1, 84, 8400] head with 100 candidates over the floor). Logic: NMS of 100 candidates.

One more: a blocking pop with a 5 ms timeout on an empty queue - the batcher relies on BLPOP timeouts to bound
its wait (max_wait_ms), and Redis resolves blocking timeouts only every 1000/hz ms (hz 10: 100 ms).
"""

from __future__ import annotations

import itertools
import time

import cv2
import numpy as np
import pytest

from benchmarks import common
from fbvision.core.letterbox import Letterbox, letterbox
from fbvision.core.tensor import to_tensor
from fbvision.core.transport import Transport, message_id
from fbvision.core.wire import (
    ResultMessage,
    Timeline,
    decode_frame,
    decode_result,
    encode_frame,
    encode_result,
)
from fbvision.inference.decode import decode_yolo
from fbvision.logic.filters import apply_nms

pytestmark = [pytest.mark.bench, pytest.mark.timeout(600)]

SIDE = 640
HORSE = 17


@pytest.fixture(scope="module")
def frame():
    """(source image, letterboxed image, geometry, jpeg bytes, FrameMessage)."""
    source = common.stall_images(1, seed=23)[0]
    boxed, box = letterbox(source, (SIDE, SIDE))
    message = common.frame_messages(1, SIDE, seed=23)[0]
    return source, boxed, box, message.jpeg, message


@pytest.fixture(scope="module")
def head():
    """A YOLO head [1, 84, 8400] with 100 anchors scoring over the 0.05 floor for 'horse' (as a busy stall has)."""
    rng = np.random.default_rng(5)
    out = np.zeros((1, 84, 8400), dtype=np.float32)
    out[0, 0] = rng.uniform(0, SIDE, 8400)
    out[0, 1] = rng.uniform(0, SIDE, 8400)
    out[0, 2:4] = rng.uniform(20, 200, (2, 8400))
    out[0, 4:] = rng.uniform(0, 0.04, (80, 8400))
    hot = rng.choice(8400, 100, replace=False)
    out[0, 4 + HORSE, hot] = rng.uniform(0.05, 0.95, 100)
    # Clustered boxes around 3 horses so NMS has work to do.
    centres = np.array([[160, 300], [330, 320], [500, 280]], np.float32)
    out[0, 0:2, hot] = centres[np.arange(100) % 3] + rng.normal(0, 12, (100, 2))  # advanced index: (100, 2)
    return out


@pytest.fixture(scope="module")
def micro_transport(bench_redis):
    import redis

    client = redis.Redis.from_url(bench_redis.url)
    client.flushall()
    client.close()
    transport = Transport(bench_redis.url, frame_queue_cap=1000)
    yield transport
    transport.close()


def _run(benchmark, prof, fn, *, what: str, iterations: int = 5):
    rounds = prof.micro_rounds if not prof.quick else 3
    benchmark.pedantic(fn, rounds=rounds, iterations=iterations, warmup_rounds=1)
    benchmark.extra_info.update(kind="micro", step=what, per="frame", imgsz=SIDE)


def test_letterbox(benchmark, prof, frame):
    source = frame[0]
    _run(benchmark, prof, lambda: letterbox(source, (SIDE, SIDE)),
         what=f"letterbox {source.shape[1]}x{source.shape[0]} -> {SIDE}x{SIDE}")


def test_jpeg_encode(benchmark, prof, frame):
    boxed = frame[1]
    params = [cv2.IMWRITE_JPEG_QUALITY, 85]
    _run(benchmark, prof, lambda: cv2.imencode(".jpg", boxed, params), what=f"JPEG encode {SIDE}x{SIDE} q85")
    benchmark.extra_info["jpeg_bytes"] = len(frame[3])


def test_wire_encode_frame(benchmark, prof, frame):
    message = frame[4]
    _run(benchmark, prof, lambda: encode_frame(message), what="wire encode frame message", iterations=20)


def test_redis_frame_hop(benchmark, prof, frame, micro_transport):
    payload = encode_frame(frame[4])
    seq = itertools.count()

    def hop():  # as the camera manager pushes: with the frame's once id (each push a new frame)
        n = next(seq)
        micro_transport.push_frames([payload], once=[message_id("bench", n, float(n))], token="bench")
        got = micro_transport.pop_frames(1, 1.0)
        assert got

    _run(benchmark, prof, hop, what="Redis hop: push + pop one frame message (Lua capped push with once key, BLPOP)")
    benchmark.extra_info["bytes"] = len(payload)


def test_wire_decode_frame(benchmark, prof, frame):
    payload = encode_frame(frame[4])
    _run(benchmark, prof, lambda: decode_frame(payload), what="wire decode frame message", iterations=20)


def test_jpeg_decode(benchmark, prof, frame):
    jpeg = np.frombuffer(frame[3], dtype=np.uint8)
    _run(benchmark, prof, lambda: cv2.imdecode(jpeg, cv2.IMREAD_COLOR), what=f"JPEG decode {SIDE}x{SIDE}")


def test_to_tensor(benchmark, prof, frame):
    image = frame[1]
    out = np.empty((1, 3, SIDE, SIDE), dtype=np.float32)
    _run(benchmark, prof, lambda: to_tensor(image, out=out), what="tensor: BGR HWC uint8 -> RGB CHW float32 0..1")


def test_decode_yolo(benchmark, prof, frame, head):
    box = frame[2]
    _run(benchmark, prof, lambda: decode_yolo(head, [box], [HORSE], 0.05, 100),
         what="head decode [1,84,8400] -> 100 candidates (class subset, floor, top-k, to source px)")


def test_wire_result_and_xadd(benchmark, prof, frame, head, micro_transport):
    box: Letterbox = frame[2]
    c = decode_yolo(head, [box], [HORSE], 0.05, 100)[0]
    now = time.time()
    msg = ResultMessage("cam-00", 1, box.src_w, box.src_h, Timeline(now, now, now, now, now, now), 1,
                        c.xyxy, c.scores, c.class_ids)

    def publish():
        micro_transport.publish_results([("cam-00", encode_result(msg))])

    _run(benchmark, prof, publish, what="wire encode result (100 boxes) + XADD to its partition")


def test_wire_decode_result(benchmark, prof, frame, head):
    box = frame[2]
    c = decode_yolo(head, [box], [HORSE], 0.05, 100)[0]
    now = time.time()
    payload = encode_result(ResultMessage("cam-00", 1, box.src_w, box.src_h, Timeline(now, now, now, now, now, now),
                                          1, c.xyxy, c.scores, c.class_ids))
    _run(benchmark, prof, lambda: decode_result(payload), what="wire decode result (100 boxes)", iterations=20)


def test_nms(benchmark, prof, frame, head):
    c = decode_yolo(head, [frame[2]], [HORSE], 0.05, 100)[0]
    _run(benchmark, prof, lambda: apply_nms(c, 0.5), what="NMS, 100 candidates (OpenCV NMSBoxesBatched)",
         iterations=20)
    benchmark.extra_info["kept"] = len(apply_nms(c, 0.5))


def test_blocking_pop_timeout_resolution(benchmark, prof, micro_transport, bench_redis):
    """Not a per-frame cost: how long a 5 ms blocking pop on an empty queue really takes."""
    import redis

    client = redis.Redis.from_url(bench_redis.url)
    hz = client.config_get("hz").get("hz")
    client.close()
    benchmark.pedantic(lambda: micro_transport.pop_frames(2, 0.005), rounds=3 if prof.quick else 10, iterations=1)
    benchmark.extra_info.update(kind="micro", step=f"BLPOP on an empty queue, 5 ms timeout (redis hz {hz})",
                                per="call", redis_hz=hz)
