"""End-to-end latency through real Redis, and behaviour under overload (benchmarks/pipeline.py runs the stages).

* ``test_end_to_end_latency``: K cameras at F fps (default 4 x 5, FBV_BENCH_CAMERAS / FBV_BENCH_FPS), the worker
  at this run's auto-tuned max_batch / max_wait_ms. Capture -> alert decision, as p50/p95/p99, per stage from the
  message timelines; pipeline overhead = end-to-end minus the model call (per result).
* ``test_overload``: the offered load at ``overload_factor`` (2x) what the worker sustained in the batching
  sweep, for a bounded time: latency stays bounded by max_age_ms (stale frames are dropped before inference),
  drops are counted by reason, memory (VmRSS of every process) stays flat.

Nothing here asserts a timing: the numbers go to the JSON and the report.
"""

from __future__ import annotations

import math

import pytest

from benchmarks.pipeline import RunSpec, format_summary, run_pipeline

pytestmark = [pytest.mark.bench, pytest.mark.timeout(900)]


def _spec(prof, model_path, tuned, **overrides) -> RunSpec:
    values = dict(model_path=str(model_path), cameras=prof.e2e_cameras, fps=prof.e2e_fps,
                  max_batch=int(tuned.batch), max_wait_ms=float(tuned.max_wait_ms), warmup_s=prof.e2e_warmup_s,
                  measure_s=prof.e2e_measure_s, sample_interval_s=prof.sample_interval_s)
    values.update(overrides)
    return RunSpec(**values)


def test_end_to_end_latency(benchmark, model_key, model_paths, tuned, prof, bench_redis):
    spec = _spec(prof, model_paths[model_key], tuned)
    summary = benchmark.pedantic(run_pipeline, args=(spec, bench_redis.url, bench_redis.proc.pid),
                                 rounds=1, iterations=1)
    print(f"\nend to end, model {model_key}:\n{format_summary(summary)}")
    assert summary["results"] > 0, "no result reached the logic stage"
    benchmark.extra_info.update(kind="e2e", model_key=model_key, **summary)


def test_overload(benchmark, model_key, model_paths, tuned, prof, bench_redis, sweeps):
    if model_key != "yolo11n":
        pytest.skip("overload runs on the headline model only")
    # What the worker sustains: the dynamic row of this run's batching sweep (else the auto-tune's best).
    sustained = (sweeps.get(model_key, {}).get("dynamic", {}).get("frames_per_s")
                 or max(r["frames_per_s"] for r in tuned.table))
    offered = prof.overload_factor * sustained
    fps = max(prof.e2e_fps, 1.0)
    cameras = math.ceil(offered / fps)
    if cameras > 32:  # a tiny or fast model: fewer cameras at a higher rate (the camera manager has its limits)
        cameras = 32
        fps = min(60.0, offered / cameras)
    spec = _spec(prof, model_paths[model_key], tuned, cameras=cameras, fps=round(fps, 2), frame_queue_cap=64,
                 measure_s=prof.overload_measure_s, extra={"target_offered_fps": offered})
    summary = benchmark.pedantic(run_pipeline, args=(spec, bench_redis.url, bench_redis.proc.pid),
                                 rounds=1, iterations=1)
    e2e = summary["stages_ms"]["end_to_end"]
    inference = summary["stages_ms"]["inference"]
    # A frame is inferred only if it was at most max_age_ms old when popped; after that come one batch and
    # the logic stage. p99 past this bound would mean stale work is being done.
    bound_ms = spec.max_age_ms + inference.get("p99", 0.0) + summary["stages_ms"]["publish"].get("p99", 0.0) \
        + summary["stages_ms"]["to_logic"].get("p99", 0.0) + summary["stages_ms"]["logic"].get("p99", 0.0)
    summary.update(
        sustained_fps=round(sustained, 2), target_offered_fps=round(offered, 2),
        offered_vs_inferred=round(summary["offered_fps"] / summary["inferred_fps"], 2) if summary["inferred_fps"] else None,
        latency_bound_ms=round(bound_ms, 1), p99_within_bound=bool(e2e.get("p99", 0.0) <= bound_ms),
        dropped_total=int(sum(summary["drops"].values())),
    )
    print(f"\noverload ({prof.overload_factor:g}x of {sustained:.1f} frames/s sustained):\n{format_summary(summary)}\n"
          f"p99 end to end {e2e.get('p99', float('nan')):.0f} ms vs bound {bound_ms:.0f} ms")
    assert summary["results"] > 0, "no result reached the logic stage"
    benchmark.extra_info.update(kind="overload", model_key=model_key, **summary)
