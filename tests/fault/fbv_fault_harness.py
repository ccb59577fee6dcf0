"""A scripted pipeline for the fault, security and scale-out suites: real stage processes, real Redis, the
embedded backend in this process (so a test can take it down), and helpers to inject faults and measure.

Why not :class:`fbvision.run.runner.PipelineRun`: it runs exactly one process per stage and owns the backend in a
child process. The fault suite needs two inference / logic workers and camera managers side by side, a backend
it can stop for 30 s, and each stage's log in a file it can read back. The stages themselves are the project's
(:mod:`fbvision.run.stages`) under the project's :class:`fbvision.run.supervisor.Supervisor` - nothing is faked.

Imported by ``tests/fault/conftest.py`` (which puts this folder on ``sys.path``) and by the scale-out and
security conftests. Spawned stage processes import it too (it holds their entry point), which is why the name
is unusual: it must not collide with another top-level module.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import statistics
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fbv_testutil import descendants, wait_for  # noqa: F401 - re-exported to the fault modules

from fbvision.core.config import DEMO_CONFIG, REPO_ROOT, Settings, load_settings
from fbvision.core.logic_config import effective_rules
from fbvision.core.transport import Transport, TransportUnavailable
from fbvision.lab.groundtruth import expected_alerts, smoothing_lag_s
from fbvision.run.redis_server import EmbeddedRedis

logger = logging.getLogger("fbv.fault")

DEMO_MODEL = REPO_ROOT / "models" / "horse-demo-yolo11n-320.onnx"
REDIS_PASSWORD = "fault-suite-pw-7d1e"  # a test secret: must never show in a log or report
STAGES_COUNTED = ("camera", "queue", "inference", "logic", "delivery")

#: Rows of the end-of-session table (``pytest_terminal_summary`` in tests/fault/conftest.py prints them).
SUMMARY_ROWS: list[dict] = []
#: Free-form measured figures (throughput, latency...) printed under the table.
FIGURES: list[str] = []


# -- stage entry (runs in the spawned child) ---------------------------------------------------------------------

def logged_stage(log_path: str, stage: str, *args) -> None:
    """Supervisor target: add a log file to what ``_stage_main`` configured, then run the project's stage."""
    from fbvision.run import stages

    root = logging.getLogger()
    for existing in root.handlers:  # the test's own output keeps only errors; the file gets everything
        existing.setLevel(logging.ERROR)
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)-7s [{stage}:{os.getpid()}] %(name)s: %(message)s"))
    root.addHandler(handler)
    target = {"camera": stages.camera_stage, "inference": stages.inference_stage, "logic": stages.logic_stage,
              "delivery": stages.delivery_stage}[stage]
    target(*args)


def skewed_stage(skew_s: float, log_path: str, stage: str, *args) -> None:
    """Supervisor target: :func:`logged_stage` on a host whose wall clock is ``skew_s`` off (issue 13).

    The injection point is the process's own ``time.time``/``time.time_ns``, shifted before the stage starts:
    everything in the stage that reads the wall clock (frame sources' capture stamps, status times, log
    records) sees the skewed host clock, as on a badly synchronised camera host; the monotonic clock and the
    Redis server's ``TIME`` (the reference clock) are untouched. fbvision only ever calls ``time.time()``
    through the module, so nothing keeps the real one."""
    real_time, real_time_ns = time.time, time.time_ns
    shift_ns = int(skew_s * 1e9)
    time.time = lambda: real_time() + skew_s
    time.time_ns = lambda: real_time_ns() + shift_ns
    logging.getLogger("fbv.fault").warning("stage %s runs with its wall clock %+.1f s off", stage, skew_s)
    logged_stage(log_path, stage, *args)


# -- settings --------------------------------------------------------------------------------------------------

def model_path() -> Path:
    """The committed demo model (alerts need a trained detector); FBV_FAULT_MODEL overrides it for development."""
    override = os.environ.get("FBV_FAULT_MODEL")
    return Path(override) if override else DEMO_MODEL


