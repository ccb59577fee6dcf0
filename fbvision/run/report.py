"""The run report (Markdown + JSON): configuration, frames, throughput, latency per stage, drops, alerts,
and - for synthetic cameras - alerts versus ground truth. Every number comes from the run itself.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path

from fbvision.core.logic_config import effective_rules
from fbvision.core.redact import mask_url, redact_url
from fbvision.run.state import RunView, batch_mix, collect, drops, engine_busy, latency_table

logger = logging.getLogger(__name__)


# The CPU features that decide how fast the model runs on a CPU (two "2-core EPYC" machines differ 5x by them).
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
             "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "avx_vnni", "neon", "asimd", "sve")


def _cpu_quota() -> float | None:
    """CPUs the cgroup allows (``cpu.max``), None when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else round(int(quota) / int(period), 2)
    except (OSError, ValueError):
        return None


def machine() -> dict:
    cpu = platform.processor() or ""
    flags: list[str] = []
    first: dict[str, str] = {}  # the first CPU's fields
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            first.setdefault(key.strip(), value.strip())
            if line.startswith("model name") and cpu == (platform.processor() or ""):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith(("flags", "Features")) and not flags:
                have = set(line.split(":", 1)[1].split())
                flags = [f for f in CPU_FLAGS if f in have]
    except OSError:
        pass
    # Family and model tell two CPUs of the same name apart (two "AMD EPYC"s differ 3-5x per operation).
    family_model = (f"family {first['cpu family']} model {first.get('model', '?')}"
                    if "cpu family" in first else None)
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"host": platform.node(), "os": platform.platform(), "python": platform.python_version(),
            "cpu": cpu, "cpu_family_model": family_model, "cores": os.cpu_count(), "cpu_flags": flags,
            "usable_cpus": usable,
            "cpu_quota": _cpu_quota(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def onnxruntime_build() -> dict:
    """The ONNX Runtime this host has: version, build device and the providers it offers."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"version": None, "device": None, "available_providers": []}
    return {"version": ort.__version__, "device": ort.get_device(),
            "available_providers": list(ort.get_available_providers())}


def read_alerts(run: RunView) -> list[dict]:
    db = run.run_dir / "alerts.sqlite"
    if db.exists():
        from fbvision.alerts.backend import AlertStore

        store = AlertStore(db)
        try:
            return store.alerts()
        finally:
            store.close()
    return run.backend_alerts()


def camera_runs(settings, state: dict) -> dict[str, dict]:
    """Per enabled camera: whether it ran (a frame of it was pushed), its last status, and - when it did not
    run - why (the status detail: "video file not found", "no built-in scenario ...")."""
    pushed = {}
    for key, value in (state.get("camera") or {}).items():
        if isinstance(key, str) and key.startswith("frames_pushed:"):
            try:
                pushed[key.split(":", 1)[1]] = int(value)
            except (TypeError, ValueError):
                continue
    statuses = state.get("cameras") or {}
    out: dict[str, dict] = {}
    for cam in settings.cameras:
        if not cam.enabled:
            continue
        status = statuses.get(cam.id) if isinstance(statuses, dict) else None
        status = status if isinstance(status, dict) else {}
        frames = pushed.get(cam.id, 0)
        detail = redact_url(str(status["detail"])) if status.get("detail") else None
        problem = redact_url(str(status["problem"])) if status.get("problem") else None
        entry = {"source": mask_url(cam.source), "ran": frames > 0, "frames_pushed": frames,
                 "state": status.get("state"), "detail": detail, "problem": problem,
                 "failed": bool(status.get("failed"))}
        if not entry["ran"]:
            # The status at the end says "closed"; the problem is why it never opened.
            entry["not_run_reason"] = problem or detail or "no frame pushed and no status from the camera manager"
        out[cam.id] = entry
    return out


def ground_truth_section(run: RunView, alerts: list[dict], ended_at: float, state: dict) -> dict | None:
    """Alerts versus what the synthetic scenes say should happen. A camera that never ran (its source could
    not be opened: a misspelt scene, a missing file) is "not run", not a miss of every alert it would have
    had; an unknown scene never raises here."""
    from fbvision.camera.factory import load_scenario
    from fbvision.lab.groundtruth import expected_alerts, match_alerts, summarise

    settings = run.settings
    runs = camera_runs(settings, state)
    expected, cams = [], []
    not_run: dict[str, str] = {}
    for cam in settings.cameras:
        if not cam.enabled or not cam.source.startswith("synthetic:"):
            continue
        if not runs.get(cam.id, {}).get("ran"):
            not_run[cam.id] = runs.get(cam.id, {}).get("not_run_reason") or "not run"
            continue
        try:
            scenario = load_scenario(cam.source.split(":", 1)[1].strip())
        except Exception as exc:  # frames were pushed, so it loaded then; the file may have gone since
            not_run[cam.id] = f"scene cannot be loaded for scoring: {exc}"
            continue
        status = state.get("cameras", {}).get(cam.id, {})
        t0 = float(status.get("scene_t0") or run.started_at)
        rules = effective_rules(settings.logic, cam.logic)
        expected += expected_alerts(cam.id, scenario, rules, t0, ended_at, loop=cam.loop)
        cams.append(cam.id)
    if not cams and not not_run:
        return None
    raised = [a for a in alerts if a.get("state") == "raised" and a.get("camera_id") in cams]
    matches = match_alerts(expected, raised, ended_at)
    return {"cameras": cams, "summary": summarise(matches), "matches": [m.as_dict() for m in matches],
            "not_run": not_run}


#: The time-budget columns of the report (``TimeBudgetSummary`` fields), in table order.
TIME_BUDGET_FIELDS = ("observed_s", "unknown_s", "lying_min", "lying_pct", "bouts", "bouts_censored",
                      "longest_bout_min", "mean_bout_min", "current_bout_min", "lie_downs", "get_ups",
                      "lie_downs_per_h", "get_ups_per_h", "night_observed_h", "restless_moving_min_per_h",
                      "night_transitions_per_h", "absent_min", "posture", "window_s", "covered_s", "t")


def time_budget_section(state: dict) -> dict[str, dict]:
    """Per camera: its rolling 24 h time budget (a horse's day) as the logic workers last published it (the
    newest per camera). Snapshots are JSON anyone with Redis access can write: only known fields with numbers
    (or a posture name) are kept."""
    out: dict[str, dict] = {}
    for name, snap in sorted((state.get("snapshots") or {}).items()):
        if not (isinstance(name, str) and name.startswith("logic:") and isinstance(snap, dict)):
            continue
        budgets = snap.get("time_budget")
        if not isinstance(budgets, dict):
            continue
        for cam, summary in budgets.items():
            if not isinstance(cam, str) or not isinstance(summary, dict):
                continue
            clean: dict = {}
            for key in TIME_BUDGET_FIELDS:
                value = summary.get(key)
                if key == "posture":
                    clean[key] = value if value in ("lying", "standing", "absent") else None
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    clean[key] = value
                else:
                    clean[key] = None
            previous = out.get(cam)
            if previous is None or (clean["t"] or 0) >= (previous.get("t") or 0):
                out[cam] = clean
    return out


def time_budget_lines(budgets: dict | None) -> list[str]:
    """The report's "A horse's day" section (Markdown)."""
    if not budgets:
        return []

    def num(value: object, digits: int = 1) -> str:
        return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"

    lines = ["## A horse's day (rolling 24 h per camera, one horse in view)", "",
             "Lying time and bouts from the results' capture times; gaps (no frames, or two horses in view) are "
             "unknown time, in no posture. Rates are per observed hour; restlessness over the night hours only "
             "(`logic.time_budget`, docs/rules.md).", "",
             "| camera | observed h | unknown h | lying min | lying % | bouts | longest min | mean min | "
             "downs/h | ups/h | night moving min/h | night changes/h | absent min | now |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for cam, b in sorted(budgets.items()):
        hours = {k: (b[k] / 3600.0 if isinstance(b.get(k), (int, float)) else None) for k in ("observed_s", "unknown_s")}
        cam = str(cam)[:80].replace("|", "/")
        lines.append(
            f"| {cam} | {num(hours['observed_s'], 2)} | {num(hours['unknown_s'], 2)} | {num(b.get('lying_min'))} "
            f"| {num(b.get('lying_pct'))} | {b.get('bouts') if b.get('bouts') is not None else '-'} "
            f"| {num(b.get('longest_bout_min'))} | {num(b.get('mean_bout_min'))} | {num(b.get('lie_downs_per_h'), 2)} "
            f"| {num(b.get('get_ups_per_h'), 2)} | {num(b.get('restless_moving_min_per_h'))} "
            f"| {num(b.get('night_transitions_per_h'), 2)} | {num(b.get('absent_min'))} | {b.get('posture') or '-'} |")
    return [*lines, ""]


def steady_figures(start, end) -> dict:
    """The steady window's figures (``PipelineRun.steady_from`` / ``steady_to``: (time, judged, CPU s per stage)):
    judged frames/s from the first judged frame to the end of the duration (start-up left out), CPU seconds per
    stage process (children included) in it, and CPU milliseconds per judged frame per stage with their sum."""
    if start is None or end is None or end[0] <= start[0]:
        return {"steady": None, "cpu_s": {}, "cpu_ms_per_frame": {}}
    seconds, frames = end[0] - start[0], end[1] - start[1]
    cpu = {name: round(max(0.0, end[2].get(name, 0.0) - start[2].get(name, 0.0)), 3) for name in sorted(end[2])}
    per_frame = {}
    if frames > 0:
        per_frame = {name: round(1000.0 * s / frames, 2) for name, s in cpu.items()}
        per_frame["all"] = round(sum(1000.0 * s / frames for s in cpu.values()), 2)
    return {"steady": {"seconds": round(seconds, 2), "judged": frames, "judged_per_s": round(frames / seconds, 2),
                       "cpu_cores": round(sum(cpu.values()) / seconds, 2)},
            "cpu_s": cpu, "cpu_ms_per_frame": per_frame}


def build_report(run: RunView, ended_at: float) -> dict:
    state = collect(run)
    alerts = read_alerts(run)
    duration = max(1e-9, ended_at - run.started_at)
    inf = state.get("inference", {})
    frames_out = int(inf.get("frames_out", 0))
    snap_inf = next((s for n, s in sorted(state.get("snapshots", {}).items()) if n.startswith("inference:")), {})
    report = {
        "machine": machine(),
        "started_at": run.started_at,
        "ended_at": ended_at,
        "duration_s": round(duration, 2),
        "exit_reason": run.exit_reason,
        "restarts": dict(run.supervisor.restart_counts) if run.supervisor else {},
        "redis": mask_url(run.redis_url or ""),
        # The ephemeral frames Redis when the two roles are split (redis.frames_url), else None: one server.
        "frames_redis": mask_url(run.settings.redis.frames_url) if run.settings.redis.frames_url else None,
        "provider": snap_inf.get("provider"),
        # FP32 or the INT8 variant (model.precision), and why (fbvision.inference.engines.variants.Choice)
        "model_precision": snap_inf.get("model_precision"),
        # True when the engine is the SIMULATED accelerator or the null engine (model.engine: sim / null).
        "engine_simulated": bool(snap_inf.get("engine_simulated")),
        "engine_busy_fraction": {
            # per worker, over its last counter flush; "all": time inside infer / wall time, whole run, all workers
            **engine_busy(state),
            "all": round(float(inf.get("time_ms:engine_busy", 0)) / float(inf["time_ms:wall"]), 4)
            if inf.get("time_ms:wall") else None,
        },
        "onnxruntime": onnxruntime_build(),
        "intra_op_threads": run.settings.model.intra_op_threads,
        "intra_op_spinning": run.settings.model.intra_op_spinning,
        "autotune": snap_inf.get("autotune"),
        "autotune_info": snap_inf.get("autotune_info"),  # rounds, margin, seconds of the measurement
        # What the worker runs with after auto-tune (the configured inference.max_batch when it was off).
        "batch": {"chosen": snap_inf.get("max_batch"), "max_wait_ms": snap_inf.get("max_wait_ms"),
                  "configured": run.settings.inference.max_batch, "autotune": run.settings.inference.autotune},
        "config": run.settings.model_dump(mode="json"),  # secrets masked by the model (core/configbase.py)
        "frames": {
            "pushed_per_camera": {k.split(":", 1)[1]: int(v) for k, v in state.get("camera", {}).items()
                                  if k.startswith("frames_pushed:")},
            "inferred": frames_out,
            "judged": int(state.get("logic", {}).get("results", 0)),
            "throughput_fps": round(frames_out / duration, 2),
        },
        "batch_sizes": batch_mix(inf),
        "latency_ms": {stage: {k: (round(v * 1000, 2) if k != "count" else int(v)) for k, v in s.items()}
                       for stage, s in latency_table(state.get("snapshots", {})).items()},
        "latency_ms_since_start": {stage: {k: (round(v * 1000, 2) if k != "count" else int(v)) for k, v in s.items()}
                                   for stage, s in latency_table(state.get("snapshots", {}), "latency_s_all").items()},
        # Each stage's last error record (message + traceback tail), from the run's log: why a stage crashed.
        "stage_errors": json.loads(redact_url(json.dumps(run.run_log.pane.last_errors))),
        "run_log": "run.log",
        "drops": drops(state),
        # CPU seconds per stage process (children included) over the run, and per judged frame
        **steady_figures(run.steady_from, run.steady_to),
        "alerts": [{k: a.get(k) for k in ("camera_id", "rule", "severity", "state", "track_id", "started_at",
                                           "updated_at", "resolved_at", "idempotency_key", "episode_key")}
                   for a in alerts],
        "delivery": state.get("delivery", {}),
        "cameras": state.get("cameras", {}),
        # Each process's wall clock against the reference clock (Redis TIME), as last measured.
        "clock_skew_ms": {name: s["clock"].get("skew_ms") for name, s in sorted(state.get("snapshots", {}).items())
                          if isinstance(s, dict) and isinstance(s.get("clock"), dict) and s["clock"].get("synced")
                          and isinstance(s["clock"].get("skew_ms"), (int, float))},
    }
    # The report is always written: a section that fails is reported as failed, never raised out of here.
    try:
        report["camera_runs"] = camera_runs(run.settings, state)
    except Exception as exc:
        logger.exception("run report: camera table failed")
        report["camera_runs"] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        report["time_budget"] = time_budget_section(state)
    except Exception as exc:
        logger.exception("run report: time budget failed")
        report["time_budget"] = {}
        report["time_budget_error"] = f"{type(exc).__name__}: {exc}"
    try:
        report["ground_truth"] = ground_truth_section(run, alerts, ended_at, state)
    except Exception as exc:
        logger.exception("run report: ground-truth scoring failed")
        report["ground_truth"] = None
        report["ground_truth_error"] = f"{type(exc).__name__}: {exc}"
    return report


def _ts(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else "-"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _camera_lines(runs: dict | None) -> list[str]:
    """The "Cameras" section: one row per camera; one that never ran says "not run" and why."""
    if not runs:
        return []
    if "error" in runs and not isinstance(runs["error"], dict):
        return ["## Cameras", "", f"camera table failed: {runs['error']}", ""]
    lines = ["## Cameras", "", "| camera | source | frames pushed | last state | note |", "|---|---|---|---|---|"]
    for cam_id, c in sorted(runs.items()):
        note = f"**not run**: {c.get('not_run_reason')}" if not c.get("ran") else (c.get("problem") or "")
        lines.append(f"| {cam_id} | `{c.get('source')}` | {c.get('frames_pushed', 0)} | {c.get('state') or '-'} "
                     f"| {str(note).replace('|', '/')} |")
    return [*lines, ""]


def render_markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# fbvision run report",
        "",
        f"- when: {_ts(r['started_at'])} → {_ts(r['ended_at'])} ({r['duration_s']} s), ended by: {r['exit_reason']}",
        f"- machine: {m['cpu']}{f' ({fm})' if (fm := m.get('cpu_family_model')) else ''} × {m['cores']} cores, "
        f"{m['os']}, Python {m['python']}",
        f"- CPU flags: {' '.join(m.get('cpu_flags') or []) or '-'}; usable CPUs {m.get('usable_cpus')}, "
        f"cgroup quota {m.get('cpu_quota') or 'none'}, OMP_NUM_THREADS {m.get('omp_num_threads') or 'unset'}, "
        f"model.intra_op_threads {r.get('intra_op_threads', '-')} (0 = ONNX Runtime's default), "
        f"spinning {'on' if r.get('intra_op_spinning') else 'off'}",
        f"- model: `{r['config']['model']['path']}` on **{r['provider']}**; Redis {r['redis']}"
        + (f" (frames: {r['frames_redis']})" if r.get("frames_redis") else ""),
        "- model precision: " + (f"**{r['model_precision']['precision']}** ({r['model_precision']['reason']})"
                                  if r.get("model_precision") else "fp32 (model.precision: fp32)"),
        f"- ONNX Runtime {(r.get('onnxruntime') or {}).get('version')} ({(r.get('onnxruntime') or {}).get('device')} "
        f"build), providers available: {', '.join((r.get('onnxruntime') or {}).get('available_providers') or []) or '-'}",
        f"- batch size: **{(r.get('batch') or {}).get('chosen')}** (configured max {(r.get('batch') or {}).get('configured')}, "
        f"auto-tune {'on: table below' if (r.get('batch') or {}).get('autotune') else 'off'}), "
        f"max wait {(r.get('batch') or {}).get('max_wait_ms')} ms",
        "- engine busy (time inside infer / wall time): "
        + (", ".join(f"{k} {100 * v:.0f}%" for k, v in (r.get("engine_busy_fraction") or {}).items() if v is not None)
           or "-")
        + (" - **SIMULATED engine: no model ran**" if r.get("engine_simulated") else ""),
        f"- log: `{r.get('run_log', 'run.log')}` (every stage's records)",
        f"- stage restarts: {r['restarts']}",
        "- clock skew vs the Redis clock (ms, per process): "
        + (", ".join(f"{k} {v:+.1f}" for k, v in sorted((r.get("clock_skew_ms") or {}).items())) or "-"),
        "",
        "## Frames",
        "",
        f"- inferred: {r['frames']['inferred']} ({r['frames']['throughput_fps']} frames/s), judged by logic: "
        f"{r['frames']['judged']}",
        "- pushed per camera: " + ", ".join(f"{k}: {v}" for k, v in sorted(r["frames"]["pushed_per_camera"].items())),
        "- batch sizes: " + (", ".join(f"{b}: {n}" for b, n in sorted(r["batch_sizes"].items())) or "-"),
        "- drops: " + (", ".join(f"{k}: {v}" for k, v in sorted(r["drops"].items())) or "none"),
        "- steady (first judged frame to the end of the duration): "
        + (f"{r['steady']['judged_per_s']} judged frames/s over {r['steady']['seconds']} s, "
           f"{r['steady']['cpu_cores']} CPU cores busy; CPU ms per judged frame: "
           + ", ".join(f"{k} {v}" for k, v in (r.get("cpu_ms_per_frame") or {}).items())
           if r.get("steady") else "-"),
        "",
        *_camera_lines(r.get("camera_runs")),
        "## Latency (ms, last 4096 results)",
        "",
        "| stage | p50 | p95 | p99 | max | n |",
        "|---|---|---|---|---|---|",
    ]
    for stage, s in r["latency_ms"].items():
        if "p50" in s:
            lines.append(f"| {stage} | {s['p50']} | {s['p95']} | {s['p99']} | {s['max']} | {s['count']} |")
    if r.get("latency_ms_since_start"):
        lines += ["", "## Latency since start (ms, every result; percentiles to ~1 %, warm-up included)", "",
                  "| stage | p50 | p95 | p99 | max | n |", "|---|---|---|---|---|---|"]
        for stage, s in r["latency_ms_since_start"].items():
            if "p50" in s:
                lines.append(f"| {stage} | {s['p50']} | {s['p95']} | {s['p99']} | {s['max']} | {s['count']} |")
    if r.get("stage_errors"):
        lines += ["", "## Stage errors (the last error of each stage; all of them in run.log)", ""]
        for stage, e in sorted(r["stage_errors"].items()):
            lines.append(f"- **{stage}** at {_ts(e.get('at'))}: {e.get('level')} {e.get('logger')}: {e.get('message')}")
            if e.get("traceback_tail"):
                lines += ["", "  ```", *[f"  {t}" for t in e["traceback_tail"]], "  ```", ""]
    lines += ["", f"## Alerts ({len(r['alerts'])} events received by the backend)", "",
              "| time | camera | rule | severity | state | track |", "|---|---|---|---|---|---|"]
    for a in r["alerts"]:
        lines.append(f"| {_ts(a['updated_at'])} | {a['camera_id']} | {a['rule']} | {a['severity']} | {a['state']} "
                     f"| {a['track_id']} |")
    if r.get("time_budget"):
        lines += ["", *time_budget_lines(r["time_budget"])]
    if r.get("time_budget_error"):
        lines += ["", f"Time budget failed: {r['time_budget_error']}"]
    gt = r.get("ground_truth")
    if gt:
        s = gt["summary"]
        lines += ["", "## Alerts versus ground truth (synthetic cameras)", "",
                  f"hits **{s['hits']}**, misses **{s['misses']}**, false alerts **{s['false_alerts']}**, "
                  f"not yet due {s['not_due']}; time to alert median {_secs(s['time_to_alert_s_median'])}, "
                  f"max {_secs(s['time_to_alert_s_max'])}", "",
                  "| camera | rule | onset | raised | time to alert (s) | outcome |", "|---|---|---|---|---|---|"]
        for mt in gt["matches"]:
            tta = f"{mt['time_to_alert_s']:.1f}" if mt["time_to_alert_s"] is not None else "-"
            lines.append(f"| {mt['camera_id']} | {mt['rule']} | {_ts(mt['onset'])} | {_ts(mt['raised_at'])} | {tta} "
                         f"| {mt['outcome']} |")
        for cam_id, why in sorted((gt.get("not_run") or {}).items()):
            lines.append(f"| {cam_id} | - | - | - | - | not run: {why} |")
    if r.get("ground_truth_error"):
        lines += ["", f"Ground-truth scoring failed: {r['ground_truth_error']}"]
    ev = r.get("evidence")
    if ev:
        lines += ["", f"## Evidence ({ev['with_snapshot']}/{ev['alerts']} snapshots, {ev['with_clip']}/{ev['alerts']} "
                  "clips)", "", "Snapshot and clip of every raised and escalated alert, named after its episode "
                  "(docs/evidence-and-review.md).", "",
                  "| time | camera | rule | state | severity | snapshot | clip |", "|---|---|---|---|---|---|---|"]
        for a in r["alerts"]:
            if a.get("state") not in ("raised", "ongoing"):
                continue
            snap = f"[jpg]({a['snapshot']})" if a.get("snapshot") else "missing"
            clip = f"[mp4]({a['clip']})" if a.get("clip") else "missing"
            lines.append(f"| {_ts(a['updated_at'])} | {a['camera_id']} | {a['rule']} | {a['state']} | {a['severity']} "
                         f"| {snap} | {clip} |")
        counters = ev.get("counters") or {}
        odd = {k: v for k, v in counters.items() if k.startswith(("evidence:short:", "evidence:missing:"))}
        lines += ["", f"Clip size: {ev['clip_bytes_per_s'] or '-'} bytes per second of video. "
                  + ("Short or missing: " + ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in odd.items())
                     if odd else "No clip was short, no evidence missing.")]
        for name, m in (ev.get("managers") or {}).items():
            lat = {k: v.get("p95") for k, v in (m.get("latency_s") or {}).items()}
            lines.append(f"- {name}: frame rings {m.get('ring_bytes', 0) / 2**20:.1f} MiB of "
                         f"{m.get('ring_budget_bytes', 0) / 2**20:.0f} MiB budget; alert to evidence p95: "
                         + (", ".join(f"{k} {v:.2f} s" for k, v in lat.items() if v is not None) or "-"))
    if r.get("previews"):
        lines += ["", "## Annotated previews", ""] + [f"- `{p}`" for p in r["previews"]]
    lines += autotune_lines(r)
    return "\n".join(lines) + "\n"


def autotune_lines(r: dict) -> list[str]:
    """The report's auto-tune section: the chosen batch, how it was measured (rounds, margin) and the table."""
    if not r.get("autotune"):
        return []
    lines: list[str] = []
    chosen = (r.get("batch") or {}).get("chosen")
    info = r.get("autotune_info") or {}
    lines += ["", f"## Auto-tune (this machine): batch {chosen} chosen", ""]
    if info:
        margin = info.get("margin")
        lines += [f"Median of {info.get('rounds')} interleaved rounds ({info.get('seconds')} s); a batch size > 1 "
                  + ("needs no margin" if margin is None else
                     f"must beat batch 1 by {margin:.0%} in 3 of 4 paired measurements (lower quartile of "
                     "its ratio, column p25)") + "."
                  + (f" Reused from `{info.get('cache')}` (measured {time.strftime('%Y-%m-%d %H:%M', time.localtime(info['measured_at']))} on this machine, same "
                     "model and engine settings): not measured again at this start." if info.get("measured_at")
                     else ""), ""]
    lines += ["| batch | frames/s | ms/batch | vs batch 1 | p25 vs b1 | pairs won | eligible | chosen |",
              "|---|---|---|---|---|---|---|---|"]
    for row in r["autotune"]:
        p25, wins = row.get("ratio_p25"), row.get("wins")
        lines.append(f"| {row.get('batch')} | {row.get('frames_per_s', 0):.1f} | {row.get('ms_per_batch', 0):.1f} "
                     f"| {row.get('ratio_vs_1', 0):.2f} | {'' if p25 is None else f'{p25:.2f}'} "
                     f"| {'' if wins is None or row.get('batch') == 1 else f'{wins:.0%}'} "
                     f"| {'' if 'eligible' not in row else ('yes' if row['eligible'] else 'no')} "
                     f"| {'**yes**' if row.get('batch') == chosen else ''} |")
    return lines


def add_evidence(report: dict, run: RunView) -> None:
    """Each raised (and escalated) alert's evidence - written during the run by the camera manager, the same way for
    every camera kind - as ``snapshot`` / ``clip`` paths relative to the run directory (None when missing), and the
    evidence figures: counters (written, short clips and why, missing), the frame rings' memory, time from alert to
    evidence (p95)."""
    from fbvision.core.evidence import CLIP_EXT, SNAPSHOT_EXT, evidence_name

    folder = run.settings.evidence.dir
    folder = Path(folder) if folder is not None else run.run_dir / "evidence"

    def rel(path: Path) -> str | None:
        if not path.is_file():
            return None
        try:
            return str(path.relative_to(run.run_dir))
        except ValueError:
            return str(path)

    listed = []
    for a in report.get("alerts", []):
        if a.get("state") not in ("raised", "ongoing") or not a.get("episode_key"):
            continue
        name = evidence_name(a["episode_key"], a["state"], a["severity"])
        a["snapshot"] = rel(folder / f"{name}{SNAPSHOT_EXT}")
        a["clip"] = rel(folder / f"{name}{CLIP_EXT}")
        listed.append(a)
    state = collect(run)
    counters = {k: v for k, v in sorted(state.get("camera", {}).items()) if k.startswith("evidence:")}
    managers = {n: s.get("evidence") for n, s in sorted(state.get("snapshots", {}).items())
                if n.startswith("camera:") and isinstance(s, dict) and s.get("evidence")}
    clip_s = float(counters.get("evidence:clip_seconds", 0) or 0)
    report["evidence"] = {
        "dir": str(folder.relative_to(run.run_dir)) if folder.is_relative_to(run.run_dir) else str(folder),
        "alerts": len(listed),
        "with_snapshot": sum(1 for a in listed if a["snapshot"]),
        "with_clip": sum(1 for a in listed if a["clip"]),
        "counters": counters,
        "clip_bytes_per_s": round(float(counters.get("evidence:clip_bytes", 0)) / clip_s) if clip_s else None,
        "managers": managers,
    }


def add_previews(report: dict, run: RunView) -> None:
    """An annotated MP4 per synthetic camera from the run's recording (``run_all.py --preview``)."""
    from fbvision.lab.replay import recording_previews, synthetic_scenes
    from fbvision.logic.recorder import read_recording

    rec_dir = run.run_dir / "recording"
    if not rec_dir.exists():
        logger.warning("previews need the recording (the run was started without one): none written")
        report["previews"] = []
        return
    scenes = synthetic_scenes(run.settings, report.get("cameras", {}))
    fps = {cam.id: cam.fps for cam in run.settings.cameras}
    paths = recording_previews(run.run_dir, read_recording(rec_dir), scenes, fps)
    report["previews"] = [str(p.relative_to(run.run_dir)) for p in paths]


def write_report(report: dict, run_dir: Path) -> tuple[Path, Path]:
    run_dir.mkdir(parents=True, exist_ok=True)
    j = run_dir / "report.json"
    md = run_dir / "report.md"
    j.write_text(json.dumps(report, indent=2, default=str))
    md.write_text(render_markdown(report))
    return md, j
