"""The SIMULATED accelerator (fbvision.inference.engines.sim) through the real inference worker and a private
redis-server: what the CPU side lets a fast accelerator do. No model runs anywhere in this file; every engine here
sleeps a published-figure profile (docs/benchmarks.md, "Simulated accelerator") and returns no detection.

* ``test_engine_busy_under_backlog`` - a backlog of the demo's 320² JPEGs (32 cameras' worth) through one worker,
  max batch 32, pipelined and serial side by side: the engine's busy fraction (time inside ``infer`` over the span
  from the first engine call to the last) and frames/s.
* ``test_batched_vs_sequential_when_overhead_dominates`` - the same backlog with a per-call overhead that dominates
  the engine time (``overhead_ms`` on the T4 TensorRT profile): max batch 32 against max batch 1, frames/s ratio.

Frames go the whole way: LPOP from ``batch_frames``, JPEG decode into the tensor, the simulated call,
``decode_yolo``, result encoding and the once-id publish script. Quick enough for the smoke pass (< 60 s); the
numbers are printed and put in the JSON (``extra_info``); only what holds on a loaded 2-core machine is asserted.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time

import pytest

from benchmarks import common
from fbvision.core.config import InferenceConfig
from fbvision.core.transport import Transport
from fbvision.core.wire import decode_result, encode_frame
from fbvision.inference.engines.sim import SimEngine
from fbvision.inference.worker import InferenceWorker

pytestmark = [pytest.mark.bench, pytest.mark.timeout(300)]

IMGSZ = 320  # the demo model's input
CAMERAS = 32
BUSY_PROFILE = "t4-ort-cuda-320"  # 1.755 + 0.724 ms x batch: 25 ms for 32 frames (ORT CUDA EP on a T4, simulated)
OVERHEAD_PROFILE = "t4-trt-fp16-320"  # 0.566 + 0.234 ms x batch (TensorRT FP16 on a T4, simulated) ...
OVERHEAD_MS = 3.0  # ... + 3 ms per call (assumed: e.g. a remote inference server's round trip) - it dominates


def machine_load() -> tuple[float, bool]:
    """(1-minute load average, whether it is past 1.5 x the cores): on a machine that busy, the CPU side is starved
    and the absolute thresholds are not asserted (the relative ones still are)."""
    load = os.getloadavg()[0]
    return load, load > 1.5 * (os.cpu_count() or 1)


@pytest.fixture(scope="module")
def frames():
    """32 cameras' worth of distinct letterboxed 320² stall JPEGs (the camera manager's wire frames)."""
    return common.frame_messages(CAMERAS * 2, IMGSZ)


@pytest.fixture
def redis_transport(bench_redis):
    import redis

    client = redis.Redis.from_url(bench_redis.url)
    client.flushall()
    client.close()
    t = Transport(bench_redis.url, frame_queue_cap=100_000, result_partitions=4)
    yield t
    t.close()


def backlog(frames, n: int) -> list[bytes]:
    """``n`` wire frames: the cameras' JPEGs round robin, fresh stamps and sequence numbers."""
    now = time.time()
    out = []
    for i in range(n):
        f = frames[i % len(frames)]
        out.append(encode_frame(dataclasses.replace(f, camera_id=f"cam-{i % CAMERAS:02d}", seq=i, capture_ts=now,
                                                    push_ts=now)))
    return out


def run_backlog(transport: Transport, engine: SimEngine, payloads: list[bytes], *, max_batch: int,
                pipeline: bool) -> dict:
    """Push the backlog, run one worker until every result is out, stop it warm; measure the engine."""
    cfg = InferenceConfig(max_batch=max_batch, max_wait_ms=2.0, max_age_ms=60_000, autotune=False,
                          decode_threads=2, class_names=["horse"], pipeline=pipeline)
    worker = InferenceWorker(cfg, transport, engine=engine, first_wait_s=0.2, flush_interval_s=0.5,
                             name=f"sim-b{max_batch}-{'pipe' if pipeline else 'serial'}")
    worker.prepare()
    transport.push_frames(payloads)
    busy0, calls0 = engine.busy_s, engine.calls
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    started = time.perf_counter()
    runner.start()
    results = []
    deadline = time.monotonic() + 60
    while len(results) < len(payloads) and time.monotonic() < deadline:
        entries = transport.read_results(range(transport.result_partitions), pending=False, count=2000, block_s=0.2)
        results += [decode_result(e.payload) for e in entries]
    stop.set()
    runner.join(30)
    assert len(results) == len(payloads), f"{len(results)} of {len(payloads)} results"
    first = min(r.timeline.popped for r in results)
    last = max(r.timeline.published for r in results)
    engine_from = min(r.timeline.infer_start for r in results)
    engine_to = max(r.timeline.infer_end for r in results)
    busy = engine.busy_s - busy0
    return {
        "max_batch": max_batch, "pipeline": pipeline, "frames": len(results), "calls": engine.calls - calls0,
        "frames_per_s": round(len(results) / (last - first), 1),
        "engine_busy_fraction": round(min(1.0, busy / (engine_to - engine_from)), 3),
        "engine_ms_per_call": round(engine.latency_ms(max_batch), 3),
        "wall_s": round(time.perf_counter() - started, 2),
    }


