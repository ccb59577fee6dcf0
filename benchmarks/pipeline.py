"""The real pipeline, instrumented: camera manager and inference worker each in their own (spawned) process, the
logic worker in a thread of the benchmark process, all joined by a real redis-server.

Why this split: the two heavy stages run as they do under ``runners/run_all.py`` (a process each, no shared
GIL); the logic worker runs here so that every result's stage durations can be kept (``RecordingLatency``),
not only the percentiles its snapshot publishes. The logic worker is otherwise the production one.

Cameras are synthetic stall scenes (``synthetic:<scenario>``) read in real time at the configured fps. Real
cameras are not synchronised, so by default their first frames are staggered evenly over one frame period
(``stagger=False`` starts them together: every frame period then brings a burst of K frames at once).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from benchmarks import common
from fbvision.core.config import CameraConfig, InferenceConfig, ModelConfig, RedisConfig, Settings
from fbvision.core.metrics import LatencyStats
from fbvision.core.transport import Transport

logger = logging.getLogger(__name__)

SCENARIOS = ("down_long", "running", "normal_rest", "normal_walk", "two_horses", "rolling", "night_down")


# -- stage entry points (spawned: module-level, plain arguments) -------------------------------------------------


class _DelayedStart:
    """A :class:`fbvision.camera.source.FrameSource` whose first read waits ``delay_s`` (camera phase)."""

    def __init__(self, source, delay_s: float):
        self._source = source
        self._delay_s = delay_s

    def read(self):
        if self._delay_s > 0:
            time.sleep(self._delay_s)
            self._delay_s = 0.0
        return self._source.read()

    def __getattr__(self, name):
        return getattr(self._source, name)


def camera_stage(settings_json: str, redis_url: str, stagger: bool, first: int, total: int, name: str,
                 stop) -> None:
    """A camera manager over ``settings.cameras`` - cameras ``first ..`` of ``total`` in the whole run (phases)."""
    from fbvision.camera.factory import open_source
    from fbvision.camera.manager import CameraManager
    from fbvision.core.modelinfo import load_model_info

    logging.basicConfig(level=logging.WARNING)
    settings = Settings.model_validate_json(settings_json)
    transport = Transport.from_config(settings.redis, url=redis_url, client_name=name)
    height, width = load_model_info(settings.model.resolved_path()).input_size
    order = itertools.count(first)

    def factory(cam, producer, **kwargs):
        source = open_source(cam, producer, **kwargs)
        if not stagger:
            return source
        return _DelayedStart(source, next(order) / max(total, 1) / cam.fps)

    try:
        CameraManager(settings, transport, (width, height), name=name, source_factory=factory).run(stop)
    finally:
        transport.close()


def inference_stage(settings_json: str, redis_url: str, engine_spec: str, stop) -> None:
    """``engine_spec``: 'ort' (the configured providers) or 'torch[-cuda|-cpu][-fp16][-graphs]'
    (:func:`benchmarks.common.make_engine`)."""
    from fbvision.inference.worker import InferenceWorker

    logging.basicConfig(level=logging.WARNING)
    settings = Settings.model_validate_json(settings_json)
    transport = Transport.from_config(settings.redis, url=redis_url, client_name="bench-inference")
    engine = common.make_engine(settings.model, engine_spec)
    try:
        InferenceWorker(settings, transport, engine=engine, name="bench-inference").run(stop)
    finally:
        transport.close()


# -- measurement -------------------------------------------------------------------------------------------------


class RecordingLatency(LatencyStats):
    """LatencyStats that also keeps every result's stage durations (one dict per result)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict[str, float]] = []
        self._records_lock = threading.Lock()

    def add_many(self, durations) -> None:
        super().add_many(durations)
        with self._records_lock:
            self.records.append(dict(durations))

    def take(self) -> list[dict[str, float]]:
        with self._records_lock:
            return list(self.records)


@dataclass
class RunSpec:
    model_path: str
    cameras: int
    fps: float
    max_batch: int
    max_wait_ms: float
    max_age_ms: float = 1000.0
    frame_queue_cap: int = 256
    engine: str = "ort"
    stagger: bool = True
    camera_procs: int = 1  # camera managers (processes) sharing the cameras; one is the default deployment
    warmup_s: float = 5.0
    measure_s: float = 30.0
    sample_interval_s: float = 1.0
    extra: dict = field(default_factory=dict)

    def settings(self) -> Settings:
        return Settings(
            redis=RedisConfig(frame_queue_cap=self.frame_queue_cap),
            model=ModelConfig(path=self.model_path),
            inference=InferenceConfig(max_batch=self.max_batch, max_wait_ms=self.max_wait_ms,
                                      max_age_ms=self.max_age_ms, autotune=False, class_names=["horse"]),
            cameras=[CameraConfig(id=f"cam-{i:02d}", source=f"synthetic:{SCENARIOS[i % len(SCENARIOS)]}",
                                  fps=self.fps) for i in range(self.cameras)],
        )


