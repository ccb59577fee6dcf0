"""A horse's day in the lab: 24 h synthetic scenarios per scenario family, run cheaply, and their time budget
against the ground truth.

:func:`day_scenario` writes a 24 h script (noon to noon) for one horse of a scenario family - the everyday
behaviour of the built-in scenes stretched over a day: ``normal_rest`` (a healthy day: naps by day, four or
five lying bouts at night, ~3 h lying), ``down_long`` (a long flat-out bout in the afternoon), ``rolling`` (a
colic night: repeated lie-downs, rolling, get-ups), ``running`` (an active day with one short nap) and
``normal_walk`` (no lying at all, walking at night). :func:`run_day` drives the real
:class:`~fbvision.logic.camera_logic.CameraLogic` with detections made from the scene's ground-truth boxes
(:func:`fbvision.lab.detections.truth_candidates`: jitter, dropouts, posture glitches), no pixels rendered, at
a low frame rate (0.2 fps: 17 280 frames a day), and returns the camera's time budget.
:func:`truth_budget` computes the same numbers from the script.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fbvision.core.events import AlertEvent
from fbvision.core.logic_config import LogicConfig
from fbvision.lab.detections import TruthNoise, truth_candidates
from fbvision.logic.camera_logic import CameraLogic
from fbvision.logic.timebudget import TimeBudgetSummary
from fbvision.synth import HorseScript, Scenario, SceneRenderer, Segment, events

DAY_S = 86_400.0
#: The families :func:`day_scenario` knows (the built-in scenes whose behaviour it stretches over a day).
FAMILIES: tuple[str, ...] = ("normal_rest", "down_long", "rolling", "running", "normal_walk")
#: Scenario time 0 is this many seconds after midnight UTC (noon): the night (20-06 h) falls mid-scenario.
DAY_T0 = 12 * 3600.0
LYING_BEHAVIOURS = frozenset({"lying_sternal", "lying_flat", "rolling"})
BOUT_BEHAVIOURS = LYING_BEHAVIOURS | {"lying_down", "getting_up"}
MOVING_BEHAVIOURS = frozenset({"walking", "running"})


def _bout(rng: np.random.Generator, minutes: float, flat_share: float = 0.3) -> list[tuple[str, float]]:
    lying = max(60.0, minutes * 60.0)
    flat = round(lying * flat_share)
    return [("lying_down", 3.0), ("lying_sternal", lying - flat), ("lying_flat", float(max(flat, 1))),
            ("getting_up", 3.0)]


def _awake(rng: np.random.Generator, seconds: float, walk_share: float = 0.15, run_s: float = 0.0) -> list:
    """``seconds`` awake: standing with a few walks (and one run of ``run_s``)."""
    out: list[tuple[str, float]] = []
    left = seconds
    while left > 1.0:
        stand = float(min(left, rng.uniform(300, 1500)))
        out.append(("standing", stand))
        left -= stand
        walk = float(min(left, stand * walk_share / (1 - walk_share)))
        if walk > 1.0:
            out.append(("walking", walk))
            left -= walk
    if run_s > 0 and len(out) > 2:
        out.insert(2, ("running", run_s))
    return out


def _script(family: str, rng: np.random.Generator) -> list[tuple[str, float]]:
    """Segments from noon to the next noon (the last one trimmed or extended to make exactly 24 h)."""
    h = 3600.0
    if family == "normal_rest":
        day = [*_awake(rng, 3 * h), *_bout(rng, 20), *_awake(rng, 5 * h), *_bout(rng, 15), *_awake(rng, 2 * h)]
        night = []
        for minutes in (35, 45, 30, 40):
            night += [*_bout(rng, minutes), *_awake(rng, 1.5 * h, walk_share=0.05)]
        return [*day, *night, *_bout(rng, 25)]
    if family == "down_long":
        return [*_awake(rng, 2 * h), *_bout(rng, 180, flat_share=0.6), *_awake(rng, 6 * h),
                *_bout(rng, 40), *_awake(rng, 2 * h), *_bout(rng, 30), *_awake(rng, 3 * h)]
    if family == "rolling":
        colic = []
        for _ in range(8):  # a colic night: down, roll, up, stand a few minutes, again
            colic += [("lying_down", 3.0), ("rolling", float(rng.uniform(20, 60))),
                      ("lying_sternal", float(rng.uniform(60, 240))), ("getting_up", 3.0),
                      ("standing", float(rng.uniform(120, 400))), ("walking", float(rng.uniform(60, 200)))]
        return [*_awake(rng, 6 * h), *_bout(rng, 20), *_awake(rng, 2 * h), *colic, *_awake(rng, 4 * h)]
    if family == "running":
        return [*_awake(rng, 4 * h, walk_share=0.25, run_s=90.0), *_awake(rng, 4 * h, run_s=60.0), *_bout(rng, 20),
                *_awake(rng, 8 * h, walk_share=0.25)]
    if family == "normal_walk":
        return _awake(rng, 24 * h, walk_share=0.3)
    raise KeyError(f"no day script for family {family!r}; known: {', '.join(FAMILIES)}")


def day_scenario(family: str, seed: int = 0, fps: float = 0.2) -> Scenario:
    """A 24 h scenario of one horse in the ``family``'s style (scenario time 0 = noon, see :data:`DAY_T0`)."""
    base = Scenario.builtin(family)
    rng = np.random.default_rng([seed, zlib.crc32(family.encode())])
    segments: list[Segment] = []
    total = 0.0
    for behaviour, seconds in _script(family, rng):
        seconds = min(float(seconds), DAY_S - total)
        if seconds <= 0:
            break
        segments.append(Segment(behaviour=behaviour, duration_s=seconds))  # type: ignore[arg-type]
        total += seconds
    if total < DAY_S:
        segments.append(Segment(behaviour="standing", duration_s=DAY_S - total))
    horse = base.horses[0].model_copy(update={"script": segments})
    return Scenario(name=f"{family}-day-s{seed}", description=f"24 h in the style of {family}", seed=seed, fps=fps,
                    look=base.look, size=base.size, horses=[HorseScript.model_validate(horse.model_dump())])


