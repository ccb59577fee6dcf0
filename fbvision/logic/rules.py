"""Horse rules: each a pure function of features (or a window of them) and its parameters -> raw score.

A score is in [0, 1] (1: the condition holds in this frame) or ``None`` when the rule cannot say (the
track is not seen); smoothing treats ``None`` as 0. What turns scores into alerts (smoothing, duration,
severity, resolve) is :mod:`fbvision.logic.smoothing`, configured per rule in :mod:`fbvision.core.logic_config`.
See ``docs/rules.md`` for the reasoning behind each rule and default.

The **registry** at the end of this module declares every rule once (:class:`Rule`: name, scope, score
function over a :class:`RuleContext`, evidence, behaviour on ticks). ``CameraLogic``
(:mod:`fbvision.logic.camera_logic`), the lab and the ground-truth scorer iterate it (:func:`registered`,
:data:`REGISTRY`, :func:`lookup`) instead of matching rule names. The names and scopes come from the
config (``TRACK_RULES`` / ``CAMERA_RULES`` in :mod:`fbvision.core.logic_config`, which cannot import this
stage): :func:`check_registry` runs at import and fails unless the registered rules are exactly those, with
the same scopes.
"""

from __future__ import annotations

import logging
import math
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import cast

import numpy as np

from fbvision.core.logic_config import (
    CAMERA_RULES,
    RULE_NAMES,
    TRACK_RULES,
    CameraOfflineRule,
    HorseDownMode,
    HorseDownRule,
    LyingTimeLowRule,
    RestlessRule,
    RollingRule,
    RuleConfig,
    RulesConfig,
    TooFastRule,
)
from fbvision.logic.baseline import HorseBaseline
from fbvision.logic.features import TrackFeatures
from fbvision.logic.timebudget import TimeBudget

logger = logging.getLogger(__name__)


def horse_down(features: TrackFeatures) -> float | None:
    """1.0 while the track's posture is lying, 0.0 standing, None when not seen."""
    if not features.present:
        return None
    return 1.0 if features.lying else 0.0


def too_fast(features: TrackFeatures, params: TooFastRule) -> float | None:
    """1.0 while the centroid moves at ``>= speed_bl_s`` body lengths per second."""
    if not features.present or not math.isfinite(features.speed_bl_s):
        return None
    return 1.0 if features.speed_bl_s >= params.speed_bl_s else 0.0


@dataclass(frozen=True)
class PostureEvents:
    """Debounced posture events within a window: lie-downs (after a real stand) and flips (short rises)."""

    downs: int
    flips: int

    @property
    def total(self) -> int:
        return self.downs + self.flips


def posture_events(times: np.ndarray, lying: np.ndarray, t: float, params: RollingRule) -> PostureEvents:
    """Count lie-downs and lateral flips in the samples (capture times, lying flags) of one track.

    Runs of equal posture are measured from their first sample to the next run's first sample (the last
    run to ``t``). A lying run shorter than ``min_posture_s`` is noise. A non-lying interruption of a lying
    spell lasting ``flip_min_s..flip_max_s`` is a flip (legs up while rolling: the box briefly grows); a
    longer one that lasts ``min_posture_s`` is standing, and the next lying spell is a new lie-down. The
    first spell in the window is context only (what preceded it is unknown).
    """
    times = np.asarray(times, dtype=float)
    lying = np.asarray(lying, dtype=bool)
    if times.size == 0:
        return PostureEvents(0, 0)
    starts = np.concatenate(([0], np.flatnonzero(lying[1:] != lying[:-1]) + 1))
    start_times = times[starts]
    end_times = np.append(start_times[1:], max(t, float(times[-1])))
    durations = end_times - start_times
    last = len(starts) - 1

    state: str | None = None  # debounced posture: "lying" | "standing"
    pending_flip = False
    downs = flips = 0
    for i, (run_lying, duration) in enumerate(zip(lying[starts], durations, strict=True)):
        if run_lying:
            if duration < params.min_posture_s:
                continue
            if state == "standing":
                downs += 1
            elif state == "lying" and pending_flip:
                flips += 1
            state, pending_flip = "lying", False
        elif state == "lying" and params.flip_min_s <= duration <= params.flip_max_s and i < last:
            pending_flip = True
        elif duration > params.flip_max_s and duration >= params.min_posture_s:
            state, pending_flip = "standing", False
        elif state is None and duration >= params.min_posture_s:
            state = "standing"
    return PostureEvents(downs, flips)


