"""Inference throughput with one and with two workers on one Redis (measured, printed, in the summary table).

The frame queue is filled with real letterboxed JPEG frames (synthetic stall scenes) faster than the workers can
take them, then timed until every frame is inferred. Each worker is sized to one core (``intra_op_threads=1``,
no auto-tune, batch up to 4), the way one would size workers per core or per GPU; with ``max_age_ms`` raised so
that no frame goes stale in the queue, the number inferred is the number pushed. The CI box is shared, so the
two set-ups alternate (1, 2, 1, 2 workers) and each keeps its best round: the least disturbed measurement.

The workers' CPU time is measured too (``/proc/<pid>/stat``): two workers can only be faster when the machine
gives them more CPU than one. When it does (>= 1.3x the cores), throughput must grow by >= 1.15x; in every
case the frames per CPU-second of two workers sharing the queue must stay within 25 % of one worker's - sharing
the queue costs nothing, so the throughput grows with the CPU (or GPUs) given to the workers.
"""

from __future__ import annotations

import logging
import os
import time

import cv2
import fbv_fault_harness as h
import pytest

from fbvision.camera.factory import load_scenario
from fbvision.core.letterbox import letterbox
from fbvision.core.modelinfo import load_model_info
from fbvision.core.transport import Transport
from fbvision.core.wire import FrameMessage, encode_frame
from fbvision.run.redis_server import EmbeddedRedis
from fbvision.run.supervisor import StageSpec, Supervisor
from fbvision.synth import SceneRenderer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

FRAMES = 240
ROUNDS = 2
MIN_GAIN = 1.15  # on 2 shared cores; an idle 2-core runner measures about 1.6-1.9x


def _frames(n: int) -> list[tuple[str, int, bytes, object]]:
    height, width = load_model_info(h.model_path()).input_size
    renderer = SceneRenderer(load_scenario("down_long"))
    out = []
    for i in range(n):
        image, box = letterbox(renderer.frame((i * 7) % renderer.n_frames), (width, height))
        out.append((f"cam-{i % 8:02d}", i, cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes(), box))
    return out


def _cpu_s(pids) -> float:
    """User + system CPU seconds of these processes (all their threads) so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks


def _measure(workers: int, frames, tmp_path) -> tuple[float, float]:
    """(frames/s, cores the workers used meanwhile)."""
    settings = h.make_settings({}, inference={"autotune": False, "max_batch": 4, "max_age_ms": 60_000},
                               model={"intra_op_threads": 1}, redis={"frame_queue_cap": 10_000})
    with EmbeddedRedis() as redis:
        t = Transport.from_config(settings.redis, url=redis.url)
        cfg = settings.model_dump_json()
        specs = [StageSpec(f"inference-{i}", h.logged_stage, (str(tmp_path / f"inference-{workers}-{i}.log"),
                                                               "inference", cfg, redis.url))
                 for i in range(1, workers + 1)]
        sup = Supervisor(specs, log_level=logging.INFO)
        sup.start()
        try:
            h.wait_for(lambda: len([n for n in t.snapshots() if n.startswith("inference:")]) == workers, 120,
                       what=f"{workers} inference workers ready")
            pids = [r.process.pid for r in sup.running.values()]
            cpu0 = _cpu_s(pids)
            now = time.time()
            t.push_frames([encode_frame(FrameMessage(cam, seq, now, now, box, jpeg))
                           for cam, seq, jpeg, box in frames])
            t0 = time.monotonic()
            # counters are flushed about once a second: read the result streams instead
            h.wait_for(lambda: sum(t.client.xlen(t.keys.results(p)) for p in range(t.result_partitions)) >= len(frames),
                       240, interval_s=0.05, what="all frames inferred")
            elapsed = time.monotonic() - t0
            cores = (_cpu_s(pids) - cpu0) / elapsed
            assert t.frame_queue_depth() == 0
        finally:
            sup.stop(timeout_s=20)
            t.close()
    return len(frames) / elapsed, cores


def test_throughput_grows_with_workers(tmp_path):
    frames = _frames(FRAMES)
    rounds: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    load = os.getloadavg()[0]
    for _ in range(ROUNDS):
        for workers in (1, 2):
            rounds[workers].append(_measure(workers, frames, tmp_path))
    (one, cores1), (two, cores2) = max(rounds[1]), max(rounds[2])
    line = (f"inference throughput ({FRAMES} frames, demo model 320, ONNX Runtime CPU, 1 thread per worker, "
            f"{os.cpu_count()} cores, load avg {load:.1f}): 1 worker {one:.1f} frames/s on {cores1:.2f} cores, "
            f"2 workers {two:.1f} frames/s on {cores2:.2f} cores ({two / one:.2f}x); per CPU-second "
            f"{one / cores1:.1f} vs {two / cores2:.1f}")
    h.FIGURES.append(line)
    print(line)
    assert two / cores2 >= 0.75 * one / cores1, line
    if cores2 >= 1.3 * cores1:
        assert two >= MIN_GAIN * one, line