def make_settings(cameras: dict[str, str], *, fps: float = 5.0, overrides: dict[str, dict] | None = None,
                  **sections) -> Settings:
    """The demo config with these cameras (id -> source spec) and section tweaks (``inference={"max_batch": 4}``)."""
    import pytest

    path = model_path()
    if not path.is_file():
        pytest.fail(f"model {path} is missing (the demo model is produced by export/train_demo.py)")
    tree = json.loads(load_settings(DEMO_CONFIG, environ={}).model_dump_json())
    tree["model"]["path"] = str(path)
    tree["model"]["providers"] = ["cpu"]
    tree["runner"]["dashboard"] = False
    tree["cameras"] = [
        {"id": cid, "source": src, "fps": fps, **({"logic": overrides[cid]} if overrides and cid in overrides else {})}
        for cid, src in cameras.items()
    ]
    for section, values in sections.items():
        tree.setdefault(section, {}).update(values)
    return Settings.model_validate(tree)


# -- process helpers ---------------------------------------------------------------------------------------------

def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "zombie" not in status.lower()


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def any_thread_running(pid: int) -> bool:
    """True when some thread of ``pid`` is on a CPU now (state R): e.g. ONNX Runtime inside a batch."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tasks:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] == "R":
            return True
    return False


# -- the pipeline ------------------------------------------------------------------------------------------------

@dataclass
class FaultRecord:
    """What one injected fault did, measured."""

    fault: str
    started: float  # wall time the fault began
    ended: float  # wall time the fault was lifted (= started for instantaneous faults)
    recovered_s: float | None = None  # from `ended` until frames flowed end to end again
    before: dict = field(default_factory=dict)  # counters just before
    after: dict = field(default_factory=dict)  # counters once recovered (+ a settle time)
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def drops(self) -> dict[str, int]:
        return counter_delta(self.before, self.after, prefix="dropped:")


def counter_delta(before: dict, after: dict, prefix: str = "") -> dict[str, int]:
    out: dict[str, int] = {}
    for stage in STAGES_COUNTED:
        a, b = after.get(stage) or {}, before.get(stage) or {}
        for key, value in a.items():
            if key.startswith(prefix) and key.count(":") == prefix.count(":"):
                delta = int(value) - int(b.get(key, 0))
                if delta:
                    out[f"{stage}:{key}"] = delta
    return out


class FaultPipeline:
    """``start()``, inject faults (methods below), ``stop()``; then read ``final``, ``alerts``, ``records``.

    ``camera_groups``: camera ids per camera-manager process (default: one manager with every camera).
    ``redis_url``: use that server (e.g. a cluster) instead of an embedded one; ``persistent``: the embedded
    server keeps an append-only file (fsync every write), as a production Redis would, so a restart keeps the
    queues, streams, counters and saved episodes.
    """

    def __init__(self, settings: Settings, run_dir: Path, *, inference_workers: int = 1, logic_workers: int = 1,
                 camera_groups: list[list[str]] | None = None, redis_url: str | None = None,
                 persistent: bool = True, password: str | None = REDIS_PASSWORD, record: bool = True,
                 max_restarts: int = 5, skews: dict[str, float] | None = None):
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.inference_workers = inference_workers
        self.logic_workers = logic_workers
        self.camera_groups = camera_groups or [[c.id for c in settings.cameras]]
        self.external_url = redis_url
        self.persistent = persistent
        self.password = password
        self.record = record
        self.max_restarts = max_restarts
        self.skews = dict(skews or {})  # stage name -> seconds its wall clock is off (skewed_stage)
        self.redis: EmbeddedRedis | None = None
        self.redis_url = redis_url or ""
        self.transport: Transport | None = None
        self.backend = None
        self.supervisor = None
        self._sup_lock = threading.RLock()
        self._poller: threading.Thread | None = None
        self._halt = threading.Event()
        self.crash_loop: str | None = None
        self.started_at = 0.0
        self.stopped_at = 0.0
        self.records: list[FaultRecord] = []
        self.final: dict = {}
        self.injected: dict[str, int] = {}
        self.stage_pids: dict[str, set[int]] = {}
        self.memory: list[dict] = []  # samples: {"t": s, "<stage>": MB, "redis": MB}
        self.exit_reason = "duration"  # for fbvision.run.report.build_report
        self.alerts: list[dict] = []  # what the backend stored (filled by close())
        self.scene_t0s: dict[str, float] = {}
        self.stopping_at = 0.0
        self._removed: dict = {}

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def stage_log(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def _specs(self):
        from fbvision.run.supervisor import StageSpec

        by_id = {c.id: c for c in self.settings.cameras}
        specs = []
        for i, group in enumerate(self.camera_groups, 1):
            part = self.settings.model_copy(update={"cameras": [by_id[c] for c in group]})
            specs.append(StageSpec(f"camera-{i}", logged_stage,
                                   (str(self.stage_log(f"camera-{i}")), "camera", part.model_dump_json(), self.redis_url)))
        cfg = self.settings.model_dump_json()
        for i in range(1, self.inference_workers + 1):
            specs.append(StageSpec(f"inference-{i}", logged_stage,
                                   (str(self.stage_log(f"inference-{i}")), "inference", cfg, self.redis_url)))
        for i in range(1, self.logic_workers + 1):
            rec = str(self.run_dir / f"recording-logic-{i}") if self.record else ""
            specs.append(StageSpec(f"logic-{i}", logged_stage,
                                   (str(self.stage_log(f"logic-{i}")), "logic", cfg, self.redis_url, f"logic-{i}", rec)))
        specs.append(StageSpec("delivery", logged_stage,
                               (str(self.stage_log("delivery")), "delivery", cfg, self.redis_url, self.backend.url)))
        return [StageSpec(s.name, skewed_stage, (self.skews[s.name], *s.args)) if s.name in self.skews else s
                for s in specs]

    def start(self) -> FaultPipeline:
        from fbvision.alerts.backend import EmbeddedBackend
        from fbvision.run.supervisor import Supervisor

        if not self.external_url:
            extra = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else []
            self.redis = EmbeddedRedis(password=self.password, extra_args=extra).start()
            self.redis_url = self.redis.url
        cfg = self.settings.redis.model_copy(update={"retry_max_s": 0.5})
        self.transport = Transport.from_config(cfg, url=self.redis_url, client_name="fbv-fault-test", retries=2)
        self.transport.wait_ready()
        self.backend = EmbeddedBackend(self.run_dir / "alerts.sqlite").start()
        self.supervisor = Supervisor(self._specs(), max_restarts=self.max_restarts, window_s=60.0,
                                     log_level=logging.INFO)
        self.started_at = time.time()
        with self._sup_lock:
            self.supervisor.start()
            self._note_pids()
        self._poller = threading.Thread(target=self._poll_loop, name="fault-supervisor", daemon=True)
        self._poller.start()
        return self

    def _note_pids(self) -> None:
        for name, run in self.supervisor.running.items():
            if run.process.pid:
                self.stage_pids.setdefault(name, set()).add(run.process.pid)

    def _poll_loop(self) -> None:
        from fbvision.run.supervisor import CrashLoop

        next_mem = 0.0
        while not self._halt.wait(0.25):
            with self._sup_lock:
                try:
                    restarted = self.supervisor.poll()
                except CrashLoop as exc:
                    self.crash_loop = str(exc)
                    logger.error("%s", exc)
                    return
                if restarted:
                    logger.warning("supervisor restarted %s", restarted)
                    self._note_pids()
            if time.monotonic() >= next_mem:
                next_mem = time.monotonic() + 2.0
                self._sample_memory()

    def _sample_memory(self) -> None:
        sample: dict = {"t": time.time() - self.started_at}
        with self._sup_lock:
            for name, run in self.supervisor.running.items():
                if run.process.pid and run.process.is_alive():
                    sample[name] = rss_mb(run.process.pid)
        if self.redis is not None and self.redis.proc is not None:
            sample["redis-server"] = rss_mb(self.redis.proc.pid)
        with contextlib.suppress(Exception):
            sample["redis_used_mb"] = int(self.transport.client.info("memory")["used_memory"]) / 2**20
        self.memory.append(sample)

    def wait_flowing(self, timeout_s: float = 120.0, min_results: int = 10) -> float:
        """Until the logic stage has judged ``min_results`` frames; returns seconds since start."""
        wait_for(lambda: self.counters("logic").get("results", 0) >= min_results, timeout_s,
                 what=f"{min_results} results judged")
        self.scene_t0()
        return time.time() - self.started_at

    def scene_t0(self) -> dict[str, float]:
        """Wall time of frame 0 of each synthetic camera's scene (kept: a stopped source no longer says)."""
        try:
            statuses = self.transport.camera_statuses()
        except TransportUnavailable:
            statuses = {}
        for cam, s in statuses.items():
            if s.get("scene_t0"):
                self.scene_t0s.setdefault(cam, float(s["scene_t0"]))
        return dict(self.scene_t0s)

    def sleep_until_scene(self, camera_id: str, scene_s: float) -> None:
        """Sleep until camera ``camera_id``'s synthetic scene is at ``scene_s`` seconds."""
        t0 = wait_for(lambda: self.scene_t0().get(camera_id), 60, what=f"scene start of {camera_id}")
        delay = t0 + scene_s - time.time()
        if delay > 0:
            time.sleep(delay)

    def stop(self, drain_s: float = 20.0) -> None:
        """Warm stop: cameras first, drain, then the rest in pipeline order; final counters; then tear down."""
        self.stopping_at = time.time()
        try:
            self._halt.set()  # no more restarts: a stage that exits now is meant to
            if self._poller is not None:
                self._poller.join(5)
            with self._sup_lock:
                for name, run in self.supervisor.running.items():
                    if name.startswith("camera-"):
                        run.stop.set()
                for name, run in self.supervisor.running.items():
                    if name.startswith("camera-"):
                        run.process.join(15)
            deadline = time.monotonic() + drain_s
            while time.monotonic() < deadline:
                try:
                    busy = (self.transport.frame_queue_depth() + self.transport.result_backlog()
                            + self.transport.outbox_pending())
                except TransportUnavailable:
                    busy = 1
                if busy == 0:
                    break
                time.sleep(0.25)
            order = ["inference", "logic", "delivery"]
            with self._sup_lock:
                names = sorted(self.supervisor.running, key=lambda n: next(
                    (i for i, p in enumerate(order) if n.startswith(p)), -1))
                self.supervisor.stop(timeout_s=30, order=names)
            self.stopped_at = time.time()
            self.final = self.snapshot_counters()
            self.final["queue_depth"] = self.transport.frame_queue_depth()
            self.final["result_backlog"] = self.transport.result_backlog()
            self.final["outbox_pending"] = self.transport.outbox_pending()
            self.final["dead_letters"] = self.transport.dead_letters(1000)
            self.final["results_index"] = self.results_index()
            self.final["snapshots"] = self.transport.snapshots()
        finally:
            self.close()

    def close(self) -> None:
        self._halt.set()
        if self.supervisor is not None:
            with self._sup_lock:
                self.supervisor.kill()
        if self.backend is not None:
            self.alerts = self.backend.alerts()
            self.backend.stop()
        if self.transport is not None:
            self.transport.close()
        if self.redis is not None:
            self.redis.cleanup()
            self.redis = None

    # -- reading -------------------------------------------------------------------------------------------------
    def counters(self, stage: str) -> dict:
        try:
            return self.transport.stats(stage)
        except TransportUnavailable:
            return {}

    def snapshot_counters(self) -> dict:
        return {stage: self.counters(stage) for stage in STAGES_COUNTED}

    def duplicate_results(self) -> list[tuple[str, int]]:
        """(camera, seq) published more than once - a frame inferred twice."""
        from collections import Counter

        counts = Counter((cam, seq) for cam, seq, _p, _id in self.final.get("results_index", []))
        return sorted(k for k, n in counts.items() if n > 1)

    def results_index(self) -> list[tuple[str, int, int, str]]:
        """(camera, seq, partition, entry id) of every result still in the partition streams."""
        from fbvision.core.wire import WireError, decode_result

        t = self.transport
        out = []
        for p in range(t.result_partitions):
            for entry_id, fields in t.client.xrange(t.keys.results(p)):
                try:
                    msg = decode_result(fields.get(b"r", b""))
                except WireError:
                    continue
                out.append((msg.camera_id, msg.seq, p, entry_id.decode()))
        return out

    def outbox_waiting(self) -> int | None:
        """Outbox entries not yet delivered (unread lag + read but unacknowledged); None if unknown."""
        from fbvision.core.transport import OUTBOX_GROUP

        t = self.transport
        try:
            for g in t.client.xinfo_groups(t.keys.outbox):
                if g.get("name") in (OUTBOX_GROUP, OUTBOX_GROUP.encode()):
                    return int(g.get("lag") or 0) + int(g.get("pending") or 0)
        except Exception:
            return None
        return None

    def outbox_drained(self) -> bool:
        return self.outbox_waiting() == 0

    def delivered(self) -> list[dict]:
        return self.backend.alerts()

    def judged_after(self, wall_ts: float, camera_id: str | None = None) -> bool:
        """True once the logic stage has read a result of a frame captured after ``wall_ts`` (its consumer
        group's last-delivered entry in some partition, or in ``camera_id``'s partition, is such a frame)."""
        from fbvision.core.transport import RESULTS_GROUP
        from fbvision.core.wire import WireError, decode_result

        t = self.transport
        parts = [t.partition_of(camera_id)] if camera_id else range(t.result_partitions)
        try:
            for p in parts:
                key = t.keys.results(p)
                for group in t.client.xinfo_groups(key):
                    if group.get("name") not in (RESULTS_GROUP, RESULTS_GROUP.encode()):
                        continue
                    last = group.get("last-delivered-id")
                    if not last or last in (b"0-0", "0-0"):
                        continue
                    for _id, fields in t.client.xrange(key, last, last):
                        try:
                            msg = decode_result(fields.get(b"r", b""))
                        except WireError:
                            continue
                        if msg.timeline.captured > wall_ts and (camera_id is None or msg.camera_id == camera_id):
                            return True
        except Exception:  # Redis still away, or a stream not there yet
            return False
        return False

    def measure_recovery(self, record: FaultRecord, timeout_s: float = 90.0, settle_s: float = 2.0,
                         camera_id: str | None = None) -> FaultRecord:
        """Recovered = a frame captured after the fault was lifted has been judged by the logic stage."""
        try:
            wait_for(lambda: self.judged_after(record.ended, camera_id), timeout_s, interval_s=0.2,
                     what=f"recovery after {record.fault}")
            record.recovered_s = round(time.time() - record.ended, 1)
        except AssertionError:
            record.recovered_s = None
            record.notes.append(f"no recovery within {timeout_s:.0f} s")
        time.sleep(settle_s)
        record.after = self.snapshot_counters()
        self.records.append(record)
        logger.warning("fault %s: recovered in %s s", record.fault, record.recovered_s)
        return record

    def begin(self, fault: str) -> FaultRecord:
        return FaultRecord(fault, time.time(), time.time(), before=self.snapshot_counters())

    # -- faults --------------------------------------------------------------------------------------------------
    def pid_of(self, name: str) -> int:
        with self._sup_lock:
            return self.supervisor.running[name].process.pid

    def sigkill_stage(self, name: str, *, mid_work: bool = True, timeout_s: float = 10.0) -> FaultRecord:
        """SIGKILL a stage process, preferably while one of its threads is on a CPU (mid-batch)."""
        pid = self.pid_of(name)
        record = self.begin(f"SIGKILL {name}")
        busy = False
        if mid_work:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and not busy:
                busy = any_thread_running(pid)
                if not busy:
                    time.sleep(0.005)
        os.kill(pid, signal.SIGKILL)
        record.started = record.ended = time.time()
        record.notes.append("killed while a thread was running" if busy else "killed (no thread seen running)")
        return record

    def remove_stage(self, name: str) -> None:
        """Warm-stop a stage and take it out of supervision (a worker leaving the pool)."""
        with self._sup_lock:
            run = self.supervisor.running.pop(name)
        run.stop.set()
        run.process.join(30)
        if run.process.is_alive():
            run.process.kill()
            run.process.join(5)
        self._removed[name] = run.spec

    def add_stage(self, name: str) -> None:
        """Start a stage again that :meth:`remove_stage` took out (a worker joining)."""
        spec = self._removed.pop(name)
        with self._sup_lock:
            self.supervisor.running[name] = self.supervisor._spawn(spec)
            self._note_pids()

    def redis_client_kill(self) -> FaultRecord:
        record = self.begin("Redis CLIENT KILL (all clients)")
        c = self.redis.client(socket_timeout=5)
        try:
            killed = c.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        finally:
            c.close()
        record.started = record.ended = time.time()
        record.notes.append(f"{killed} connections killed")
        return record

    def redis_restart(self, down_s: float = 1.0) -> FaultRecord:
        record = self.begin(f"Redis restarted ({down_s:.0f} s down, AOF)")
        record.started = time.time()
        self.redis.restart(down_s=down_s)
        record.ended = time.time()
        return record

    def redis_unreachable(self, seconds: float = 10.0) -> FaultRecord:
        """Freeze the server (SIGSTOP): connections hang as behind a dead network link, then SIGCONT."""
        record = self.begin(f"Redis unreachable {seconds:.0f} s (SIGSTOP)")
        pid = self.redis.proc.pid
        record.started = time.time()
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
        record.ended = time.time()
        return record

    # -- accounting ----------------------------------------------------------------------------------------------
    def frame_balance(self) -> dict:
        """Frames in vs frames out, by reason, over the whole run (from the final counters)."""
        f = self.final
        prod, queue, inf, logic = f["camera"], f["queue"], f["inference"], f["logic"]
        injected_frames = self.injected.get("frames", 0)
        injected_results = self.injected.get("results", 0)
        inf_drops = {k: int(v) for k, v in inf.items() if k.startswith("dropped:") and k.count(":") == 1}
        logic_drops = {k: int(v) for k, v in logic.items() if k.startswith("dropped:") and k.count(":") == 1}
        pushed = int(prod.get("frames_pushed", 0))
        frames_in = int(inf.get("frames_in", 0))
        frames_out = int(inf.get("frames_out", 0))
        return {
            "read": int(prod.get("frames_read", 0)),
            "pushed": pushed,
            "camera_drops": {k: int(v) for k, v in prod.items() if k.startswith("dropped:") and k.count(":") == 1},
            "queue_full": int(queue.get("dropped:queue_full", 0)),
            "injected_frames": injected_frames,
            "popped": frames_in,
            "queue_left": f["queue_depth"],
            # pushed (+ injected) = popped + trimmed by the cap + left in the queue + lost
            "unaccounted_queue": pushed + injected_frames - frames_in - int(queue.get("dropped:queue_full", 0))
            - f["queue_depth"],
            "inferred": frames_out,
            "inference_drops": inf_drops,
            "errors_batch": int(inf.get("errors:batch", 0)),
            # popped = inferred + dropped by reason + lost in a killed worker's batch
            "unaccounted_inference": frames_in - frames_out - sum(inf_drops.values()),
            "judged": int(logic.get("results", 0)),
            "logic_drops": logic_drops,
            "replayed_skipped": int(logic.get("skipped:replayed", 0)),
            "injected_results": injected_results,
            "result_backlog": f["result_backlog"],
            # published (+ injected) = judged + dropped by reason + left
            "unaccounted_logic": frames_out + injected_results - int(logic.get("results", 0))
            - sum(logic_drops.values()) - f["result_backlog"],
        }

    def secrets_in_logs(self, secrets: Iterable[str]) -> list[str]:
        hits = []
        for log in self.run_dir.glob("*.log"):
            text = log.read_text(errors="replace")
            hits += [f"{log.name}: {s!r}" for s in secrets if s and s in text]
        return hits

    def memory_trend(self, stage_prefix: str, skip_s: float = 15.0) -> dict:
        """First-third vs last-third mean RSS (MB) of the samples after ``skip_s``, summed over the stages."""
        rows = [m for m in self.memory if m["t"] >= skip_s]
        if len(rows) < 6:
            return {}
        totals = [sum(v for k, v in m.items() if k.startswith(stage_prefix) and isinstance(v, float)) for m in rows]
        third = len(totals) // 3
        first, last = statistics.mean(totals[:third]), statistics.mean(totals[-third:])
        return {"first_mb": round(first, 1), "last_mb": round(last, 1), "growth_mb": round(last - first, 1),
                "max_mb": round(max(totals), 1), "samples": len(totals)}