def rolling(events: PostureEvents, params: RollingRule) -> float:
    """1.0 when the window holds ``min_downs`` lie-downs, or ``min_events`` lie-downs + flips."""
    return 1.0 if events.downs >= params.min_downs or events.total >= params.min_events else 0.0


def horse_absent(present_tracks: int) -> float:
    """1.0 when no confirmed horse track is in view in this frame."""
    return 1.0 if present_tracks == 0 else 0.0


def camera_offline(
    t: float, last_frame_t: float | None, camera_online: bool | None, params: CameraOfflineRule
) -> float:
    """1.0 when the camera manager says the camera is offline, or no frame came for ``stale_after_s``."""
    if camera_online is False:
        return 1.0
    if last_frame_t is None:
        return 0.0 if camera_online else 1.0
    return 1.0 if t - last_frame_t >= params.stale_after_s else 0.0


# ---------------------------------------------------------------------------------------------------------
# The registry: every rule declared once

Box = tuple[float, float, float, float]


class Scope(str, Enum):
    """What a rule watches: one horse (a score and an episode per track) or the whole camera."""

    track = "track"
    camera = "camera"


class OnTick(str, Enum):
    """What a camera rule does when time passes without a frame (``CameraLogic.tick``)."""

    skip = "skip"  # nothing: its score needs a frame (every track rule)
    score = "score"  # scored like a frame; a condition found on a tick is dated from the last frame
    hold = "hold"  # no new evidence: the smoothed score stays, its episode's clock moves (while hold_while)


@dataclass(frozen=True)
class RuleContext:
    """What a score function may read: one rule at one frame or tick (and one track, for track rules).

    ``t``, ``params`` and ``rules`` are always set; the other fields are the *situation*, filled in where it
    applies. A rule lists the situation fields its score reads in :attr:`Rule.inputs` (see :data:`INPUTS`).
    """

    t: float  # capture time of the frame, or the tick's time
    params: RuleConfig  # this rule's effective parameters (per-camera overrides applied)
    rules: RulesConfig  # all of the camera's effective rules (a rule may depend on another's setting)
    features: TrackFeatures | None = None  # track rules: the track at this frame (present=False: not seen)
    postures: Sequence[tuple[float, bool]] = ()  # track rules: posture runs (start t, lying), oldest first
    present_tracks: int = 0  # camera rules, after tracking: confirmed tracks seen in this frame
    frame: bool = True  # a frame arrived at t (False: a tick)
    last_frame_t: float | None = None  # the camera's frame before the one at t (on a tick: its last frame)
    camera_online: bool | None = None  # ticks: what the camera manager says (None: nothing); frames: True
    budget: TimeBudget | None = None  # camera rules, after tracking: the camera's time budget (a horse's day)
    baseline: HorseBaseline | None = None  # track rules: the camera's horse baseline (Rule.raise_after reads it)


#: The situation fields of :class:`RuleContext` a rule of each scope may read (list them in ``Rule.inputs``).
INPUTS: Mapping[Scope, frozenset[str]] = types.MappingProxyType(
    {
        Scope.track: frozenset({"features", "postures"}),
        Scope.camera: frozenset({"present_tracks", "frame", "last_frame_t", "camera_online", "budget"}),
    }
)


@dataclass(frozen=True)
class Score:
    """A raw score (``value`` in [0, 1], ``None``: cannot say) and the values it was computed from that an
    alert carries (``details``, e.g. rolling's ``downs`` and ``flips``, camera_offline's ``gap_s``)."""

    value: float | None
    details: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RuleEvidence:
    """What an alert of the rule carries besides ``score`` and ``smoothed``: a box and named values."""

    box: Box | None = None
    values: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RaiseAfter:
    """An adaptive raise age: the rule's episode raises once its condition has lasted ``after_s`` (the ladder's
    later steps move with the first); ``details`` go into its alerts' evidence."""

    after_s: float
    details: Mapping[str, float] = field(default_factory=dict)


ScoreFn = Callable[[RuleContext], Score]
EvidenceFn = Callable[[RuleContext, Score], RuleEvidence]


def _always(ctx: RuleContext) -> bool:
    return True


