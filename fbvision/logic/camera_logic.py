"""One camera's logic, pure and synchronous: candidates in, tracked features and alert events out.

``process`` runs per frame: class-aware NMS -> final thresholds and stall polygon -> ByteTrack (stable ids)
-> features -> rule scores -> smoothing -> episode state machine -> :class:`~fbvision.core.events.AlertEvent`.
``tick`` lets time pass without frames (camera_offline; horse_absent while frames are fresh). Every time is
a capture time passed in by the caller: no Redis, no wall clock, so tests and replays are deterministic.
The worker also passes when each result *arrived* (reference clock, :mod:`fbvision.core.clock`) and ticks
with ``tick_reference(now)``: camera_offline then goes by arrival gaps, which no host's clock skew or
result backlog can fake; impossible capture times (far ahead of arrival, or a clock stepping back) are
counted (``frames_future``, ``clock_steps_back``) and the camera is judged on.
``episodes()`` is the JSON-able state a restarted worker passes back as ``open_episodes`` to carry on
without raising again.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import supervision as sv

from fbvision.core.candidates import Candidates
from fbvision.core.events import AlertEvent, AlertState, Evidence
from fbvision.core.logic_config import (
    CameraLogicOverrides,
    LogicConfig,
    RuleConfig,
    effective_rules,
)
from fbvision.logic import rules as rule_registry
from fbvision.logic.baseline import HorseBaseline
from fbvision.logic.features import FeatureExtractor, TrackFeatures
from fbvision.logic.filters import apply_nms, filter_candidates
from fbvision.logic.rules import OnTick, Rule, RuleContext, Scope
from fbvision.logic.smoothing import EpisodeTracker, SignalFilter, Transition, build_filter, episode_tracker
from fbvision.logic.timebudget import ABSENT, LYING, STANDING, TimeBudget, TimeBudgetSummary
from fbvision.logic.tracking import CameraTracker

logger = logging.getLogger(__name__)

EPISODES_VERSION = 1
NAN = float("nan")
#: A capture time this far ahead of its arrival (both on the reference clock, see fbvision.core.clock) is
#: impossible - an injected message, or a producer whose clock is wrong: the frame is skipped and counted.
MAX_FUTURE_S = 10.0
#: A frame older than the last one by at most this much is reordering (two inference workers): skipped. By
#: more, the camera's clock stepped back: the camera's time base is shifted so it stays monotonic and the
#: camera keeps being judged (skipping would skip every later frame until the clock caught up).
MAX_REORDER_S = 5.0


@dataclass(frozen=True)
class RuleSignal:
    """One rule's score for one track (or the camera) at one frame: raw, smoothed, and whether an alert is open."""

    camera_id: str
    rule: str
    track_id: int | None
    t: float
    seq: int
    raw: float  # NaN when the rule could not say (track not seen)
    smoothed: float
    open: bool

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class FrameOutcome:
    seq: int
    t: float
    detections: sv.Detections  # confirmed tracks, tracker_id = stable horse id
    features: list[TrackFeatures]
    alerts: list[AlertEvent]
    signals: list[RuleSignal] = field(default_factory=list)
    time_budget: TimeBudgetSummary | None = None  # the camera's (a horse's day), as last summarised


@dataclass
class _RuleState:
    filter: SignalFilter
    episode: EpisodeTracker
    smoothed: float = 0.0


def _empty_detections() -> sv.Detections:
    detections = sv.Detections.empty()
    detections.tracker_id = np.zeros(0, dtype=int)
    return detections


