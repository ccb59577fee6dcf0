"""Is the in-run auto-tune's choice stable under load? The former rule vs the robust one, on the demo model.

    .venv/bin/python -m benchmarks.autotune_stability [--runs 6] [--budget 2] [--load bursty|none]

Each run auto-tunes the demo model (ONNX Runtime CPU, batch sizes 1, 2, 4, 8) twice - with the *former* rule
(``margin=None``: the smallest size within 5 % of the best median, at least 3 rounds) and with the *robust* one
(the defaults: at least 5 interleaved rounds, rotating order, each size timed paired with batch 1, a size > 1
only when it beat batch 1 by 10 % in 3 pairs of 4) - in alternation, while a bursty CPU load runs beside it (a busy process switched on and off at
random every 50-400 ms: other stages starting, a camera reconnecting). After each choice, the chosen size is
measured again against batch 1 (``--recheck`` interleaved pairs): the "next measurement" of the issue (b4 chosen
at 1.59x, then 0.82x). Printed: per rule, the choices and the re-measured ratio of each.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import time
from pathlib import Path

import numpy as np

from fbvision.core.config import DEMO_MODEL
from fbvision.inference.batcher import autotune


def _burner(stop, seed: int) -> None:
    rng = random.Random(seed)
    while not stop.is_set():
        on = rng.uniform(0.05, 0.4)
        end = time.perf_counter() + on
        if rng.random() < 0.5:
            while time.perf_counter() < end:
                sum(range(2000))
        else:
            time.sleep(on)


def recheck(engine, batch: int, pairs: int) -> float:
    """Throughput ratio of ``batch`` vs 1, median of ``pairs`` interleaved measurements."""
    if batch == 1:
        return 1.0
    h, w = engine.input_size
    one, big = np.random.rand(1, 3, h, w).astype(np.float32), np.random.rand(batch, 3, h, w).astype(np.float32)
    ratios = []
    for _ in range(pairs):
        engine.infer(one)
        t0 = time.perf_counter()
        engine.infer(one)
        t1 = time.perf_counter()
        engine.infer(big)
        t2 = time.perf_counter()
        engine.infer(big)
        t3 = time.perf_counter()
        ratios.append(batch * (t1 - t0) / (t3 - t2))
    return float(np.median(ratios))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="auto-tune stability under load")
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--budget", type=float, default=2.0)
    parser.add_argument("--recheck", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2, help="ORT intra-op threads")
    parser.add_argument("--load", choices=("bursty", "none"), default="bursty")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    from fbvision.inference.engines.ort import OrtEngine

    engine = OrtEngine(DEMO_MODEL, providers=["cpu"], intra_op_threads=args.threads)
    engine.warmup([1, 2, 4, 8])
    stop = mp.Event()
    burner = mp.Process(target=_burner, args=(stop, 1), daemon=True) if args.load == "bursty" else None
    if burner is not None:
        burner.start()
    out: dict[str, list] = {"former": [], "robust": []}
    try:
        for run in range(args.runs):
            for rule in ("former", "robust") if run % 2 == 0 else ("robust", "former"):
                kwargs = {"margin": None, "min_iterations": 3} if rule == "former" else {}
                result = autotune(engine, [1, 2, 4, 8], budget_s=args.budget, **kwargs)
                chosen = next(r for r in result.table if r["batch"] == result.batch)
                again = recheck(engine, result.batch, args.recheck)
                out[rule].append({"batch": result.batch, "ratio_at_choice": round(chosen["ratio_vs_1"], 3),
                                  "ratio_rechecked": round(again, 3), "rounds": result.rounds,
                                  "table": {r["batch"]: round(r["ratio_vs_1"], 2) for r in result.table}})
                print(f"run {run} {rule:>6}: batch {result.batch} at {chosen['ratio_vs_1']:.2f}x, rechecked "
                      f"{again:.2f}x ({result.rounds} rounds; ratios {out[rule][-1]['table']})", flush=True)
    finally:
        stop.set()
        if burner is not None:
            burner.join(5)
    for rule, rows in out.items():
        batches = [r["batch"] for r in rows]
        regret = [r for r in rows if r["ratio_rechecked"] < 1.0]
        print(f"{rule:>6}: choices {batches}; left batch 1 in {sum(b > 1 for b in batches)}/{len(rows)}; "
              f"choices slower than batch 1 on recheck "
              f"{len(regret)}/{len(rows)}; rechecked ratio of the choice min {min(r['ratio_rechecked'] for r in rows):.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
