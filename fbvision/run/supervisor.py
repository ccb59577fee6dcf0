"""Run each stage in its own process, restart crashed ones within a budget, stop them warm or cold.

Signal policy (the only place that handles signals, with ``runners/``):

* a stage process ignores SIGINT (Ctrl-C in a terminal reaches the whole process group; the parent decides),
  and on SIGTERM sets its stop event (warm stop: finish the current batch, flush, exit); a second SIGTERM
  exits at once;
* every stage process asks the kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``), so a killed
  runner never leaves orphans;
* the parent: first Ctrl-C/SIGTERM = warm stop of every stage and a final report; second = cold stop now.

Budget (Frigate-style): a stage that exits unexpectedly is restarted, at most ``max_restarts`` times within
``window_s``; past that the supervisor raises :class:`CrashLoop` and the runner gives up loudly.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fbvision.core.procutil import cpu_seconds, die_with_parent
from fbvision.run.logs import setup_stage_logging

logger = logging.getLogger(__name__)


class CrashLoop(RuntimeError):
    pass


def _stage_main(name: str, target: Callable, args: tuple, stop, log_level: int, log_queue=None) -> None:
    """Entry of every stage process."""
    die_with_parent(signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    hits = {"n": 0}

    def on_term(signum, frame):
        hits["n"] += 1
        if hits["n"] > 1:
            os._exit(130)
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    setup_stage_logging(name, log_level, log_queue)
    try:
        target(*args, stop)
    except Exception:
        # Logged (with the traceback) into the run's log, where the report finds the stage's last error; exit 1
        # without multiprocessing printing it again to stderr (which is captured line by line).
        logging.getLogger(__name__).critical("stage %s crashed", name, exc_info=True)
        sys.exit(1)


@dataclass
class StageSpec:
    """``target(*args, stop_event)`` runs the stage until ``stop_event`` is set. Must be importable (spawn)."""

    name: str
    target: Callable[..., Any]
    args: tuple = ()


@dataclass
class _Running:
    spec: StageSpec
    process: mp.process.BaseProcess
    stop: Any
    started_at: float
    restarts: deque = field(default_factory=deque)


class Supervisor:
    def __init__(self, specs: list[StageSpec], *, max_restarts: int = 5, window_s: float = 60.0,
                 log_level: int = logging.INFO, context: str = "spawn", log_queue=None):
        self.specs = specs
        self.log_queue = log_queue  # the run's log queue (fbvision.run.logs.RunLog); None: stages log to stderr
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.log_level = log_level
        self.ctx = mp.get_context(context)
        self.running: dict[str, _Running] = {}
        self.restart_counts: dict[str, int] = {s.name: 0 for s in specs}
        self.stopping = False

    def _spawn(self, spec: StageSpec, restarts: deque | None = None) -> _Running:
        stop = self.ctx.Event()
        proc = self.ctx.Process(
            target=_stage_main, args=(spec.name, spec.target, spec.args, stop, self.log_level, self.log_queue),
            name=f"fbv-{spec.name}", daemon=False,
        )
        proc.start()
        logger.info("started %s (pid %d)", spec.name, proc.pid)
        return _Running(spec, proc, stop, time.monotonic(), restarts if restarts is not None else deque())

    def start(self) -> None:
        for spec in self.specs:
            self.running[spec.name] = self._spawn(spec)

    def poll(self) -> list[str]:
        """Restart stages that died; returns the names restarted. Raises CrashLoop past the budget."""
        restarted = []
        if self.stopping:
            return restarted
        now = time.monotonic()
        for name, run in list(self.running.items()):
            if run.process.is_alive():
                continue
            code = run.process.exitcode
            while run.restarts and now - run.restarts[0] > self.window_s:
                run.restarts.popleft()
            if len(run.restarts) >= self.max_restarts:
                raise CrashLoop(
                    f"stage {name} exited (code {code}) {len(run.restarts) + 1} times within {self.window_s:.0f} s; "
                    f"giving up (budget: {self.max_restarts} restarts per {self.window_s:.0f} s)"
                )
            logger.error("stage %s exited with code %s; restarting (%d/%d in window)",
                         name, code, len(run.restarts) + 1, self.max_restarts)
            run.restarts.append(now)
            self.restart_counts[name] += 1
            self.running[name] = self._spawn(run.spec, run.restarts)
            restarted.append(name)
        return restarted

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) each running stage has used so far, its child processes included (the
        camera stage's camera-manager processes); a stage restarted counts from its last start."""
        return {n: round(cpu_seconds(r.process.pid, descendants=True), 3) for n, r in self.running.items()
                if r.process.pid}

    def pids(self) -> dict[str, int]:
        return {n: r.process.pid for n, r in self.running.items() if r.process.pid}

    def stop(self, *, timeout_s: float = 15.0, order: list[str] | None = None,
             progress: Callable[[str], None] | None = None) -> None:
        """Warm stop: set each stage's stop event (in ``order``, waiting for each), then kill stragglers.
        ``progress(text)`` hears each step (the dashboard shows it)."""
        self.stopping = True
        names = order or list(self.running)
        names += [n for n in self.running if n not in names]
        deadline = time.monotonic() + timeout_s
        for name in names:
            run = self.running.get(name)
            if run is None:
                continue
            if progress is not None:
                progress(f"stopping {name}")
            run.stop.set()
            run.process.join(max(0.1, deadline - time.monotonic()))
            if progress is not None:
                progress(f"{name} stopped" if not run.process.is_alive() else f"{name} did not stop in time")
        self.kill()

    def kill(self) -> None:
        """Cold stop: SIGKILL whatever still runs."""
        self.stopping = True
        for name, run in self.running.items():
            if run.process.is_alive():
                logger.warning("killing %s (pid %d)", name, run.process.pid)
                run.process.kill()
            run.process.join(5)