@dataclass(frozen=True)
class Rule:
    """One rule as the logic, the lab and the ground-truth scorer see it (``docs/rules.md``, "Adding a rule").

    ``name`` is the rule's field in ``RulesConfig`` (its parameters), its entry in ``TRACK_RULES`` or
    ``CAMERA_RULES``, and the ``rule`` of its alerts and episode keys. ``score`` gives the raw per-frame score
    from a :class:`RuleContext`; ``evidence`` what its alerts carry (called only when its episode changes
    state). ``inputs``: the context's situation fields the score reads (a camera rule that reads
    ``present_tracks`` is scored after the frame's tracks, the others as the frame arrives; a log of track
    features can recompute a track rule that reads only ``features``). ``on_tick``/``hold_while``: what it
    does on ticks. ``posture_window_s``: for a rule reading ``postures``, how far back (from its params)
    the posture history must reach. ``raise_after``: for a rule whose raise age adapts (horse_down's
    ``baseline`` mode), the age from the context (it may read ``baseline``; the score does not, so a log of
    features still recomputes the score); None: the config's ladder.
    """

    name: str
    scope: Scope
    score: ScoreFn
    evidence: EvidenceFn
    inputs: frozenset[str] = frozenset()
    on_tick: OnTick = OnTick.skip
    hold_while: Callable[[RuleContext], bool] = _always
    posture_window_s: Callable[[RuleConfig], float] | None = None
    raise_after: Callable[[RuleContext], RaiseAfter | None] | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "scope", Scope(self.scope))
        object.__setattr__(self, "on_tick", OnTick(self.on_tick))
        object.__setattr__(self, "inputs", frozenset(self.inputs))
        if not self.name.isidentifier():
            raise ValueError(f"rule name {self.name!r} must be an identifier (it is a RulesConfig field)")
        allowed = INPUTS[self.scope]
        if not self.inputs <= allowed:
            raise ValueError(
                f"{self.scope.value} rule {self.name!r} cannot read {sorted(self.inputs - allowed)}; "
                f"it may read {sorted(allowed)}"
            )
        if self.scope is Scope.track and self.on_tick is not OnTick.skip:
            raise ValueError(f"track rule {self.name!r}: ticks carry no track, on_tick must be 'skip'")
        if ("postures" in self.inputs) != (self.posture_window_s is not None):
            raise ValueError(f"rule {self.name!r}: reads 'postures' if and only if it sets posture_window_s")

    @property
    def reads_tracks(self) -> bool:
        """Scored after the frame's tracks (it reads ``present_tracks`` or ``budget``); else as the frame arrives."""
        return bool(self.inputs & {"present_tracks", "budget"})

    @property
    def from_features(self) -> bool:
        """A track rule whose score a row of track features recomputes (it reads nothing else)."""
        return self.scope is Scope.track and self.inputs <= {"features"}


def track_evidence(ctx: RuleContext, score: Score) -> RuleEvidence:
    """The track's box, its finite features and the score's details."""
    f = ctx.features
    if f is None:
        return RuleEvidence(values=dict(score.details))
    return RuleEvidence(box=f.box, values={**f.numeric(), **score.details})


def camera_evidence(ctx: RuleContext, score: Score) -> RuleEvidence:
    """No box; the score's details."""
    return RuleEvidence(values=dict(score.details))


def _features(ctx: RuleContext) -> TrackFeatures:
    if ctx.features is None:
        raise ValueError("a track rule was scored without track features")
    return ctx.features


def _score_horse_down(ctx: RuleContext) -> Score:
    return Score(horse_down(_features(ctx)))


def horse_down_raise_after(params: HorseDownRule, baseline: HorseBaseline | None) -> RaiseAfter:
    """horse_down's raise age: the ladder's first step in ``fixed`` mode, and in ``baseline`` mode while the
    camera's baseline is not ready (``baseline_ready`` 0 in the evidence); once it is,
    ``clamp(baseline_k x p95 bout, baseline_min_s, baseline_max_s)``."""
    fixed = params.escalation[0].after_s
    if params.mode is not HorseDownMode.baseline:
        return RaiseAfter(fixed)
    p95 = baseline.p95_bout_s() if baseline is not None else None
    if p95 is None:
        return RaiseAfter(fixed, {"baseline_ready": 0.0, "threshold_s": fixed})
    threshold = min(max(params.baseline_min_s, params.baseline_k * p95), params.baseline_max_s)
    return RaiseAfter(threshold, {"baseline_ready": 1.0, "threshold_s": threshold, "p95_bout_s": p95})


