"""benchmarks.results (the loaders): which results file is read, and the tables notebook 02 plots from it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from fbvision.core.config import REPO_ROOT

if str(REPO_ROOT) not in sys.path:  # benchmarks/ is a package at the repository root, not installed
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import report, results  # noqa: E402

STAGES = ("encode", "queue_wait", "batch_decode", "inference", "publish", "to_logic", "logic", "end_to_end")


def pct(mean: float, count: int = 50) -> dict:
    return {"count": count, "mean": mean, "p50": mean * 0.9, "p95": mean * 1.5, "p99": mean * 1.8, "max": mean * 2}


def pipeline_run(kind: str, cameras: int, fps: float, queue_ms: float, **extra) -> dict:
    means = {"encode": 3.0, "queue_wait": queue_ms, "batch_decode": 2.0, "inference": 40.0, "publish": 1.0,
             "to_logic": 1.0, "logic": 0.5}
    means["end_to_end"] = sum(means.values())
    return {
        "kind": kind, "model_key": "yolo11n", "model": "yolo11n-640.onnx", "imgsz": 640, "engine": "ort",
        "cameras": cameras, "fps": fps, "stagger": True, "max_batch": 1, "max_wait_ms": 0.0, "max_age_ms": 1000.0,
        "frame_queue_cap": 64, "measure_s": 30.0, "offered_fps": cameras * fps, "inferred_fps": 20.0,
        "judged_fps": 20.0, "results": 600, "stages_ms": {s: pct(means[s]) for s in STAGES},
        "overhead_ms": pct(means["end_to_end"] - 40.0), "overhead_without_queue_ms": pct(8.5),
        "worker_mean_ms_per_batch": {"wait": 0.1, "decode": 2.0, "infer": 40.0, "postprocess": 0.5, "publish": 1.0},
        "mean_batch_size": 1.0, "batch_sizes": {"1": 600}, "candidates_per_result": 0.0,
        "drops": extra.pop("drops", {}),
        "cdf_ms": {"end_to_end": [10.0, 20.0, 30.0, 40.0, 50.0], "overhead": [1.0, 2.0, 3.0, 4.0, 5.0],
                   "inference": [30.0, 35.0, 40.0, 45.0, 50.0]},
        "rss": {"inference": {"start_mb": 200.0, "end_mb": 201.0, "max_mb": 201.0, "growth_mb": 1.0,
                              "series": [[0.0, 200.0], [1.0, 200.5], [2.0, 201.0]]},
                "camera": {"start_mb": 300.0, "end_mb": 330.0, "max_mb": 330.0, "growth_mb": 30.0,
                           "series": [[0.0, 300.0], [1.0, 315.0], [2.0, 330.0]]}},
        "rss_pipeline_growth_mb": 1.0, **extra,
    }


def bench_doc(*, quick: bool = False, batching: bool = True, gpu_engine: bool = False) -> dict:
    provider = "CUDAExecutionProvider" if gpu_engine else "CPUExecutionProvider"
    table = [
        {"mode": "sequential", "max_batch": 1, "max_wait_ms": 0.0, "frames_per_s": 20.0, "frames_per_s_min": 19.0,
         "frames_per_s_max": 21.0, "ms_per_frame": 50.0, "rounds": 3, "ratio_vs_sequential": 1.0},
        {"mode": "batch-1", "max_batch": 1, "max_wait_ms": 0.0, "frames_per_s": 21.0, "frames_per_s_min": 20.0,
         "frames_per_s_max": 22.0, "ms_per_frame": 47.6, "rounds": 3, "ratio_vs_sequential": 1.05},
        {"mode": "batch-32", "max_batch": 32, "max_wait_ms": 0.0, "frames_per_s": 18.0, "frames_per_s_min": 17.0,
         "frames_per_s_max": 19.0, "ms_per_frame": 55.6, "rounds": 3, "ratio_vs_sequential": 0.9},
        {"mode": "dynamic", "max_batch": 1, "max_wait_ms": 0.0, "frames_per_s": 19.8, "frames_per_s_min": 19.0,
         "frames_per_s_max": 20.5, "ms_per_frame": 50.5, "rounds": 3, "ratio_vs_sequential": 0.99},
    ]
    model = {"file": "yolo11n-640.onnx", "input": "640x640", "imgsz": 640, "max_batch": 32, "weights": "random",
             "size_mb": 10.8}
    benchmarks = [
        {"name": "test_autotune[yolo11n]", "stats": {"min": 1, "max": 1, "mean": 1, "stddev": 0, "median": 1,
                                                     "rounds": 1},
         "extra_info": {"kind": "autotune", "model_key": "yolo11n", "model": model, "provider": provider,
                        "table": [{"batch": 1, "frames_per_s": 25.0, "ms_per_batch": 40.0, "iterations": 5,
                                   "ratio_vs_1": 1.0},
                                  {"batch": 32, "frames_per_s": 24.0, "ms_per_batch": 1333.0, "iterations": 3,
                                   "ratio_vs_1": 0.96}],
                        "chosen_batch": 1, "chosen_wait_ms": 0.0, "seconds": 6.0, "snippet": "autotune.yaml"}},
        {"name": "test_end_to_end_latency[yolo11n]", "stats": {"min": 30, "max": 30, "mean": 30, "stddev": 0,
                                                               "median": 30, "rounds": 1},
         "extra_info": pipeline_run("e2e", 4, 5.0, queue_ms=12.0)},
        {"name": "test_overload[yolo11n]", "stats": {"min": 30, "max": 30, "mean": 30, "stddev": 0, "median": 30,
                                                     "rounds": 1},
         "extra_info": pipeline_run("overload", 8, 5.0, queue_ms=600.0,
                                    drops={"queue:queue_full": 120, "inference:stale": 30},
                                    sustained_fps=19.8, target_offered_fps=39.6, offered_vs_inferred=2.0,
                                    latency_bound_ms=1100.0, p99_within_bound=True, dropped_total=150)},
        {"name": "test_jpeg_decode", "stats": {"min": 0.001, "max": 0.003, "mean": 0.002, "stddev": 0.0005,
                                               "median": 0.002, "rounds": 200},
         "extra_info": {"kind": "micro", "step": "JPEG decode 640x640", "per": "frame", "imgsz": 640}},
        {"name": "test_nms", "stats": {"min": 0.00005, "max": 0.0001, "mean": 0.00006, "stddev": 0.00001,
                                       "median": 0.00006, "rounds": 200},
         "extra_info": {"kind": "micro", "step": "NMS", "per": "frame", "imgsz": 640}},
        {"name": "test_blocking_pop_timeout_resolution", "stats": {"min": 0.09, "max": 0.1, "mean": 0.1,
                                                                   "stddev": 0.001, "median": 0.1, "rounds": 10},
         "extra_info": {"kind": "micro", "step": "BLPOP 5 ms", "per": "call", "redis_hz": "10"}},
    ]
    if batching:
        benchmarks.insert(0, {"name": "test_batching_ratio[yolo11n]",
                              "stats": {"min": 1, "max": 1, "mean": 1, "stddev": 0, "median": 1, "rounds": 3},
                              "extra_info": {"kind": "batching", "model_key": "yolo11n", "model": model,
                                             "provider": provider, "frames_per_round": 32, "rounds": 3,
                                             "table": table}})
    return {
        "machine_info": {"node": "box", "fbvision": {
            "cpu": "Test CPU", "cores": 2, "cores_usable": 2, "memory_gb": 8.0, "gpus": [], "os": "Linux",
            "python": "3.11", "onnxruntime": "1.x", "ort_providers": ["CPUExecutionProvider"], "opencv": "4",
            "numpy": "2", "load_avg_at_start": [0.5, 0.4, 0.3], "hostname": "box"}},
        "datetime": "2026-01-01T00:00:00+00:00", "benchmarks": benchmarks,
        "fbvision": {"profile": {"quick": quick}, "models": {"yolo11n": model}},
    }


def gpu_doc(e2e: bool = True) -> dict:
    rows = [{"batch": b, "frames": 96, "host_fps": 100.0 * r, "device_fps": 200.0 * r2, "host_ratio": r,
             "device_ratio": r2, "host_ms_per_batch": 1.0, "device_ms_per_batch": 0.5}
            for b, r, r2 in ((1, 1.0, 1.0), (8, 3.0, 5.0), (32, 4.5, 7.0))]
    doc = {"gpu": "NVIDIA Test", "date": "2026-01-02", "engine_note": "torch-cuda-fp16-graphs", "torch": "2",
           "cuda": "12", "model": {"file": "yolo11n-640.onnx"},
           "variants": {"eager": {"provider": "torch-cuda-fp16", "batching": rows},
                        "graphs": {"provider": "torch-cuda-fp16-graphs", "batching": rows}},
           "batching": rows, "ratios": {"host_b32": 4.5, "device_b32": 7.0, "largest_batch": 32},
           "autotune": {"batch": 8, "max_wait_ms": 2.0, "table": []},
           "worker_path": [{"mode": "sequential", "max_batch": 1, "frames_per_s": 90.0, "ratio_vs_sequential": 1.0},
                           {"mode": "batch-32", "max_batch": 32, "frames_per_s": 300.0, "ratio_vs_sequential": 3.3}]}
    if e2e:
        run = pipeline_run("e2e", 32, 15.0, queue_ms=2.0)
        for key in ("kind", "model_key"):
            run.pop(key)
        run["engine"] = "torch-cuda-fp16-graphs"
        doc["e2e"] = run
    else:
        doc["e2e_skipped"] = "no redis-server"
    return doc


def write(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_find_results_prefers_the_newest_full_result(tmp_path):
    assert results.find_results(tmp_path) == {"path": None, "profile": None, "gpu": []}
    quick = write(tmp_path / "quick" / "20260101-000000.json", bench_doc(quick=True))
    assert results.find_results(tmp_path) == {"path": quick, "profile": "quick", "gpu": []}
    write(tmp_path / "20260101-000000.json", bench_doc())
    newest = write(tmp_path / "20260102-000000.json", bench_doc())
    write(tmp_path / "quick" / "20260105-000000.json", bench_doc(quick=True))  # newer, but quick
    gpu = write(tmp_path / "gpu-nvidia-test.json", gpu_doc())
    (tmp_path / "notes.json").write_text("{}")  # not a results name: ignored
    found = results.find_results(tmp_path)
    assert found == {"path": newest, "profile": "full", "gpu": [gpu.resolve()]}


def test_load_results_of_an_empty_folder_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no benchmark result"):
        results.load_results(tmp_path)


def test_load_results_tables(tmp_path):
    write(tmp_path / "20260101-000000.json", bench_doc())
    res = results.load_results(tmp_path)
    assert res["path"].name == "20260101-000000.json" and res["profile"] == "full"
    assert res["machine"]["cpu"] == "Test CPU" and res["machine"]["gpus"] == "none"
    assert "Test CPU, 2 cores" in res["machine_line"] and "CPUExecutionProvider" in res["machine_line"]

    tp = res["throughput"]
    assert list(tp["mode"]) == ["sequential", "batch-1", "batch-32", "dynamic"]
    assert list(tp["fixed"]) == [False, True, True, False]
    assert tp.set_index("mode").loc["batch-32", "ratio_vs_sequential"] == pytest.approx(0.9)
    assert list(res["model_only"]["chosen"]) == [True, False]
    assert res["autotune"].iloc[0]["chosen_batch"] == 1

    runs = res["runs"].set_index("kind")
    assert runs.loc["overload", "dropped_total"] == 150 and runs.loc["e2e", "dropped_total"] == 0
    assert set(res["runs"]["source"]) == {"bench"}

    lat = res["latency"]
    e2e_run = runs.loc["e2e", "run"]
    stages = list(lat[lat["run"] == e2e_run]["stage"])
    assert stages == [*STAGES, "overhead", "overhead_without_queue"]  # pipeline order, then the derived two
    # The stages are consecutive: their means add up to the end-to-end mean (what the composition plot shows).
    means = lat[lat["run"] == e2e_run].set_index("stage")["mean"]
    assert means[list(STAGES[:-1])].sum() == pytest.approx(means["end_to_end"])

    cdf = res["cdf"]
    one = cdf[(cdf["run"] == e2e_run) & (cdf["series"] == "end_to_end")]
    assert list(one["q"]) == [0.0, 0.25, 0.5, 0.75, 1.0] and list(one["ms"]) == [10.0, 20.0, 30.0, 40.0, 50.0]

    drops = res["drops"].set_index("reason")["count"]
    assert drops.to_dict() == {"queue:queue_full": 120, "inference:stale": 30}
    mem = res["memory"]
    cam = mem[(mem["run"] == e2e_run) & (mem["process"] == "camera")]
    assert list(cam["delta_mb"]) == [0.0, 15.0, 30.0] and not cam["judged"].any()
    assert set(res["worker"]["step"]) == {"wait", "decode", "infer", "postprocess", "publish"}

    micro = res["micro"]
    assert list(micro["step"]) == ["NMS", "JPEG decode 640x640", "BLPOP 5 ms"]  # by median
    assert micro.iloc[-1]["redis_hz"] == 10.0 and micro.iloc[1]["median_us"] == pytest.approx(2000.0)

    assert res["gpu"].empty and res["gpu_batching"].empty and res["gpu_files"] == []
    assert "gpu" in res["gpu"].columns  # empty tables keep their columns, so a notebook can select them


def test_missing_suites_give_empty_tables(tmp_path):
    doc = bench_doc(quick=True, batching=False)
    doc["benchmarks"] = [b for b in doc["benchmarks"] if b["extra_info"]["kind"] not in ("e2e", "overload")]
    res = results.load_results(write(tmp_path / "20260101-000000.json", doc))
    assert res["profile"] == "quick"
    for name in ("throughput", "runs", "latency", "cdf", "drops", "memory", "worker"):
        assert isinstance(res[name], pd.DataFrame) and res[name].empty, name
    assert list(res["throughput"].columns[:3]) == ["model_key", "provider", "mode"]
    results.verdicts(res)  # nothing to judge is not an error


def test_gpu_results_beside_a_quick_result_are_found_in_the_folder_above(tmp_path):
    path = write(tmp_path / "quick" / "20260101-000000.json", bench_doc(quick=True))
    write(tmp_path / "gpu-nvidia-test.json", gpu_doc())
    res = results.load_results(path)
    assert list(res["gpu"]["gpu"]) == ["NVIDIA Test"] and res["gpu"].iloc[0]["host_ratio_largest"] == 4.5
    assert set(res["gpu_batching"]["variant"]) == {"eager", "graphs"} and len(res["gpu_batching"]) == 6
    assert list(res["gpu_worker"]["mode"]) == ["sequential", "batch-32"]
    gpu_runs = res["runs"][res["runs"]["source"] != "bench"]
    assert list(gpu_runs["source"]) == ["gpu: NVIDIA Test"] and gpu_runs.iloc[0]["cameras"] == 32
    assert gpu_runs.iloc[0]["run"] in set(res["latency"]["run"])


def test_verdicts_on_a_cpu_run(tmp_path):
    res = results.load_results(write(tmp_path / "20260101-000000.json", bench_doc()))
    v = results.verdicts(res).set_index("claim")
    batching = v.filter(like="~4x throughput", axis=0).iloc[0]
    assert batching["measured"] == pytest.approx(0.9) and batching["met"] is None  # a GPU claim: n/a on a CPU
    dynamic = v.filter(like="never slower", axis=0).iloc[0]
    assert dynamic["met"] is True and dynamic["target"] == results.TARGETS["cpu_dynamic_vs_sequential"]
    overhead = v.filter(like="pipeline overhead", axis=0).iloc[0]
    assert overhead["measured"] == pytest.approx(1.5 * (59.5 - 40.0)) and overhead["met"] is False
    assert v.filter(like="end to end p95", axis=0).iloc[0]["met"] is None
    assert v.filter(like="p99 bounded", axis=0).iloc[0]["met"] is True
    assert v.filter(like="memory flat", axis=0).iloc[0]["met"] is True
    assert "no GPU result" in v.filter(like="GPU targets", axis=0).iloc[0]["note"]


def test_verdicts_with_a_gpu_result(tmp_path):
    write(tmp_path / "gpu-nvidia-test.json", gpu_doc())
    res = results.load_results(write(tmp_path / "20260101-000000.json", bench_doc()))
    v = results.verdicts(res).set_index("claim")
    gpu = v.filter(like="GPU NVIDIA Test", axis=0).iloc[0]
    assert gpu["measured"] == 4.5 and gpu["met"] is True
    gpu_e2e = v.filter(like="[gpu: NVIDIA Test]", axis=0).iloc[0]  # p95 = 1.5 x (9.5 + 40 ms) > 50 ms
    assert gpu_e2e["measured"] == pytest.approx(1.5 * 49.5) and gpu_e2e["met"] is False
    assert not len(v.filter(like="GPU targets", axis=0))


def test_load_results_reads_what_report_build_reads(tmp_path):
    """The notebook and REPORT.md come from the same file: build() accepts what load_results read."""
    path = write(tmp_path / "20260101-000000.json", bench_doc())
    write(tmp_path / "gpu-nvidia-test.json", gpu_doc(e2e=False))
    res = results.load_results(path)
    text = report.build(path).read_text()
    assert "NVIDIA Test" in text and res["gpu"].iloc[0]["e2e_skipped"] == "no redis-server"
    assert f"{res['throughput'].set_index('mode').loc['dynamic', 'ratio_vs_sequential']:.2f}x" in text


def test_a_cpu_dry_run_of_the_gpu_check_is_not_a_gpu_result(tmp_path):
    doc = gpu_doc()
    doc["gpu"] = "cpu (Test CPU)"
    write(tmp_path / "gpu-cpu-test-cpu.json", doc)
    res = results.load_results(write(tmp_path / "20260101-000000.json", bench_doc()))
    assert list(res["gpu"]["on_gpu"]) == [False]
    v = results.verdicts(res).set_index("claim")
    assert v.filter(like="GPU cpu (Test CPU)", axis=0).iloc[0]["met"] is None
    dry_e2e = v.filter(like="[gpu: cpu (Test CPU)]", axis=0)
    assert len(dry_e2e) == 1 and dry_e2e.index[0].startswith("end to end") and dry_e2e.iloc[0]["met"] is None
    assert "no GPU result" in v.filter(like="GPU targets", axis=0).iloc[0]["note"]
