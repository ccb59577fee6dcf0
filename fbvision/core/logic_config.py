"""Configuration of the logic stage: thresholds, tracker, features, rules (with per-camera overrides).

One strict pydantic tree (every model a :class:`~fbvision.core.configbase.ConfigModel`, ``extra="forbid"``: a
misspelt key fails at start with its name), every field
with a description and bounds. ``docs/rules.md`` explains each default. Per-camera
:class:`CameraLogicOverrides` deep-merge partial rule parameters onto the base and are re-validated.
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from fbvision.core.configbase import ConfigModel
from fbvision.core.events import Severity, escalation_ladder

logger = logging.getLogger(__name__)

_DAY_S = 86_400.0


class SmoothingKind(str, Enum):
    none = "none"
    vote = "vote"
    ema = "ema"
    median = "median"


#: Frame-count keys of the smoothing config before windows were in seconds: refused with how to convert.
FRAME_COUNT_KEYS = ("vote_n", "vote_k", "median_n")
_NOMINAL_FPS = 5.0  # the conversion example's frame rate (the demo cameras')


def frame_count_message(data: dict[str, Any], key: str) -> str:
    """How to convert an old frame-count smoothing key to the seconds-based fields."""

    def number(name: str) -> int | None:
        value = data.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    n, k, median_n = number("vote_n"), number("vote_k"), number("median_n")
    fps = _NOMINAL_FPS
    head = f"{key}={data.get(key)!r} counts frames; windows are seconds now"
    if key == "median_n":
        frames = median_n or 5
        return (f"{head}: use window_s = median_n / fps (the camera's frame rate), e.g. {frames} frames at {fps:g} fps "
                f"= window_s: {round(frames / fps, 3)!r}")
    frames = n or 25
    share = f"{k} of {n} = fraction: {round(k / n, 3)!r}" if n and k and k <= n else "15 of 25 = fraction: 0.6"
    return (f"{head}: use window_s = vote_n / fps (the camera's frame rate), e.g. {frames} frames at {fps:g} fps "
            f"= window_s: {round(frames / fps, 3)!r}; fraction = vote_k / vote_n, e.g. {share}; and min_frames: "
            f"the fewest frames seen in the window to decide (e.g. 3)")


class SmoothingConfig(ConfigModel):
    """Which filter smooths a rule's raw per-frame score before the episode logic sees it.

    Every window is in seconds of capture time, so one setting means the same at any frame rate. Gap policy
    (see ``fbvision.logic.smoothing``): time without frames is unknown, neither for nor against; the vote and
    the median run over the frames observed in the last ``window_s`` seconds, and while the window holds fewer
    than ``min_frames`` of them the filter does not decide (its last output stands).
    """

    kind: SmoothingKind = Field(
        default=SmoothingKind.vote,
        description="none, vote (a share of the window's frames), ema or median (over the window).",
    )
    window_s: float = Field(
        default=1.0, gt=0, le=3600,
        description="vote, median: the window in seconds (the frames captured in the last window_s seconds).",
    )
    fraction: float = Field(
        default=0.6, gt=0, le=1,
        description="vote: on when at least this share of the frames observed in the window hold the condition.",
    )
    min_frames: int = Field(
        default=1, ge=1, le=10_000,
        description="vote, median: fewest observed frames in the window to decide; with fewer (a gap, a low "
                    "frame rate) the last output stands. Must fit in window_s at the cameras' fps.",
    )
    ema_half_life_s: float = Field(default=2.0, gt=0, le=3600, description="ema: half-life in seconds.")

    @model_validator(mode="before")
    @classmethod
    def _no_frame_counts(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in FRAME_COUNT_KEYS:
                if key in data:
                    raise PydanticCustomError(
                        "frame_count_window", "{message}",
                        {"message": frame_count_message(data, key), "key": key, "value": data[key]},
                    )
        return data


class EscalationStep(ConfigModel):
    after_s: float = Field(
        ge=0, le=7 * _DAY_S, description="Age of the condition (s since onset) for this step."
    )
    severity: Severity = Field(description="Severity from this age on.")


class RuleConfig(ConfigModel):
    """Parameters every rule shares: smoothing and the episode state machine."""

    enabled: bool = Field(default=True, description="Evaluate this rule at all.")
    smoothing: SmoothingConfig = Field(
        default_factory=SmoothingConfig, description="Smoothing of the raw score."
    )
    enter: float = Field(default=0.5, ge=0, le=1, description="Smoothed score at which the condition starts.")
    exit: float = Field(
        default=0.5, ge=0, le=1, description="Smoothed score below which it stops (<= enter)."
    )
    exit_after_s: float = Field(
        default=0.0, ge=0, le=_DAY_S, description="The condition must be gone this long before resolving."
    )
    cooldown_s: float = Field(default=0.0, ge=0, le=_DAY_S, description="No new episode this soon after one.")
    escalation: list[EscalationStep] = Field(
        default_factory=lambda: [EscalationStep(after_s=0.0, severity=Severity.warning)],
        min_length=1,
        description="Raise at the first step's age, escalate (ongoing) at each later one.",
    )

    @model_validator(mode="after")
    def _check(self) -> RuleConfig:
        if self.exit > self.enter:
            raise ValueError(f"exit ({self.exit}) must be <= enter ({self.enter})")
        escalation_ladder((s.after_s, s.severity) for s in self.escalation)
        return self



def _steps(*steps: tuple[float, Severity]) -> list[EscalationStep]:
    return [EscalationStep(after_s=a, severity=s) for a, s in steps]


class HorseDownMode(str, Enum):
    fixed = "fixed"
    baseline = "baseline"


class HorseDownRule(RuleConfig):
    """Lying posture sustained: normal rest is minutes to ~an hour, so only long bouts alert.

    ``mode: fixed`` raises at the escalation ladder's first step (30 min). ``mode: baseline`` raises once the
    bout passes ``clamp(k x the horse's own p95 bout, baseline_min_s, baseline_max_s)`` (``logic.baseline``
    must be enabled; the ladder's later steps shift with the first); until the camera's baseline is ready it
    behaves as ``fixed``. See docs/rules.md, "Against the horse's own normal".
    """

    mode: HorseDownMode = Field(
        default=HorseDownMode.fixed,
        description="fixed: raise at escalation[0].after_s; baseline: at max(baseline_min_s, baseline_k x the "
                    "camera's own p95 bout), at most baseline_max_s (needs logic.baseline.enabled).",
    )
    baseline_k: float = Field(
        default=1.5, ge=1.0, le=10.0, description="baseline mode: this many times the horse's own p95 bout."
    )
    baseline_min_s: float = Field(
        default=1200.0, ge=60, le=_DAY_S,
        description="baseline mode: never raise before this bout length (the fixed minimum, s).",
    )
    baseline_max_s: float = Field(
        default=5400.0, ge=60, le=_DAY_S,
        description="baseline mode: always raise by this bout length, whatever the horse's normal (s).",
    )

    smoothing: SmoothingConfig = Field(
        default_factory=lambda: SmoothingConfig(kind=SmoothingKind.vote, window_s=5.0, fraction=0.6, min_frames=3),
        description="Default: lying in at least 60 % of the frames of the last 5 s (at least 3 frames seen).",
    )
    exit_after_s: float = Field(
        default=120.0, ge=0, le=_DAY_S, description="Standing this long ends the bout (brief rises do not)."
    )
    cooldown_s: float = Field(
        default=600.0, ge=0, le=_DAY_S, description="No new horse_down this soon after."
    )
    escalation: list[EscalationStep] = Field(
        default_factory=lambda: _steps((1800.0, Severity.warning), (3600.0, Severity.critical)),
        min_length=1,
        description="Warning after 30 min down, critical after 60 min.",
    )

    @model_validator(mode="after")
    def _baseline_bounds(self) -> HorseDownRule:
        if self.baseline_min_s > self.baseline_max_s:
            raise ValueError(f"baseline_min_s ({self.baseline_min_s:g}) must be <= baseline_max_s "
                             f"({self.baseline_max_s:g})")
        return self


class RollingRule(RuleConfig):
    """Repeated down/up transitions or lateral flips within a window (colic sign)."""

    smoothing: SmoothingConfig = Field(
        default_factory=lambda: SmoothingConfig(kind=SmoothingKind.none),
        description="The score already integrates a window; no extra smoothing.",
    )
    window_s: float = Field(default=600.0, gt=0, le=_DAY_S, description="Window in which events are counted.")
    min_posture_s: float = Field(
        default=3.0, ge=0, le=600, description="A lying or standing spell shorter than this is noise."
    )
    flip_min_s: float = Field(
        default=0.6, ge=0, le=60, description="Shortest lying interruption that is a flip."
    )
    flip_max_s: float = Field(
        default=5.0, gt=0, le=120, description="Longest lying interruption that is a flip; longer = stood up."
    )
    min_downs: int = Field(default=3, ge=1, le=100, description="Lie-downs in the window that trigger alone.")
    min_events: int = Field(
        default=4, ge=1, le=100, description="Lie-downs + flips in the window that trigger."
    )
    exit_after_s: float = Field(default=60.0, ge=0, le=_DAY_S, description="Quiet this long to resolve.")
    cooldown_s: float = Field(default=600.0, ge=0, le=_DAY_S, description="No new rolling episode this soon.")
    escalation: list[EscalationStep] = Field(
        default_factory=lambda: _steps((0.0, Severity.critical)),
        min_length=1,
        description="Colic sign: critical at once.",
    )

    @model_validator(mode="after")
    def _flip_bounds(self) -> RollingRule:
        if self.flip_min_s > self.flip_max_s:
            raise ValueError("flip_min_s must be <= flip_max_s")
        return self


class TooFastRule(RuleConfig):
    """Centroid speed (body lengths per second) above a threshold, sustained."""

    speed_bl_s: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="Speed threshold in body lengths per second (body = max(w, h)).",
    )
    smoothing: SmoothingConfig = Field(
        default_factory=lambda: SmoothingConfig(kind=SmoothingKind.median, window_s=1.0),
        description="Median over the last second removes one-frame box jumps (from 3 fps up).",
    )
    exit_after_s: float = Field(default=3.0, ge=0, le=_DAY_S, description="Calm this long to resolve.")
    cooldown_s: float = Field(
        default=120.0, ge=0, le=_DAY_S, description="No new too_fast episode this soon."
    )
    escalation: list[EscalationStep] = Field(
        default_factory=lambda: _steps((3.0, Severity.warning)),
        min_length=1,
        description="Warning once fast for 3 s.",
    )


class HorseAbsentRule(RuleConfig):
    """No confirmed horse track in view."""

    smoothing: SmoothingConfig = Field(
        default_factory=lambda: SmoothingConfig(kind=SmoothingKind.vote, window_s=1.0, fraction=0.6),
        description="Absent in at least 60 % of the frames of the last second.",
    )
    exit_after_s: float = Field(default=10.0, ge=0, le=_DAY_S, description="Horse back this long to resolve.")
    escalation: list[EscalationStep] = Field(
        default_factory=lambda: _steps((300.0, Severity.info)),
        min_length=1,
        description="Info after 5 min without a horse (turnout is normal).",
    )


class CameraOfflineRule(RuleConfig):
    """The camera manager reports the camera offline, or no frame arrived for a while."""

    stale_after_s: float = Field(
        default=2.0,
        gt=0,
        le=3600,
        description="A frame gap this long counts as 'no frames' (onset = last frame).",
    )
    smoothing: SmoothingConfig = Field(
        default_factory=lambda: SmoothingConfig(kind=SmoothingKind.none), description="No smoothing."
    )
    escalation: list[EscalationStep] = Field(
        default_factory=lambda: _steps((60.0, Severity.warning), (900.0, Severity.critical)),
        min_length=1,
        description="Warning after 60 s without frames, critical after 15 min.",
    )


class LyingTimeLowRule(RuleConfig):
    """Less than ``min_lying_min`` minutes lying in the camera's rolling time budget window (24 h): no REM sleep.

    Scored on the camera's time budget (one horse stabled there), once the window holds ``min_observed_h``
    hours of observed time. Off by default: what is low for one horse is normal for another (normal lying
    time is roughly 3-27 % of the day; REM sleep needs ~30 min lying) - set it from the stable's own data.
    """

    enabled: bool = Field(default=False, description="Off by default: the threshold needs the stable's own data.")
    min_lying_min: float = Field(
        default=30.0, ge=0, le=1440,
        description="Fewer minutes lying than this in the window is low (REM sleep needs lying; vets cite >= ~30 min).",
    )
    min_observed_h: float = Field(
        default=20.0, gt=0, le=168,
        description="Hours of observed time (frames, not gaps) the window needs before the rule says anything.",
    )
    smoothing: SmoothingConfig = Field(
        default_factory=lambda: SmoothingConfig(kind=SmoothingKind.none),
        description="The score already integrates 24 h; no extra smoothing.",
    )
    exit_after_s: float = Field(default=600.0, ge=0, le=_DAY_S, description="Back above the threshold this long.")
    cooldown_s: float = Field(default=6 * 3600.0, ge=0, le=_DAY_S, description="No new episode this soon after one.")
    escalation: list[EscalationStep] = Field(
        default_factory=lambda: _steps((0.0, Severity.warning)),
        min_length=1,
        description="Warning at once (the condition is already a day long).",
    )


class RestlessRule(RuleConfig):
    """Many lie-downs + get-ups, or much time moving, in the last ``window_s`` (by default at night only).

    Scored on the camera's time budget. Off by default: how often a horse changes posture or walks at night
    varies between horses and stables; set the thresholds from the stable's own data.
    """

    enabled: bool = Field(default=False, description="Off by default: the thresholds need the stable's own data.")
    window_s: float = Field(
        default=3600.0, ge=60, le=_DAY_S,
        description="Window in which transitions and moving time are counted (whole time-budget bins).",
    )
    max_transitions: int = Field(
        default=6, ge=1, le=1000,
        description="Lie-downs + get-ups in the window at or above which the horse is restless.",
    )
    max_moving_min: float = Field(
        default=20.0, gt=0, le=1440, description="Minutes moving in the window at or above which it is restless.",
    )
    night_only: bool = Field(default=True, description="Score only during the time budget's night hours.")
    min_observed_frac: float = Field(
        default=0.5, gt=0, le=1, description="Share of the window that must be observed (not a gap) to score.",
    )
    smoothing: SmoothingConfig = Field(
        default_factory=lambda: SmoothingConfig(kind=SmoothingKind.none),
        description="The score already integrates a window; no extra smoothing.",
    )
    exit_after_s: float = Field(default=600.0, ge=0, le=_DAY_S, description="Calm this long to resolve.")
    cooldown_s: float = Field(default=3600.0, ge=0, le=_DAY_S, description="No new episode this soon after one.")
    escalation: list[EscalationStep] = Field(
        default_factory=lambda: _steps((0.0, Severity.warning)),
        min_length=1,
        description="Warning at once (the score already spans the window).",
    )


class RulesConfig(ConfigModel):
    horse_down: HorseDownRule = Field(default_factory=HorseDownRule, description="Prolonged lying.")
    rolling: RollingRule = Field(default_factory=RollingRule, description="Repeated down/up or rolling.")
    too_fast: TooFastRule = Field(default_factory=TooFastRule, description="Sustained fast movement.")
    horse_absent: HorseAbsentRule = Field(default_factory=HorseAbsentRule, description="No horse in view.")
    camera_offline: CameraOfflineRule = Field(default_factory=CameraOfflineRule, description="No frames.")
    lying_time_low: LyingTimeLowRule = Field(
        default_factory=LyingTimeLowRule, description="Too little lying in 24 h (off by default)."
    )
    restless: RestlessRule = Field(
        default_factory=RestlessRule, description="Many posture changes or much moving at night (off by default)."
    )


RULE_NAMES: tuple[str, ...] = tuple(RulesConfig.model_fields)
TRACK_RULES: tuple[str, ...] = ("horse_down", "rolling", "too_fast")
CAMERA_RULES: tuple[str, ...] = ("horse_absent", "camera_offline", "lying_time_low", "restless")


class TimeBudgetConfig(ConfigModel):
    """A horse's day: rolling counters of lying, standing, moving and absent time, lying bouts and posture
    changes, per track and per camera (``fbvision.logic.timebudget``; ``docs/rules.md``, "A horse's day").

    Time-based, on the results' capture times: a frame's posture holds until the next frame; a frame gap
    longer than ``max_gap_s`` is *unknown* time (neither lying nor standing) and cuts a bout. Memory is bounded:
    ``window_s / bin_s`` bins per counter set plus at most ``max_bouts`` bouts.
    """

    enabled: bool = Field(default=True, description="Keep the counters (per camera and per track).")
    per_track: bool = Field(
        default=True, description="Also per track (a track lives as long as the tracker keeps its id)."
    )
    window_s: float = Field(default=_DAY_S, ge=3600, le=7 * _DAY_S, description="Rolling window (24 h).")
    bin_s: float = Field(
        default=60.0, ge=10, le=3600, description="Counters are kept per bin of this many seconds (per minute)."
    )
    max_gap_s: float = Field(
        default=30.0, gt=0, le=3600,
        description="Frames further apart than this leave unknown time between them (not lying, not standing).",
    )
    bout_gap_s: float = Field(
        default=300.0, ge=0, le=_DAY_S,
        description="A lying bout with lying frames on both sides of a gap this short goes on across it (the gap "
                    "stays unknown time); a longer gap ends it (censored: its true end is unknown).",
    )
    min_posture_s: float = Field(
        default=30.0, ge=0, le=3600,
        description="A lying, standing or absent spell shorter than this is noise, absorbed by the posture around it.",
    )
    min_absent_s: float = Field(
        default=120.0, ge=0, le=3600,
        description="The horse unseen for less than this is not absent: the time keeps the posture around it "
                    "(a missed detection, a track re-confirmed after a loss: ~30-60 s at 0.2 fps).",
    )
    moving_speed_bl_s: float = Field(
        default=0.15, gt=0, le=100,
        description="Moving when the centroid speed is at least this (body lengths per second; walking ~0.3).",
    )
    night_start_h: float = Field(default=20.0, ge=0, lt=24, description="Night starts at this hour (local time).")
    night_end_h: float = Field(default=6.0, ge=0, lt=24, description="Night ends at this hour (local time).")
    timezone: str = Field(default="UTC", description="IANA time zone of the stable, for the night hours.")
    max_bouts: int = Field(default=256, ge=8, le=100_000, description="Lying bouts kept (the newest).")
    summary_interval_s: float = Field(
        default=10.0, ge=0, le=3600, description="The summary (rules, metrics, recording) is recomputed this often."
    )
    persist_interval_s: float = Field(
        default=60.0, ge=0, le=3600,
        description="The camera's counters are saved in Redis (logic:timebudgets) at most this often, in the "
                    "fenced commit of its results, and loaded by whoever judges the camera next (a restart, a "
                    "lease takeover); 0: never saved (a restart starts the day afresh).",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(value)
        except Exception as exc:
            raise ValueError(f"unknown time zone {value!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _sizes(self) -> TimeBudgetConfig:
        if self.bin_s > self.window_s / 24:
            raise ValueError(f"bin_s ({self.bin_s}) must be at most window_s / 24 ({self.window_s / 24})")
        return self


class BaselineConfig(ConfigModel):
    """Against the horse's own normal: per camera, its lying bouts and lying minutes per day over the last
    ``days`` days (``fbvision.logic.baseline``), persisted in Redis; read by ``horse_down`` in ``baseline`` mode.

    Needs the camera's time budget (``time_budget.enabled``) and one horse per camera. Off by default.
    """

    enabled: bool = Field(default=False, description="Learn each camera's horse (needs time_budget.enabled).")
    days: int = Field(default=7, ge=1, le=60, description="Days kept: the last this many (by date).")
    min_days: int = Field(
        default=3, ge=1, le=60, description="Counted days needed before the baseline is ready (used)."
    )
    min_observed_h: float = Field(
        default=16.0, gt=0, le=24, description="A day counts only with at least this many hours observed."
    )
    min_bouts: int = Field(
        default=5, ge=1, le=10_000, description="Bouts the counted days need between them before it is ready."
    )
    day_start_h: float = Field(
        default=12.0, ge=0, lt=24,
        description="A baseline day starts at this local hour (time_budget.timezone); noon keeps a night in one day.",
    )
    max_bouts_per_day: int = Field(
        default=64, ge=1, le=1000, description="Bouts kept per day (the longest): bounds the saved state."
    )

    @model_validator(mode="after")
    def _days(self) -> BaselineConfig:
        if self.min_days > self.days:
            raise ValueError(f"min_days ({self.min_days}) must be <= days ({self.days})")
        return self


class TrackerConfig(ConfigModel):
    """ByteTrack (the ``trackers`` package) plus re-linking of lost tracks to keep one id per horse."""

    frame_rate: float = Field(
        default=5.0, gt=0, le=120, description="Nominal frame rate; updates use capture times."
    )
    track_activation_threshold: float = Field(
        default=0.5, ge=0, le=1, description="Score needed to start a new track."
    )
    high_conf_threshold: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="ByteTrack split: below this, boxes only continue existing tracks.",
    )
    match_iou: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Minimum similarity (IoU, or the centre-distance score) to associate a box with a track.",
    )
    match_distance_bl: float = Field(
        default=1.5,
        ge=0,
        le=20,
        description="A box whose centre is within this many body lengths (max side) of a track's predicted "
        "box still matches it, plus 2 x the fastest horse's speed x the frame gap (a canter turning at a "
        "wall), at most relink_max_distance_bl; 0 = plain IoU.",
    )
    lost_track_s: float = Field(
        default=10.0, ge=0, le=3600, description="Keep a lost track this long (seconds)."
    )
    min_consecutive_frames: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Frames before a track is confirmed (suppresses one-frame ghosts).",
    )
    relink_s: float = Field(
        default=60.0,
        ge=0,
        le=_DAY_S,
        description="A new track overlapping or near a horse lost this recently takes its id.",
    )
    relink_iou: float = Field(
        default=0.3, ge=0, le=1, description="IoU with the lost box that re-links whatever the distance."
    )
    relink_distance_bl: float = Field(
        default=1.0,
        ge=0,
        le=100,
        description="A new track whose centre is within this many body lengths of a just-lost one re-links "
        "(covers posture changes: a lying box is low and wide, little IoU with the standing one).",
    )
    relink_speed_bl_s: float = Field(
        default=3.0,
        ge=0,
        le=100,
        description="The re-link distance grows by this many body lengths per second lost (a horse may "
        "have moved while unseen).",
    )
    relink_max_distance_bl: float = Field(
        default=4.0,
        ge=0,
        le=100,
        description="Cap on the growing re-link distance, in body lengths (a stall is ~1.5-2 body lengths "
        "across, wider in the camera's perspective).",
    )


class BodyLength(str, Enum):
    max_side = "max_side"
    width = "width"


class FeatureConfig(ConfigModel):
    """Posture (box vs the track's own standing baseline) and speed."""

    baseline_samples: int = Field(
        default=600,
        ge=1,
        le=100_000,
        description="Standing heights kept per track (a count, not a time window).",
    )
    baseline_sample_interval_s: float = Field(
        default=1.0, ge=0, le=3600, description="At most one baseline sample per this many seconds."
    )
    baseline_min_samples: int = Field(
        default=5,
        ge=1,
        le=100_000,
        description="Samples needed before the baseline replaces the aspect fallback.",
    )
    baseline_percentile: float = Field(
        default=90.0, ge=50, le=100, description="Baseline = this percentile of the standing heights."
    )
    lying_rel_height: float = Field(
        default=0.65, gt=0, le=1, description="Lying when height <= this x baseline (and wide enough)."
    )
    lying_min_aspect: float = Field(
        default=0.9,
        ge=0,
        le=10,
        description="... and width/height >= this (a lying horse is not tall and thin).",
    )
    fallback_lying_aspect: float = Field(
        default=2.0, gt=0, le=10, description="Before a baseline exists: lying when width/height >= this."
    )
    speed_window_s: float = Field(
        default=1.0, gt=0, le=60, description="Speed = centroid displacement over about this many seconds."
    )
    body_length: BodyLength = Field(
        default=BodyLength.max_side, description="Body length for speed: max(w, h) of the box, or its width."
    )


class LogicConfig(ConfigModel):
    """Everything the logic stage needs, for all cameras."""

    nms_iou: float = Field(default=0.5, gt=0, le=1, description="Class-aware NMS IoU threshold.")
    conf_threshold: float = Field(default=0.3, ge=0, le=1, description="Final detection score threshold.")
    class_names: list[str] = Field(
        default_factory=lambda: ["horse"], min_length=1, description="Model classes to keep, by name."
    )
    min_box_area_frac: float = Field(
        default=0.002, ge=0, le=1, description="Minimum box area as a fraction of the frame area."
    )
    tracker: TrackerConfig = Field(default_factory=TrackerConfig, description="Tracker settings.")
    features: FeatureConfig = Field(default_factory=FeatureConfig, description="Feature settings.")
    rules: RulesConfig = Field(
        default_factory=RulesConfig, description="Rule settings (per-camera overridable)."
    )
    time_budget: TimeBudgetConfig = Field(
        default_factory=TimeBudgetConfig, description="A horse's day: rolling 24 h lying/standing/moving counters."
    )
    baseline: BaselineConfig = Field(
        default_factory=BaselineConfig,
        description="Against the horse's own normal: per-camera bout and lying baseline over N days (off by default).",
    )
    max_cameras: int = Field(
        default=1024, ge=1, le=1_000_000,
        description="Most distinct cameras one logic worker keeps state for. Results of further camera ids are "
                    "dropped and counted (dropped:camera_cap): anyone who can write to Redis could otherwise grow "
                    "per-camera state without bound by flooding new ids. Configured cameras always fit.",
    )

    @model_validator(mode="after")
    def _baseline_needs(self) -> LogicConfig:
        if self.baseline.enabled and not self.time_budget.enabled:
            raise ValueError("baseline.enabled needs time_budget.enabled (the baseline is learnt from the budget)")
        check_horse_down_mode(self, self.rules, "rules")
        return self

    @property
    def offline_after_s(self) -> float:
        """Seconds without frames before ``camera_offline`` is raised."""
        return self.rules.camera_offline.escalation[0].after_s

    @property
    def absent_after_s(self) -> float:
        """Seconds without a horse before ``horse_absent`` is raised."""
        return self.rules.horse_absent.escalation[0].after_s


def check_horse_down_mode(logic: LogicConfig, rules: RulesConfig, where: str) -> None:
    """``horse_down.mode: baseline`` needs ``logic.baseline.enabled`` (``where``: whose rules, for the message)."""
    if rules.horse_down.enabled and rules.horse_down.mode is HorseDownMode.baseline and not logic.baseline.enabled:
        raise ValueError(f"{where}.horse_down.mode 'baseline' needs logic.baseline.enabled: true (the camera's "
                         f"own normal is learnt there)")


def _deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class CameraLogicOverrides(ConfigModel):
    """Per-camera settings: the stall polygon and partial rule overrides (deep-merged onto the base)."""

    stall_polygon: list[tuple[float, float]] | None = Field(
        default=None,
        min_length=3,
        description="Stall outline in source pixels; detections whose box bottom-centre is outside are ignored.",
    )
    rules: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Partial rule parameters, e.g. {'horse_down': {'escalation': [...]}}.",
    )

    @field_validator("rules")
    @classmethod
    def _known_keys(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        # Validate against the defaults now, so a typo fails when the config loads, not at first use.
        RulesConfig.model_validate(_deep_merge(RulesConfig().model_dump(mode="json"), value))
        return value


def effective_rules(base: LogicConfig, overrides: CameraLogicOverrides | None) -> RulesConfig:
    """The camera's rules: ``base.rules`` deep-merged with ``overrides.rules``, validated again."""
    if overrides is None or not overrides.rules:
        return base.rules
    return RulesConfig.model_validate(_deep_merge(base.rules.model_dump(mode="json"), overrides.rules))
