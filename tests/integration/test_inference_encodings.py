"""Raw frames (wire v2, encoding "raw") through the inference worker, beside JPEG ones: same pixels, same boxes as
the unencoded path; a raw frame whose size is not the model input is refused (counted, dead-lettered)."""

from __future__ import annotations

import contextlib
import threading
import time

import cv2
import numpy as np
import pytest
from test_inference import collect

from fbvision.core.config import InferenceConfig, ModelConfig
from fbvision.core.letterbox import Letterbox, letterbox
from fbvision.core.wire import FrameMessage, encode_frame
from fbvision.inference.decode import decode_yolo
from fbvision.inference.engines.ort import OrtEngine
from fbvision.inference.worker import InferenceWorker

pytestmark = pytest.mark.timeout(120)

HORSE = 17


def picture(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[:] = rng.integers(40, 200, 3)
    for _ in range(4):
        x1, y1 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        cv2.rectangle(image, (x1, y1), (x1 + int(rng.integers(10, w // 2)), y1 + int(rng.integers(10, h // 2))),
                      tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
    return image


@pytest.fixture
def make_worker(tiny_model, transport):
    def factory() -> InferenceWorker:
        config = InferenceConfig(max_batch=8, max_wait_ms=20.0, max_age_ms=5000.0, autotune=False, decode_threads=2,
                                 conf_floor=0.0, top_k=1000, class_names=["horse"])
        model = ModelConfig(path=tiny_model, providers=["cpu"], intra_op_threads=1)
        return InferenceWorker(config, transport, model, first_wait_s=0.2, flush_interval_s=0.2)

    return factory


@pytest.fixture(scope="module")
def reference_engine(tiny_model):
    return OrtEngine(tiny_model, providers=["cpu"], intra_op_threads=1)


@contextlib.contextmanager
def running(worker: InferenceWorker):
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert worker.ready.wait(60), "worker did not warm up"
        yield thread
    finally:
        stop.set()
        thread.join(10)
        assert not thread.is_alive(), "worker did not stop"


def raw_message(camera_id: str, seq: int, input_size=(160, 160), src=(640, 360)) -> tuple[FrameMessage, np.ndarray]:
    image, box = letterbox(picture(src[0], src[1], seed=seq * 3 + 1), input_size)
    now = time.time()
    msg = FrameMessage(camera_id, seq, now, now + 0.001, box, np.ascontiguousarray(image).tobytes(), "raw")
    return msg, image


def unencoded_candidates(engine, msg: FrameMessage, image: np.ndarray):
    tensor = cv2.cvtColor(image, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    box = Letterbox(msg.src_w, msg.src_h, msg.input_w, msg.input_h, msg.scale, msg.pad_x, msg.pad_y)
    return decode_yolo(engine.infer(tensor), [box], [HORSE], 0.0, 1000)[0]


def test_raw_frames_give_exactly_the_unencoded_boxes(make_worker, transport, reference_engine):
    sent = [raw_message("cam-raw", seq) for seq in range(6)]
    ok, buf = cv2.imencode(".jpg", sent[0][1], [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    jpeg = FrameMessage(**{**sent[0][0].__dict__, "camera_id": "cam-jpeg", "jpeg": buf.tobytes(), "encoding": "jpeg"})
    transport.push_frames([encode_frame(m) for m, _ in sent] + [encode_frame(jpeg)])
    worker = make_worker()
    with running(worker):
        results = collect(transport, len(sent) + 1)
    by_key = {(r.camera_id, r.seq): r for r in results}
    for msg, image in sent:
        want = unencoded_candidates(reference_engine, msg, image)
        got = by_key[("cam-raw", msg.seq)]
        assert len(got.scores) == len(want.scores)
        np.testing.assert_allclose(np.sort(got.scores), np.sort(want.scores), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.boxes[np.argsort(-got.scores, kind="stable")],
                                   want.xyxy[np.argsort(-want.scores, kind="stable")], atol=1e-3)
    assert ("cam-jpeg", 0) in by_key  # a JPEG frame in the same batch is decoded as before
    stats = transport.stats("inference")
    assert stats["frames_out"] == len(sent) + 1 and not any(k.startswith("dropped:") for k in stats)


def test_a_raw_frame_of_another_size_is_refused(make_worker, transport):
    wrong, _ = raw_message("cam-raw", 1, input_size=(96, 96))  # a valid message, but not this model's input
    good, _ = raw_message("cam-raw", 2)
    transport.push_frames([encode_frame(wrong), encode_frame(good)])
    worker = make_worker()
    with running(worker):
        results = collect(transport, 1)
        time.sleep(0.5)
    assert [r.seq for r in results] == [2]
    stats = transport.stats("inference")
    assert stats["dropped:bad_size"] == 1
    assert [d["reason"] for d in transport.dead_letters()] == ["bad_size"]