@dataclass(frozen=True)
class TruthBudget:
    """The time budget the script says (transitions count half lying: the scene's posture flips mid-way)."""

    lying_min: float
    bouts: int
    longest_bout_min: float
    lie_downs: int
    get_ups: int
    moving_min: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def truth_budget(scenario: Scenario) -> TruthBudget:
    """The first horse's time budget from its script."""
    ev = events(scenario)
    ev = ev[ev["horse_id"] == scenario.horses[0].id]
    duration = ev["end_s"] - ev["start_s"]
    lying = duration[ev["behaviour"].isin(LYING_BEHAVIOURS)].sum()
    lying += 0.5 * duration[ev["behaviour"].isin({"lying_down", "getting_up"})].sum()
    bouts: list[tuple[float, float]] = []
    for behaviour, start, end in ev[["behaviour", "start_s", "end_s"]].itertuples(index=False):
        if behaviour not in BOUT_BEHAVIOURS:
            continue
        if bouts and abs(bouts[-1][1] - start) < 1e-6:
            bouts[-1] = (bouts[-1][0], float(end))
        else:
            bouts.append((float(start), float(end)))
    first = ev["behaviour"].iloc[0] if len(ev) else ""
    last_end = scenario.effective_duration_s
    downs = sum(1 for s, _ in bouts if s > 0 or first not in BOUT_BEHAVIOURS)
    ups = sum(1 for _, e in bouts if e < last_end - 1e-6)
    return TruthBudget(
        lying_min=float(lying) / 60.0,
        bouts=len(bouts),
        longest_bout_min=max((e - s for s, e in bouts), default=0.0) / 60.0,
        lie_downs=downs,
        get_ups=ups,
        moving_min=float(duration[ev["behaviour"].isin(MOVING_BEHAVIOURS)].sum()) / 60.0,
    )


@dataclass
class DayRun:
    """What :func:`run_day` returns: the camera's time budget at the end, the logic (its ``budget`` has the
    per-minute bins, for plots), the alerts raised on the way and the frames processed."""

    summary: TimeBudgetSummary
    logic: CameraLogic
    alerts: list[AlertEvent]
    frames: int


