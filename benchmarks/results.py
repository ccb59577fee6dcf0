"""Benchmark results as tables (notebooks/02_batching_and_latency.ipynb; tests/unit/test_bench_results.py)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.report import TARGETS, _f, by_kind, load

#: ``<stamp>.json`` as run_bench.py names its results (``gpu-*.json`` and the rest are not benchmark runs).
RESULT_NAME = r"^\d{8}-\d{6}\.json$"
#: The stages of one result in pipeline order (``pipeline.summarise``), then the two derived series.
STAGE_ORDER = ("encode", "queue_wait", "batch_decode", "inference", "publish", "to_logic", "logic", "end_to_end",
               "overhead", "overhead_without_queue")


def result_files(folder: Path) -> list[Path]:
    """The benchmark results (``<stamp>.json``) in ``folder``, oldest first (the stamp sorts by time)."""
    import re

    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and re.match(RESULT_NAME, p.name))


def gpu_files(*folders: Path) -> list[Path]:
    """``gpu-*.json`` written by benchmarks/gpu_check.py in any of ``folders`` (each file once)."""
    found: dict[Path, None] = {}
    for folder in folders:
        if folder is not None and Path(folder).is_dir():
            for p in sorted(Path(folder).glob("gpu-*.json")):
                found[p.resolve()] = None
    return list(found)


def find_results(results_dir: Path | None = None) -> dict:
    """Which run to read: the newest full result in ``results_dir`` (default benchmarks/results), else the newest
    quick one in ``results_dir/quick``; and the GPU results (``gpu-*.json``) in ``results_dir``.

    Returns ``{"path": Path | None, "profile": "full" | "quick" | None, "gpu": [Path, ...]}``."""
    base = Path(results_dir) if results_dir is not None else Path(__file__).resolve().parent / "results"
    full, quick = result_files(base), result_files(base / "quick")
    if full:
        path, where = full[-1], "full"
    elif quick:
        path, where = quick[-1], "quick"
    else:
        path, where = None, None
    return {"path": path, "profile": where, "gpu": gpu_files(base)}


def _number(value) -> float | None:
    """A number from the JSON (Redis CONFIG GET answers strings); None when absent or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _frame(rows: list[dict], columns: list[str]):
    import pandas as pd

    frame = pd.DataFrame(rows)
    for col in columns:
        if col not in frame.columns:
            frame[col] = pd.Series(dtype="object")
    return frame[columns + [c for c in frame.columns if c not in columns]]


def _run_label(info: dict, source: str) -> str:
    where = "" if source == "bench" else f" [{source}]"
    return f"{info['kind']} {info.get('model_key', info.get('model'))}@{info['imgsz']} {info['cameras']}x{info['fps']:g} fps{where}"


