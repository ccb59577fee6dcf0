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
from typing import TYPE_CHECKING

from fbvision.core.logic_config import effective_rules
from fbvision.core.redact import redact_url
from fbvision.run.dashboard import batch_mix, collect, drops, latency_table

if TYPE_CHECKING:
    from fbvision.run.runner import PipelineRun

logger = logging.getLogger(__name__)


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"host": platform.node(), "os": platform.platform(), "python": platform.python_version(),
            "cpu": cpu, "cores": os.cpu_count()}


def read_alerts(run: PipelineRun) -> list[dict]:
    db = run.run_dir / "alerts.sqlite"
    if db.exists():
        from fbvision.alerts.backend import AlertStore

        store = AlertStore(db)
        try:
            return store.alerts()
        finally:
            store.close()
    return run.backend_alerts()


def ground_truth_section(run: PipelineRun, alerts: list[dict], ended_at: float, state: dict) -> dict | None:
    from fbvision.camera.factory import load_scenario
    from fbvision.lab.groundtruth import expected_alerts, match_alerts, summarise

    settings = run.settings
    expected, cams = [], []
    for cam in settings.cameras:
        if not cam.enabled or not cam.source.startswith("synthetic:"):
            continue
        scenario = load_scenario(cam.source.split(":", 1)[1])
        status = state.get("cameras", {}).get(cam.id, {})
        t0 = float(status.get("scene_t0") or run.started_at)
        rules = effective_rules(settings.logic, cam.logic)
        expected += expected_alerts(cam.id, scenario, rules, t0, ended_at, loop=cam.loop)
        cams.append(cam.id)
    if not cams:
        return None
    raised = [a for a in alerts if a.get("state") == "raised" and a.get("camera_id") in cams]
    matches = match_alerts(expected, raised, ended_at)
    return {"cameras": cams, "summary": summarise(matches), "matches": [m.as_dict() for m in matches]}


def build_report(run: PipelineRun, ended_at: float) -> dict:
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
        "redis": redact_url(run.redis_url or ""),
        "provider": snap_inf.get("provider"),
        "autotune": snap_inf.get("autotune"),
        "config": json.loads(redact_url(run.settings.model_dump_json())),
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
        "drops": drops(state),
        "alerts": [{k: a.get(k) for k in ("camera_id", "rule", "severity", "state", "track_id", "started_at",
                                           "updated_at", "resolved_at", "idempotency_key")} for a in alerts],
        "delivery": state.get("delivery", {}),
        "cameras": state.get("cameras", {}),
    }
    report["ground_truth"] = ground_truth_section(run, alerts, ended_at, state)
    return report


def _ts(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else "-"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def render_markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# fbvision run report",
        "",
        f"- when: {_ts(r['started_at'])} → {_ts(r['ended_at'])} ({r['duration_s']} s), ended by: {r['exit_reason']}",
        f"- machine: {m['cpu']} × {m['cores']} cores, {m['os']}, Python {m['python']}",
        f"- model: `{r['config']['model']['path']}` on **{r['provider']}**; Redis {r['redis']}",
        f"- stage restarts: {r['restarts']}",
        "",
        "## Frames",
        "",
        f"- inferred: {r['frames']['inferred']} ({r['frames']['throughput_fps']} frames/s), judged by logic: "
        f"{r['frames']['judged']}",
        "- pushed per camera: " + ", ".join(f"{k}: {v}" for k, v in sorted(r["frames"]["pushed_per_camera"].items())),
        "- batch sizes: " + (", ".join(f"{b}: {n}" for b, n in sorted(r["batch_sizes"].items())) or "-"),
        "- drops: " + (", ".join(f"{k}: {v}" for k, v in sorted(r["drops"].items())) or "none"),
        "",
        "## Latency (ms, last 4096 results)",
        "",
        "| stage | p50 | p95 | p99 | max | n |",
        "|---|---|---|---|---|---|",
    ]
    for stage, s in r["latency_ms"].items():
        if "p50" in s:
            lines.append(f"| {stage} | {s['p50']} | {s['p95']} | {s['p99']} | {s['max']} | {s['count']} |")
    lines += ["", f"## Alerts ({len(r['alerts'])} events received by the backend)", "",
              "| time | camera | rule | severity | state | track |", "|---|---|---|---|---|---|"]
    for a in r["alerts"]:
        lines.append(f"| {_ts(a['updated_at'])} | {a['camera_id']} | {a['rule']} | {a['severity']} | {a['state']} "
                     f"| {a['track_id']} |")
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
    if r.get("snapshots"):
        lines += ["", "## Alert snapshots", ""] + [f"- `{p}`" for p in r["snapshots"]]
    if r.get("previews"):
        lines += ["", "## Annotated previews", ""] + [f"- `{p}`" for p in r["previews"]]
    if r.get("autotune"):
        lines += ["", "## Auto-tune (this machine)", "", "| batch | frames/s | ms/batch | vs batch 1 |", "|---|---|---|---|"]
        for row in r["autotune"]:
            lines.append(f"| {row.get('batch')} | {row.get('frames_per_s', 0):.1f} | {row.get('ms_per_batch', 0):.1f} "
                         f"| {row.get('ratio_vs_1', 0):.2f} |")
    return "\n".join(lines) + "\n"


def add_snapshots(report: dict, run: PipelineRun) -> None:
    """One annotated JPEG per raised alert of a synthetic camera (re-rendered scene + recorded tracks)."""
    from fbvision.lab.replay import alert_snapshots, synthetic_scenes
    from fbvision.logic.recorder import read_recording

    rec_dir = run.run_dir / "recording"
    recording = read_recording(rec_dir) if rec_dir.exists() else None
    scenes = synthetic_scenes(run.settings, report.get("cameras", {}))
    paths = alert_snapshots(run.run_dir, read_alerts(run), scenes, recording=recording)
    report["snapshots"] = [str(p.relative_to(run.run_dir)) for p in paths]


def add_previews(report: dict, run: PipelineRun) -> None:
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
