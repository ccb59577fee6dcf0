"""Optional log of every processed result with its track features, as parquet parts (notebook input).

One row per (frame, track): the track's :class:`~fbvision.logic.features.TrackFeatures` columns (``camera_id,
track_id, t, seq, aspect, rel_height, bottom, speed_bl_s, confidence, present, lying, baseline_height,
x1, y1, x2, y2``) plus ``detections`` (detections kept in that frame) and ``alerts`` (the events of that
frame for that track, ``rule:state:severity`` joined with ``;``). A frame without tracks still gets one row
(``track_id`` null) so the notebooks see every frame and the camera-level alerts (which go on the frame's
first row). The camera's time budget (a horse's day, :mod:`fbvision.logic.timebudget`) as it stood at that frame
goes on every row of the frame: ``tb_posture`` (confirmed posture: lying, standing, absent or null),
``tb_lying_min``, ``tb_bouts``, ``tb_longest_bout_min``, ``tb_lie_downs``, ``tb_get_ups``, ``tb_observed_h``
(rolling 24 h; NaN/null without a time budget).

For replays (:mod:`fbvision.logic.playback`) the logic worker also records what the logic was given: on a
frame's first row ``in_order`` (the recorder's running number of frames and ticks, the order they were
judged in), ``in_t`` (the capture time passed to the logic), ``in_arrived`` (when the result arrived, on
the reference clock), ``in_w``/``in_h`` (source frame size) and ``in_candidates`` (the result's boxes,
scores and class ids as JSON); and every tick (:meth:`Recorder.record_tick`: ``camera_id, in_order, now,
camera_online, alerts``) in ``ticks-*.parquet`` parts beside the frame parts (:func:`read_ticks`).

Rows are buffered and written as ``part-<start>-<pid>-<n>.parquet`` every ``rows_per_part`` rows, every
``flush_interval_s`` and on :meth:`Recorder.close`; each part is written to a temporary name and renamed,
so a reader never sees half a file. After a worker crash the recording may miss the last unflushed rows,
and replayed results can appear twice (dedupe on ``camera_id, seq, track_id`` if it matters).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

PART_GLOB = "part-*.parquet"
TICK_GLOB = "ticks-*.parquet"
#: Time-budget columns (``tb_<field>``) and the TimeBudgetSummary fields they come from (observed_h: /3600).
TIME_BUDGET_COLUMNS = ("tb_posture", "tb_lying_min", "tb_bouts", "tb_longest_bout_min", "tb_lie_downs", "tb_get_ups",
                       "tb_observed_h")


def _budget_columns(summary: Any) -> dict[str, Any]:
    if summary is None:
        return {}
    return {"tb_posture": summary.posture, "tb_lying_min": float(summary.lying_min), "tb_bouts": int(summary.bouts),
            "tb_longest_bout_min": float(summary.longest_bout_min), "tb_lie_downs": int(summary.lie_downs),
            "tb_get_ups": int(summary.get_ups), "tb_observed_h": float(summary.observed_s) / 3600.0}


def _alert_text(alerts: Iterable[Any]) -> str:
    return ";".join(f"{a.rule}:{a.state.value}:{a.severity.value}" for a in alerts)


class Recorder:
    """``with Recorder("runs/rec") as rec: rec.record(...)``. Thread-safe."""

    def __init__(self, path: str | Path, *, rows_per_part: int = 5000, flush_interval_s: float = 10.0):
        if rows_per_part < 1:
            raise ValueError("rows_per_part must be >= 1")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.rows_per_part = rows_per_part
        self.flush_interval_s = flush_interval_s
        self._rows: list[dict[str, Any]] = []
        self._ticks: list[dict[str, Any]] = []
        self._order = 0  # frames with inputs and ticks, in the order they were judged
        self._lock = threading.Lock()
        self._stem = f"part-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        self._parts = 0
        self._last_flush = time.monotonic()
        self.rows_written = 0
        self._closed = False

    def record(
        self,
        camera_id: str,
        seq: int,
        t: float,
        *,
        detections: int,
        features: Sequence[Any] = (),
        alerts: Sequence[Any] = (),
        inputs: Mapping[str, Any] | None = None,
        time_budget: Any = None,
    ) -> None:
        """Log one processed frame: ``features`` are TrackFeatures, ``alerts`` AlertEvents of that frame;
        ``inputs`` (optional): what the logic was given - ``t``, ``arrived``, ``src_w``, ``src_h`` and
        ``candidates`` (boxes, scores, class ids) - written on the frame's first row for replays;
        ``time_budget`` the camera's TimeBudgetSummary (or None)."""
        frame = {"camera_id": camera_id, "seq": int(seq), "t": float(t), "detections": int(detections),
                 **_budget_columns(time_budget)}
        by_track: dict[int | None, list[Any]] = {}
        for alert in alerts:
            by_track.setdefault(alert.track_id, []).append(alert)
        rows: list[dict[str, Any]] = []
        for feat in features:
            row = feat.to_dict()
            row.update(frame)
            row["alerts"] = _alert_text(by_track.pop(row.get("track_id"), ()))
            rows.append(row)
        leftover = [a for group in by_track.values() for a in group]  # camera-level, or tracks without features
        if not rows:
            rows.append({**frame, "track_id": None, "alerts": _alert_text(leftover)})
        elif leftover:
            rows[0]["alerts"] = ";".join(x for x in (rows[0]["alerts"], _alert_text(leftover)) if x)
        with self._lock:
            if self._closed:
                raise RuntimeError("recorder is closed")
            if inputs is not None:
                rows[0].update(_input_columns(inputs), in_order=self._order)
                self._order += 1
            self._rows.extend(rows)
            self._flush_if_due_locked()

    def record_tick(self, camera_id: str, now: float, camera_online: bool | None, alerts: Sequence[Any] = ()) -> None:
        """Log one tick of a camera (``CameraLogic.tick_reference(now, camera_online)``) and its alert events."""
        with self._lock:
            if self._closed:
                raise RuntimeError("recorder is closed")
            self._ticks.append({"camera_id": camera_id, "in_order": self._order, "now": float(now),
                                "camera_online": camera_online, "alerts": _alert_text(alerts)})
            self._order += 1
            self._flush_if_due_locked()

    def _flush_if_due_locked(self) -> None:
        due = len(self._rows) + len(self._ticks) >= self.rows_per_part or (
            time.monotonic() - self._last_flush >= self.flush_interval_s
        )
        if due:
            self._flush_locked()

    def record_outcome(self, camera_id: str, outcome: Any, inputs: Mapping[str, Any] | None = None) -> None:
        """Log a ``CameraLogic.process`` outcome (``seq, t, detections, features, alerts``), with the
        logic's inputs when given (see :meth:`record`)."""
        self.record(
            camera_id, outcome.seq, outcome.t, detections=len(outcome.detections),
            features=outcome.features, alerts=outcome.alerts, inputs=inputs,
            time_budget=getattr(outcome, "time_budget", None),
        )

    #: The logic worker passes a frame's inputs (``record_outcome(..., inputs=)``) and its ticks to recorders
    #: that say so; a stand-in with only ``record_outcome(camera_id, outcome)`` keeps working.
    records_inputs = True

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        self._last_flush = time.monotonic()
        if self._ticks:
            ticks, self._ticks = self._ticks, []
            self._write_part("ticks", ticks)
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        self._write_part("part", rows)
        self.rows_written += len(rows)

    def _write_part(self, prefix: str, rows: list[dict[str, Any]]) -> None:
        columns: dict[str, None] = {}  # union of the rows' keys, in first-seen order
        for row in rows:
            columns.update(dict.fromkeys(row))
        # (Table.from_pylist would take the columns of the first row only.)
        table = pa.Table.from_pydict({name: [row.get(name) for row in rows] for name in columns})
        name = f"{prefix}{self._stem[len('part'):]}-{self._parts:06d}.parquet"
        self._parts += 1
        tmp = self.path / f".{name}.tmp"
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, self.path / name)
        logger.debug("recorder: wrote %d rows to %s", len(rows), name)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._flush_locked()
            self._closed = True

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _input_columns(inputs: Mapping[str, Any]) -> dict[str, Any]:
    boxes, scores, class_ids = inputs["candidates"]
    candidates = {
        "xyxy": [[float(v) for v in box] for box in boxes],
        "scores": [float(v) for v in scores],
        "class_ids": [int(v) for v in class_ids],
    }
    arrived = inputs.get("arrived")
    return {
        "in_t": float(inputs["t"]),
        "in_arrived": None if arrived is None else float(arrived),
        "in_w": int(inputs["src_w"]),
        "in_h": int(inputs["src_h"]),
        "in_candidates": json.dumps(candidates, separators=(",", ":")),
    }


def read_ticks(path: str | Path) -> pd.DataFrame:
    """The recorded ticks under ``path`` (``camera_id, in_order, now, camera_online, alerts``), in order."""
    parts = sorted(Path(path).glob(TICK_GLOB))
    frames = [pq.read_table(p).to_pandas() for p in parts]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=["camera_id", "in_order", "now", "camera_online", "alerts"])
    return pd.concat(frames, ignore_index=True).sort_values("in_order", kind="stable", ignore_index=True)


def read_recording(path: str | Path) -> pd.DataFrame:
    """All parts under ``path`` as one DataFrame, sorted by camera, time, seq and track."""
    parts = sorted(Path(path).glob(PART_GLOB))
    if not parts:
        return pd.DataFrame(columns=["camera_id", "seq", "t", "track_id", "detections", "alerts"])
    # Parts are read one by one: a part with only track-less frames has a null-typed column that a single
    # dataset scan would refuse to unify with the float column of the others.
    frames = [pq.read_table(p).to_pandas() for p in parts]
    df = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else frames[0]
    if "track_id" in df:
        df["track_id"] = df["track_id"].astype("Int64")
    return df.sort_values(["camera_id", "t", "seq", "track_id"], kind="stable", ignore_index=True)
