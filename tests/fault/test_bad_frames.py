"""One bad frame drops one frame: JPEG bombs (a header declaring 65500x65500, past OpenCV's pixel limit, where
``imdecode`` raised inside the decode pool and took the whole batch with it; 20000x20000, which OpenCV would
decode into 1.2 GB over seconds), a valid header larger than the declared input, and garbage - all in ONE batch
with good frames of other cameras. A real inference worker (the demo model, CPU) against a real redis-server.
"""

from __future__ import annotations

import struct
import threading
import time

import cv2
import fbv_fault_harness as h
import numpy as np
import pytest

from fbvision.core.config import InferenceConfig, ModelConfig
from fbvision.core.letterbox import Letterbox
from fbvision.core.modelinfo import load_model_info
from fbvision.core.transport import Transport
from fbvision.core.wire import FrameMessage, decode_result, encode_frame
from fbvision.inference.jpeg import JpegHeaderError, jpeg_size
from fbvision.inference.worker import InferenceWorker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _with_header_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its baseline frame header (SOF0) declaring another size: what a bomb looks like."""
    i = jpeg.index(b"\xff\xc0")
    return jpeg[: i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9 :]


def _frame(camera_id: str, seq: int, size: tuple[int, int], jpeg: bytes) -> bytes:
    w, h_ = size
    now = time.time()
    return encode_frame(FrameMessage(camera_id, seq, now, now, Letterbox(w, h_, w, h_, 1.0, 0.0, 0.0), jpeg))


def test_jpeg_header_is_read_without_decoding():
    good = cv2.imencode(".jpg", np.zeros((48, 64, 3), np.uint8))[1].tobytes()
    assert jpeg_size(good) == (64, 48)
    assert jpeg_size(_with_header_size(good, 640, 480)) == (640, 480)
    assert jpeg_size(_with_header_size(good, 65500, 65500)) == (65500, 65500)  # reported, never allocated
    for garbage in (b"", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, good[:30], b"GIF89a" + good):
        with pytest.raises(JpegHeaderError):
            jpeg_size(garbage)


def test_bombs_and_garbage_drop_only_themselves(redis_url):
    model = h.model_path()
    height, width = load_model_info(model).input_size
    transport = Transport(redis_url, result_partitions=2)
    worker = InferenceWorker(
        InferenceConfig(max_batch=8, max_wait_ms=300.0, max_age_ms=30_000.0, autotune=False, decode_threads=2),
        transport, ModelConfig(path=model, providers=["cpu"], intra_op_threads=1), first_wait_s=0.2,
        flush_interval_s=0.2,
    )
    good = [cv2.imencode(".jpg", np.full((height, width, 3), 40 * (i + 1), np.uint8))[1].tobytes() for i in range(3)]
    batch = [
        _frame("cam-a", 1, (width, height), good[0]),
        _frame("cam-bomb", 1, (width, height), _with_header_size(good[0], 65500, 65500)),  # past OpenCV's limit
        _frame("cam-b", 1, (width, height), good[1]),
        _frame("cam-bomb", 2, (width, height), _with_header_size(good[0], 20000, 20000)),  # 1.2 GB if decoded
        _frame("cam-big", 1, (width, height), _with_header_size(good[0], width * 2, height * 2)),
        _frame("cam-garbage", 1, (width, height), b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4),
        _frame("cam-c", 1, (width, height), good[2]),
    ]
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert worker.ready.wait(60), "worker did not warm up"
        t0 = time.monotonic()
        transport.push_frames(batch)  # one push: the worker takes them as one batch (max_batch 8, max wait 300 ms)
        results = []
        deadline = time.monotonic() + 30
        while len(results) < 3 and time.monotonic() < deadline:
            entries = transport.read_results(range(2), pending=False, count=100, block_s=0.2)
            results += [decode_result(e.payload) for e in entries]
        took_s = time.monotonic() - t0
        time.sleep(0.5)  # a counter flush
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(15)
    stats = transport.stats("inference")
    letters = transport.dead_letters()
    transport.close()
    print("FIGURE", {"good_published": sorted(r.camera_id for r in results), "seconds": round(took_s, 2),
                     "dropped": {k: v for k, v in stats.items() if k.startswith("dropped:")},
                     "errors:batch": stats.get("errors:batch", 0), "batches": stats.get("batches")})
    assert sorted(r.camera_id for r in results) == ["cam-a", "cam-b", "cam-c"]
    assert stats["dropped:bad_size"] == 3  # both bombs and the oversized header, none decoded
    assert stats["dropped:corrupt"] == 1
    assert stats.get("errors:batch", 0) == 0  # no batch lost
    assert stats["frames_in"] == len(batch) and stats["frames_out"] == 3
    assert sorted(d["reason"] for d in letters) == ["bad_size", "bad_size", "bad_size", "corrupt"]
    assert took_s < 10.0  # the 20000x20000 bomb was not decoded (OpenCV needs seconds and 1.2 GB for it)