def run_day(
    scenario: Scenario,
    *,
    config: LogicConfig | None = None,
    noise: TruthNoise | None = None,
    t0: float = DAY_T0,
    drop: float = 0.0,
) -> DayRun:
    """Run ``scenario`` through :class:`CameraLogic` on ground-truth detections (no pixels rendered), frames at
    capture times ``t0 + i / fps``. ``drop``: share of frames lost (never delivered: gaps, seeded)."""
    config = config or LogicConfig()
    noise = noise or TruthNoise()
    renderer = SceneRenderer(scenario)
    frame_size = renderer.size
    logic = CameraLogic(scenario.name, config, None, [0], frame_size=frame_size)
    rng = np.random.default_rng([noise.seed, scenario.seed, zlib.crc32(scenario.name.encode())])
    lost = np.random.default_rng([noise.seed, scenario.seed, 0xD209])
    alerts: list[AlertEvent] = []
    frames = 0
    for i in range(renderer.n_frames):
        candidates = truth_candidates(renderer.truth(i), rng, noise, frame_size)
        if drop and lost.random() < drop:
            continue
        outcome = logic.process(seq=i, t=t0 + i / scenario.fps, candidates=candidates, frame_size=frame_size)
        alerts += outcome.alerts
        frames += 1
    budget = logic.budget
    summary = budget.summary(fresh=True) if budget is not None else None
    if summary is None:
        raise RuntimeError(f"scenario {scenario.name}: no time budget (logic.time_budget.enabled is off?)")
    return DayRun(summary, logic, alerts, frames)


def compare(summary: TimeBudgetSummary, truth: TruthBudget) -> dict[str, Any]:
    """The measured budget next to the truth: per quantity the measured value, the truth and the difference."""
    measured = {"lying_min": summary.lying_min, "bouts": summary.bouts, "longest_bout_min": summary.longest_bout_min,
                "lie_downs": summary.lie_downs, "get_ups": summary.get_ups, "moving_min": summary.moving_s / 60.0}
    out: dict[str, Any] = {}
    for key, value in measured.items():
        want = getattr(truth, key)
        out[key] = {"measured": round(float(value), 2), "truth": round(float(want), 2),
                    "diff": round(float(value) - float(want), 2) if math.isfinite(value) else math.nan}
    return out


# ---------------------------------------------------------------------------------------------------------
# Several days of one horse: horse_down against the horse's own normal (fbvision.logic.baseline)

#: Horses with a habit of their own (:func:`habit_days`): ``short_napper`` lies in bouts of 5-12 min (its
#: abnormal day: one 27 min bout, under the fixed 30 min); ``long_sleeper`` sleeps flat for 35-50 min three
#: times a night (every night past the fixed 30 min; its abnormal day: one 100 min bout).
HABITS: tuple[str, ...] = ("short_napper", "long_sleeper")
_ABNORMAL_MIN = {"short_napper": 27.0, "long_sleeper": 100.0}


def _habit_day(habit: str, rng: np.random.Generator, abnormal: bool) -> list[tuple[str, float]]:
    """Noon to noon of one horse of ``habit``; ``abnormal``: its second night bout is :data:`_ABNORMAL_MIN` long."""
    h = 3600.0
    if habit == "short_napper":
        naps, night, flat = [rng.uniform(5, 12) for _ in range(2)], [rng.uniform(6, 12) for _ in range(4)], 0.3
    elif habit == "long_sleeper":
        naps, night, flat = [rng.uniform(10, 20) for _ in range(2)], [rng.uniform(35, 50) for _ in range(3)], 0.6
    else:
        raise KeyError(f"no habit {habit!r}; known: {', '.join(HABITS)}")
    if abnormal:
        night[1] = _ABNORMAL_MIN[habit]
    out = [*_awake(rng, 3 * h), *_bout(rng, naps[0]), *_awake(rng, 4 * h), *_bout(rng, naps[1]), *_awake(rng, 2 * h)]
    for minutes in night:
        out += [*_bout(rng, minutes, flat_share=flat), *_awake(rng, 1.5 * h, walk_share=0.05)]
    return out


@dataclass(frozen=True)
class HabitDays:
    """:func:`habit_days`' scenario and the abnormal bouts in it (scenario seconds: lie-down to get-up)."""

    scenario: Scenario
    abnormal: tuple[tuple[float, float], ...]
    n_days: int


