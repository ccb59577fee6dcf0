"""Batch inference worker against a real redis-server and a real exported ONNX model (tiny, CPU)."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time

import cv2
import numpy as np
import pytest

from fbvision.core.config import InferenceConfig, ModelConfig
from fbvision.core.letterbox import Letterbox, letterbox
from fbvision.core.modelinfo import ModelError
from fbvision.core.transport import Transport
from fbvision.core.wire import FrameMessage, decode_frame, decode_result, encode_frame
from fbvision.inference.decode import decode_yolo
from fbvision.inference.engines.ort import OrtEngine, build_providers
from fbvision.inference.worker import InferenceWorker

pytestmark = pytest.mark.timeout(120)

HORSE = 17  # COCO index; the worker looks it up by name
CAMERAS = {"cam-a": (640, 360), "cam-b": (320, 240), "cam-c": (1280, 720)}


# -- helpers -------------------------------------------------------------------------------------------------------


def picture(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[:] = rng.integers(40, 200, 3)
    for _ in range(4):
        x1, y1 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
        cv2.rectangle(image, (x1, y1), (x1 + int(rng.integers(10, w // 2)), y1 + int(rng.integers(10, h // 2))),
                      tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
    return image


def frame_message(camera_id: str, seq: int, src=(640, 360), *, age_s: float = 0.0, input_size=(160, 160),
                  jpeg: bytes | None = None) -> FrameMessage:
    image, box = letterbox(picture(src[0], src[1], seed=seq * 7 + len(camera_id)), input_size)
    if jpeg is None:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        jpeg = buf.tobytes()
    now = time.time()
    return FrameMessage(camera_id, seq, now - age_s, now - age_s + 0.001, box, jpeg)


def frame_bytes(*args, **kwargs) -> bytes:
    return encode_frame(frame_message(*args, **kwargs))


def collect(transport: Transport, n: int, timeout_s: float = 30.0) -> list:
    """Read ``n`` results from every partition (as the logic stage would)."""
    results = []
    deadline = time.monotonic() + timeout_s
    while len(results) < n and time.monotonic() < deadline:
        entries = transport.read_results(range(transport.result_partitions), pending=False, count=500, block_s=0.2)
        results += [decode_result(e.payload) for e in entries]
    assert len(results) >= n, f"got {len(results)} of {n} results in {timeout_s} s"
    return results


@pytest.fixture
def make_worker(tiny_model, transport):
    def factory(transport_=None, **overrides) -> InferenceWorker:
        config = dict(max_batch=8, max_wait_ms=20.0, max_age_ms=5000.0, autotune=False, decode_threads=2,
                      conf_floor=0.0, top_k=1000, class_names=["horse"])
        config.update(overrides)
        model = ModelConfig(path=tiny_model, providers=["cpu"], intra_op_threads=1)
        return InferenceWorker(InferenceConfig(**config), transport_ or transport, model, first_wait_s=0.2,
                               flush_interval_s=0.2)

    return factory


@contextlib.contextmanager
def running(*workers: InferenceWorker):
    stop = threading.Event()
    threads = [threading.Thread(target=w.run, args=(stop,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        for w in workers:
            assert w.ready.wait(60), "worker did not warm up"
        yield threads
    finally:
        stop.set()
        for t in threads:
            t.join(10)
            assert not t.is_alive(), "worker did not stop"


@pytest.fixture(scope="module")
def reference_engine(tiny_model):
    return OrtEngine(tiny_model, providers=["cpu"], intra_op_threads=1)


def reference_candidates(engine: OrtEngine, msg: FrameMessage):
    """What the worker should compute for one frame, done the slow obvious way."""
    image = cv2.imdecode(np.frombuffer(msg.jpeg, np.uint8), cv2.IMREAD_COLOR)
    tensor = (cv2.cvtColor(image, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
    box = Letterbox(msg.src_w, msg.src_h, msg.input_w, msg.input_h, msg.scale, msg.pad_x, msg.pad_y)
    return decode_yolo(engine.infer(tensor), [box], [HORSE], 0.0, 1000)[0]


def sorted_boxes(xyxy: np.ndarray) -> np.ndarray:
    return xyxy[np.lexsort(xyxy.T[::-1])]


# -- the worker ----------------------------------------------------------------------------------------------------


def test_three_cameras_one_worker_results_per_camera_in_source_coordinates(make_worker, transport, reference_engine):
    messages = [frame_message(cam, seq, size) for seq in range(10) for cam, size in CAMERAS.items()]
    transport.push_frames([encode_frame(m) for m in messages])
    worker = make_worker()
    with running(worker):
        results = collect(transport, len(messages))
    assert sorted((r.camera_id, r.seq) for r in results) == sorted((m.camera_id, m.seq) for m in messages)
    sent = {(m.camera_id, m.seq): m for m in messages}
    for cam, (w, h) in CAMERAS.items():
        mine = [r for r in results if r.camera_id == cam]
        assert [r.seq for r in mine] == list(range(10))  # per-camera order kept through the partition stream
        for r in mine:
            assert (r.src_w, r.src_h) == (w, h)
            assert len(r.scores) == 525  # every anchor of a 160x160 model (floor 0, top-k 1000), never 84x525 raw
            assert set(r.class_ids.tolist()) == {HORSE}
            assert np.all(r.boxes >= 0) and np.all(r.boxes[:, [0, 2]] <= w) and np.all(r.boxes[:, [1, 3]] <= h)
            t = r.timeline
            assert t.captured <= t.pushed <= t.popped <= t.infer_start <= t.infer_end <= t.published
            assert 1 <= r.batch_size <= 8
        if w > 160:
            assert max(r.boxes[:, 2].max() for r in mine) > 160  # source pixels, not model pixels
    # Boxes equal a single-frame run of the same model mapped back with the frame's own letterbox.
    for r in results[::4]:
        expected = reference_candidates(reference_engine, sent[(r.camera_id, r.seq)])
        np.testing.assert_allclose(sorted_boxes(r.boxes), sorted_boxes(expected.xyxy), atol=0.05)
        np.testing.assert_allclose(np.sort(r.scores), np.sort(expected.scores), atol=1e-4)


def test_backlog_forms_full_batches_and_counters_add_up(make_worker, transport):
    transport.push_frames([frame_bytes("cam-a", seq) for seq in range(40)])
    worker = make_worker(max_batch=8, max_wait_ms=5.0)
    with running(worker):
        results = collect(transport, 40)
        time.sleep(0.5)  # one more counter flush
    sizes = [r.batch_size for r in results]
    assert max(sizes) == 8
    stats = transport.stats("inference")
    assert stats["frames_in"] == 40 and stats["frames_out"] == 40
    assert stats["batch_size:8"] >= 3
    histogram = {int(k.split(":")[1]): v for k, v in stats.items() if k.startswith("batch_size:")}
    assert sum(n * count for n, count in histogram.items()) == 40
    assert sum(histogram.values()) == stats["batches"]
    for stage in ("decode", "infer", "postprocess", "publish"):
        assert stats[f"time_ms:{stage}"] > 0
    snapshot = transport.snapshots()[f"inference:{worker.name}"]
    assert snapshot["provider"] == "CPUExecutionProvider"
    assert snapshot["queue_depth"] == 0
    assert snapshot["batch_sizes"]["8"] >= 3


def test_top_k_and_class_subset_cap_what_is_shipped(make_worker, transport):
    transport.push_frames([frame_bytes("cam-a", seq) for seq in range(3)])
    worker = make_worker(class_names=["horse", "person"], top_k=7)
    assert worker.class_ids == [HORSE, 0]
    with running(worker):
        results = collect(transport, 3)
    for r in results:
        assert len(r.scores) == 7
        assert set(r.class_ids.tolist()) <= {0, HORSE}
        assert np.all(np.diff(r.scores) <= 0)


def test_max_wait_is_respected(make_worker, transport):
    worker = make_worker(max_batch=8, max_wait_ms=150.0)
    with running(worker):
        transport.push_frames([frame_bytes("cam-a", 0)])
        (single,) = collect(transport, 1)
        waited = single.timeline.infer_start - single.timeline.popped
        assert single.batch_size == 1
        assert 0.150 - 0.02 <= waited <= 0.150 + 0.150

        # A trickle (one frame every 40 ms): batches of several, each closed within max_wait of its first frame.
        for seq in range(1, 31):
            transport.push_frames([frame_bytes("cam-a", seq)])
            time.sleep(0.04)
        results = collect(transport, 30)
    batches: dict[float, list] = {}
    for r in results:
        batches.setdefault(r.timeline.infer_start, []).append(r)
    assert max(len(b) for b in batches.values()) > 1
    for batch in batches.values():
        first_popped = min(r.timeline.popped for r in batch)
        assert batch[0].timeline.infer_start - first_popped <= 0.150 + 0.150
        assert all(r.batch_size == len(batch) for r in batch)


def test_stale_frames_are_dropped_and_counted(make_worker, transport):
    stale = [frame_bytes("cam-a", seq, age_s=3.0) for seq in range(5)]
    fresh = [frame_bytes("cam-a", seq) for seq in range(5, 10)]
    transport.push_frames(stale + fresh)
    worker = make_worker(max_age_ms=1000.0)
    with running(worker):
        results = collect(transport, 5)
        time.sleep(0.5)
        assert collect_nothing_more(transport)
    assert sorted(r.seq for r in results) == list(range(5, 10))
    stats = transport.stats("inference")
    assert stats["dropped:stale"] == 5
    assert stats["frames_in"] == 10 and stats["frames_out"] == 5


def collect_nothing_more(transport: Transport) -> bool:
    return not transport.read_results(range(transport.result_partitions), pending=False, count=10, block_s=0.1)


def test_bad_input_is_skipped_counted_dead_lettered_and_the_rest_processed(make_worker, transport, caplog):
    good = [frame_bytes("cam-a", seq) for seq in range(4)]
    version_99 = bytearray(good[0])
    version_99[2] = 99
    corrupt_jpeg = frame_bytes("cam-b", 100, jpeg=b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    wrong_picture = frame_bytes("cam-b", 101, input_size=(320, 320))  # says 320x320: not this model's input
    lying_header = encode_frame(FrameMessage(  # says 160x160 but the JPEG is 320x200
        "cam-b", 102, time.time(), time.time(), Letterbox(320, 200, 160, 160, 0.5, 0.0, 30.0),
        cv2.imencode(".jpg", np.zeros((200, 320, 3), np.uint8))[1].tobytes()))
    queue = [good[0], b"hello, not a frame", good[1], bytes(version_99), corrupt_jpeg, good[2], wrong_picture,
             good[3][:40], lying_header]
    transport.push_frames(queue)
    worker = make_worker()
    with caplog.at_level(logging.WARNING, logger="fbvision"), running(worker) as threads:
        results = collect(transport, 3)
        # still alive and working after all that
        transport.push_frames([frame_bytes("cam-a", 50)])
        results += collect(transport, 1)
        assert all(t.is_alive() for t in threads)
        time.sleep(0.5)
    assert sorted(r.seq for r in results) == [0, 1, 2, 50]  # good[3] was the truncated one
    stats = transport.stats("inference")
    assert stats["dropped:wire_garbage"] == 1
    assert stats["dropped:wire_version"] == 1
    assert stats["dropped:wire_truncated"] == 1
    assert stats["dropped:corrupt"] == 1
    assert stats["dropped:bad_size"] == 2
    assert stats["frames_in"] == len(queue) + 1
    reasons = sorted(d["reason"] for d in transport.dead_letters())
    assert reasons == ["bad_size", "bad_size", "corrupt", "wire_garbage", "wire_truncated", "wire_version"]
    assert "skipped a frame" in caplog.text


@pytest.mark.slow
def test_two_workers_share_the_queue_without_processing_a_frame_twice(make_worker, redis_url, transport):
    pusher = Transport(redis_url, frame_queue_cap=1000, result_partitions=transport.result_partitions)
    transports = [Transport(redis_url, result_partitions=transport.result_partitions) for _ in range(2)]
    workers = [make_worker(t, max_batch=4, max_wait_ms=5.0) for t in transports]
    n = 120
    with running(*workers):
        for start in range(0, n, 4):
            pusher.push_frames([frame_bytes(f"cam-{i % 3}", start + i) for i in range(4)])
            time.sleep(0.01)
        results = collect(transport, n)
        time.sleep(0.5)
        assert collect_nothing_more(transport)
    keys = [(r.camera_id, r.seq) for r in results]
    assert len(keys) == len(set(keys)) == n
    done = [w.stats()["counters"].get("frames_out", 0) for w in workers]
    assert sum(done) == n
    assert min(done) > 0, f"one worker got nothing: {done}"
    for t in [pusher, *transports]:
        t.close()


@pytest.mark.slow
def test_worker_survives_a_redis_restart(make_worker, private_redis, caplog):
    def connect() -> Transport:
        return Transport(private_redis.url, result_partitions=2, retries=1, retry_max_s=0.2, socket_timeout_s=1.0)

    transport = connect()
    worker = make_worker(transport)
    with caplog.at_level(logging.WARNING, logger="fbvision"), running(worker) as threads:
        transport.push_frames([frame_bytes("cam-a", seq) for seq in range(5)])
        assert len(collect(transport, 5)) == 5
        private_redis.kill()
        time.sleep(2.0)
        assert all(t.is_alive() for t in threads)
        private_redis.start()
        after = connect()  # a fresh client: the restarted server has no consumer groups yet
        after.wait_ready(10)
        after.push_frames([frame_bytes("cam-a", seq) for seq in range(5, 10)])
        # At-least-once: a publish whose reply the kill cut off is repeated on the new server, so the
        # batch before the kill may arrive again; nothing after the restart may be missing.
        seen: list[int] = []
        deadline = time.monotonic() + 30.0
        while not set(range(5, 10)) <= set(seen) and time.monotonic() < deadline:
            seen += [r.seq for r in collect(after, 1)]
        assert set(range(5, 10)) <= set(seen), seen
        assert set(seen) <= set(range(10)), seen
        assert sorted(s for s in seen if s >= 5) == list(range(5, 10)), seen  # the new frames exactly once
        assert all(t.is_alive() for t in threads)
    assert "Redis unavailable" in caplog.text
    transport.close()
    after.close()


@pytest.mark.slow
def test_autotune_on_the_real_model_never_picks_a_slower_batch(make_worker, transport):
    worker = make_worker(autotune=True, max_batch=8, max_wait_ms=10.0)
    worker.autotune_budget_s = 2.0
    worker.prepare()
    table = worker.stats()["autotune"]
    assert [row["batch"] for row in table] == [1, 2, 4, 8]
    chosen = worker.batcher.max_batch
    # The best of the sizes that beat batch 1 with confidence (a faster median alone, under noise, is not enough:
    # the margin rule) - and the chosen one is never slower than batch 1.
    eligible = [r for r in table if r["eligible"]]
    assert eligible[0]["batch"] == 1 and all(r["batch"] == 1 or r["ratio_p25"] >= 1.0 + (worker.autotune_result.margin or 0.0)
                                             for r in eligible)
    best = max(row["frames_per_s"] for row in eligible)
    row = next(r for r in table if r["batch"] == chosen)
    assert row["eligible"] and row["frames_per_s"] >= 0.95 * best
    assert row["ratio_vs_1"] >= 0.95
    assert sorted(worker.warmup_ms) == list(range(1, chosen + 1))
    assert worker.batcher.max_wait_ms <= 10.0
    if chosen == 1:
        assert worker.batcher.max_wait_ms == 0.0


def test_autotune_cache_measures_once_per_machine_and_model_then_reuses_it(make_worker, tmp_path):
    """inference.autotune_cache: the first start measures and writes the file; the next start with the same model,
    engine settings and machine reuses the result (no measurement: measured_at set, same table and choice); a
    different setting (the margin) is another key and is measured; a damaged file is measured over, not fatal."""
    cache = tmp_path / "autotune.json"
    first = make_worker(autotune=True, max_batch=4, max_wait_ms=10.0, autotune_cache=cache)
    first.autotune_budget_s = 0.3
    first.prepare()
    assert first.autotune_result.measured_at is None and cache.is_file()
    entries = json.loads(cache.read_text())
    assert len(entries) == 1

    again = make_worker(autotune=True, max_batch=4, max_wait_ms=10.0, autotune_cache=cache)
    again.prepare()
    assert again.autotune_result.measured_at is not None
    assert again.autotune_result.table == first.autotune_result.table
    assert again.batcher.max_batch == first.batcher.max_batch
    assert again.stats()["autotune_info"]["cache"] == str(cache)

    other = make_worker(autotune=True, max_batch=4, max_wait_ms=10.0, autotune_cache=cache, autotune_margin=0.5)
    other.autotune_budget_s = 0.3
    other.prepare()
    assert other.autotune_result.measured_at is None and len(json.loads(cache.read_text())) == 2

    cache.write_text("{not json")
    damaged = make_worker(autotune=True, max_batch=4, max_wait_ms=10.0, autotune_cache=cache)
    damaged.autotune_budget_s = 0.3
    damaged.prepare()
    assert damaged.autotune_result.measured_at is None and len(json.loads(cache.read_text())) == 1


# -- construction errors and the engine ------------------------------------------------------------------------------


def test_missing_model_is_a_clear_error_at_start(transport, tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        InferenceWorker(InferenceConfig(), transport, ModelConfig(path=tmp_path / "nope.onnx"))


def test_fixed_batch_model_is_rejected_at_start(transport, tiny_model, tmp_path):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(tiny_model))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    fixed = tmp_path / "fixed.onnx"
    onnx.save(model, str(fixed))
    with pytest.raises(ModelError, match="dynamic"):
        InferenceWorker(InferenceConfig(), transport, ModelConfig(path=fixed, providers=["cpu"]))


def test_unknown_class_name_is_a_clear_error_at_start(transport, tiny_model):
    with pytest.raises(ModelError, match="no class named 'unicorn'"):
        InferenceWorker(InferenceConfig(class_names=["unicorn"]), transport,
                        ModelConfig(path=tiny_model, providers=["cpu"]))


def test_config_max_batch_is_capped_by_the_model(transport, tiny_model):
    worker = InferenceWorker(InferenceConfig(max_batch=32, autotune=False), transport,
                             ModelConfig(path=tiny_model, providers=["cpu"]))
    assert worker.batcher.max_batch == 8


def test_provider_options_as_the_issue_asks():
    everything = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    providers = build_providers(["tensorrt", "cuda", "cpu"], everything, input_name="images", input_size=(320, 320),
                                max_batch=16, tensorrt_fp16=True, cache_dir="/tmp/trt")
    assert [name for name, _ in providers] == everything
    trt, cuda, cpu = (opts for _, opts in providers)
    assert trt["trt_fp16_enable"] == "True"
    assert trt["trt_engine_cache_enable"] == "True" and trt["trt_engine_cache_path"] == "/tmp/trt"
    assert trt["trt_timing_cache_enable"] == "True"
    assert trt["trt_profile_min_shapes"] == "images:1x3x320x320"
    assert trt["trt_profile_opt_shapes"] == "images:16x3x320x320"
    assert trt["trt_profile_max_shapes"] == "images:16x3x320x320"
    assert cuda["cudnn_conv_algo_search"] == "HEURISTIC"
    assert cpu == {}
    # Providers this build lacks are skipped quietly; CPU is always the last resort.
    assert [n for n, _ in build_providers(["tensorrt", "cuda"], ["CPUExecutionProvider"], input_name="images",
                                          input_size=(320, 320), max_batch=4)] == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="unknown provider"):
        build_providers(["tpu"], everything, input_name="x", input_size=(1, 1), max_batch=1)


def test_engine_logs_its_provider_and_checks_shapes(tiny_model, caplog):
    with caplog.at_level(logging.INFO, logger="fbvision"):
        engine = OrtEngine(tiny_model, providers=["tensorrt", "cuda", "cpu"], intra_op_threads=1)
    assert engine.provider == "CPUExecutionProvider"
    assert "running on CPUExecutionProvider" in caplog.text
    assert engine.input_size == (160, 160) and engine.max_batch == 8 and engine.class_names[HORSE] == "horse"
    assert sorted(engine.warmup([1, 3])) == [1, 3]
    out = engine.infer(np.zeros((2, 3, 160, 160), np.float32))
    assert out.shape == (2, 84, 525) and out.dtype == np.float32
    with pytest.raises(ValueError):
        engine.infer(np.zeros((9, 3, 160, 160), np.float32))
    with pytest.raises(ValueError):
        engine.infer(np.zeros((1, 3, 128, 160), np.float32))


def test_wire_roundtrip_of_helper_frames():
    msg = frame_message("cam-a", 1, (640, 360))
    assert decode_frame(encode_frame(msg)) == msg
