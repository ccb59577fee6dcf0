"""Signal smoothing and alert episodes: one implementation, two drivers.

Every filter is a small stateful class with ``update(value, t) -> float | bool`` and ``reset()``. The
streaming logic worker calls ``update`` frame by frame; a notebook calls :func:`smooth` (or
:func:`episode_transitions`) on a pandas DataFrame, which runs *the same classes* over each group in time
order, so a notebook reproduces exactly what the worker did.

Every window is in seconds of capture time, never a count of frames, so one setting means the same at 1, 5 or
15 fps. ``t`` is a frame's capture time in seconds; filters use it, never the wall clock.

Gap policy (what a filter makes of missing data):

* A frame that arrived is an *observation*. A missing value in it (``None`` or NaN: the rule cannot say, e.g.
  the track is not seen in that frame) counts as 0: a horse that is not seen is not "down".
* Time without frames (frames lost, a slower camera, an outage) is *unknown*: neither for nor against. The
  vote and the median run over the frames observed in the last ``window_s`` seconds, so the vote's share is
  a share of what was seen.
* While the window holds fewer than ``min_frames`` observations, the filter does not decide: its last output
  stands (``False``/0.0 before its first decision). Filters only run when a frame arrives, so a gap neither
  raises nor ends anything by itself (``camera_offline`` covers the gap); after it, the frames from before
  have left the window and the first ``min_frames`` new ones decide.
* The EMA weighs each frame by the time since the previous one (half-life in seconds): after a gap the old
  mean has decayed by ``0.5 ** (gap / half_life_s)``.

:class:`EpisodeTracker` turns a smoothed score into alert transitions: hysteresis (enter/exit thresholds),
minimum duration and severity escalation (a ladder of ``(after_s, severity)`` measured from the onset),
an exit delay (the condition must be gone for ``exit_after_s`` before the episode resolves) and a
cooldown (no new episode within ``cooldown_s`` after one resolved).
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd

from fbvision.core.events import AlertState, Severity, escalation_ladder
from fbvision.core.logic_config import RuleConfig, SmoothingConfig, SmoothingKind

logger = logging.getLogger(__name__)


def _value(value: float | bool | None) -> float:
    """``None``/NaN (absent) -> 0.0; bools -> 0.0/1.0."""
    if value is None:
        return 0.0
    v = float(value)
    return 0.0 if math.isnan(v) else v


class SignalFilter(Protocol):
    def update(self, value: float | None, t: float) -> float | bool: ...

    def reset(self) -> None: ...


class Identity:
    """No smoothing (absent -> 0)."""

    def update(self, value: float | None, t: float) -> float:
        return _value(value)

    def reset(self) -> None:
        pass


class _Window:
    """The observations of the last ``window_s`` seconds of capture time, oldest first."""

    #: Slack for float capture times: a frame exactly ``window_s`` old has left the window (n frames at
    #: ``fps`` span n / fps seconds: the conversion from frame counts).
    EPS = 1e-6

    def __init__(self, window_s: float, min_frames: int) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        if min_frames < 1:
            raise ValueError(f"min_frames must be >= 1, got {min_frames}")
        self.window_s, self.min_frames = float(window_s), int(min_frames)
        self._items: deque[tuple[float, float]] = deque()

    def push(self, value: float, t: float) -> bool:
        """Add an observation at ``t``, drop those older than the window; True when enough are left to decide."""
        if self._items and t < self._items[-1][0]:  # time went back (the worker skips such frames): start afresh
            self._items.clear()
        self._items.append((t, value))
        horizon = t - self.window_s + self.EPS
        while self._items[0][0] <= horizon:
            self._items.popleft()
        return len(self._items) >= self.min_frames

    def values(self) -> list[float]:
        return [v for _, v in self._items]

    def clear(self) -> None:
        self._items.clear()


class VoteOverWindow:
    """True when at least ``fraction`` of the frames observed in the last ``window_s`` seconds are
    ``>= threshold`` (a missing value counts as not). With fewer than ``min_frames`` observations in the
    window the last decision stands (the gap policy in the module docstring)."""

    def __init__(self, window_s: float, fraction: float, min_frames: int = 1, threshold: float = 0.5) -> None:
        if not 0 < fraction <= 1:
            raise ValueError(f"the vote's fraction must be in (0, 1], got {fraction}")
        self._window = _Window(window_s, min_frames)
        self.fraction, self.threshold = fraction, threshold
        self._on = False

    @property
    def window_s(self) -> float:
        return self._window.window_s

    def update(self, value: float | None, t: float) -> bool:
        if self._window.push(1.0 if _value(value) >= self.threshold else 0.0, t):
            votes = self._window.values()
            self._on = sum(votes) >= self.fraction * len(votes) - 1e-9
        return self._on

    def reset(self) -> None:
        self._window.clear()
        self._on = False


class Ema:
    """Exponential moving average with a half-life in seconds (so it does not depend on the frame rate)."""

    def __init__(self, half_life_s: float) -> None:
        if half_life_s <= 0:
            raise ValueError("half_life_s must be > 0")
        self.half_life_s = half_life_s
        self._mean: float | None = None
        self._t: float | None = None

    def update(self, value: float | None, t: float) -> float:
        v = _value(value)
        if self._mean is None or self._t is None:
            self._mean = v
        else:
            dt = max(t - self._t, 0.0)
            keep = 0.5 ** (dt / self.half_life_s)
            self._mean = keep * self._mean + (1.0 - keep) * v
        self._t = t
        return self._mean

    def reset(self) -> None:
        self._mean = None
        self._t = None


class MedianOverWindow:
    """Median of the values observed in the last ``window_s`` seconds (a missing value counts as 0). With
    fewer than ``min_frames`` observations in the window the last output stands."""

    def __init__(self, window_s: float, min_frames: int = 1) -> None:
        self._window = _Window(window_s, min_frames)
        self._out = 0.0

    @property
    def window_s(self) -> float:
        return self._window.window_s

    def update(self, value: float | None, t: float) -> float:
        if self._window.push(_value(value), t):
            self._out = float(statistics.median(self._window.values()))
        return self._out

    def reset(self) -> None:
        self._window.clear()
        self._out = 0.0


class Hysteresis:
    """On when the value reaches ``enter``; off again only when it drops below ``exit`` (``exit <= enter``)."""

    def __init__(self, enter: float, exit: float | None = None) -> None:
        exit = enter if exit is None else exit
        if exit > enter:
            raise ValueError(f"hysteresis exit {exit} is above enter {enter}")
        self.enter, self.exit = enter, exit
        self._on = False

    def update(self, value: float | None, t: float) -> bool:
        v = _value(value)
        self._on = v >= self.exit if self._on else v >= self.enter
        return self._on

    @property
    def on(self) -> bool:
        return self._on

    def force(self, on: bool) -> None:
        """Set the state directly (resuming after a restart)."""
        self._on = on

    def reset(self) -> None:
        self._on = False


# ---------------------------------------------------------------------------------------------------------
# Episodes


@dataclass(frozen=True)
class Transition:
    """One lifecycle step of an episode.

    ``started_at`` is the condition's onset; ``t`` the capture time of the update that caused this step;
    ``ended_at`` (resolved only) the capture time the condition was first seen gone.
    """

    state: AlertState
    severity: Severity
    started_at: float
    t: float
    ended_at: float | None = None


class EpisodeTracker:
    """Hysteresis + minimum duration + severity ladder + exit delay + cooldown -> raised/ongoing/resolved.

    - The condition is *active* from a score ``>= enter`` until it drops below ``exit``.
    - A *run* starts at the first active update (its *onset*, or ``since`` when the caller knows better)
      and survives inactive gaps shorter than ``exit_after_s``.
    - ``raised`` once the run has lasted ``escalation[0].after_s``; ``ongoing`` each time the run's age
      reaches a later step (severity escalates, never every frame); ``resolved`` once the condition has
      been inactive for ``exit_after_s``.
    - ``cooldown_s``: after a resolve, a new run is not raised before this much time has passed.
    """

    def __init__(
        self,
        *,
        escalation: Iterable[tuple[float, Severity | str]],
        enter: float = 0.5,
        exit: float | None = None,
        exit_after_s: float = 0.0,
        cooldown_s: float = 0.0,
    ) -> None:
        self.escalation = escalation_ladder(escalation)
        self._hysteresis = Hysteresis(enter, exit)
        self.exit_after_s = exit_after_s
        self.cooldown_s = cooldown_s
        self.onset: float | None = None
        self.inactive_since: float | None = None
        self.severity: Severity | None = None
        self.last_resolved: float | None = None
        #: The ladder starts this much later (negative: earlier): an adaptive rule's raise age minus the first
        #: step's (``Rule.raise_after``, e.g. horse_down against the horse's own normal). Set before each update.
        self.shift_s = 0.0

    @property
    def is_open(self) -> bool:
        """An episode has been raised and not yet resolved."""
        return self.severity is not None

    @property
    def is_idle(self) -> bool:
        """No run in progress (nothing worth persisting but the cooldown)."""
        return self.onset is None

    def _level(self, age: float) -> Severity | None:
        level = None
        for after, severity in self.escalation:
            if age >= after:
                level = severity
        return level

    def update(self, score: float | None, t: float, since: float | None = None) -> list[Transition]:
        active = self._hysteresis.update(score, t)
        out: list[Transition] = []
        if active:
            if self.onset is None:
                self.onset = t if since is None else min(since, t)
            self.inactive_since = None
        elif self.onset is not None:
            if self.inactive_since is None:
                self.inactive_since = t
            if t - self.inactive_since >= self.exit_after_s:
                if self.severity is not None:
                    out.append(
                        Transition(AlertState.resolved, self.severity, self.onset, t, self.inactive_since)
                    )
                    self.last_resolved = t
                self.onset, self.inactive_since, self.severity = None, None, None
        if active and self.onset is not None:
            level = self._level(t - self.onset - self.shift_s)
            if level is not None:
                if self.severity is None:
                    if self.last_resolved is None or t - self.last_resolved >= self.cooldown_s:
                        self.severity = level
                        out.append(Transition(AlertState.raised, level, self.onset, t))
                elif level.rank > self.severity.rank:
                    self.severity = level
                    out.append(Transition(AlertState.ongoing, level, self.onset, t))
        return out

    def close(self, t: float) -> list[Transition]:
        """Force the run to end now (e.g. the track is gone for good); resolves an open episode."""
        out: list[Transition] = []
        if self.onset is not None and self.severity is not None:
            ended = self.inactive_since if self.inactive_since is not None else t
            out.append(Transition(AlertState.resolved, self.severity, self.onset, t, ended))
            self.last_resolved = t
        self.onset, self.inactive_since, self.severity = None, None, None
        self._hysteresis.reset()
        return out

    def reset(self) -> None:
        self.onset, self.inactive_since, self.severity, self.last_resolved = None, None, None, None
        self._hysteresis.reset()

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for a restart (see :meth:`load_state`)."""
        return {
            "onset": self.onset,
            "severity": None if self.severity is None else self.severity.value,
            "last_resolved": self.last_resolved,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Resume after a restart: the run goes on from its onset without a new ``raised``.

        The condition counts as active at the restart (the gap timer restarts at the first inactive
        update), so a warming-up filter does not resolve an episode that was open before the restart.
        """
        self.onset = state.get("onset")
        severity = state.get("severity")
        self.severity = None if severity is None else Severity(severity)
        self.last_resolved = state.get("last_resolved")
        self.inactive_since = None
        self._hysteresis.force(self.onset is not None)


# ---------------------------------------------------------------------------------------------------------
# DataFrame drivers (notebooks): the same classes as the streaming worker.


def _groups(df: pd.DataFrame, by: Sequence[str], time: str) -> Iterable[tuple[Any, pd.DataFrame]]:
    keys = [c for c in by if c in df.columns]
    ordered = df.sort_values(time, kind="stable")
    if not keys:
        yield (), ordered
        return
    yield from ordered.groupby(keys, sort=True, dropna=False)


def smooth(
    df: pd.DataFrame,
    column: str,
    filter_factory: Callable[[], SignalFilter],
    by: Sequence[str] = ("camera_id", "track_id"),
    time: str = "t",
) -> pd.Series:
    """Run a fresh ``filter_factory()`` over ``df[column]`` per group of ``by``, in ``time`` order.

    Returns a Series aligned with ``df`` (same index, same row order). Columns of ``by`` missing from
    ``df`` are ignored.
    """
    positional = df.reset_index(drop=True)
    results: list[float | bool | None] = [None] * len(positional)
    for _, group in _groups(positional, by, time):
        f = filter_factory()
        for row, value, t in zip(group.index, group[column].to_numpy(), group[time].to_numpy(), strict=True):
            results[row] = f.update(None if pd.isna(value) else float(value), float(t))
    return pd.Series(results, index=df.index, name=column)


def episode_transitions(
    df: pd.DataFrame,
    column: str,
    tracker_factory: Callable[[], EpisodeTracker],
    by: Sequence[str] = ("camera_id", "track_id"),
    time: str = "t",
) -> pd.DataFrame:
    """Run a fresh ``tracker_factory()`` over a smoothed score column per group; one row per transition."""
    keys = [c for c in by if c in df.columns]
    rows: list[dict[str, Any]] = []
    for group_key, group in _groups(df, keys, time):
        tracker = tracker_factory()
        key_values = group_key if isinstance(group_key, tuple) else (group_key,)
        for value, t in zip(group[column].to_numpy(), group[time].to_numpy(), strict=True):
            for tr in tracker.update(None if pd.isna(value) else float(value), float(t)):
                row = dict(zip(keys, key_values, strict=True))
                row.update(
                    state=tr.state.value,
                    severity=tr.severity.value,
                    started_at=tr.started_at,
                    t=tr.t,
                    ended_at=tr.ended_at,
                )
                rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, "state", "severity", "started_at", "t", "ended_at"])


# ---------------------------------------------------------------------------------------------------------
# From the config tree (``fbvision.core.logic_config``: pure data) to running filters and episode trackers


def build_filter(smoothing: SmoothingConfig) -> SignalFilter:
    """A fresh filter instance (one per camera/track/rule)."""
    if smoothing.kind is SmoothingKind.vote:
        return VoteOverWindow(smoothing.window_s, smoothing.fraction, smoothing.min_frames)
    if smoothing.kind is SmoothingKind.ema:
        return Ema(smoothing.ema_half_life_s)
    if smoothing.kind is SmoothingKind.median:
        return MedianOverWindow(smoothing.window_s, smoothing.min_frames)
    return Identity()


def episode_tracker(rule: RuleConfig) -> EpisodeTracker:
    """A fresh :class:`EpisodeTracker` with a rule's enter/exit thresholds, exit delay, cooldown and ladder."""
    return EpisodeTracker(
        escalation=[(s.after_s, s.severity) for s in rule.escalation],
        enter=rule.enter,
        exit=rule.exit,
        exit_after_s=rule.exit_after_s,
        cooldown_s=rule.cooldown_s,
    )
