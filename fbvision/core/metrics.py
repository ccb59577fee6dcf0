"""Per-stage latency percentiles and counters, with optional Prometheus export.

Every result carries its timeline (``fbvision.core.wire.Timeline``); the logic worker adds its own start and
end time and turns the eight timestamps into stage durations (:func:`stage_durations`). A
:class:`LatencyStats` keeps the last ``window`` durations of each stage in a ring buffer and reports
p50/p95/p99 with numpy; :class:`Counters` counts events by name (``results``, ``dropped:wire_truncated``
...). Both are thread-safe. :func:`snapshot` turns them into one JSON-able dict that workers publish with
``Transport.put_snapshot`` for the dashboard and the run report.

Prometheus is off by default: :func:`enable_prometheus` starts an HTTP endpoint on a port and from then on
every :class:`LatencyStats` and :class:`Counters` also feeds a histogram / counter there.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Mapping

import numpy as np

logger = logging.getLogger(__name__)

#: Stage names, in pipeline order, and the timestamps each is measured between.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("encode", "captured", "pushed"),  # capture -> letterbox + JPEG -> in the frame queue
    ("queue_wait", "pushed", "popped"),  # waiting in batch_frames
    ("batch_decode", "popped", "infer_start"),  # batching wait + JPEG decode + tensor
    ("inference", "infer_start", "infer_end"),  # model call (+ head decode)
    ("publish", "infer_end", "published"),  # split + encode + XADD
    ("to_logic", "published", "logic_start"),  # waiting in the result stream
    ("logic", "logic_start", "logic_end"),  # NMS, tracking, features, rules
    ("end_to_end", "captured", "logic_end"),  # capture -> alert decision
)
STAGE_NAMES: tuple[str, ...] = tuple(name for name, _, _ in STAGES)
PERCENTILES: tuple[int, ...] = (50, 95, 99)

# Seconds; fine at the low end (a stage is often < 1 ms) and up to the longest sensible backlog.
_HISTOGRAM_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)


def stage_durations(timeline: object, logic_start: float, logic_end: float) -> dict[str, float]:
    """Seconds spent in each stage. ``timeline`` has the six wire timestamps as attributes; a stage whose
    start or end was never stamped (0.0, e.g. a camera manager that does not stamp push time) is left out.
    Stages across hosts can come out slightly negative when clocks disagree: they are kept, not hidden."""
    stamps = {name: float(getattr(timeline, name, 0.0) or 0.0) for _, a, b in STAGES for name in (a, b)}
    stamps["logic_start"] = float(logic_start)
    stamps["logic_end"] = float(logic_end)
    out = {}
    for name, start, end in STAGES:
        t0, t1 = stamps[start], stamps[end]
        if t0 > 0 and t1 > 0 and math.isfinite(t0) and math.isfinite(t1):
            out[name] = t1 - t0
    return out


# Since-start percentiles: a fixed histogram of log-spaced buckets (10 us .. 1000 s, 2.3 % wide), so that a long run
# keeps its whole distribution in constant memory; a percentile is its bucket's geometric middle (within 1.2 %).
_ALL_EDGES = np.geomspace(1e-5, 1e3, 801)
RECENT_S = 60.0  # "the last minute" of the dashboard


class LatencyStats:
    """The last ``window`` durations (seconds) of each stage, and their percentiles; also the durations of the
    last minute (:meth:`summary_recent`) and a since-start histogram (:meth:`summary_all`)."""

    def __init__(self, window: int = 4096, *, prometheus_stage_prefix: str = ""):
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self._prefix = prometheus_stage_prefix
        self._buffers: dict[str, np.ndarray] = {}
        self._times: dict[str, np.ndarray] = {}  # monotonic time each duration was added, beside _buffers
        self._hist: dict[str, np.ndarray] = {}
        self._sum: dict[str, float] = {}
        self._max: dict[str, float] = {}
        self._next: dict[str, int] = {}
        self._count: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        if not math.isfinite(seconds):
            return
        with self._lock:
            buf = self._buffers.get(stage)
            if buf is None:
                buf = self._buffers[stage] = np.empty(self.window, dtype=np.float64)
                self._times[stage] = np.full(self.window, -np.inf)
                self._hist[stage] = np.zeros(len(_ALL_EDGES) + 1, dtype=np.int64)
                self._sum[stage] = 0.0
                self._max[stage] = 0.0
                self._next[stage] = 0
                self._count[stage] = 0
            buf[self._next[stage]] = seconds
            self._times[stage][self._next[stage]] = time.monotonic()
            self._hist[stage][int(np.searchsorted(_ALL_EDGES, seconds))] += 1
            self._sum[stage] += seconds
            self._max[stage] = max(self._max[stage], seconds)
            self._next[stage] = (self._next[stage] + 1) % self.window
            self._count[stage] += 1
        _prom_observe(self._prefix + stage, seconds)

    def add_many(self, durations: Mapping[str, float]) -> None:
        for stage, seconds in durations.items():
            self.add(stage, seconds)

    def count(self, stage: str) -> int:
        """How many durations were ever added for ``stage`` (not only those still in the window)."""
        with self._lock:
            return self._count.get(stage, 0)

    def values(self, stage: str) -> np.ndarray:
        """The durations still in the window, oldest first."""
        with self._lock:
            buf = self._buffers.get(stage)
            if buf is None:
                return np.empty(0)
            n = min(self._count[stage], self.window)
            if n < self.window:
                return buf[:n].copy()
            return np.roll(buf, -self._next[stage]).copy()

    def summary(self, stage: str) -> dict[str, float]:
        """``{"count", "mean", "p50", "p95", "p99", "max"}`` in seconds over the window (count: all time)."""
        vals = self.values(stage)
        out: dict[str, float] = {"count": self.count(stage)}
        if len(vals):
            pcts = np.percentile(vals, PERCENTILES)
            out.update(mean=float(vals.mean()), max=float(vals.max()))
            out.update({f"p{p}": float(v) for p, v in zip(PERCENTILES, pcts, strict=True)})
        return out

    def summary_recent(self, stage: str, window_s: float = RECENT_S) -> dict[str, float]:
        """Like :meth:`summary`, over the durations added in the last ``window_s`` (still in the ring buffer);
        ``count`` is how many those are."""
        with self._lock:
            buf = self._buffers.get(stage)
            vals = np.empty(0) if buf is None else buf[self._times[stage] >= time.monotonic() - window_s].copy()
        out: dict[str, float] = {"count": len(vals)}
        if len(vals):
            pcts = np.percentile(vals, PERCENTILES)
            out.update(mean=float(vals.mean()), max=float(vals.max()))
            out.update({f"p{p}": float(v) for p, v in zip(PERCENTILES, pcts, strict=True)})
        return out

    def summary_all(self, stage: str) -> dict[str, float]:
        """Since the first duration: count, exact mean and max, percentiles to ~1.2 % (the bucket's middle)."""
        with self._lock:
            hist = self._hist.get(stage)
            if hist is None:
                return {"count": 0}
            hist, n, total, top = hist.copy(), self._count[stage], self._sum[stage], self._max[stage]
        out: dict[str, float] = {"count": n, "mean": total / n, "max": top}
        cum = np.cumsum(hist)
        for p in PERCENTILES:
            i = int(np.searchsorted(cum, p / 100 * n))
            if i == 0 or i >= len(_ALL_EDGES):
                value = _ALL_EDGES[0] if i == 0 else top
            else:
                value = math.sqrt(_ALL_EDGES[i - 1] * _ALL_EDGES[i])
            out[f"p{p}"] = float(min(value, top))
        return out

    @property
    def stages(self) -> list[str]:
        with self._lock:
            known = list(self._buffers)
        ordered = [s for s in STAGE_NAMES if s in known]
        return ordered + sorted(s for s in known if s not in STAGE_NAMES)

    def snapshot(self) -> dict[str, dict[str, float]]:
        return {stage: self.summary(stage) for stage in self.stages}


class Counters:
    """Named event counts since the process started. ``writer`` names them in the shared counters in Redis, to
    which they go as running totals (``Transport.report_totals``: a report repeated after a lost reply adds
    nothing, and one that failed is simply made up by the next)."""

    def __init__(self, *, prometheus_stage: str = ""):
        self._stage = prometheus_stage
        self._totals: dict[str, int | float] = {}
        self._lock = threading.Lock()
        self.writer = secrets.token_hex(8)

    def incr(self, name: str, n: int | float = 1) -> None:
        if not n:
            return
        with self._lock:
            self._totals[name] = self._totals.get(name, 0) + n
        _prom_count(self._stage, name, n)

    def declare(self, *names: str) -> None:
        """Show ``names`` at 0 on the Prometheus endpoint before anything is counted (a rate() over a series
        that does not exist yet is "no data", not 0). The totals, and so the shared counters, are untouched."""
        for name in names:
            _prom_count(self._stage, name, 0)

    def get(self, name: str) -> int | float:
        with self._lock:
            return self._totals.get(name, 0)

    def snapshot(self) -> dict[str, int | float]:
        with self._lock:
            return dict(sorted(self._totals.items()))


def snapshot(
    latency: LatencyStats | None = None, counters: Counters | None = None, **extra: object
) -> dict[str, object]:
    """One JSON-able dict: ``{"ts", "latency_s": {stage: {...}}, "latency_s_1m": ..., "latency_s_all": ...,
    "counters": {...}, **extra}`` (the ring buffer, the last minute, since start)."""
    out: dict[str, object] = {"ts": time.time()}
    if latency is not None:
        out["latency_s"] = latency.snapshot()
        out["latency_s_1m"] = {stage: latency.summary_recent(stage) for stage in latency.stages}
        out["latency_s_all"] = {stage: latency.summary_all(stage) for stage in latency.stages}
    if counters is not None:
        out["counters"] = counters.snapshot()
    out.update(extra)
    return out


# -- Prometheus (optional) -------------------------------------------------------------------------
_prom_lock = threading.Lock()
_prom: dict[str, object] = {}


def enable_prometheus(port: int, addr: str = "127.0.0.1") -> int:
    """Serve ``/metrics`` on ``addr:port`` (port 0: a free one) and feed it from now on; returns the port.

    Idempotent: a second call returns the port of the first. Metrics: ``fbvision_stage_latency_seconds``
    (histogram, label ``stage``), ``fbvision_events_total`` (counter, labels ``stage``, ``name``),
    ``fbvision_queue_depth`` (gauge, labels ``stage`` - who looked - and ``queue``), ``fbvision_stage_gauge``
    (gauge, labels ``stage``, ``name``: levels such as the inference worker's ``engine_busy_fraction``) and
    ``fbvision_horse_day`` (gauge, labels ``camera`` and ``measure``: a camera's rolling 24 h time budget, see
    :func:`set_time_budget`)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

    with _prom_lock:
        if "port" in _prom:
            return int(_prom["port"])  # type: ignore[arg-type]
        registry = CollectorRegistry()
        histogram = Histogram(
            "fbvision_stage_latency_seconds", "Per-stage latency of processed results", ["stage"],
            buckets=_HISTOGRAM_BUCKETS, registry=registry,
        )
        counter = Counter("fbvision_events", "Counted pipeline events", ["stage", "name"], registry=registry)
        gauge = Gauge("fbvision_queue_depth", "Entries waiting in a queue, as last seen", ["stage", "queue"],
                      registry=registry)
        horse_day = Gauge("fbvision_horse_day", "A camera's rolling 24 h time budget (a horse's day), per measure",
                          ["camera", "measure"], registry=registry)
        stage_gauge = Gauge("fbvision_stage_gauge", "A stage's last measured level (e.g. engine_busy_fraction)",
                            ["stage", "name"], registry=registry)
        server, _thread = start_http_server(port, addr=addr, registry=registry)
        bound = server.server_address[1]
        _prom.update(registry=registry, histogram=histogram, counter=counter, gauge=gauge, horse_day=horse_day,
                     stage_gauge=stage_gauge,
                     server=server, port=bound)
    logger.info("prometheus metrics on http://%s:%d/metrics", addr, bound)
    return bound


def prometheus_enabled() -> bool:
    return "port" in _prom


def disable_prometheus() -> None:
    """Stop the endpoint (tests; a runner simply exits)."""
    with _prom_lock:
        server = _prom.get("server")
        _prom.clear()
    if server is not None:
        server.shutdown()  # type: ignore[attr-defined]
        server.server_close()  # type: ignore[attr-defined]


def _prom_observe(stage: str, seconds: float) -> None:
    histogram = _prom.get("histogram")
    if histogram is not None:
        histogram.labels(stage=stage).observe(seconds)  # type: ignore[attr-defined]


def _prom_count(stage: str, name: str, n: int | float) -> None:
    counter = _prom.get("counter")
    if counter is None or n < 0:  # Prometheus counters only go up
        return
    series = counter.labels(stage=stage, name=name)  # type: ignore[attr-defined]
    if n > 0:  # n == 0 only creates the series (Counters.declare)
        series.inc(n)


def set_queue_depth(stage: str, queue: str, depth: int | float) -> None:
    """Report how many entries ``queue`` holds, as ``stage`` last saw it (Prometheus only; a no-op when off)."""
    gauge = _prom.get("gauge")
    if gauge is not None:
        gauge.labels(stage=stage, queue=queue).set(depth)  # type: ignore[attr-defined]


#: The time-budget measures exported as ``fbvision_horse_day{camera, measure}`` (the rest stay in the report).
HORSE_DAY_MEASURES: tuple[str, ...] = (
    "observed_s", "unknown_s", "lying_min", "lying_pct", "bouts", "longest_bout_min", "mean_bout_min",
    "current_bout_min", "lie_downs_per_h", "get_ups_per_h", "restless_moving_min_per_h", "night_transitions_per_h",
    "absent_min",
)


def set_time_budget(camera_id: str, values: Mapping[str, float]) -> None:
    """Export a camera's time budget (``TimeBudgetSummary.gauges()``) as gauges (Prometheus only; a no-op when
    off). Only :data:`HORSE_DAY_MEASURES`; an undefined value (NaN: nothing observed yet) is exported as NaN."""
    gauge = _prom.get("horse_day")
    if gauge is None:
        return
    for measure in HORSE_DAY_MEASURES:
        value = values.get(measure)
        if isinstance(value, (int, float)):
            gauge.labels(camera=camera_id, measure=measure).set(float(value))  # type: ignore[attr-defined]


def set_gauge(stage: str, name: str, value: int | float) -> None:
    """Report a stage's level ``name`` (a fraction, a size: not a count), as last measured (Prometheus only;
    a no-op when off)."""
    gauge = _prom.get("stage_gauge")
    if gauge is not None:
        gauge.labels(stage=stage, name=name).set(value)  # type: ignore[attr-defined]
