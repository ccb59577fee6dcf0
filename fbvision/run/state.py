"""What the dashboard and the run report read of a run: the :class:`RunView` protocol and the readers of the
pipeline's state (counters, camera statuses, stage snapshots - all from Redis, so the same whichever host each
stage runs on).

The runner's :class:`~fbvision.run.runner.PipelineRun` satisfies :class:`RunView`; the dashboard and the report
depend on this module only, never on the runner, so ``run/`` has no import cycle (tests/unit/test_import_cycles.py,
and the layers contract in pyproject.toml).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fbvision.core.transport import TransportUnavailable

if TYPE_CHECKING:
    from fbvision.core.config import Settings
    from fbvision.core.transport import Transport
    from fbvision.run.logs import RunLog
    from fbvision.run.supervisor import Supervisor


class RunView(Protocol):
    """What the dashboard and the report read of a run (``PipelineRun`` has all of it)."""

    settings: Settings
    run_dir: Path
    transport: Transport | None
    redis_url: str | None
    started_at: float
    exit_reason: str
    supervisor: Supervisor | None
    run_log: RunLog
    stop_status: str  # what the warm stop is doing now ("" while running)
    # The steady window's two ends: (time, frames judged, CPU seconds per stage), None until measured.
    steady_from: tuple[float, int, dict[str, float]] | None
    steady_to: tuple[float, int, dict[str, float]] | None

    @property
    def stop_requested(self) -> bool: ...

    def backend_alerts(self) -> list[dict]: ...


def collect(run: RunView) -> dict:
    """One consistent read of the pipeline's state (also used by the report)."""
    t = run.transport
    state = {"at": time.time(), "ok": True}
    try:
        state["camera"] = t.stats("camera")
        state["inference"] = t.stats("inference")
        state["logic"] = t.stats("logic")
        state["delivery"] = t.stats("delivery")
        state["queue"] = t.stats("queue")
        state["queue_depth"] = t.frame_queue_depth()
        state["cameras"] = t.camera_statuses()
        state["snapshots"] = t.snapshots()
        state["outbox_pending"] = t.outbox_pending()
        state["result_backlog"] = t.result_backlog()
        # Malformed ids/values the reads above skipped (written to Redis by something that is not a stage).
        state["invalid_ids"] = dict(t.invalid_ids)
    except TransportUnavailable as exc:
        state.update(ok=False, error=str(exc))
    return state


def engine_busy(state: dict) -> dict[str, float]:
    """Each inference worker's ``engine_busy_fraction`` (time inside infer / wall time over its last counter
    flush), from its snapshot; well-formed values only."""
    return {name.split(":", 1)[1]: float(s["engine_busy_fraction"])
            for name, s in sorted(state.get("snapshots", {}).items())
            if name.startswith("inference:") and isinstance(s, dict)
            and isinstance(s.get("engine_busy_fraction"), (int, float))}


def any_simulated(state: dict) -> bool:
    """Whether an inference worker runs a SIMULATED engine (model.engine: sim / null)."""
    return any(isinstance(s, dict) and s.get("engine_simulated") is True
               for name, s in state.get("snapshots", {}).items() if name.startswith("inference:"))


def latency_table(snapshots: dict, key: str = "latency_s") -> dict[str, dict]:
    """The logic workers' latency summaries (the first one that has them): ``latency_s`` over the last 4096
    results, ``latency_s_1m`` over the last minute, ``latency_s_all`` since the worker started."""
    for name, snap in sorted(snapshots.items()):
        if name.startswith("logic:") and isinstance(snap.get(key), dict):
            # Well-formed rows only: snapshots are JSON anyone with Redis access can write.
            return {stage: s for stage, s in snap[key].items()
                    if isinstance(s, dict) and all(isinstance(v, (int, float)) for v in s.values())}
    return {}


def batch_mix(inference_stats: dict) -> dict[int, int]:
    # Only well-formed fields: the counters hash is writable by anything with Redis access.
    return {int(k.split(":", 1)[1]): int(v) for k, v in inference_stats.items()
            if k.startswith("batch_size:") and k.split(":", 1)[1].isdigit()}


def drops(state: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for stage in ("camera", "queue", "inference", "logic", "delivery"):
        for key, value in state.get(stage, {}).items():
            if key.startswith("dropped:") and key.count(":") == 1:
                out[f"{stage}:{key.split(':', 1)[1]}"] = int(value)
    return out