def _run_tables(runs: list[tuple[str, dict]]) -> dict:
    """Tables of pipeline runs (e2e / overload summaries of benchmarks/pipeline.py), ``runs`` = [(source, info)]."""
    meta, latency, cdf, worker, drops, memory = [], [], [], [], [], []
    for source, info in runs:
        label = _run_label(info, source)
        drops_total = int(sum((info.get("drops") or {}).values()))
        meta.append({
            "run": label, "source": source, "kind": info["kind"], "model_key": info.get("model_key"),
            "model": info.get("model"), "imgsz": info.get("imgsz"), "engine": info.get("engine"),
            "cameras": info.get("cameras"), "fps": info.get("fps"), "max_batch": info.get("max_batch"),
            "max_wait_ms": info.get("max_wait_ms"), "max_age_ms": info.get("max_age_ms"),
            "frame_queue_cap": info.get("frame_queue_cap"), "measure_s": info.get("measure_s"),
            "offered_fps": info.get("offered_fps"), "inferred_fps": info.get("inferred_fps"),
            "judged_fps": info.get("judged_fps"), "results": info.get("results"),
            "mean_batch_size": info.get("mean_batch_size"), "candidates_per_result": info.get("candidates_per_result"),
            "dropped_total": drops_total, "offered_vs_inferred": info.get("offered_vs_inferred"),
            "sustained_fps": info.get("sustained_fps"), "latency_bound_ms": info.get("latency_bound_ms"),
            "p99_within_bound": info.get("p99_within_bound"),
            "rss_pipeline_growth_mb": info.get("rss_pipeline_growth_mb"),
        })
        stages = dict(info.get("stages_ms") or {})
        stages["overhead"] = info.get("overhead_ms") or {}
        stages["overhead_without_queue"] = info.get("overhead_without_queue_ms") or {}
        for stage in STAGE_ORDER:
            p = stages.get(stage) or {}
            if p.get("count"):
                latency.append({"run": label, "kind": info["kind"], "stage": stage, "count": p["count"],
                                "mean": p.get("mean"), "p50": p.get("p50"), "p95": p.get("p95"), "p99": p.get("p99"),
                                "max": p.get("max")})
        for series, points in (info.get("cdf_ms") or {}).items():
            n = len(points)
            for i, ms in enumerate(points):
                cdf.append({"run": label, "kind": info["kind"], "series": series,
                            "q": i / (n - 1) if n > 1 else 1.0, "ms": ms})
        for step, ms in (info.get("worker_mean_ms_per_batch") or {}).items():
            worker.append({"run": label, "step": step, "ms_per_batch": ms})
        for reason, count in (info.get("drops") or {}).items():
            drops.append({"run": label, "stage": reason.split(":", 1)[0], "reason": reason, "count": int(count)})
        for process, rss in (info.get("rss") or {}).items():
            series = rss.get("series") or []
            start = series[0][1] if series else None
            for t, mb in series:
                memory.append({"run": label, "process": process, "t_s": t, "rss_mb": mb, "delta_mb": mb - start,
                               "judged": process != "camera"})
    return {
        "runs": _frame(meta, ["run", "source", "kind", "model_key", "cameras", "fps", "offered_fps", "inferred_fps"]),
        "latency": _frame(latency, ["run", "kind", "stage", "count", "mean", "p50", "p95", "p99", "max"]),
        "cdf": _frame(cdf, ["run", "kind", "series", "q", "ms"]),
        "worker": _frame(worker, ["run", "step", "ms_per_batch"]),
        "drops": _frame(drops, ["run", "stage", "reason", "count"]),
        "memory": _frame(memory, ["run", "process", "t_s", "rss_mb", "delta_mb", "judged"]),
    }


def _gpu_tables(docs: list[tuple[Path, dict]]) -> dict:
    summary, batching, worker = [], [], []
    for path, g in docs:
        card = g.get("gpu", path.stem)
        ratios = g.get("ratios") or {}
        e2e = (g.get("e2e") or {}).get("stages_ms", {}).get("end_to_end", {})
        summary.append({
            # gpu_check.py --device cpu (a dry run of the script) names its "card" "cpu (<model>)"
            "gpu": card, "on_gpu": not str(card).lower().startswith("cpu"), "file": path.name, "date": g.get("date"),
            "engine": g.get("engine_note"),
            "torch": g.get("torch"), "cuda": g.get("cuda"), "model": (g.get("model") or {}).get("file"),
            "largest_batch": ratios.get("largest_batch"), "host_ratio_largest": ratios.get("host_b32"),
            "device_ratio_largest": ratios.get("device_b32"),
            "autotune_batch": (g.get("autotune") or {}).get("batch"),
            "autotune_wait_ms": (g.get("autotune") or {}).get("max_wait_ms"),
            "e2e_p95_ms": e2e.get("p95"), "e2e_skipped": g.get("e2e_skipped"),
        })
        for variant, v in (g.get("variants") or {}).items():
            for row in v.get("batching", []):
                batching.append({"gpu": card, "variant": variant, "provider": v.get("provider"), **row})
        for row in g.get("worker_path") or []:
            worker.append({"gpu": card, **row})
    return {
        "gpu": _frame(summary, ["gpu", "on_gpu", "file", "largest_batch", "host_ratio_largest",
                                "device_ratio_largest", "e2e_p95_ms"]),
        "gpu_batching": _frame(batching, ["gpu", "variant", "provider", "batch", "host_fps", "host_ratio",
                                          "device_fps", "device_ratio"]),
        "gpu_worker": _frame(worker, ["gpu", "mode", "max_batch", "frames_per_s", "ratio_vs_sequential"]),
    }


