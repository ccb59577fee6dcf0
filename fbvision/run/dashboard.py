"""Live terminal dashboard (rich): cameras, queue, batching, latency, drops, alerts.

Everything shown is read from Redis (counters, camera status, stage snapshots) and from the backend, so
the dashboard shows the same numbers whichever host each stage runs on.
"""

from __future__ import annotations

import time
from collections import deque

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from fbvision.run.state import RunView, any_simulated, batch_mix, collect, drops, engine_busy, latency_table

FPS_WINDOW_S = 10.0  # fps = frames pushed over the last 10 s (a 1 s window flickers 4.9/5.9 for a 5 fps camera)
LEVEL_STYLE = {"WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red"}
STATE_STYLE = {"online": "green", "reconnecting": "yellow", "connecting": "yellow", "offline": "red"}
SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "critical": "bold red"}


class Dashboard:
    def __init__(self, run: RunView, *, enabled: bool = True, refresh_s: float = 1.0, force_terminal: bool = False):
        self.run = run
        self.enabled = enabled
        self.refresh_s = refresh_s
        # --dashboard: paint even when stdout is not a terminal (else rich decides)
        self.console = Console(stderr=False, force_terminal=True if force_terminal else None)
        self._live: Live | None = None
        self._last_update = 0.0
        self._samples: deque[tuple[float, dict]] = deque()  # (monotonic, frames pushed per camera)
        self.fps: dict[str, float] = {}
        self.fps_window_s = 0.0  # the window the fps figures are over (up to FPS_WINDOW_S)

    def __enter__(self) -> Dashboard:
        if self.enabled:
            self._live = Live(console=self.console, refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def update(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_update < self.refresh_s:
            return
        self._last_update = now
        state = collect(self.run)
        if not state["ok"]:
            if self._live is not None:
                self._live.update(f"[red]Redis unavailable: {state['error']}[/red]")
            return
        pushed = {k.split(":", 1)[1]: v for k, v in state["camera"].items() if k.startswith("frames_pushed:")}
        self.fps, self.fps_window_s = self.rate(now, pushed)
        if self._live is not None:
            self._live.update(self.render(state))

    def rate(self, now: float, pushed: dict) -> tuple[dict[str, float], float]:
        """Frames per second per camera over the last ``FPS_WINDOW_S`` (the oldest sample inside it)."""
        self._samples.append((now, pushed))
        while len(self._samples) > 2 and now - self._samples[1][0] >= FPS_WINDOW_S:
            self._samples.popleft()
        t0, first = self._samples[0]
        dt = now - t0
        if dt <= 0:
            return {}, 0.0
        return {cam: (int(n) - int(first.get(cam, 0))) / dt for cam, n in pushed.items()}, dt

    def log_pane(self) -> Table:
        """The last warnings and errors of every stage (all of them are in run.log)."""
        pane = Table(title=f"log (warnings and errors; all in {self.run.run_dir / 'run.log'})", expand=True,
                     show_header=False)
        pane.add_column("time", no_wrap=True)
        pane.add_column("level", no_wrap=True)
        pane.add_column("stage", no_wrap=True)
        pane.add_column("message", overflow="fold")
        for at, level, stage, text in self.run.run_log.pane.recent():
            style = LEVEL_STYLE.get(level, "white")
            pane.add_row(time.strftime("%H:%M:%S", time.localtime(at)), f"[{style}]{level}[/]", stage,
                         escape(text))
        return pane

    def render(self, state: dict) -> Group:
        run = self.run
        elapsed = time.time() - run.started_at
        restarts = sum(run.supervisor.restart_counts.values()) if run.supervisor else 0
        head = (f"[bold]fbvision[/bold]  running {elapsed:5.0f} s   queue depth {state['queue_depth']}   "
                f"restarts {restarts}   outbox pending {state['outbox_pending']}")
        if run.stop_requested or run.stop_status:
            head += f"\n[bold yellow]stopping:[/] {escape(run.stop_status or 'finishing in-flight work')}"

        cams = Table(title="cameras", expand=False)
        for col in ("camera", "state", f"fps ({self.fps_window_s:.0f} s)", "frames"):
            cams.add_column(col)
        for cam_id, status in sorted(state["cameras"].items()):
            st = str(status.get("state", "?"))
            cams.add_row(cam_id, f"[{STATE_STYLE.get(st, 'white')}]{st}[/]", f"{self.fps.get(cam_id, 0):.1f}",
                         str(state["camera"].get(f"frames_pushed:{cam_id}", 0)))

        inf = state["inference"]
        mix = batch_mix(inf)
        total = sum(mix.values()) or 1
        pipe = Table(title="pipeline", expand=False)
        pipe.add_column("what")
        pipe.add_column("value")
        # Each stage adds to its counters in Redis every flush interval, so at any moment the downstream totals
        # lag or lead the upstream ones by up to one flush: the difference and the queue say how they reconcile.
        pushed_all = sum(int(v) for k, v in state["camera"].items() if k.startswith("frames_pushed:"))
        frames_in, frames_out = int(inf.get("frames_in", 0)), int(inf.get("frames_out", 0))
        judged = int(state["logic"].get("results", 0))
        pipe.add_row("frames pushed (cameras)", str(pushed_all))
        pipe.add_row("frames in / out (inference)", f"{frames_in} / {frames_out}")
        pipe.add_row("batch sizes", "  ".join(f"{b}:{100 * n / total:.0f}%" for b, n in sorted(mix.items())) or "-")
        busy = engine_busy(state)
        if busy:
            pipe.add_row("engine busy (inference)", "  ".join(f"{100 * v:.0f}%" for v in busy.values())
                         + ("  [yellow]SIMULATED engine[/]" if any_simulated(state) else ""))
        pipe.add_row("results judged (logic)", f"{judged}  (out - judged: {frames_out - judged:+d}, "
                     f"queued {state.get('result_backlog', '?')}; counters flush every ~1 s)")
        pipe.add_row("alerts delivered", str(state["delivery"].get("delivered", 0)))
        for reason, n in sorted(drops(state).items()):
            pipe.add_row(f"dropped {reason}", str(n))
        # Each process's wall clock against the Redis clock (all cross-host ages are measured on the latter).
        skews = [f"{name.split(':')[0]} {float(s['clock']['skew_ms']):+.0f}"
                 for name, s in sorted(state["snapshots"].items())
                 if isinstance(s, dict) and isinstance(s.get("clock"), dict) and s["clock"].get("synced")
                 and isinstance(s["clock"].get("skew_ms"), (int, float))]
        if skews:
            pipe.add_row("clock skew (ms)", "  ".join(skews))

        lat = Table(title="latency (ms, last minute)", expand=False)
        for col in ("stage", "p50", "p95", "n"):
            lat.add_column(col)
        for stage, s in (latency_table(state["snapshots"], "latency_s_1m")
                         or latency_table(state["snapshots"])).items():
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
        return Group(head, top, alerts, self.log_pane())