# -- alerts versus ground truth ----------------------------------------------------------------------------------

@dataclass
class AlertAccount:
    expected: int
    delivered: int
    lost: list
    duplicated: list  # more than one raised event for one expected episode
    unexpected: list  # raised events no expected episode explains
    incomplete: list  # expected episodes that ended in time but have no resolved event
    events: int  # all events stored by the backend for these cameras


def expected_for(run: FaultPipeline, camera_ids: Iterable[str], t_end: float):
    from fbvision.camera.factory import load_scenario

    t0s = run.scene_t0s
    out = []
    for cam in run.settings.cameras:
        if cam.id not in camera_ids or not cam.source.startswith("synthetic:"):
            continue
        scenario = load_scenario(cam.source.split(":", 1)[1])
        rules = effective_rules(run.settings.logic, cam.logic)
        out += expected_alerts(cam.id, scenario, rules, t0s[cam.id], t_end, loop=cam.loop)
    return out


def account_alerts(run: FaultPipeline, camera_ids: Iterable[str], expected, allowance_s: float) -> AlertAccount:
    """Match delivered raised events to expected episodes (same camera and rule, raised between onset and the
    deadline + ``allowance_s`` - the time faults held frames back), and check each episode's lifecycle."""
    camera_ids = set(camera_ids)
    events = [a for a in run.alerts if a["camera_id"] in camera_ids]
    raised = sorted((a for a in events if a["state"] == "raised"), key=lambda a: a["updated_at"])
    used: set[str] = set()
    lost, duplicated, incomplete = [], [], []
    delivered = 0
    for exp in expected:
        hits = [a for a in raised if a["camera_id"] == exp.camera_id and a["rule"] == exp.rule
                and exp.onset - 1.0 <= a["updated_at"] <= exp.deadline + allowance_s
                and a["idempotency_key"] not in used]
        if exp.deadline + allowance_s > run.stopped_at and not hits:
            continue  # not due by the end of the run
        if not hits:
            lost.append(exp)
            continue
        delivered += 1
        used.add(hits[0]["idempotency_key"])
        # A second raise inside the same ground-truth condition would be a duplicate episode.
        for extra in [a for a in raised if a["camera_id"] == exp.camera_id and a["rule"] == exp.rule
                      and a["idempotency_key"] not in used and exp.onset - 1.0 <= a["updated_at"] <= exp.condition_end]:
            duplicated.append(extra)
            used.add(extra["idempotency_key"])
        episode = hits[0]["episode_key"]
        rule = effective_rules(run.settings.logic, next(c.logic for c in run.settings.cameras if c.id == exp.camera_id))
        exit_s = getattr(rule, exp.rule).exit_after_s + smoothing_lag_s(getattr(rule, exp.rule), 5.0) + 10.0
        if exp.condition_end + exit_s < run.stopped_at - 5 and not any(
                a["episode_key"] == episode and a["state"] == "resolved" for a in events):
            incomplete.append(exp)
    unexpected = [a for a in raised if a["idempotency_key"] not in used and a["rule"] != "camera_offline"]
    n_expected = delivered + len(lost)
    return AlertAccount(n_expected, delivered, lost, duplicated, unexpected, incomplete, len(events))


