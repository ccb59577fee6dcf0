"""What persisting the frame queue costs: AOF disk bytes/s and push latency at N cameras x fps, both ways.

    .venv/bin/python -m benchmarks.aof_cost [--cameras 32] [--fps 10] [--seconds 20] [--json out.json]

Real frames (the demo's synthetic scenes letterboxed to 320x320, JPEG q85: ~20 KB) go through the real transport
(``Transport.push_frames`` with once ids, as the camera manager pushes; ``pop_frames`` + one
``publish_results`` per frame, as the inference worker does) at ``cameras x fps`` frames/s, in three set-ups:

* ``one-aof``: one Redis with ``appendonly yes`` (``appendfsync everysec``) holding frames and durable state - what
  production had to run before the two roles;
* ``split``: frames in an ephemeral Redis (no persistence), results in a durable one with AOF (``redis.frames_url``);
* ``one-none``: one Redis without persistence (the embedded default: fast, loses everything on a restart).

Per set-up: the AOF's growth in bytes/s (the append-only files' total size, measured every 0.5 s, summed over
positive steps so a rewrite that shrinks the files does not hide what was written), AOF rewrites, disk bytes
written by the durable server (``/proc/<pid>/io`` ``write_bytes``, when the kernel accounts it), and push latency
p50/p95/p99 per push round trip (one push carries the frames read since the last one: ``--per-push`` frames).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from fbvision.core.letterbox import Letterbox, letterbox
from fbvision.core.transport import Transport, message_id
from fbvision.core.wire import FrameMessage, ResultMessage, Timeline, encode_frame, encode_result
from fbvision.run.redis_server import EmbeddedRedis

AOF_ARGS = ["--appendonly", "yes", "--appendfsync", "everysec"]


def synthetic_images(n: int = 48, size: int = 320) -> list[np.ndarray]:
    """``n`` letterboxed frames of the demo's built-in scenarios (every few frames of each)."""
    from fbvision.synth.renderer import SceneRenderer
    from fbvision.synth.scenario import Scenario, builtin_scenarios

    names = builtin_scenarios()
    per = max(1, n // len(names) + 1)
    out: list[np.ndarray] = []
    for name in names:
        renderer = SceneRenderer(Scenario.builtin(name))
        step = max(1, renderer.n_frames // per)
        for i in range(0, renderer.n_frames, step)[:per]:
            out.append(letterbox(renderer.render(i), (size, size))[0])
    return out[:n]


def jpegs(images: list[np.ndarray], quality: int = 85) -> list[bytes]:
    return [cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes() for im in images]


def _aof_bytes(server: EmbeddedRedis) -> int:
    return sum(p.stat().st_size for p in server.workdir.rglob("*.aof") if p.is_file())


def _write_bytes(server: EmbeddedRedis) -> int | None:
    try:
        for line in Path(f"/proc/{server.proc.pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except (OSError, AttributeError):
        return None
    return None


def run_setup(name: str, payloads: list[bytes], cameras: int, fps: float, seconds: float, per_push: int) -> dict:
    durable = EmbeddedRedis(extra_args=AOF_ARGS if name in ("one-aof", "split") else [], maxmemory_mb=1024)
    frames_server = EmbeddedRedis(maxmemory_mb=1024) if name == "split" else None
    servers = [s for s in (durable, frames_server) if s is not None]
    for s in servers:
        s.start()
    try:
        transport = Transport(durable.url, frames_url=frames_server.url if frames_server else None,
                              frame_queue_cap=10_000, result_partitions=8)
        consumer = Transport(durable.url, frames_url=frames_server.url if frames_server else None,
                             frame_queue_cap=10_000, result_partitions=8)
        rate = cameras * fps
        period = per_push / rate
        stop = threading.Event()
        popped = [0]

        def consume() -> None:
            empty = np.zeros((0, 4), np.float32)
            while not stop.is_set() or consumer.frame_queue_depth():
                got = consumer.pop_frames(32, 0.05)
                if not got:
                    continue
                now = time.time()
                results = [(f"cam-{i % cameras:03d}", encode_result(ResultMessage(
                    f"cam-{i % cameras:03d}", popped[0] + i, 960, 540, Timeline(now, now, now, now, now, now), 1,
                    empty, np.zeros(0, np.float32), np.zeros(0, np.int32)))) for i in range(len(got))]
                consumer.publish_results(results, once=[f"r{popped[0] + i}" for i in range(len(got))])
                popped[0] += len(got)

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        latencies: list[float] = []
        samples: list[tuple[float, int]] = []
        write0 = _write_bytes(durable)
        seq = 0
        t_start = time.perf_counter()
        next_push = t_start
        next_sample = t_start
        while True:
            now = time.perf_counter()
            if now - t_start >= seconds:
                break
            if now >= next_sample:
                samples.append((now, _aof_bytes(durable)))
                next_sample += 0.5
            if now < next_push:
                time.sleep(min(next_push - now, 0.002))
                continue
            ts = time.time()
            batch, once = [], []
            for _ in range(per_push):
                cam = f"cam-{seq % cameras:03d}"
                batch.append(encode_frame(FrameMessage(cam, seq, ts, ts, Letterbox(960, 540, 320, 320, 1 / 3, 0.0, 70.0),
                                                       payloads[seq % len(payloads)])))
                once.append(message_id(cam, seq, ts))
                seq += 1
            t0 = time.perf_counter()
            transport.push_frames(batch, once=once)
            latencies.append(time.perf_counter() - t0)
            next_push += period
        elapsed = time.perf_counter() - t_start
        samples.append((time.perf_counter(), _aof_bytes(durable)))
        stop.set()
        thread.join(30)
        write1 = _write_bytes(durable)
        info = durable.client().info("persistence")
        grown = sum(max(0, b - a) for (_, a), (_, b) in zip(samples, samples[1:], strict=False))
        ms = np.asarray(latencies) * 1000.0
        frame_bytes = float(np.mean([len(p) for p in payloads]))
        out = {
            "setup": name, "cameras": cameras, "fps": fps, "seconds": round(elapsed, 1),
            "frames_pushed": seq, "frames_per_s": round(seq / elapsed, 1), "frames_popped": popped[0],
            "jpeg_bytes_mean": round(frame_bytes), "pushes": len(latencies), "frames_per_push": per_push,
            "aof_bytes_per_s": round(grown / elapsed) if name != "one-none" else 0,
            "aof_rewrites": int(info.get("aof_rewrites", 0)),
            "disk_write_bytes_per_s": round((write1 - write0) / elapsed) if write0 is not None and write1 is not None
            else None,
            "push_ms_p50": round(float(np.percentile(ms, 50)), 3), "push_ms_p95": round(float(np.percentile(ms, 95)), 3),
            "push_ms_p99": round(float(np.percentile(ms, 99)), 3), "push_ms_max": round(float(ms.max()), 3),
        }
        transport.close()
        consumer.close()
        return out
    finally:
        for s in servers:
            s.cleanup()


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=32)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--per-push", type=int, default=4, help="frames per push round trip")
    parser.add_argument("--setups", default="one-aof,split,one-none")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    payloads = jpegs(synthetic_images())
    rows = [run_setup(name, payloads, args.cameras, args.fps, args.seconds, args.per_push)
            for name in args.setups.split(",")]
    cols = ["setup", "frames_per_s", "jpeg_bytes_mean", "aof_bytes_per_s", "aof_rewrites", "disk_write_bytes_per_s",
            "push_ms_p50", "push_ms_p95", "push_ms_p99", "push_ms_max"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