class CameraLogic:
    """The logic pipeline of one camera. Not thread-safe: one caller per camera, frames in capture order."""

    def __init__(
        self,
        camera_id: str,
        config: LogicConfig,
        overrides: CameraLogicOverrides | None,
        class_ids: Collection[int],
        frame_size: tuple[int, int] | None = None,
        open_episodes: dict | None = None,
        baseline: dict | None = None,
    ) -> None:
        self.camera_id = camera_id
        self.config = config
        self.rules = effective_rules(config, overrides)
        self.class_ids = sorted({int(c) for c in class_ids})
        self.frame_size = frame_size
        polygon = overrides.stall_polygon if overrides is not None else None
        self._polygon = None if polygon is None else np.asarray(polygon, dtype=np.float32)
        self._tracker = CameraTracker(config.tracker, camera_id)
        self._features = FeatureExtractor(camera_id, config.features)
        self._states: dict[tuple[str, int | None], _RuleState] = {}
        # The registry as it is now (a rule registered later is not seen by this camera), split by when
        # each rule is scored: see fbvision.logic.rules (registration order = evaluation order).
        self._registered = rule_registry.registered()
        missing = [
            r.name for r in self._registered if not isinstance(getattr(self.rules, r.name, None), RuleConfig)
        ]
        if missing:
            raise ValueError(f"camera {camera_id}: the rules config has no parameters for rule(s) {missing}")
        self._track_rules = tuple(r for r in self._registered if r.scope is Scope.track)
        camera_rules = tuple(r for r in self._registered if r.scope is Scope.camera)
        self._arrival_rules = tuple(r for r in camera_rules if not r.reads_tracks)
        self._after_track_rules = tuple(r for r in camera_rules if r.reads_tracks)
        self._tick_rules = tuple(r for r in camera_rules if r.on_tick is not OnTick.skip)
        self._posture_window_s = max(
            (r.posture_window_s(self._rule_params(r.name)) for r in self._track_rules if r.posture_window_s),
            default=0.0,
        )
        self._postures: dict[int, deque[tuple[float, bool]]] = {}
        # A horse's day (fbvision.logic.timebudget): the camera's (one horse in view) and each track's.
        budget_cfg = config.time_budget
        self._budget = TimeBudget(budget_cfg) if budget_cfg.enabled else None
        self._track_budgets: dict[int, TimeBudget] = {}
        # Against the horse's own normal (fbvision.logic.baseline): learnt from the camera's budget.
        self._baseline = (HorseBaseline(config.baseline, budget_cfg.timezone, camera_id)
                          if config.baseline.enabled and self._budget is not None else None)
        self._budget_centres: dict[int, tuple[float, float, float]] = {}  # track -> last (t, cx, cy) seen
        self._last_seen: dict[int, float | None] = {}  # known tracks; None: restored, not seen yet
        self._first_t: float | None = None
        self._last_frame_t: float | None = None
        self._last_seq = -1
        self.frames_out_of_order = 0
        self.frames_future = 0  # skipped: capture time beyond MAX_FUTURE_S ahead of arrival
        self.clock_steps_back = 0  # the camera's clock stepped back by more than MAX_REORDER_S
        # Reference-clock time the last result of this camera arrived (camera_offline is judged on it), and
        # what is added to capture times since a backwards clock step (keeps the camera's time monotonic).
        self._last_arrival_t: float | None = None
        self._shift = 0.0
        if open_episodes:
            self._restore(open_episodes)
        if baseline and self._baseline is not None:
            self._baseline.load(baseline)  # ValueError on a wrong version or camera: the worker starts afresh

    # ---------------------------------------------------------------------------------------------------
    # per frame

    def process(
        self,
        *,
        seq: int,
        t: float,
        candidates: Candidates,
        frame_size: tuple[int, int],
        arrived: float | None = None,
    ) -> FrameOutcome:
        """One frame captured at ``t``. ``arrived``: when its result reached the caller, on the reference clock
        (then camera_offline is judged by arrivals, see :meth:`tick_reference`, and a capture time too far
        ahead of it is refused)."""
        if arrived is not None and t > arrived + MAX_FUTURE_S:
            self.frames_future += 1
            if self.frames_future & (self.frames_future - 1) == 0:  # 1st, 2nd, 4th, 8th...: a wrong clock
                logger.warning(                                    # sends 5 a second, the log stays readable
                    "camera %s: frame seq=%d captured %.1f s after it arrived (t=%.3f); impossible time, "
                    "skipped (%d so far)", self.camera_id, seq, t - arrived, t, self.frames_future,
                )
            return FrameOutcome(seq, t, _empty_detections(), [], [], [])
        t += self._shift
        elapsed = 0.0  # reference time since the last result arrived
        if arrived is not None and self._last_arrival_t is not None:
            elapsed = max(0.0, arrived - self._last_arrival_t)
        if self._shift and self._last_frame_t is not None and t > self._last_frame_t + elapsed + MAX_REORDER_S:
            # The camera's clock came forward again (or the "step" was one stray old message): undo the shift
            # as far as that keeps the time monotonic, so alert times return to the camera's own clock.
            undo = min(self._shift, t - (self._last_frame_t + elapsed))
            self._shift -= undo
            t -= undo
            logger.warning("camera %s: frame seq=%d: clock came forward again; shift now %+.3f s",
                           self.camera_id, seq, self._shift)
        if self._last_frame_t is not None and t < self._last_frame_t - MAX_REORDER_S:
            # The camera's clock went back: carry on from the last frame's time plus what elapsed since.
            step = self._last_frame_t + elapsed - t
            self._shift += step
            self.clock_steps_back += 1
            logger.warning(
                "camera %s: frame seq=%d is %.1f s older than the last one: clock stepped back; shifting this "
                "camera's times by %+.3f s from now on", self.camera_id, seq, step - elapsed, self._shift,
            )
            t += step
        if arrived is not None:
            self._last_arrival_t = arrived
        if self._last_frame_t is not None and t < self._last_frame_t:
            self.frames_out_of_order += 1
            logger.warning(
                "camera %s: frame seq=%d t=%.3f is older than the last one (t=%.3f); skipped",
                self.camera_id,
                seq,
                t,
                self._last_frame_t,
            )
            return FrameOutcome(seq, t, _empty_detections(), [], [], [])
        if self._first_t is None:
            self._first_t = t
        self.frame_size = frame_size
        alerts: list[AlertEvent] = []
        signals: list[RuleSignal] = []

        # A frame arrived (the camera is online): camera rules that need no tracks.
        previous_t = self._last_frame_t
        alerts += self._evaluate_camera(self._arrival_rules, t, seq, signals, last_frame_t=previous_t)
        self._last_frame_t, self._last_seq = t, seq

        cfg = self.config
        kept = apply_nms(candidates, cfg.nms_iou)
        kept = filter_candidates(
            kept,
            conf=cfg.conf_threshold,
            class_ids=self.class_ids,
            min_area=cfg.min_box_area_frac * frame_size[0] * frame_size[1],
            polygon=self._polygon,
        )
        detections = self._tracker.update(kept, t)
        features = self._features.update(detections, t=t, seq=seq, frame_size=frame_size)

        present = 0
        for f in features:
            if f.present:
                present += 1
                self._last_seen[f.track_id] = t
                self._record_posture(f)
            alerts += self._evaluate_track(f, signals)
        summary = self._update_budgets(t, features, present)

        alerts += self._evaluate_camera(
            self._after_track_rules, t, seq, signals, last_frame_t=previous_t, present_tracks=present
        )
        self._forget_stale_tracks(t)
        return FrameOutcome(seq, t, detections, features, alerts, signals, summary)

    def _update_budgets(self, t: float, features: Sequence[TrackFeatures], present: int) -> TimeBudgetSummary | None:
        """Feed the time budgets: each known track's (absent when not seen), and the camera's while exactly one
        horse is in view (none: absent; two or more: unknown time - whose posture would it be?)."""
        budget = self._budget
        if budget is None:
            return None
        cfg = self.config.time_budget
        if self._baseline is not None:
            # Before this frame is counted: a frame of a new day closes the last one while the ring still
            # holds that day's first minute.
            self._baseline.update(t, budget)
        seen = None
        for f in features:
            posture = (LYING if f.lying else STANDING) if f.present else ABSENT
            moving = f.present and self._budget_speed(f, cfg.max_gap_s) >= cfg.moving_speed_bl_s
            if f.present:
                seen = (posture, moving)
            if cfg.per_track:
                track_budget = self._track_budgets.get(f.track_id)
                if track_budget is None:
                    track_budget = self._track_budgets[f.track_id] = TimeBudget(cfg)
                track_budget.observe(t, posture, moving)
        if present == 0:
            budget.observe(t, ABSENT, False)
        elif present == 1 and seen is not None:
            budget.observe(t, *seen)
        else:
            budget.gap()
        return budget.summary(t)

    def _budget_speed(self, f: TrackFeatures, max_gap_s: float) -> float:
        """The track's speed (body lengths/s): the feature's (over ``speed_window_s``) where it has one, else -
        at frame rates below ~1 fps - the centroid's displacement since the track's previous frame (NaN
        after more than ``max_gap_s``)."""
        if f.box is None:
            return NAN
        x1, y1, x2, y2 = f.box
        centre = (f.t, (x1 + x2) / 2, (y1 + y2) / 2)
        previous = self._budget_centres.get(f.track_id)
        self._budget_centres[f.track_id] = centre
        if math.isfinite(f.speed_bl_s):
            return f.speed_bl_s
        body = max(x2 - x1, y2 - y1)
        if previous is None or body <= 0 or not 0 < f.t - previous[0] <= max_gap_s:
            return NAN
        return math.hypot(centre[1] - previous[1], centre[2] - previous[2]) / (f.t - previous[0]) / body

    def time_budget(self, t: float | None = None) -> TimeBudgetSummary | None:
        """The camera's time budget (a horse's day) over the window ending at ``t`` (default: the last frame)."""
        return None if self._budget is None else self._budget.summary(t)

    def track_time_budgets(self, t: float | None = None) -> dict[int, TimeBudgetSummary]:
        """Each known track's time budget (tracks are forgotten with their counters, see ``relink_s``)."""
        out = {}
        for track_id, budget in sorted(self._track_budgets.items()):
            summary = budget.summary(t)
            if summary is not None:
                out[track_id] = summary
        return out

    @property
    def budget(self) -> TimeBudget | None:
        """The camera's :class:`~fbvision.logic.timebudget.TimeBudget` (None when ``time_budget.enabled`` is off)."""
        return self._budget

    @property
    def baseline(self) -> HorseBaseline | None:
        """The camera's :class:`~fbvision.logic.baseline.HorseBaseline` (None when ``baseline.enabled`` is off)."""
        return self._baseline

    def baseline_state(self) -> dict[str, Any] | None:
        """The baseline's JSON-able state (the worker saves it when ``baseline.changed``), None without one."""
        return None if self._baseline is None else self._baseline.to_dict()

    def tick_reference(self, now: float, camera_online: bool | None = None) -> list[AlertEvent]:
        """:meth:`tick` at reference-clock time ``now``, judged by arrivals: the camera's time moves on from its
        last frame by what elapsed since that frame's result *arrived*, so neither the camera host's clock
        (skew) nor the results' latency (a backlog caught up) can make camera_offline fire while results flow."""
        if self._last_frame_t is not None and self._last_arrival_t is not None:
            t = self._last_frame_t + max(0.0, now - self._last_arrival_t)
        elif self._last_frame_t is not None:
            t = max(now + self._shift, self._last_frame_t)
        else:
            t = now + self._shift
        return self.tick(t, camera_online)

    def tick(self, t: float, camera_online: bool | None = None) -> list[AlertEvent]:
        """Time passes without a frame: the camera rules that act on ticks (``Rule.on_tick``): camera_offline
        is scored, horse_absent's clock moves on towards its threshold while frames are fresh."""
        if self._last_frame_t is not None and t < self._last_frame_t:
            return []
        alerts: list[AlertEvent] = []
        for rule, params in self._enabled(self._tick_rules):
            ctx = RuleContext(
                t=t,
                params=params,
                rules=self.rules,
                frame=False,
                last_frame_t=self._last_frame_t,
                camera_online=camera_online,
            )
            if rule.on_tick is OnTick.score:
                alerts += self._evaluate(rule, None, ctx, self._last_seq, None, since=self._last_frame_t)
                continue
            state = self._states.get((rule.name, None))
            if state is None or not rule.hold_while(ctx):
                continue
            # OnTick.hold: no new evidence, so the smoothed score stays; only the episode's clock moves on.
            transitions = state.episode.update(state.smoothed, t)
            alerts += self._events(rule.name, None, transitions, self._last_seq, None, {})
        return alerts

    # ---------------------------------------------------------------------------------------------------
    # rules

    def _rule_params(self, rule: str) -> RuleConfig:
        return getattr(self.rules, rule)

    def _enabled(self, rules: Sequence[Rule]) -> Iterator[tuple[Rule, RuleConfig]]:
        """The rules of ``rules`` that this camera's config enables, with their effective parameters."""
        for rule in rules:
            params = self._rule_params(rule.name)
            if params.enabled:
                yield rule, params

    def _state(self, rule: str, track_id: int | None) -> _RuleState:
        key = (rule, track_id)
        state = self._states.get(key)
        if state is None:
            params = self._rule_params(rule)
            state = _RuleState(build_filter(params.smoothing), episode_tracker(params))
            self._states[key] = state
        return state

    def _record_posture(self, f: TrackFeatures) -> None:
        """Keep the track's posture as runs (start time, lying) covering the longest ``posture_window_s``."""
        runs = self._postures.setdefault(f.track_id, deque())
        if not runs or runs[-1][1] != f.lying:
            runs.append((f.t, f.lying))
        window_start = f.t - self._posture_window_s
        while len(runs) >= 2 and runs[1][0] <= window_start:
            runs.popleft()

    def _evaluate_track(self, f: TrackFeatures, signals: list[RuleSignal]) -> list[AlertEvent]:
        alerts: list[AlertEvent] = []
        postures = self._postures.get(f.track_id, ())
        for rule, params in self._enabled(self._track_rules):
            ctx = RuleContext(t=f.t, params=params, rules=self.rules, features=f, postures=postures,
                              baseline=self._baseline)
            alerts += self._evaluate(rule, f.track_id, ctx, f.seq, signals)
        return alerts

    def _evaluate_camera(
        self,
        rules: Sequence[Rule],
        t: float,
        seq: int,
        signals: list[RuleSignal],
        *,
        last_frame_t: float | None,
        present_tracks: int = 0,
    ) -> list[AlertEvent]:
        alerts: list[AlertEvent] = []
        for rule, params in self._enabled(rules):
            ctx = RuleContext(
                t=t,
                params=params,
                rules=self.rules,
                present_tracks=present_tracks,
                frame=True,
                last_frame_t=last_frame_t,
                camera_online=True,
                budget=self._budget,
            )
            alerts += self._evaluate(rule, None, ctx, seq, signals)
        return alerts

    def _evaluate(
        self,
        rule: Rule,
        track_id: int | None,
        ctx: RuleContext,
        seq: int,
        signals: list[RuleSignal] | None,
        *,
        since: float | None = None,
    ) -> list[AlertEvent]:
        """Score one (enabled) rule, smooth, step its episode; alerts for the episode's transitions."""
        score = rule.score(ctx)
        raw = score.value
        t = ctx.t
        state = self._state(rule.name, track_id)
        adaptive = rule.raise_after(ctx) if rule.raise_after is not None else None
        state.episode.shift_s = 0.0 if adaptive is None else adaptive.after_s - state.episode.escalation[0][0]
        state.smoothed = float(state.filter.update(raw, t))
        transitions = state.episode.update(state.smoothed, t, since=since)
        if signals is not None:
            signals.append(
                RuleSignal(
                    self.camera_id,
                    rule.name,
                    track_id,
                    t,
                    seq,
                    NAN if raw is None else float(raw),
                    state.smoothed,
                    state.episode.is_open,
                )
            )
        if not transitions:
            return []
        evidence = rule.evidence(ctx, score)
        values = dict(evidence.values)
        if adaptive is not None:
            values.update(adaptive.details)
        values.update(score=NAN if raw is None else float(raw), smoothed=state.smoothed)
        return self._events(rule.name, track_id, transitions, seq, evidence.box, values)

    def _events(
        self,
        rule: str,
        track_id: int | None,
        transitions: Sequence[Transition],
        seq: int,
        box: tuple[float, float, float, float] | None,
        values: Mapping[str, float],
    ) -> list[AlertEvent]:
        events = []
        for tr in transitions:
            age = (tr.ended_at if tr.ended_at is not None else tr.t) - tr.started_at
            features = {k: float(v) for k, v in values.items() if math.isfinite(v)}
            features["age_s"] = age
            who = f"track {track_id}" if track_id is not None else "camera"
            event = AlertEvent.create(
                camera_id=self.camera_id,
                rule=rule,
                track_id=track_id,
                state=tr.state,
                severity=tr.severity,
                started_at=tr.started_at,
                updated_at=tr.t,
                resolved_at=tr.ended_at if tr.state is AlertState.resolved else None,
                evidence=Evidence(seq=max(seq, 0), box=box, features=features),
                message=f"{rule} {tr.state.value} ({tr.severity.value}): camera {self.camera_id}, {who}, "
                f"for {age:.0f} s",
            )
            logger.info(
                "camera %s: %s %s %s track=%s started=%.3f t=%.3f",
                self.camera_id,
                rule,
                tr.state.value,
                tr.severity.value,
                track_id,
                tr.started_at,
                tr.t,
            )
            events.append(event)
        return events

    def _forget_stale_tracks(self, t: float) -> None:
        """Drop tracks gone longer than the re-link window once none of their episodes is running."""
        horizon = self.config.tracker.relink_s
        for track_id, last_seen in list(self._last_seen.items()):
            since = last_seen if last_seen is not None else self._first_t
            if since is None or t - since <= horizon:
                continue
            keys = [(r.name, track_id) for r in self._track_rules]
            if any(not self._states[key].episode.is_idle for key in keys if key in self._states):
                continue
            del self._last_seen[track_id]
            self._features.forget(track_id)
            self._postures.pop(track_id, None)
            self._track_budgets.pop(track_id, None)
            self._budget_centres.pop(track_id, None)
            for key in keys:
                self._states.pop(key, None)

    # ---------------------------------------------------------------------------------------------------
    # restart

    def episodes(self) -> dict[str, Any]:
        """JSON-able state of runs in progress (raised or pending) and known tracks, for ``open_episodes``."""
        episodes = []
        for (rule, track_id), state in sorted(
            self._states.items(), key=lambda kv: (kv[0][0], kv[0][1] or -1)
        ):
            saved = state.episode.state_dict()
            if saved["onset"] is None and saved["last_resolved"] is None:
                continue
            episodes.append({"rule": rule, "track_id": track_id, **saved})
        tracks = []
        for track_id in sorted(self._last_seen):
            box = self._features.last_box(track_id)
            baseline = self._features.baseline(track_id)
            tracks.append(
                {
                    "track_id": track_id,
                    "box": None if box is None else [float(v) for v in box],
                    "baseline_height": baseline,
                }
            )
        return {
            "version": EPISODES_VERSION,
            "camera_id": self.camera_id,
            "next_track_id": self._tracker.next_track_id,
            "episodes": episodes,
            "tracks": tracks,
            # camera_offline's clock: without it a new owner would judge a dead camera by "no frame yet"
            "clock": {
                "last_frame_t": self._last_frame_t,
                "last_arrival_t": self._last_arrival_t,
                "last_seq": self._last_seq,
                "shift": self._shift,
            },
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        if saved.get("version") != EPISODES_VERSION:
            raise ValueError(f"unsupported episode state version {saved.get('version')!r}")
        if saved.get("camera_id") not in (None, self.camera_id):
            raise ValueError(
                f"episode state of camera {saved.get('camera_id')!r} given to {self.camera_id!r}"
            )
        self._tracker.next_track_id = max(self._tracker.next_track_id, int(saved.get("next_track_id", 1)))
        clock = saved.get("clock") or {}
        if not isinstance(clock, dict):
            raise ValueError(f"saved clock state {clock!r} is not an object")
        for key in ("last_frame_t", "last_arrival_t", "shift"):
            value = clock.get(key)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"saved clock {key}={value!r} is not a finite number")
        self._last_frame_t = clock.get("last_frame_t")
        self._last_arrival_t = clock.get("last_arrival_t")
        self._shift = float(clock.get("shift") or 0.0)
        self._last_seq = int(clock.get("last_seq", -1))
        for track in saved.get("tracks", []):
            track_id = int(track["track_id"])
            if track.get("box") is not None:
                self._tracker.seed_lost(track_id, track["box"])
            self._features.seed(track_id, baseline_height=track.get("baseline_height"), box=track.get("box"))
            self._last_seen[track_id] = None
        for item in saved.get("episodes", []):
            rule, track_id = item["rule"], item.get("track_id")
            if rule not in {r.name for r in self._registered} or not self._rule_params(rule).enabled:
                logger.warning(
                    "camera %s: dropping saved episode of unknown/disabled rule %r", self.camera_id, rule
                )
                continue
            if track_id is not None:
                track_id = int(track_id)
                if track_id not in self._last_seen:
                    self._features.seed(track_id, baseline_height=None, box=None)
                    self._last_seen[track_id] = None
            self._state(rule, track_id).episode.load_state(item)
        logger.info(
            "camera %s: resumed %d episode(s), %d track(s)",
            self.camera_id,
            len(saved.get("episodes", [])),
            len(saved.get("tracks", [])),
        )