def habit_days(habit: str, n_days: int = 5, abnormal_day: int | None = -1, seed: int = 0,
               fps: float = 0.2) -> HabitDays:
    """``n_days`` consecutive 24 h days (noon to noon) of one horse of ``habit``; on day ``abnormal_day``
    (0-based, negative from the end, None: none) its abnormal bout."""
    if n_days < 1:
        raise ValueError("n_days must be >= 1")
    base = Scenario.builtin("normal_rest")
    rng = np.random.default_rng([seed, zlib.crc32(habit.encode())])
    bad = None if abnormal_day is None else abnormal_day % n_days
    segments: list[Segment] = []
    abnormal: list[tuple[float, float]] = []
    for day in range(n_days):
        total, bout_start, bouts = 0.0, None, 0
        for behaviour, seconds in _habit_day(habit, rng, day == bad):
            seconds = min(float(seconds), DAY_S - total)
            if seconds <= 0:
                break
            if behaviour == "lying_down":
                bout_start, bouts = day * DAY_S + total, bouts + 1
            if behaviour == "getting_up" and day == bad and bouts == 4 and bout_start is not None:
                abnormal.append((bout_start, day * DAY_S + total + seconds))  # the second night bout
            segments.append(Segment(behaviour=behaviour, duration_s=seconds))  # type: ignore[arg-type]
            total += seconds
        if total < DAY_S:
            segments.append(Segment(behaviour="standing", duration_s=DAY_S - total))
    horse = base.horses[0].model_copy(update={"script": segments})
    scenario = Scenario(name=f"{habit}-{n_days}d-s{seed}", description=f"{n_days} days of a {habit}", seed=seed,
                        fps=fps, look=base.look, size=base.size, horses=[HorseScript.model_validate(horse.model_dump())])
    return HabitDays(scenario, tuple(abnormal), n_days)


def baseline_config(mode: str, fps: float = 0.2, **baseline: Any) -> LogicConfig:
    """The lab's logic config for ``horse_down`` in ``mode`` (``fixed`` or ``baseline``): the baseline learnt
    in both (so the runs differ only by the mode), horse_down's vote widened to hold 3 frames at ``fps``."""
    window_s = max(5.0, 6.0 / fps)
    return LogicConfig.model_validate({
        "baseline": {"enabled": True, **baseline},
        "rules": {"horse_down": {"mode": mode, "smoothing": {"window_s": window_s, "min_frames": 3}}},
    })


def score_horse_down(alerts: list[AlertEvent], days: HabitDays, t0: float = DAY_T0,
                     learning_days: int = 0) -> dict[str, int]:
    """The raised horse_down alerts against the abnormal bouts: ``caught`` (raised during one, lie-down to
    get-up + 2 min), ``false_alerts`` (the others) and ``false_after_learning`` (those after the first
    ``learning_days`` days)."""
    raised = [a for a in alerts if a.rule == "horse_down" and a.state.value == "raised"]
    windows = [(t0 + s, t0 + e + 120.0) for s, e in days.abnormal]
    caught = sum(1 for lo, hi in windows if any(lo <= a.updated_at <= hi for a in raised))
    false = [a for a in raised if not any(lo <= a.updated_at <= hi for lo, hi in windows)]
    late = [a for a in false if a.updated_at >= t0 + learning_days * DAY_S]
    return {"events": len(windows), "caught": caught, "false_alerts": len(false), "false_after_learning": len(late)}


def evaluate_baseline(habits: tuple[str, ...] = HABITS, n_days: int = 5, seed: int = 0, fps: float = 0.2,
                      modes: tuple[str, ...] = ("fixed", "baseline"), **baseline: Any) -> list[dict[str, Any]]:
    """horse_down in each mode on ``n_days`` of each habit (the last day abnormal): one row per habit and mode
    with :func:`score_horse_down`'s counts, the alerts' thresholds and the run's seconds. ``baseline``:
    ``logic.baseline`` settings (e.g. ``min_days=2``)."""
    import time

    rows = []
    for habit in habits:
        days = habit_days(habit, n_days, -1, seed, fps)
        for mode in modes:
            config = baseline_config(mode, fps, **baseline)
            started = time.perf_counter()
            run = run_day(days.scenario, config=config)
            raised = [a for a in run.alerts if a.rule == "horse_down" and a.state.value == "raised"]
            thresholds = sorted({round(a.evidence.features.get("threshold_s", config.rules.horse_down.escalation[0]
                                                                 .after_s) / 60.0, 1) for a in raised})
            base = run.logic.baseline
            rows.append({"habit": habit, "mode": mode, "days": n_days,
                         **score_horse_down(run.alerts, days, learning_days=config.baseline.min_days),
                         "threshold_min": thresholds,
                         "p95_bout_min": None if base is None else base.summary()["p95_bout_min"],
                         "seconds": round(time.perf_counter() - started, 1)})
    return rows
