"""Capacity: how many cameras the CPU side carries - the real pipeline (camera manager processes and inference
worker spawned, the logic worker in a thread, a private redis-server) at growing load.

Rows: cameras x fps of the demo's own synthetic cameras (``synthetic:<scenario>``, rendered live, read by the real
camera manager, letterboxed and JPEG-encoded there) with two engines:

* ``null``: an engine that returns an empty head at once (``model.engine: null``) - everything *but* the model;
* ``ort``: the committed demo model (horse YOLO11n 320) on ONNX Runtime with the configured providers.

For each row: offered / pushed / inferred / judged frames/s, capture -> decision p50/p95/p99, drops by reason,
CPU seconds of each stage process (``/proc``) per frame, and - ``test_physical_costs`` - what the same steps cost
alone on this machine (scene render, letterbox + JPEG encode, JPEG decode, one Redis hop), to compare with.

Full run (``make bench``): 8x5, 16x10, 32x10, 64x5 for both engines; the smoke pass (plain pytest): one short
null-engine row. ``FBV_BENCH_CAPACITY_ROWS`` (e.g. ``null:32x10,ort:8x5``) picks rows,
``FBV_BENCH_CAPACITY_S`` the measurement seconds, ``FBV_BENCH_CAMERA_PROCS`` the camera managers (default:
``camera.processes`` resolved as the pipeline does). Nothing here asserts a timing.
"""

from __future__ import annotations

import os
import statistics
import time

import pytest

from benchmarks import common
from benchmarks.pipeline import RunSpec, format_summary, run_pipeline

pytestmark = [pytest.mark.bench, pytest.mark.timeout(1800)]

FULL_ROWS = ("null:8x5", "null:16x10", "null:32x10", "null:64x5", "ort:8x5", "ort:16x10", "ort:32x10", "ort:64x5")
QUICK_ROWS = ("null:4x5",)
# The demo's inference settings (fbvision/data/demo.yaml), auto-tune off so that every row runs the same worker.
DEMO_MAX_BATCH = 8
DEMO_MAX_WAIT_MS = 10.0
DEMO_QUEUE_CAP = 64


def _rows() -> tuple[str, ...]:
    chosen = os.environ.get("FBV_BENCH_CAPACITY_ROWS", "").strip()
    if chosen:
        return tuple(r.strip() for r in chosen.split(",") if r.strip())
    return QUICK_ROWS if common.quick_mode() else FULL_ROWS


def _parse(row: str) -> tuple[str, int, float]:
    engine, load = row.split(":", 1)
    cameras, fps = load.lower().split("x", 1)
    return engine, int(cameras), float(fps)


def camera_procs(cameras: int) -> int:
    """Camera-manager processes for ``cameras``: FBV_BENCH_CAMERA_PROCS, else what the pipeline runner picks."""
    from fbvision.core.config import CameraManagerConfig

    override = os.environ.get("FBV_BENCH_CAMERA_PROCS", "").strip()
    if override:
        return max(1, min(int(override), cameras))
    return CameraManagerConfig().resolved_processes(cameras)


@pytest.mark.parametrize("row", _rows())
def test_capacity(benchmark, row, prof, bench_redis):
    engine, cameras, fps = _parse(row)
    if not common.DEMO_MODEL.is_file():
        pytest.skip(f"{common.DEMO_MODEL} not present")
    measure_s = float(os.environ.get("FBV_BENCH_CAPACITY_S", "") or (2.0 if prof.quick else 20.0))
    spec = RunSpec(model_path=str(common.DEMO_MODEL), cameras=cameras, fps=fps, max_batch=DEMO_MAX_BATCH,
                   max_wait_ms=DEMO_MAX_WAIT_MS, frame_queue_cap=DEMO_QUEUE_CAP, engine=engine,
                   camera_procs=camera_procs(cameras), warmup_s=1.0 if prof.quick else 5.0, measure_s=measure_s,
                   sample_interval_s=prof.sample_interval_s)
    summary = benchmark.pedantic(run_pipeline, args=(spec, bench_redis.url, bench_redis.proc.pid),
                                 rounds=1, iterations=1)
    print(f"\ncapacity {row} ({spec.camera_procs} camera processes):\n{format_summary(summary)}\n"
          f"pushed {summary['pushed_fps']}/s, judged {summary['judged_fps']}/s; CPU cores {summary['cpu_cores']}, "
          f"ms/frame {summary['cpu_ms_per_frame']}; load {summary['load_avg']}")
    assert summary["results"] > 0, "no result reached the logic stage"
    benchmark.extra_info.update(kind="capacity", row=row, offered_target_fps=cameras * fps, **summary)


def _median_ms(fn, rounds: int) -> float:
    fn()  # warm
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000.0, 3)


def test_physical_costs(benchmark, prof, bench_redis):
    """What each per-frame step of the pipeline costs alone, on one core of this machine (median ms)."""
    import cv2
    import numpy as np

    from fbvision.core.letterbox import letterbox
    from fbvision.core.modelinfo import load_model_info
    from fbvision.core.transport import Transport, message_id
    from fbvision.core.wire import FrameMessage, decode_frame, encode_frame
    from fbvision.synth import Scenario, SceneRenderer

    if not common.DEMO_MODEL.is_file():
        pytest.skip(f"{common.DEMO_MODEL} not present")
    height, width = load_model_info(common.DEMO_MODEL).input_size
    rounds = 5 if prof.quick else 100
    renderer = SceneRenderer(Scenario.builtin("two_horses"))
    index = iter(range(10**9))
    source = renderer.render(renderer.n_frames // 2)
    source_jpeg = cv2.imencode(".jpg", source, [cv2.IMWRITE_JPEG_QUALITY, 85])[1]
    boxed, box = letterbox(source, (width, height))
    jpeg = cv2.imencode(".jpg", boxed, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
    message = FrameMessage("cam-00", 0, time.time(), time.time(), box, jpeg)
    transport = Transport(bench_redis.url, frame_queue_cap=100_000)
    transport.client.flushall()
    seq = iter(range(10**9))

    def redis_hop():
        n = next(seq)
        transport.push_frames([encode_frame(message)], once=[message_id("cam-00", n, 0.0)])
        decode_frame(transport.pop_frames(1, 0.01)[0])

    costs = {
        "render_960x540_ms": _median_ms(lambda: renderer.render(next(index) % renderer.n_frames), rounds),
        "camera_decode_960x540_ms": _median_ms(lambda: cv2.imdecode(source_jpeg, cv2.IMREAD_COLOR), rounds),
        "letterbox_jpeg_encode_ms": _median_ms(
            lambda: cv2.imencode(".jpg", letterbox(source, (width, height))[0], [cv2.IMWRITE_JPEG_QUALITY, 85]),
            rounds),
        "jpeg_decode_ms": _median_ms(lambda: cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), rounds),
        "redis_hop_ms": _median_ms(redis_hop, rounds),
        "jpeg_bytes": len(jpeg),
        "input": f"{width}x{height}",
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    transport.close()
    print(f"\nphysical per-frame costs (median, one core): {costs}")
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    benchmark.extra_info.update(kind="physical", **costs)