def _raise_after_horse_down(ctx: RuleContext) -> RaiseAfter | None:
    params = cast(HorseDownRule, ctx.params)
    if params.mode is HorseDownMode.fixed:
        return None
    return horse_down_raise_after(params, ctx.baseline)


def _score_too_fast(ctx: RuleContext) -> Score:
    return Score(too_fast(_features(ctx), cast(TooFastRule, ctx.params)))


def _score_rolling(ctx: RuleContext) -> Score:
    f = _features(ctx)
    if not f.present:
        return Score(None)
    params = cast(RollingRule, ctx.params)
    window_start = ctx.t - params.window_s
    times = np.array([max(start, window_start) for start, _ in ctx.postures], dtype=float)
    lying = np.array([is_lying for _, is_lying in ctx.postures], dtype=bool)
    events = posture_events(times, lying, ctx.t, params)
    return Score(rolling(events, params), {"downs": float(events.downs), "flips": float(events.flips)})


def _rolling_window_s(params: RuleConfig) -> float:
    return cast(RollingRule, params).window_s


def _score_horse_absent(ctx: RuleContext) -> Score:
    return Score(horse_absent(ctx.present_tracks))


def _score_camera_offline(ctx: RuleContext) -> Score:
    details = {} if ctx.last_frame_t is None else {"gap_s": ctx.t - ctx.last_frame_t}
    if ctx.frame:
        return Score(0.0, details)  # a frame arrived: the camera is online
    params = cast(CameraOfflineRule, ctx.params)
    return Score(camera_offline(ctx.t, ctx.last_frame_t, ctx.camera_online, params), details)


def _frames_fresh(ctx: RuleContext) -> bool:
    """A frame came within camera_offline's ``stale_after_s``: without frames nobody can say whether the
    horse is there (camera_offline covers that)."""
    return ctx.last_frame_t is not None and ctx.t - ctx.last_frame_t < ctx.rules.camera_offline.stale_after_s


def lying_time_low(lying_min: float, observed_h: float, params: LyingTimeLowRule) -> float | None:
    """1.0 when fewer than ``min_lying_min`` minutes lying in the window; None until ``min_observed_h`` observed."""
    if observed_h < params.min_observed_h:
        return None
    return 1.0 if lying_min < params.min_lying_min else 0.0


def restless(transitions: float, moving_s: float, observed_s: float, window_s: float, night: bool,
             params: RestlessRule) -> float | None:
    """1.0 when lie-downs + get-ups reach ``max_transitions`` or moving time ``max_moving_min`` in the window;
    0.0 by day when ``night_only``; None while less than ``min_observed_frac`` of the window was observed."""
    if params.night_only and not night:
        return 0.0
    if observed_s < params.min_observed_frac * window_s:
        return None
    return 1.0 if transitions >= params.max_transitions or moving_s >= 60.0 * params.max_moving_min else 0.0


def _score_lying_time_low(ctx: RuleContext) -> Score:
    budget = ctx.budget
    summary = budget.summary(ctx.t) if budget is not None else None
    if summary is None:
        return Score(None)
    params = cast(LyingTimeLowRule, ctx.params)
    observed_h = summary.observed_s / 3600.0
    return Score(lying_time_low(summary.lying_min, observed_h, params),
                 {"lying_min": summary.lying_min, "observed_h": observed_h, "bouts": float(summary.bouts)})


def _score_restless(ctx: RuleContext) -> Score:
    budget = ctx.budget
    if budget is None or budget.last_t is None:
        return Score(None)
    params = cast(RestlessRule, ctx.params)
    sums = budget.window_sums(ctx.t, params.window_s)
    transitions = sums["lie_downs"] + sums["get_ups"]
    value = restless(transitions, sums["moving_s"], sums["observed_s"], params.window_s, budget.is_night(ctx.t),
                     params)
    return Score(value, {"transitions": transitions, "moving_min": sums["moving_s"] / 60.0,
                         "observed_min": sums["observed_s"] / 60.0})


_REGISTRY: dict[str, Rule] = {}
#: Read-only view of the registered rules by name, in registration (= evaluation) order.
REGISTRY: Mapping[str, Rule] = types.MappingProxyType(_REGISTRY)


def register(rule: Rule) -> Rule:
    """Add a rule (after the ones registered before it: the order is the order of evaluation)."""
    if rule.name in _REGISTRY:
        raise ValueError(f"rule {rule.name!r} is already registered")
    _REGISTRY[rule.name] = rule
    return rule