def load_results(path_or_dir: Path | str | None = None, gpu: list[Path] | None = None) -> dict:
    """One benchmark run (and any GPU results) as pandas tables, for a notebook to show and plot.

    ``path_or_dir``: a ``<stamp>.json``, or a results folder (default benchmarks/results) searched by
    :func:`find_results` (newest full result, else newest quick one). ``gpu``: ``gpu-*.json`` files; by default
    those beside the JSON (and, for a quick result, in the results folder above ``quick/``).

    Returns a dict: ``path``, ``profile`` ("full" / "quick", from the run's own profile), ``datetime``,
    ``machine`` (a Series: CPU, cores, memory, GPUs, ONNX Runtime and its providers, the engine that ran, load
    average), ``machine_line`` (the same in one line), ``targets`` (:data:`TARGETS`) and DataFrames:

    * ``throughput`` - batching sweep per model: mode, max_batch, frames/s (median round, min, max), ms/frame,
      ``ratio_vs_sequential``; ``fixed`` marks the batch-N rows;
    * ``model_only`` / ``autotune`` - the auto-tune sweep (tensor in, head out) and its choice;
    * ``runs`` - one row per pipeline run (end to end, overload; GPU end to end with ``source`` = the card);
    * ``latency`` - percentiles (ms) per run and stage, pipeline order, plus ``overhead`` (end to end - model)
      and ``overhead_without_queue``; ``cdf`` - quantiles (``q``, ``ms``) of end to end, overhead, inference;
    * ``worker`` - the inference worker's mean ms per batch by step; ``drops`` - count by reason;
      ``memory`` - VmRSS per process over the measured window (``t_s``, ``rss_mb``, ``delta_mb``);
    * ``micro`` - per-step micro-benchmarks (µs);
    * ``gpu`` / ``gpu_batching`` / ``gpu_worker`` - GPU results (empty tables when there are none).
    """
    import pandas as pd

    if path_or_dir is None or Path(path_or_dir).is_dir():
        found = find_results(path_or_dir)
        if found["path"] is None:
            where = path_or_dir or Path(__file__).resolve().parent / "results"
            raise FileNotFoundError(f"no benchmark result (<stamp>.json) in {where} or its quick/ folder")
        path = found["path"]
    else:
        path = Path(path_or_dir)
    doc = load(path)
    if gpu is None:
        gpu = gpu_files(path.parent, path.parent.parent if path.parent.name == "quick" else None)
    gpu_docs = [(Path(p), load(p)) for p in gpu]

    mi = doc.get("machine_info", {})
    fb = mi.get("fbvision", {})
    providers = sorted({b["extra_info"].get("provider") for b in doc.get("benchmarks", [])
                        if b.get("extra_info", {}).get("provider")})
    quick = bool(doc.get("fbvision", {}).get("profile", {}).get("quick"))
    machine = pd.Series({
        "cpu": fb.get("cpu", mi.get("cpu", {}).get("brand_raw", "?")),
        "cores": fb.get("cores"), "cores_usable": fb.get("cores_usable"), "memory_gb": fb.get("memory_gb"),
        "gpus": ", ".join(fb.get("gpus") or []) or "none",
        "os": fb.get("os", mi.get("system")), "python": fb.get("python", mi.get("python_version")),
        "onnxruntime": fb.get("onnxruntime"), "ort_providers": ", ".join(fb.get("ort_providers") or []),
        "engine_that_ran": ", ".join(providers) or "?", "load_avg_at_start": fb.get("load_avg_at_start"),
        "host": fb.get("hostname", mi.get("node")),
    }, name=path.name)
    machine_line = (f"{machine['cpu']}, {machine['cores']} cores ({machine['cores_usable']} usable), "
                    f"{_f(machine['memory_gb'], 1, ' GB')}, GPU: {machine['gpus']}; ONNX Runtime "
                    f"{machine['onnxruntime']} ran {machine['engine_that_ran']}; load average at start "
                    f"{machine['load_avg_at_start']}; host {machine['host']}")

    throughput, model_only, autotune = [], [], []
    for bench in by_kind(doc, "batching"):
        info = bench["extra_info"]
        for row in info["table"]:
            throughput.append({"model_key": info["model_key"], "model": info["model"]["file"],
                               "imgsz": info["model"].get("imgsz"), "provider": info["provider"], **row,
                               "fixed": row["mode"].startswith("batch-")})
    for bench in by_kind(doc, "autotune"):
        info = bench["extra_info"]
        autotune.append({"model_key": info["model_key"], "model": info["model"]["file"], "provider": info["provider"],
                         "chosen_batch": info["chosen_batch"], "chosen_wait_ms": info["chosen_wait_ms"],
                         "seconds": info.get("seconds")})
        for row in info["table"]:
            model_only.append({"model_key": info["model_key"], "provider": info["provider"], **row,
                               "chosen": row["batch"] == info["chosen_batch"]})

    micro = []
    for b in by_kind(doc, "micro"):
        s, info = b["stats"], b["extra_info"]
        micro.append({"name": b.get("name"), "step": info["step"], "per": info.get("per", "frame"),
                      "median_us": s["median"] * 1e6, "mean_us": s["mean"] * 1e6, "stddev_us": s["stddev"] * 1e6,
                      "min_us": s["min"] * 1e6, "rounds": s.get("rounds"), "redis_hz": _number(info.get("redis_hz"))})

    runs = [("bench", b["extra_info"]) for b in by_kind(doc, "e2e") + by_kind(doc, "overload")]
    for p, g in gpu_docs:
        if g.get("e2e"):
            runs.append((f"gpu: {g.get('gpu', p.stem)}",
                         {"kind": "e2e", "model_key": "yolo11n", **g["e2e"]}))
    tables = _run_tables(runs)
    micro_frame = _frame(micro, ["step", "per", "median_us", "mean_us", "stddev_us", "rounds"])
    if len(micro_frame):
        micro_frame = micro_frame.sort_values("median_us", ignore_index=True)
    return {
        "path": path, "profile": "quick" if quick else "full", "datetime": doc.get("datetime"),
        "machine": machine, "machine_line": machine_line, "targets": dict(TARGETS),
        "models": _frame([{"key": k, **m} for k, m in doc.get("fbvision", {}).get("models", {}).items()],
                         ["key", "file", "input", "max_batch", "weights"]),
        "throughput": _frame(throughput, ["model_key", "provider", "mode", "max_batch", "frames_per_s",
                                          "frames_per_s_min", "frames_per_s_max", "ms_per_frame",
                                          "ratio_vs_sequential", "fixed"]),
        "model_only": _frame(model_only, ["model_key", "provider", "batch", "frames_per_s", "ratio_vs_1", "chosen"]),
        "autotune": _frame(autotune, ["model_key", "provider", "chosen_batch", "chosen_wait_ms"]),
        **tables,
        "micro": micro_frame,
        **_gpu_tables(gpu_docs),
        "gpu_files": [p for p, _ in gpu_docs],
    }


