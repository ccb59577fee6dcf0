"""Live terminal dashboard (rich): cameras, queue, batching, latency, drops, alerts.

Everything shown is read from Redis (counters, camera status, stage snapshots) and from the backend, so
the dashboard shows the same numbers whichever host each stage runs on.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from fbvision.core.transport import TransportUnavailable

if TYPE_CHECKING:
    from fbvision.run.runner import PipelineRun

STATE_STYLE = {"online": "green", "reconnecting": "yellow", "connecting": "yellow", "offline": "red"}
SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "critical": "bold red"}


def collect(run: PipelineRun) -> dict:
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
    except TransportUnavailable as exc:
        state.update(ok=False, error=str(exc))
    return state


def latency_table(snapshots: dict) -> dict[str, dict]:
    """The logic workers' latency summaries (the first one that has them)."""
    for name, snap in sorted(snapshots.items()):
        if name.startswith("logic:") and snap.get("latency_s"):
            return snap["latency_s"]
    return {}


def batch_mix(inference_stats: dict) -> dict[int, int]:
    return {int(k.split(":", 1)[1]): int(v) for k, v in inference_stats.items() if k.startswith("batch_size:")}


def drops(state: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for stage in ("camera", "queue", "inference", "logic", "delivery"):
        for key, value in state.get(stage, {}).items():
            if key.startswith("dropped:") and key.count(":") == 1:
                out[f"{stage}:{key.split(':', 1)[1]}"] = int(value)
    return out


class Dashboard:
    def __init__(self, run: PipelineRun, *, enabled: bool = True, refresh_s: float = 1.0):
        self.run = run
        self.enabled = enabled
        self.refresh_s = refresh_s
        self.console = Console(stderr=False)
        self._live: Live | None = None
        self._last_update = 0.0
        self._prev: tuple[float, dict] | None = None
        self.fps: dict[str, float] = {}

    def __enter__(self) -> Dashboard:
        if self.enabled:
            self._live = Live(console=self.console, refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def update(self) -> None:
        now = time.monotonic()
        if now - self._last_update < self.refresh_s:
            return
        self._last_update = now
        state = collect(self.run)
        if not state["ok"]:
            if self._live is not None:
                self._live.update(f"[red]Redis unavailable: {state['error']}[/red]")
            return
        pushed = {k.split(":", 1)[1]: v for k, v in state["camera"].items() if k.startswith("frames_pushed:")}
        if self._prev is not None:
            dt = now - self._prev[0]
            self.fps = {cam: (n - self._prev[1].get(cam, 0)) / dt for cam, n in pushed.items()} if dt > 0 else {}
        self._prev = (now, pushed)
        if self._live is not None:
            self._live.update(self.render(state))

    def render(self, state: dict) -> Group:
        run = self.run
        elapsed = time.time() - run.started_at
        restarts = sum(run.supervisor.restart_counts.values()) if run.supervisor else 0
        head = (f"[bold]fbvision[/bold]  running {elapsed:5.0f} s   queue depth {state['queue_depth']}   "
                f"restarts {restarts}   outbox pending {state['outbox_pending']}")

        cams = Table(title="cameras", expand=False)
        for col in ("camera", "state", "fps", "frames"):
            cams.add_column(col)
        for cam_id, status in sorted(state["cameras"].items()):
            st = status.get("state", "?")
            cams.add_row(cam_id, f"[{STATE_STYLE.get(st, 'white')}]{st}[/]", f"{self.fps.get(cam_id, 0):.1f}",
                         str(state["camera"].get(f"frames_pushed:{cam_id}", 0)))

        inf = state["inference"]
        mix = batch_mix(inf)
        total = sum(mix.values()) or 1
        pipe = Table(title="pipeline", expand=False)
        pipe.add_column("what")
        pipe.add_column("value")
        pipe.add_row("frames in / out", f"{inf.get('frames_in', 0)} / {inf.get('frames_out', 0)}")
        pipe.add_row("batch sizes", "  ".join(f"{b}:{100 * n / total:.0f}%" for b, n in sorted(mix.items())) or "-")
        pipe.add_row("results judged", str(state["logic"].get("results", 0)))
        pipe.add_row("alerts delivered", str(state["delivery"].get("delivered", 0)))
        for reason, n in sorted(drops(state).items()):
            pipe.add_row(f"dropped {reason}", str(n))

        lat = Table(title="latency (ms)", expand=False)
        for col in ("stage", "p50", "p95", "n"):
            lat.add_column(col)
        for stage, s in latency_table(state["snapshots"]).items():
            if "p50" in s:
                lat.add_row(stage, f"{1000 * s['p50']:.1f}", f"{1000 * s['p95']:.1f}", str(int(s["count"])))

        alerts = Table(title="alerts (latest)", expand=False)
        for col in ("time", "camera", "rule", "severity", "state"):
            alerts.add_column(col)
        for a in run.backend_alerts()[-8:]:
            sev = a.get("severity", "")
            alerts.add_row(time.strftime("%H:%M:%S", time.localtime(a.get("updated_at", 0))), a.get("camera_id", ""),
                           a.get("rule", ""), f"[{SEVERITY_STYLE.get(sev, 'white')}]{sev}[/]", a.get("state", ""))
        top = Table.grid(padding=(0, 2))
        top.add_row(cams, pipe, lat)
        return Group(head, top, alerts)