def unregister(name: str) -> Rule:
    """Remove a rule (tests that register a rule of their own)."""
    return _REGISTRY.pop(name)


def registered(scope: Scope | str | None = None) -> tuple[Rule, ...]:
    """The registered rules in evaluation order, all or those of one scope."""
    if scope is None:
        return tuple(_REGISTRY.values())
    scope = Scope(scope)
    return tuple(r for r in _REGISTRY.values() if r.scope is scope)


def lookup(name: str) -> Rule:
    """The registered rule called ``name`` (KeyError naming the known rules if there is none)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no rule {name!r}; registered: {', '.join(_REGISTRY)}") from None


def check_registry(
    track_rules: Sequence[str] = TRACK_RULES,
    camera_rules: Sequence[str] = CAMERA_RULES,
    rule_names: Sequence[str] = RULE_NAMES,
) -> None:
    """Fail unless the registry holds exactly the config's rules with the config's scopes: the names of
    ``TRACK_RULES`` and ``CAMERA_RULES`` (together the fields of ``RulesConfig``). Runs at import."""
    problems = []
    both = set(track_rules) & set(camera_rules)
    if both:
        problems.append(f"{sorted(both)} in both TRACK_RULES and CAMERA_RULES")
    configured = {**{n: Scope.camera for n in camera_rules}, **{n: Scope.track for n in track_rules}}
    if set(rule_names) != set(configured):
        problems.append(
            f"RulesConfig fields {sorted(rule_names)} are not TRACK_RULES + CAMERA_RULES {sorted(configured)}"
        )
    for name, scope in configured.items():
        rule = _REGISTRY.get(name)
        if rule is None:
            problems.append(f"{scope.value} rule {name!r} of the config is not registered")
        elif rule.scope is not scope:
            problems.append(f"{name!r} is registered as a {rule.scope.value} rule, the config: {scope.value}")
    unknown = [name for name in _REGISTRY if name not in configured]
    problems += [f"{name!r} is registered but not in TRACK_RULES/CAMERA_RULES" for name in unknown]
    if problems:
        raise RuntimeError("rule registry and fbvision.core.logic_config disagree: " + "; ".join(problems))


# Registration order = evaluation order, and so the order of a frame's alerts: camera rules that do not read
# present_tracks as the frame arrives, then per track the track rules, then the camera rules that read it.
register(
    Rule(
        "camera_offline",
        Scope.camera,
        _score_camera_offline,
        camera_evidence,
        inputs=frozenset({"frame", "last_frame_t", "camera_online"}),
        on_tick=OnTick.score,
        doc="The camera manager says offline, or no frame for stale_after_s; a frame scores 0.",
    )
)
register(
    Rule(
        "horse_down",
        Scope.track,
        _score_horse_down,
        track_evidence,
        inputs=frozenset({"features"}),
        raise_after=_raise_after_horse_down,
        doc="The track's posture is lying; in baseline mode it raises against the camera's own normal bout.",
    )
)
register(
    Rule(
        "too_fast",
        Scope.track,
        _score_too_fast,
        track_evidence,
        inputs=frozenset({"features"}),
        doc="The track moves at >= speed_bl_s body lengths per second.",
    )
)
register(
    Rule(
        "rolling",
        Scope.track,
        _score_rolling,
        track_evidence,
        inputs=frozenset({"features", "postures"}),
        posture_window_s=_rolling_window_s,
        doc="min_downs lie-downs, or min_events lie-downs + flips, within window_s (posture_events).",
    )
)
register(
    Rule(
        "horse_absent",
        Scope.camera,
        _score_horse_absent,
        camera_evidence,
        inputs=frozenset({"present_tracks"}),
        on_tick=OnTick.hold,
        hold_while=_frames_fresh,
        doc="No confirmed horse track in this frame; ticks only move its clock while frames are fresh.",
    )
)
register(
    Rule(
        "lying_time_low",
        Scope.camera,
        _score_lying_time_low,
        camera_evidence,
        inputs=frozenset({"budget"}),
        doc="Fewer than min_lying_min minutes lying in the camera's rolling 24 h time budget (off by default).",
    )
)
register(
    Rule(
        "restless",
        Scope.camera,
        _score_restless,
        camera_evidence,
        inputs=frozenset({"budget"}),
        doc="max_transitions lie-downs + get-ups, or max_moving_min minutes moving, within window_s "
        "(at night by default; off by default).",
    )
)
check_registry()
