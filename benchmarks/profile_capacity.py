"""Profile the capacity pipeline with py-spy: where the CPU of each stage goes at one load.

    PY_SPY=/path/to/py-spy PYTHONPATH=. .venv/bin/python benchmarks/profile_capacity.py --cameras 32 --fps 10 \\
        --engine null --seconds 15 [--camera-procs N] [--out runs/profile]

Runs :func:`benchmarks.pipeline.run_pipeline` (the capacity benchmark's pipeline) and, once it is warm, samples
every stage process (camera managers, inference worker, and the benchmark process with the logic thread) with
``py-spy record --format raw``; then prints each process's top functions by own time and by total time
(percent of the samples taken while the process was on a CPU - py-spy skips idle threads by default).
py-spy is not a dependency: ``pip install py-spy`` (any location; PY_SPY or PATH).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks import common
from benchmarks.pipeline import RunSpec, format_summary, run_pipeline


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(entry.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")).decode(errors="replace")
    except OSError:
        return ""


#: Leaves that are waits, not work (py-spy's idle detection does not see them all): a reader's sleep to its next
#: frame, condition/queue waits, blocking socket reads.
WAITS = ("SyntheticCapture.grab (fbvision/camera/captures.py:187)", "Condition.wait (", "Event.wait (",
         "_HiredisParser.read_from_socket (", "_worker (concurrent/futures/thread.py:81)", "select (", "poll (")


def top_entries(raw: Path, n: int = 12) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(own time, total time) top ``n`` frames of a py-spy raw (collapsed) file, as % of the samples that were
    not waiting (:data:`WAITS`)."""
    own: collections.Counter = collections.Counter()
    total: collections.Counter = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        frames = [f for f in stack.split(";") if not f.startswith(("thread (", "process "))]
        if not frames or frames[-1].startswith(WAITS):
            continue
        samples += k
        own[frames[-1]] += k
        for f in set(frames):
            total[f] += k
    if not samples:
        return [], []
    return ([(f, round(100.0 * c / samples, 1)) for f, c in own.most_common(n)],
            [(f, round(100.0 * c / samples, 1)) for f, c in total.most_common(n)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=32)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--engine", default="null")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--camera-procs", type=int, default=0, help="0: camera.processes resolved")
    parser.add_argument("--rate", type=int, default=97, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=Path("runs/profile"))
    parser.add_argument("--summarise", type=Path, nargs="*", default=None, metavar="RAW",
                        help="only print the top entries of saved py-spy raw files")
    args = parser.parse_args()
    if args.summarise is not None:
        for raw in args.summarise:
            _print_top(raw.name, raw)
        return 0
    spy = os.environ.get("PY_SPY") or shutil.which("py-spy")
    if not spy:
        print("py-spy not found: pip install py-spy, or set PY_SPY", file=sys.stderr)
        return 2
    from fbvision.core.config import CameraManagerConfig
    from fbvision.run.redis_server import EmbeddedRedis

    args.out.mkdir(parents=True, exist_ok=True)
    procs = args.camera_procs or CameraManagerConfig().resolved_processes(args.cameras)
    spec = RunSpec(model_path=str(common.DEMO_MODEL), cameras=args.cameras, fps=args.fps, max_batch=8,
                   max_wait_ms=10.0, frame_queue_cap=64, engine=args.engine, camera_procs=procs, warmup_s=3.0,
                   measure_s=args.seconds + 4.0)
    with EmbeddedRedis(maxmemory_mb=1024) as server:
        result: dict = {}
        runner = threading.Thread(target=lambda: result.update(run_pipeline(spec, server.url, server.proc.pid)))
        runner.start()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            kids = [p for p in _children(os.getpid()) if "spawn_main" in _cmdline(p)]
            if len(kids) >= procs + 1:  # inference and the camera managers (+ the resource tracker)
                break
            time.sleep(0.5)
        time.sleep(6.0)  # the cameras' first frames, the logic worker's first results, warm-up
        targets = {f"proc-{pid}": pid for pid in _children(os.getpid()) if "spawn_main" in _cmdline(pid)}
        targets["bench+logic"] = os.getpid()
        spies = {name: subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(args.seconds)),
                                         "--rate", str(args.rate), "--format", "raw", "--nonblocking",
                                         "--threads", "--output", str(args.out / f"{name}.txt")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for name, pid in targets.items()}
        for proc in spies.values():
            proc.wait()
        runner.join()
    print(format_summary(result))
    print(f"pushed {result.get('pushed_fps')}/s judged {result.get('judged_fps')}/s cpu cores {result.get('cpu_cores')} "
          f"ms/frame {result.get('cpu_ms_per_frame')} load {result.get('load_avg')}")
    for name in targets:
        raw = args.out / f"{name}.txt"
        if not raw.is_file():
            continue
        _print_top(name, raw)
    return 0


def _print_top(name: str, raw: Path) -> None:
    own, total = top_entries(raw)
    print(f"\n== {name}")
    print("  own time:")
    for f, pct in own:
        print(f"    {pct:5.1f}%  {f}")
    print("  total time:")
    for f, pct in total:
        print(f"    {pct:5.1f}%  {f}")


if __name__ == "__main__":
    sys.exit(main())
