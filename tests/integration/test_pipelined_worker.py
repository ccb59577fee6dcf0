"""The pipelined inference worker (inference.pipeline) against a real redis-server, with the SIMULATED accelerator
(fbvision.inference.engines.sim): nothing lost or duplicated across warm stops, engine errors contained, and the
engine_busy_fraction counter in the stats snapshot, the shared counters and on Prometheus."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
import requests

from fbvision.core import metrics
from fbvision.core.config import InferenceConfig
from fbvision.core.letterbox import Letterbox
from fbvision.core.transport import Transport
from fbvision.core.wire import FrameMessage, decode_result, encode_frame
from fbvision.inference.engines.sim import SimEngine
from fbvision.inference.worker import InferenceWorker

pytestmark = pytest.mark.timeout(180)

SIZE = 64  # small JPEGs: the CPU side stays cheap beside the simulated engine


def _jpeg(seq: int) -> bytes:
    image = np.full((SIZE, SIZE, 3), 40 + seq % 150, np.uint8)
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def frame(camera_id: str, seq: int) -> bytes:
    now = time.time()
    return encode_frame(FrameMessage(camera_id, seq, now, now, Letterbox(SIZE * 2, SIZE, SIZE, SIZE, 0.5, 0.0, 16.0),
                                     _jpeg(seq)))


def sim_engine(fixed_ms: float = 4.0, per_image_ms: float = 0.5) -> SimEngine:
    return SimEngine("t4-trt-fp16-320", fixed_ms=fixed_ms, per_image_ms=per_image_ms, input_size=(SIZE, SIZE),
                     class_names=("horse",), max_batch=8)


@pytest.fixture
def big_transport(redis_url):
    t = Transport(redis_url, frame_queue_cap=100_000, result_partitions=4, retries=3, retry_max_s=0.5)
    yield t
    t.close()


def make(transport, engine, *, pipeline: bool = True, **overrides) -> InferenceWorker:
    config = dict(max_batch=8, max_wait_ms=2.0, max_age_ms=60_000.0, autotune=False, decode_threads=2,
                  class_names=["horse"], pipeline=pipeline)
    config.update(overrides)
    return InferenceWorker(InferenceConfig(**config), transport, engine=engine, first_wait_s=0.2,
                           flush_interval_s=0.2)


def read_all(transport: Transport, settle_s: float = 0.5) -> list:
    """Every result in the streams (until none comes for ``settle_s``)."""
    out, quiet_since = [], time.monotonic()
    while time.monotonic() - quiet_since < settle_s:
        entries = transport.read_results(range(transport.result_partitions), pending=False, count=1000, block_s=0.1)
        if entries:
            out += [decode_result(e.payload) for e in entries]
            quiet_since = time.monotonic()
    return out


@pytest.mark.parametrize("pipeline", [True, False], ids=["pipelined", "serial"])
def test_warm_stops_lose_and_duplicate_nothing(big_transport, pipeline):
    """Frames stream in while workers are stopped and started again, each stop landing mid-stream (a batch on
    the engine, the next one decoded): every frame that left the queue has exactly one result."""
    t = big_transport
    pushed, stop_pushing = [0], threading.Event()

    def pusher():
        seq = 0
        while not stop_pushing.is_set():
            t.push_frames([frame(f"cam-{i % 5}", seq + i) for i in range(4)])
            seq += 4
            pushed[0] = seq
            time.sleep(0.004)

    feeder = threading.Thread(target=pusher, daemon=True)
    feeder.start()
    counted_in = counted_out = 0
    try:
        for round_ in range(4):
            worker = make(t, sim_engine(), pipeline=pipeline)
            assert worker.pipelined is pipeline
            stop = threading.Event()
            runner = threading.Thread(target=worker.run, args=(stop,), daemon=True)
            runner.start()
            assert worker.ready.wait(30)
            time.sleep(0.6 + 0.13 * round_)
            stop.set()
            runner.join(20)
            assert not runner.is_alive(), "worker did not stop"
            c = worker.counters.snapshot()
            assert c.get("frames_in", 0) == c.get("frames_out", 0) > 0, c  # nothing popped without its result
            assert worker._inflight is None and not worker._pending
            counted_in += c["frames_in"]
            counted_out += c["frames_out"]
    finally:
        stop_pushing.set()
        feeder.join(5)
    left = t.frame_queue_depth()
    results = read_all(t)
    keys = [(r.camera_id, r.seq) for r in results]
    assert len(keys) == len(set(keys)), "a frame was published twice"
    assert len(results) == counted_out == counted_in
    assert len(results) + left == pushed[0], (len(results), left, pushed[0])  # count in == count out
    stats = t.stats("inference")
    assert stats["frames_in"] == stats["frames_out"] == len(results)


def test_pipelining_overlaps_the_engine_with_the_cpu_side(big_transport):
    """A backlog through a 20 ms engine: pipelined, the next batch is ready when the engine finishes, so the
    engine is busy nearly all the time and consecutive batches start back to back."""
    t = big_transport
    t.push_frames([frame(f"cam-{i % 8}", i) for i in range(240)])
    worker = make(t, sim_engine(fixed_ms=20.0, per_image_ms=0.0))
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    runner.start()
    results = []
    deadline = time.monotonic() + 60
    while len(results) < 240 and time.monotonic() < deadline:
        entries = t.read_results(range(t.result_partitions), pending=False, count=1000, block_s=0.2)
        results += [decode_result(e.payload) for e in entries]
    stop.set()
    runner.join(20)
    assert len(results) == 240
    starts = sorted({r.timeline.infer_start for r in results})
    ends = sorted({r.timeline.infer_end for r in results})
    assert len(starts) == 30  # 240 / 8: full batches
    gaps = [s - e for s, e in zip(starts[1:], ends[:-1], strict=True)]
    assert float(np.median(gaps)) < 0.005, gaps  # the next batch starts as soon as the engine is free
    snap = t.snapshots()[f"inference:{worker.name}"]
    assert snap["pipeline"] is True and snap["engine_simulated"] is True
    assert snap["provider"].startswith("SIMULATED")


class FlakyEngine(SimEngine):
    """Fails the call numbered ``fail_at`` (once armed)."""

    fail_at: int | None = None

    def infer(self, batch):
        if self.calls == self.fail_at:
            self.calls += 1
            raise RuntimeError("simulated device error")
        return super().infer(batch)


def test_an_engine_error_drops_that_batch_only(big_transport):
    t = big_transport
    engine = FlakyEngine("t4-trt-fp16-320", fixed_ms=5.0, per_image_ms=0.0, input_size=(SIZE, SIZE), max_batch=8)
    worker = make(t, engine)
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    runner.start()
    assert worker.ready.wait(30)
    engine.fail_at = engine.calls + 2  # the 3rd batch of traffic
    t.push_frames([frame("cam-a", i) for i in range(40)])
    results = []
    deadline = time.monotonic() + 30
    while len(results) < 32 and time.monotonic() < deadline:
        entries = t.read_results(range(t.result_partitions), pending=False, count=1000, block_s=0.2)
        results += [decode_result(e.payload) for e in entries]
    stop.set()
    runner.join(20)
    assert len(results) == 32  # 5 batches of 8, one lost with the error
    c = worker.counters.snapshot()
    assert c["errors:batch"] == 1 and c["frames_in"] == 40 and c["frames_out"] == 32


@pytest.mark.timeout(60)
def test_engine_busy_fraction_reaches_stats_counters_and_prometheus(big_transport):
    t = big_transport
    t.push_frames([frame(f"cam-{i % 4}", i) for i in range(2000)])
    port = metrics.enable_prometheus(0)
    try:
        worker = make(t, sim_engine(fixed_ms=15.0, per_image_ms=0.0))
        stop = threading.Event()
        runner = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        runner.start()
        assert worker.ready.wait(30)
        time.sleep(1.5)  # several flushes under a backlog
        busy = worker.stats()["engine_busy_fraction"]
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        stop.set()
        runner.join(20)
    finally:
        metrics.disable_prometheus()
    assert busy is not None and 0.5 < busy <= 1.0, busy
    line = next(x for x in text.splitlines()
                if x.startswith('fbvision_stage_gauge{name="engine_busy_fraction",stage="inference"}'))
    assert 0.5 < float(line.split()[-1]) <= 1.0
    snap = t.snapshots()[f"inference:{worker.name}"]
    assert 0.0 <= snap["engine_busy_fraction"] <= 1.0
    stats = t.stats("inference")
    assert 0.5 < stats["time_ms:engine_busy"] / stats["time_ms:wall"] <= 1.0