def test_engine_busy_under_backlog(benchmark, frames, redis_transport):
    engine = SimEngine(BUSY_PROFILE, input_size=(IMGSZ, IMGSZ), class_names=("horse",), max_batch=32)
    load, loaded = machine_load()
    n = CAMERAS * 30  # 960 frames: 30 full batches (fresh stamps each run: the once ids would refuse a repeat)
    rows: dict[str, dict] = {}

    def both():
        rows["pipelined"] = run_backlog(redis_transport, engine, backlog(frames, n), max_batch=32, pipeline=True)
        rows["serial"] = run_backlog(redis_transport, engine, backlog(frames, n), max_batch=32, pipeline=False)

    benchmark.pedantic(both, rounds=1, iterations=1)
    print(f"\n{engine.provider}, {n} frames of {CAMERAS} cameras, "
          f"max batch 32, backlog:")
    for mode, r in rows.items():
        print(f"  {mode:<9} engine busy {100 * r['engine_busy_fraction']:5.1f} %   {r['frames_per_s']:7.1f} frames/s"
              f"   ({r['calls']} calls of {r['engine_ms_per_call']} ms)")
    print(f"  load average at the start {load:.1f} on {os.cpu_count()} cores"
          + ("  (loaded: absolute threshold not asserted)" if loaded else ""))
    benchmark.extra_info.update(kind="sim_accelerator_busy", simulated=True, provider=engine.provider,
                                profile=BUSY_PROFILE, rows=rows, load_average=round(load, 2))
    assert rows["pipelined"]["engine_busy_fraction"] > rows["serial"]["engine_busy_fraction"]
    # The target is >= 0.90 (docs/benchmarks.md has the measured values: 95-97 %); a busy 2-core machine gets a
    # margin - with the fault suite running beside it, 78.6 % was measured, at a load average of 7, 52-75 %.
    if not loaded:
        assert rows["pipelined"]["engine_busy_fraction"] >= 0.7


def test_batched_vs_sequential_when_overhead_dominates(benchmark, frames, redis_transport):
    engine = SimEngine(OVERHEAD_PROFILE, overhead_ms=OVERHEAD_MS, input_size=(IMGSZ, IMGSZ), class_names=("horse",),
                       max_batch=32)
    load, loaded = machine_load()
    rows: dict[str, dict] = {}

    def both():
        # sequential: one frame per call (~3.8 ms a call: 12 frames a camera, ~1.5 s, is enough)
        rows["sequential"] = run_backlog(redis_transport, engine, backlog(frames, CAMERAS * 12), max_batch=1,
                                         pipeline=True)
        rows["batched"] = run_backlog(redis_transport, engine, backlog(frames, CAMERAS * 30), max_batch=32,
                                      pipeline=True)

    benchmark.pedantic(both, rounds=1, iterations=1)
    ratio = rows["batched"]["frames_per_s"] / rows["sequential"]["frames_per_s"]
    model = rows["batched"]["engine_ms_per_call"] / 32, rows["sequential"]["engine_ms_per_call"]
    print(f"\n{engine.provider}, {CAMERAS} cameras' frames, backlog:")
    for mode, r in rows.items():
        print(f"  {mode:<10} max batch {r['max_batch']:>2}  {r['frames_per_s']:7.1f} frames/s   engine busy "
              f"{100 * r['engine_busy_fraction']:5.1f} %")
    print(f"  batched / sequential: {ratio:.2f}x (the engine alone: {model[1] / model[0]:.2f}x); load average at "
          f"the start {load:.1f} on {os.cpu_count()} cores" + ("  (loaded: 3x not asserted)" if loaded else ""))
    benchmark.extra_info.update(kind="sim_accelerator_batching", simulated=True, provider=engine.provider,
                                profile=OVERHEAD_PROFILE, overhead_ms=OVERHEAD_MS, rows=rows,
                                ratio=round(ratio, 2), engine_ratio=round(model[1] / model[0], 2),
                                load_average=round(load, 2))
    assert ratio > 1.5
    # The target is >= 4x (docs/benchmarks.md has the measured values: 8.4-8.5x); asserted with a margin.
    if not loaded:
        assert ratio >= 3.0
