"""Replay a recording through the logic, at any speed, with the alerts of the live run.

The logic worker's recording (:mod:`fbvision.logic.recorder`) holds, per judged frame, what
:meth:`~fbvision.logic.camera_logic.CameraLogic.process` was given (capture time, arrival time on the reference
clock, frame size, the result's candidates) and every tick (``tick_reference(now, camera_online)``), numbered in
the order the worker judged them. :func:`replay_recording` feeds them to fresh ``CameraLogic`` objects in that
order. Nothing in the logic reads the wall clock: frames carry their capture and arrival times, and **ticks
are driven by the recording's own clock** - the reference-clock instants the live worker ticked at - never by
the wall clock of the replay. So a replay at any ``speed`` (20x real time, or as fast as the CPU goes) raises
the same alerts, with the same times and idempotency keys, as the live run; only each event's ``id`` (a
random uuid per emitted event, by design) differs.

A recording without tick parts (made by a recorder that does not take inputs, or before ticks were recorded)
is replayed with synthetic ticks every ``tick_interval_s`` of the results' arrival clock; frame-driven alerts
are then the same, tick-driven ones (camera_offline, horse_absent's clock between frames) may land a tick
earlier or later than live.

Not replayed: results the worker dropped before the logic saw them (undecodable, trimmed, a camera over
``logic.max_cameras``) and frames the logic itself skipped (out of order, impossible capture time): neither
is recorded. A camera's state saved by an earlier worker (restart) is not in the recording either: replay a
recording from the worker's start.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fbvision.core.candidates import Candidates
from fbvision.core.events import AlertEvent
from fbvision.core.evidence import with_evidence_urls
from fbvision.core.logic_config import CameraLogicOverrides, LogicConfig
from fbvision.logic.camera_logic import CameraLogic
from fbvision.logic.recorder import read_recording, read_ticks


@dataclass(frozen=True)
class ReplayStep:
    """One recorded call into a camera's logic: a frame (``candidates`` set) or a tick."""

    order: float
    camera_id: str
    clock: float  # reference-clock time: the frame's arrival (else its capture time), or the tick's now
    arrived: float | None = None  # what the worker passed as the frame's arrival
    seq: int = -1
    t: float = math.nan
    frame_size: tuple[int, int] = (0, 0)
    candidates: Candidates | None = None
    camera_online: bool | None = None


def _none_if_nan(value: Any) -> Any:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def replay_steps(recording: pd.DataFrame, ticks: pd.DataFrame | None = None, *,
                 tick_interval_s: float = 1.0) -> list[ReplayStep]:
    """The recording's frames (rows with inputs) and ticks as steps, in the order the worker judged them.
    Without recorded ticks, one is synthesised every ``tick_interval_s`` of each camera's arrival clock."""
    if "in_candidates" not in recording:
        raise ValueError("the recording has no logic inputs (in_* columns): made by a worker without a "
                         "recorder that takes them; it cannot be replayed")
    frames = recording[recording["in_candidates"].notna()]
    steps: list[ReplayStep] = []
    for row in frames.itertuples(index=False):
        data = json.loads(row.in_candidates)
        arrived = _none_if_nan(row.in_arrived)
        steps.append(ReplayStep(
            order=float(row.in_order), camera_id=str(row.camera_id),
            clock=float(arrived) if arrived is not None else float(row.in_t),
            arrived=None if arrived is None else float(arrived), seq=int(row.seq), t=float(row.in_t), frame_size=(int(row.in_w), int(row.in_h)),
            candidates=Candidates.create(data["xyxy"], data["scores"], data["class_ids"]),
        ))
    if ticks is not None and len(ticks):
        for row in ticks.itertuples(index=False):
            online = _none_if_nan(row.camera_online)
            steps.append(ReplayStep(order=float(row.in_order), camera_id=str(row.camera_id), clock=float(row.now),
                                    camera_online=None if online is None else bool(online)))
    else:
        steps += _synthetic_ticks(steps, tick_interval_s)
    return sorted(steps, key=lambda s: (s.order, s.candidates is None))


def _synthetic_ticks(frames: list[ReplayStep], interval: float) -> list[ReplayStep]:
    """A tick every ``interval`` of arrival time between each camera's consecutive frames (after the frame at
    the same order position, so it sorts between them)."""
    out: list[ReplayStep] = []
    by_camera: dict[str, list[ReplayStep]] = {}
    for step in sorted(frames, key=lambda s: s.order):
        by_camera.setdefault(step.camera_id, []).append(step)
    for camera_id, steps in by_camera.items():
        for before, after in zip(steps, steps[1:], strict=False):
            k = 1
            while before.clock + k * interval < after.clock:
                out.append(ReplayStep(order=before.order + k * 1e-6, camera_id=camera_id,
                                      clock=before.clock + k * interval))
                k += 1
    return out


def replay_recording(
    path: str | Path,
    config: LogicConfig,
    *,
    class_ids: Collection[int] = (0,),
    overrides: Mapping[str, CameraLogicOverrides | None] | None = None,
    speed: float | None = None,
    tick_interval_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    evidence_url_prefix: str | None = None,
) -> list[AlertEvent]:
    """Run the recording under ``path`` back through fresh ``CameraLogic`` objects (``config``, per-camera
    ``overrides``, the model's ``class_ids``) and return the alert events, in the order they were produced.

    ``speed``: pace the replay at that many times real time on the recording's clock (20.0: a minute in 3 s);
    None: as fast as possible. The pace changes nothing in the result (see the module docstring).
    ``evidence_url_prefix``: the live run's ``evidence.url_prefix`` when its evidence was on - the raised and
    escalated alerts then carry the same evidence URLs as the live ones (None: no URLs, as with evidence off)."""
    steps = replay_steps(read_recording(path), read_ticks(path), tick_interval_s=tick_interval_s)
    overrides = overrides or {}
    logics: dict[str, CameraLogic] = {}
    alerts: list[AlertEvent] = []
    start_wall = time.monotonic()
    start_clock = steps[0].clock if steps else 0.0
    for step in steps:
        if speed is not None and speed > 0:
            wait = (step.clock - start_clock) / speed - (time.monotonic() - start_wall)
            if wait > 0:
                sleep(wait)
        logic = logics.get(step.camera_id)
        if logic is None:
            logic = logics[step.camera_id] = CameraLogic(step.camera_id, config, overrides.get(step.camera_id),
                                                         class_ids)
        if step.candidates is not None:
            outcome = logic.process(seq=step.seq, t=step.t, candidates=step.candidates, frame_size=step.frame_size,
                                    arrived=step.arrived)
            produced = outcome.alerts
        else:
            produced = logic.tick_reference(step.clock, camera_online=step.camera_online)
        if produced and evidence_url_prefix is not None:
            produced = with_evidence_urls(produced, evidence_url_prefix)
        alerts += produced
    return alerts