def verdicts(res: dict) -> pandas.DataFrame:  # noqa: F821 - pandas is imported lazily
    """The claims and targets of docs/benchmarks.md against a :func:`load_results` result, one row each:
    ``claim``, ``measured`` (a number), ``target``, ``met`` (True / False; None where the claim does not apply
    to this hardware or was not measured), ``note``."""
    rows = []
    on_gpu = any(("CUDA" in p or "Tensorrt" in p) for p in res["machine"]["engine_that_ran"].split(", "))
    hw = "GPU" if on_gpu else f"CPU ({res['machine']['cores']} cores)"
    tp = res["throughput"]
    for key, t in tp.groupby("model_key", sort=False) if len(tp) else []:
        fixed = t[t["fixed"]]
        largest = fixed.loc[fixed["max_batch"].idxmax()]
        rows.append({"claim": f"~4x throughput from batching ({key}, batch {largest['max_batch']} vs sequential)",
                     "measured": largest["ratio_vs_sequential"], "target": TARGETS["gpu_ratio_b32"],
                     "met": bool(largest["ratio_vs_sequential"] >= TARGETS["gpu_ratio_b32"]) if on_gpu else None,
                     "note": f"on {hw}" + ("" if on_gpu else ": a GPU claim, not applicable")})
        dyn = t[t["mode"] == "dynamic"]
        if len(dyn) and not on_gpu:
            d = dyn.iloc[0]
            rows.append({"claim": f"CPU: auto-tuned worker never slower than sequential ({key})",
                         "measured": d["ratio_vs_sequential"], "target": TARGETS["cpu_dynamic_vs_sequential"],
                         "met": bool(d["ratio_vs_sequential"] >= TARGETS["cpu_dynamic_vs_sequential"]),
                         "note": f"batch {d['max_batch']}, wait {d['max_wait_ms']:.1f} ms"})
    lat = res["latency"].set_index(["run", "stage"]) if len(res["latency"]) else None
    for _, run in res["runs"].iterrows():
        def p(stage, q="p95", run=run):
            return lat.loc[(run["run"], stage), q] if lat is not None and (run["run"], stage) in lat.index else None
        gpu_run = run["source"] != "bench" and not run["source"].lower().startswith("gpu: cpu")  # not a dry run
        if run["kind"] == "e2e":
            if run["source"] == "bench" and not on_gpu:
                ov = p("overhead")
                rows.append({"claim": f"CPU: pipeline overhead p95 ({run['run']})", "measured": ov,
                             "target": TARGETS["cpu_overhead_p95_ms"],
                             "met": None if ov is None else bool(ov <= TARGETS["cpu_overhead_p95_ms"]),
                             "note": f"queue wait p95 {_f(p('queue_wait'))} ms; without it "
                                     f"{_f(p('overhead_without_queue'))} ms"})
            total = p("end_to_end")
            rows.append({"claim": f"end to end p95 < 50 ms ({run['run']})", "measured": total,
                         "target": TARGETS["gpu_e2e_p95_ms"],
                         "met": (None if total is None else bool(total < TARGETS["gpu_e2e_p95_ms"]))
                         if (gpu_run or on_gpu) else None,
                         "note": "GPU target" + ("" if (gpu_run or on_gpu) else ": not applicable on this CPU")})
        elif run["kind"] == "overload":
            rows.append({"claim": f"overload: p99 bounded by max_age + stages after the pop ({run['run']})",
                         "measured": p("end_to_end", "p99"), "target": run["latency_bound_ms"],
                         "met": None if run["p99_within_bound"] is None else bool(run["p99_within_bound"]),
                         "note": f"{run['dropped_total']} dropped; offered/inferred {run['offered_vs_inferred']}x"})
            growth = run["rss_pipeline_growth_mb"]
            rows.append({"claim": f"overload: memory flat (inference, Redis, logic) ({run['run']})",
                         "measured": growth, "target": 20.0,
                         "met": None if growth is None else bool(growth < 20.0),
                         "note": "largest RSS growth, MB (camera process not judged)"})
    for _, g in res["gpu"].iterrows():
        r = g["host_ratio_largest"]
        rows.append({"claim": f"GPU {g['gpu']}: batch {g['largest_batch']} >= 4x sequential (host to host)",
                     "measured": r, "target": TARGETS["gpu_ratio_b32"],
                     "met": None if r is None or not g["on_gpu"] else bool(r >= TARGETS["gpu_ratio_b32"]),
                     "note": f"model only {_f(g['device_ratio_largest'], 2)}x; aim {TARGETS['gpu_ratio_b32_aim']:g}x"
                             + ("" if g["on_gpu"] else "; a CPU dry run of gpu_check, not a GPU")})
    if not (len(res["gpu"]) and res["gpu"]["on_gpu"].any()) and not on_gpu:
        rows.append({"claim": "GPU targets (batch 32 >= 4x; p95 < 50 ms at 32 x 15 fps)", "measured": None,
                     "target": None, "met": None, "note": "not measured: no GPU result (benchmarks/gpu_check.sh)"})
    return _frame(rows, ["claim", "measured", "target", "met", "note"])