def episode_lifecycles_ok(events: list[dict]) -> list[str]:
    """Each episode: one raised first, then ongoing escalations, at most one resolved; no (state, severity)
    twice. Returns the problems found."""
    problems = []
    by_episode: dict[str, list[dict]] = {}
    for a in events:
        by_episode.setdefault(a["episode_key"], []).append(a)
    for key, evs in by_episode.items():
        steps = [(a["state"], a["severity"]) for a in sorted(evs, key=lambda a: a["updated_at"])]
        if len(set(steps)) != len(steps):
            problems.append(f"episode {key[:8]} has a repeated event: {steps}")
        if sum(s == "raised" for s, _ in steps) != 1:
            problems.append(f"episode {key[:8]} raised {sum(s == 'raised' for s, _ in steps)} times: {steps}")
        if sum(s == "resolved" for s, _ in steps) > 1:
            problems.append(f"episode {key[:8]} resolved more than once: {steps}")
    return problems


def add_row(fault: str, *, recovered_s, expected, delivered, duplicated, drops: dict, test: str, notes: str = ""):
    SUMMARY_ROWS.append({"fault": fault, "recovered_s": recovered_s, "expected": expected, "delivered": delivered,
                         "duplicated": duplicated, "drops": drops, "test": test, "notes": notes})


def format_drops(drops: dict) -> str:
    return ", ".join(f"{k.replace('dropped:', '')}={v}" for k, v in sorted(drops.items()) if v) or "none"
