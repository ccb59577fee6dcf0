"""The whole pipeline on one host: embedded Redis and backend when none is configured, each stage in its own
supervised process, a live dashboard, and a run report at the end. ``runners/run_all.py`` is its CLI.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from fbvision.core.config import Settings
from fbvision.core.configbase import dump_json_with_secrets, secret_values
from fbvision.core.procutil import cpu_seconds
from fbvision.core.redact import mask_url, url_secrets
from fbvision.core.transport import Transport, TransportUnavailable
from fbvision.run.dashboard import Dashboard
from fbvision.run.logs import RunLog
from fbvision.run.redis_server import EmbeddedRedis, free_port
from fbvision.run.report import add_evidence, add_previews, build_report, write_report
from fbvision.run.stages import (
    backend_stage,
    camera_part_stage,
    camera_stage,
    delivery_stage,
    inference_stage,
    logic_stage,
)
from fbvision.run.supervisor import CrashLoop, StageSpec, Supervisor

logger = logging.getLogger(__name__)

@dataclass
class RunOutcome:
    started_at: float
    ended_at: float
    exit_reason: str
    restarts: dict[str, int]
    run_dir: Path
    report: dict = field(default_factory=dict)


class PipelineRun:
    """``PipelineRun(settings, run_dir).execute(duration_s)`` - or start()/step()/stop() for tests."""

    def __init__(self, settings: Settings, run_dir: Path, *, dashboard: bool | None = None,
                 log_level: int = logging.INFO, record: bool = True, drain_s: float = 10.0,
                 preview: bool = False, force_terminal: bool = False):
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if settings.evidence.dir is None:  # the embedded run keeps its evidence with its report
            settings = settings.model_copy(deep=True)
            settings.evidence.dir = self.run_dir / "evidence"
            self.settings = settings
        self.dashboard_enabled = settings.runner.dashboard if dashboard is None else dashboard
        self.log_level = log_level
        self.record = record
        self.preview = preview  # annotated MP4 per synthetic camera at the end (needs the recording)
        self.drain_s = drain_s
        self.force_terminal = force_terminal  # --dashboard: paint the dashboard even when stdout is not a terminal
        self.redis: EmbeddedRedis | None = None
        self.redis_url = settings.redis.url
        self.backend_url = settings.alerts.backend_url
        self.backend_base: str | None = None
        self.supervisor: Supervisor | None = None
        self.stop_order: list[str] = []
        self.transport: Transport | None = None
        self.started_at = 0.0
        self._signals = 0
        self.exit_reason = "duration"
        # The steady window: from the first judged frame (start-up - imports, model load, warm-up - left out)
        # to the end of the run's duration, before the stop drains the queues: (time, frames judged, CPU seconds
        # per stage) at both ends. The report's steady frames/s and CPU ms per frame come from it.
        self.steady_from: tuple[float, int, dict[str, float]] | None = None
        self.steady_to: tuple[float, int, dict[str, float]] | None = None
        # run.log (always) and the dashboard's log pane, for the stages' records and the runner's.
        self.run_log = RunLog(self.run_dir, log_level, secrets=secret_values(settings))
        self.stop_status = ""  # what the warm stop is doing now (the dashboard shows it)
        self.on_progress = None  # called after each stop step (the dashboard refreshes)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self.started_at = time.time()
        self.run_log.start()
        if not self.redis_url:
            self.redis = EmbeddedRedis().start()
            self.redis_url = self.redis.url
            self.run_log.secrets.add(url_secrets(self.redis_url))  # its generated password
        self.transport = Transport.from_config(self.settings.redis, url=self.redis_url, client_name="fbv-runner")
        self.transport.wait_ready()
        backend: list[StageSpec] = []
        if not self.backend_url:
            port = free_port()
            self.backend_base = f"http://127.0.0.1:{port}"
            self.backend_url = f"{self.backend_base}/alerts"
        cfg = dump_json_with_secrets(self.settings)  # the stages need the secrets; every other dump masks them
        if self.backend_base is not None:
            backend.append(StageSpec("backend", backend_stage, (str(self.run_dir / "alerts.sqlite"), port,
                                                                str(self.settings.evidence.dir), cfg, self.redis_url)))
        recording = str(self.run_dir / "recording") if self.record else ""
        pipeline = [  # upstream first: the one list of the stages and their order
            *self._camera_stages(),
            StageSpec("inference", inference_stage, (cfg, self.redis_url)),
            StageSpec("logic", logic_stage, (cfg, self.redis_url, "logic-1", recording)),
            StageSpec("delivery", delivery_stage, (cfg, self.redis_url, self.backend_url)),
        ]
        # Start: the embedded backend, then the pipeline. Stop: the pipeline in its order (sources first, so every
        # frame already queued can still be inferred, judged and delivered), the backend last.
        self.stop_order = [spec.name for spec in pipeline + backend]
        self.supervisor = Supervisor(backend + pipeline, max_restarts=self.settings.runner.max_restarts,
                                     window_s=self.settings.runner.restart_window_s, log_level=self.log_level,
                                     log_queue=self.run_log.queue)
        self.supervisor.start()
        frames = self.settings.redis.frames_url
        logger.info("pipeline started: redis %s%s, backend %s, run dir %s", mask_url(self.redis_url),
                    f" (frames: {mask_url(frames)})" if frames else "", mask_url(self.backend_url), self.run_dir)

        if self.backend_base is not None:
            logger.info("review page: %s/review (alerts with their snapshot and clip, verdicts)", self.backend_base)

    def _camera_stages(self) -> list[StageSpec]:
        """The camera managers: ``camera.processes`` of them (0: by core count), the cameras split evenly;
        one is the stage "camera", more are "camera-1".. "camera-N"."""
        cameras = self.settings.cameras
        n = self.settings.camera.resolved_processes(sum(1 for c in cameras if c.enabled))
        if n <= 1:
            return [StageSpec("camera", camera_stage, (dump_json_with_secrets(self.settings), self.redis_url))]
        specs = []
        for k in range(n):
            part = dump_json_with_secrets(self.settings.model_copy(update={"cameras": cameras[k::n]}))
            specs.append(StageSpec(f"camera-{k + 1}", camera_part_stage, (part, self.redis_url, k)))
        return specs

    def install_signal_handlers(self) -> None:
        """First Ctrl-C/SIGTERM: finish and report. Second: stop now."""

        def handler(signum, frame):
            self._signals += 1
            if self._signals == 1:
                self.exit_reason = f"signal {signal.Signals(signum).name}"
                logger.warning("stopping: finishing in-flight work (press Ctrl-C again to stop at once)")
                # No refresh from inside the signal handler (it may interrupt one): the loop's next step shows it.
                self.stop_status = "stop requested: finishing in-flight work (Ctrl-C again: stop at once)"
            else:
                logger.error("second signal: stopping now")
                self.cold_stop()
                raise SystemExit(130)

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    @property
    def stop_requested(self) -> bool:
        return self._signals > 0

    def step(self) -> None:
        """Supervise once (restart crashed stages)."""
        restarted = self.supervisor.poll()
        for name in restarted:
            logger.error("stage %s crashed and was restarted", name)

    def _steady_mark(self) -> tuple[float, int, dict[str, float]] | None:
        try:
            judged = int(self.transport.stats("logic").get("results", 0))
        except (TransportUnavailable, ValueError, TypeError):
            return None
        cpu = self.supervisor.cpu_seconds()
        if self.redis is not None and self.redis.proc is not None:
            cpu["redis"] = round(cpu_seconds(self.redis.proc.pid), 3)
        return time.time(), judged, cpu

    def progress(self, text: str) -> None:
        """One step of the stop: into the log, the dashboard's status line, and a dashboard refresh."""
        self.stop_status = text
        logger.info("stop: %s", text)
        if self.on_progress is not None:
            self.on_progress()

    def drain(self) -> None:
        """After the cameras stop: let queued frames, results and alerts flow out (bounded)."""
        deadline = time.monotonic() + self.drain_s
        last = -1
        while time.monotonic() < deadline:
            try:
                busy = (self.transport.frame_queue_depth() + self.transport.result_backlog()
                        + self.transport.outbox_pending())
            except TransportUnavailable:
                break
            if busy == 0:
                return
            if busy != last:
                self.progress(f"draining: {busy} frames/results/alerts still queued "
                              f"({deadline - time.monotonic():.0f} s left)")
                last = busy
            time.sleep(0.25)
        logger.warning("drain timed out after %.0f s with work still queued", self.drain_s)

    def warm_stop(self) -> None:
        sup = self.supervisor
        if sup is None:
            return
        cameras = [stage for name, stage in sup.running.items() if name == "camera" or name.startswith("camera-")]
        if cameras:
            self.progress("stopping the cameras")
            for camera in cameras:
                camera.stop.set()
            for camera in cameras:
                camera.process.join(10)
        self.progress("cameras stopped; draining the queues")
        self.drain()
        sup.stop(timeout_s=20, order=self.stop_order, progress=self.progress)
        self.progress("all stages stopped; writing the report")

    def cold_stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.kill()
        if self.redis is not None:
            self.redis.cleanup()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.redis is not None:
            self.redis.cleanup()
            self.redis = None
        self.run_log.stop()

    # -- reading the state -------------------------------------------------------------------------
    def backend_alerts(self) -> list[dict]:
        if self.backend_base is None and self.settings.alerts.backend_url:
            return []  # an external backend: not ours to read
        try:
            reply = requests.get(f"{self.backend_base}/alerts", timeout=2)
            reply.raise_for_status()
            return reply.json()
        except (requests.RequestException, ValueError):
            return []

    def execute(self, duration_s: float | None) -> RunOutcome:
        self.start()
        dash = Dashboard(self, enabled=self.dashboard_enabled, force_terminal=self.force_terminal)
        self.on_progress = lambda: dash.update(force=True)
        t_start = time.monotonic()
        try:
            with dash:
                while not self.stop_requested:
                    if duration_s is not None and time.monotonic() - t_start >= duration_s:
                        break
                    try:
                        self.step()
                    except CrashLoop as exc:
                        self.exit_reason = f"crash loop: {exc}"
                        logger.critical("%s", exc)
                        break
                    dash.update()
                    if self.steady_from is None:
                        mark = self._steady_mark()
                        if mark is not None and mark[1] > 0:
                            self.steady_from = mark
                    time.sleep(0.5)
                if self.steady_from is not None:
                    self.steady_to = self._steady_mark()
                self.warm_stop()
            ended = time.time()
            report = build_report(self, ended)
            try:
                add_evidence(report, self)
            except Exception:  # never lose the report over the evidence listing
                logger.exception("listing the alerts' evidence failed")
            if self.preview:
                try:
                    add_previews(report, self)
                except Exception:  # the same: a nicety
                    logger.exception("previews failed")
            write_report(report, self.run_dir)
            return RunOutcome(self.started_at, ended, self.exit_reason, dict(self.supervisor.restart_counts),
                              self.run_dir, report)
        finally:
            self.cold_stop()
            self.close()