def _diff(after: dict, before: dict) -> dict[str, float]:
    return {k: float(v) - float(before.get(k, 0)) for k, v in after.items() if float(v) - float(before.get(k, 0))}


def _candidates_per_result(transport: Transport, sample: int = 200) -> float | None:
    from fbvision.core.wire import WireError, decode_result

    counts = []
    per = max(1, sample // transport.result_partitions)
    for p in range(transport.result_partitions):
        for _, fields in transport.client.xrevrange(transport.keys.results(p), count=per):
            try:
                counts.append(len(decode_result(fields[b"r"]).scores))
            except (WireError, KeyError):
                pass
    return round(float(np.mean(counts)), 2) if counts else None


def run_pipeline(spec: RunSpec, redis_url: str, redis_pid: int | None = None, *, ready_timeout_s: float = 180.0) -> dict:
    """Start the stages, warm up, measure for ``spec.measure_s``, stop, and summarise."""
    import redis as redis_py

    from fbvision.core.modelinfo import load_model_info
    from fbvision.logic.worker import LogicWorker

    client = redis_py.Redis.from_url(redis_url)
    client.flushall()
    client.close()
    settings = spec.settings()
    settings_json = settings.model_dump_json()
    transport = Transport.from_config(settings.redis, url=redis_url, client_name="bench-main")
    info = load_model_info(spec.model_path)
    ctx = mp.get_context("spawn")
    stop_cameras, stop_inference, stop_logic = ctx.Event(), ctx.Event(), threading.Event()
    inference = ctx.Process(target=inference_stage, args=(settings_json, redis_url, spec.engine, stop_inference),
                            name="bench-inference", daemon=True)
    camera_procs = []
    n_procs = max(1, min(spec.camera_procs, spec.cameras))
    for k in range(n_procs):
        first, last = k * spec.cameras // n_procs, (k + 1) * spec.cameras // n_procs
        part = settings.model_copy(update={"cameras": settings.cameras[first:last]}).model_dump_json()
        camera_procs.append(ctx.Process(
            target=camera_stage, args=(part, redis_url, spec.stagger, first, spec.cameras, f"bench-camera-{k}",
                                       stop_cameras), name=f"bench-camera-{k}", daemon=True))
    logic = LogicWorker(settings, transport, "bench-logic", class_ids={n: i for i, n in enumerate(info.class_names)})
    logic_thread = threading.Thread(target=logic.run, args=(stop_logic,), name="bench-logic", daemon=True)
    rss: dict[str, list[tuple[float, float]]] = {"inference": [], "camera": [], "redis": [], "logic+bench": []}
    t_start = time.monotonic()
    try:
        inference.start()
        logic_thread.start()
        deadline = time.monotonic() + ready_timeout_s
        while not any(k.startswith("inference:") for k in transport.snapshots()):
            if not inference.is_alive():
                raise RuntimeError(f"inference stage exited with {inference.exitcode} before it was ready")
            if time.monotonic() > deadline:
                raise RuntimeError(f"inference stage not ready after {ready_timeout_s:.0f} s")
            time.sleep(0.2)
        ready_s = time.monotonic() - t_start
        for proc in camera_procs:
            proc.start()
        deadline = time.monotonic() + ready_timeout_s
        while logic.counters.get("results") < spec.cameras:
            dead = [p for p in camera_procs if not p.is_alive()]
            if dead:
                raise RuntimeError(f"camera stage {dead[0].name} exited with {dead[0].exitcode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no results reached the logic stage within {ready_timeout_s:.0f} s")
            time.sleep(0.1)
        time.sleep(spec.warmup_s)

        # -- measurement window ---------------------------------------------------------------------------
        recording = RecordingLatency()
        logic.latency = recording
        before = {s: transport.stats(s) for s in ("inference", "queue", "camera")}
        span_start = time.monotonic()  # counter rates: over the time between the two reads of the counters
        logic_before = logic.counters.snapshot()
        pids = {"inference": [inference.pid], "camera": [p.pid for p in camera_procs], "redis": [redis_pid],
                "logic+bench": [None]}
        # CPU seconds of each stage (the logic worker: its own thread's, not the benchmark's sampling).
        cpu_of = {"camera": [(p.pid, None) for p in camera_procs], "inference": [(inference.pid, None)],
                  "logic": [(None, logic_thread.native_id)], "redis": [(redis_pid, None)] if redis_pid else []}
        cpu_before = {k: common.cpu_seconds(v) for k, v in cpu_of.items()}
        t0 = time.monotonic()
        while True:
            now = time.monotonic() - t0
            for name, group in pids.items():
                values = [common.rss_mb(pid) for pid in group if pid is not None or name == "logic+bench"]
                values = [v for v in values if v is not None]
                if values:
                    rss[name].append((round(now, 2), round(sum(values), 1)))
            if now >= spec.measure_s:
                break
            time.sleep(min(spec.sample_interval_s, max(spec.measure_s - now, 0.0)) or 0.01)
        elapsed = time.monotonic() - t0
        cpu = {k: round(common.cpu_seconds(v) - cpu_before[k], 3) for k, v in cpu_of.items()}
        logic.latency = LatencyStats()
        records = recording.take()
        time.sleep(1.2)  # the workers flush counters about once a second
        after = {s: transport.stats(s) for s in ("inference", "queue", "camera")}
        counter_span = time.monotonic() - span_start
        logic_after = logic.counters.snapshot()
        candidates = _candidates_per_result(transport)
    finally:
        stop_cameras.set()
        for proc in camera_procs:
            if proc.pid:
                proc.join(20)
        stop_inference.set()
        if inference.pid:
            inference.join(20)
        stop_logic.set()
        if logic_thread.ident:
            logic_thread.join(20)
        for proc in (*camera_procs, inference):
            if proc.pid and proc.is_alive():
                proc.terminate()
                proc.join(5)
        transport.close()

    return summarise(spec, records, {s: _diff(after[s], before[s]) for s in after},
                     _diff(logic_after, logic_before), rss, elapsed, ready_s, candidates, info, cpu, counter_span)


def summarise(spec: RunSpec, records, counters, logic_counters, rss, elapsed, ready_s, candidates, info,
              cpu: dict | None = None, counter_span: float | None = None) -> dict:
    # Rates from the stages' counters (flushed about once a second) are over the time between the two reads of
    # them - the window plus the wait for the last flush -, not the window alone (that overstated them ~6 %).
    span = counter_span or elapsed
    stages = {}
    stage_names = [s for s in ("encode", "queue_wait", "batch_decode", "inference", "publish", "to_logic", "logic",
                               "end_to_end")]
    for stage in stage_names:
        stages[stage] = common.percentiles_ms([r[stage] for r in records if stage in r])
    overhead = [r["end_to_end"] - r["inference"] for r in records if "end_to_end" in r and "inference" in r]
    # The same without the wait in batch_frames: what the pipeline's own steps cost when the worker keeps up.
    mechanics = [r["end_to_end"] - r["inference"] - r["queue_wait"] for r in records
                 if "end_to_end" in r and "inference" in r and "queue_wait" in r]
    inf = counters["inference"]
    batches = inf.get("batches", 0.0)
    frames_out = inf.get("frames_out", 0.0)
    worker_ms = {}
    if batches:
        for key in ("wait", "decode", "infer", "postprocess", "publish"):
            worker_ms[key] = round(inf.get(f"time_ms:{key}", 0.0) / batches, 3)
    sizes = {int(k.split(":")[1]): int(v) for k, v in inf.items() if k.startswith("batch_size:")}
    drops = {f"inference:{k.split(':', 1)[1]}": int(v) for k, v in inf.items() if k.startswith("dropped:")}
    drops.update({f"queue:{k.split(':', 1)[1]}": int(v) for k, v in counters["queue"].items() if k.startswith("dropped:")})
    drops.update({f"camera:{k.split(':', 1)[1]}": int(v) for k, v in counters["camera"].items()
                  if k.startswith("dropped:") and k.count(":") == 1})
    drops.update({f"logic:{k.split(':', 1)[1]}": int(v) for k, v in logic_counters.items() if k.startswith("dropped:")})
    read = counters["camera"].get("frames_read", 0.0)
    rss_summary = {}
    for name, series in rss.items():
        if not series:
            continue
        values = np.array([v for _, v in series])
        k = max(1, len(values) // 5)
        rss_summary[name] = {"start_mb": round(float(np.median(values[:k])), 1),
                             "end_mb": round(float(np.median(values[-k:])), 1),
                             "max_mb": round(float(values.max()), 1),
                             "growth_mb": round(float(np.median(values[-k:]) - np.median(values[:k])), 1),
                             "series": series}
    pushed = counters["camera"].get("frames_pushed", 0.0)
    # frames each stage handled in the CPU window (elapsed): counter-based ones scaled from their span
    per_frame = {"camera": read * elapsed / span, "inference": frames_out * elapsed / span, "logic": len(records),
                 "redis": pushed * elapsed / span}
    cpu = cpu or {}
    cpu_ms_per_frame = {k: round(1000.0 * v / per_frame[k], 3) for k, v in cpu.items() if per_frame.get(k)}
    return {
        "model": info.path.name,
        "imgsz": int(info.input_size[0]),
        "engine": spec.engine,
        "cameras": spec.cameras,
        "fps": spec.fps,
        "stagger": spec.stagger,
        "camera_procs": max(1, min(spec.camera_procs, spec.cameras)),
        "max_batch": spec.max_batch,
        "max_wait_ms": spec.max_wait_ms,
        "max_age_ms": spec.max_age_ms,
        "frame_queue_cap": spec.frame_queue_cap,
        "measure_s": round(elapsed, 2),
        "worker_ready_s": round(ready_s, 1),
        "offered_fps": round(read / span, 2),
        "pushed_fps": round(pushed / span, 2),
        # CPU of each stage in the window: seconds, cores (s/s), ms per frame of that stage (camera: per frame
        # read, inference: inferred, logic: judged, redis: pushed)
        "cpu_s": cpu,
        "cpu_cores": {k: round(v / elapsed, 3) for k, v in cpu.items()},
        "cpu_ms_per_frame": cpu_ms_per_frame,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "inferred_fps": round(frames_out / span, 2),
        "judged_fps": round(len(records) / elapsed, 2),
        "results": len(records),
        "stages_ms": stages,
        "overhead_ms": common.percentiles_ms(overhead),
        "overhead_without_queue_ms": common.percentiles_ms(mechanics),
        "worker_mean_ms_per_batch": worker_ms,
        "mean_batch_size": round(frames_out / batches, 2) if batches else None,
        # time inside engine.infer over the worker's wall time in the window (the pipelined worker's aim: ~1 under
        # a backlog); None when the worker reported no time
        "engine_busy_fraction": (round(inf.get("time_ms:engine_busy", 0.0) / inf["time_ms:wall"], 4)
                                 if inf.get("time_ms:wall") else None),
        "batch_sizes": dict(sorted(sizes.items())),
        "drops": drops,
        "candidates_per_result": candidates,
        "cdf_ms": {"end_to_end": common.cdf_points([r["end_to_end"] for r in records if "end_to_end" in r]),
                   "overhead": common.cdf_points(overhead),
                   "inference": common.cdf_points([r["inference"] for r in records if "inference" in r])},
        "rss": rss_summary,
        # Frames queue in Redis and in the workers; the synthetic cameras' renderers cache sprites as their scenes
        # play (not pipeline state), so the camera process is reported but not judged.
        "rss_pipeline_growth_mb": max((v["growth_mb"] for k, v in rss_summary.items() if k != "camera"), default=0.0),
    }


def format_summary(s: dict) -> str:
    lines = [f"{s['cameras']} cameras x {s['fps']:g} fps, {s['model']} on {s['engine']}, max_batch {s['max_batch']}, "
             f"max_wait {s['max_wait_ms']:.1f} ms: offered {s['offered_fps']:.1f}/s, inferred {s['inferred_fps']:.1f}/s, "
             f"judged {s['results']} in {s['measure_s']:.0f} s",
             f"{'stage':<13} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}  (ms)"]
    for name, p in [*s["stages_ms"].items(), ("overhead", s["overhead_ms"]),
                    ("ovh-no-queue", s.get("overhead_without_queue_ms", {}))]:
        if p.get("count"):
            lines.append(f"{name:<13} {p['p50']:>8.1f} {p['p95']:>8.1f} {p['p99']:>8.1f} {p['max']:>8.1f}")
    busy = s.get("engine_busy_fraction")
    lines.append(f"worker per batch (mean ms): {s['worker_mean_ms_per_batch']}, mean batch {s['mean_batch_size']}, "
                 f"engine busy {'-' if busy is None else f'{busy:.0%}'}")
    lines.append(f"drops: {s['drops'] or 'none'}; rss growth MB: "
                 f"{ {k: v['growth_mb'] for k, v in s['rss'].items()} }")
    return "\n".join(lines)
