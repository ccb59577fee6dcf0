#!/usr/bin/env python3
"""What ``make bench`` runs: every benchmark suite in one pytest run, then the report.

    .venv/bin/python benchmarks/run_bench.py              # full run (~10 min on 2 cores) -> benchmarks/results/
    .venv/bin/python benchmarks/run_bench.py --quick      # smoke pass (< 60 s) -> benchmarks/results/quick/
    .venv/bin/python benchmarks/run_bench.py -- -k micro  # anything after -- goes to pytest
    .venv/bin/python -m benchmarks.run_bench --quick      # the same, from the repository root
    make bench ARGS=--quick

Writes ``<out>/<stamp>.json`` (pytest-benchmark's ``--benchmark-json``: stats, the machine, every suite's
tables in ``extra_info``), ``<out>/autotune.yaml``, then ``<out>/REPORT.md`` with ``throughput_vs_batch.png``,
``latency_cdf.png`` and ``memory_overload.png``. Exit status: pytest's (the report is still written when some
suite failed, from what did run). Nothing asserts a timing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def compact(json_path: Path) -> None:
    """Keep the committed JSON small: no raw per-round timings (the stats stay), no indentation."""
    import json

    doc = json.loads(json_path.read_text())
    for bench in doc.get("benchmarks", []):
        bench.get("stats", {}).pop("data", None)
    json_path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke pass: tiny model, one round (also FBV_BENCH_QUICK=1)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default benchmarks/results, or benchmarks/results/quick with --quick)")
    parser.add_argument("--report-only", type=Path, default=None, metavar="JSON",
                        help="rebuild the report from an existing JSON, run nothing")
    args = parser.parse_args(argv)

    if __package__:  # python -m benchmarks.run_bench
        from benchmarks import report
    else:  # python benchmarks/run_bench.py: this folder is on sys.path, and report.py imports no sibling
        import report

    if args.report_only:
        print(report.build(args.report_only, args.out))
        return 0

    quick = args.quick or os.environ.get("FBV_BENCH_QUICK", "").strip().lower() in ("1", "true", "yes", "on")
    out = (args.out or (REPO_ROOT / "benchmarks" / "results" / ("quick" if quick else ""))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    json_path = out / f"{stamp}.json"
    env = {**os.environ, "FBV_BENCH_RESULTS": str(out), "PYTHONUNBUFFERED": "1"}
    env["FBV_BENCH_QUICK"] = "1" if quick else "0"
    cmd = [
        sys.executable, "-m", "pytest", str(REPO_ROOT / "benchmarks"), "-m", "bench", "-p", "no:cacheprovider",
        "-s", f"--benchmark-json={json_path}", "--benchmark-columns=min,median,mean,stddev,rounds",
        "--benchmark-sort=name", *passthrough,
    ]
    print("+", " ".join(cmd), flush=True)
    started = time.monotonic()
    code = subprocess.call(cmd, cwd=REPO_ROOT, env=env)
    print(f"benchmarks finished in {time.monotonic() - started:.0f} s (pytest exit {code})", flush=True)
    if not json_path.is_file():
        print(f"no {json_path.name} was written: nothing to report", file=sys.stderr)
        return code or 1
    compact(json_path)
    path = report.build(json_path, out)
    print(f"report: {path}")
    return code


if __name__ == "__main__":
    sys.exit(main())
