"""A horse's day: rolling counters of lying, standing, moving and absent time, lying bouts and posture changes.

One :class:`TimeBudget` per track and one per camera (fed only while exactly one horse is in view: "one horse
stabled there"). It is fed one observation per frame - capture time, posture (``lying``, ``standing`` or
``absent``) and whether the horse moves - and keeps:

* **Per-bin counters** over the rolling window (default 24 h in 1-minute bins, a ring of 1440 rows): seconds
  observed, lying, standing, absent, moving, and the lie-downs and get-ups that started in the bin. Memory is
  fixed by ``window_s / bin_s`` whatever the frame rate or the run length.
* **Lying bouts** (start, end, censored), the newest ``max_bouts``.

Time, not frames: the interval from one frame to the next belongs to the posture of the first (the state holds
until the next frame says otherwise). **Gap policy**: frames further apart than ``max_gap_s`` leave *unknown*
time between them - counted in no posture, reported as ``unknown_s`` - and no lie-down or get-up is counted
across the gap. A lying bout with lying on both sides of a gap of at most ``bout_gap_s`` goes on across it (its
length is wall time, the gap inside it unknown, not lying); a longer gap, or another posture after it, ends the
bout at its last lying frame, marked ``censored`` (its true end is unknown).

Debouncing: a posture spell (a run of equal raw postures) shorter than ``min_posture_s`` is noise and its
time goes to the posture around it (a one-frame posture glitch, a lying horse lifting its head); so does the
horse unseen for less than ``min_absent_s`` (missed detections, a track lost and re-confirmed); a spell that
lasts is confirmed from its *first* frame, so lying time is not shortened by the confirmation delay. A
lie-down is a confirmed change standing -> lying, a get-up lying -> standing; the posture before the first
spell (after a start or a gap) is unknown, so that change counts as neither.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from fbvision.core.logic_config import TimeBudgetConfig

LYING, STANDING, ABSENT = "lying", "standing", "absent"
POSTURES = (LYING, STANDING, ABSENT)
# Columns of the per-bin counters.
_OBSERVED, _LYING, _STANDING, _ABSENT, _MOVING, _DOWNS, _UPS = range(7)
_COLUMN_OF = {LYING: _LYING, STANDING: _STANDING, ABSENT: _ABSENT}
_N_COLUMNS = 7


@dataclass(frozen=True)
class Bout:
    """One lying bout: capture times of its first lying frame and of the frame that ended it (or the last
    lying frame before a gap: then ``censored``, its true end is unknown)."""

    start: float
    end: float
    censored: bool = False

    @property
    def duration_s(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class TimeBudgetSummary:
    """The rolling window ending at ``t``. Seconds unless named ``_min``/``_h``; rates are per observed hour.

    ``covered_s``: the window's span that lies after the first frame (less than ``window_s`` during the first
    day); ``observed_s`` of it had frames, ``unknown_s`` = the rest (gaps). Shares (``lying_pct``) are of the
    observed time. ``bouts``: lying bouts that ended in the window, plus the one in progress; ``restless_*``:
    during the night hours only.
    """

    t: float
    window_s: float
    covered_s: float
    observed_s: float
    unknown_s: float
    lying_s: float
    standing_s: float
    absent_s: float
    moving_s: float
    lying_min: float
    lying_pct: float
    bouts: int
    bouts_censored: int
    longest_bout_min: float
    mean_bout_min: float
    current_bout_min: float  # the bout in progress (0: not lying)
    lie_downs: int
    get_ups: int
    lie_downs_per_h: float
    get_ups_per_h: float
    night_observed_h: float
    restless_moving_min_per_h: float  # minutes moving per observed night hour
    night_transitions_per_h: float  # lie-downs + get-ups per observed night hour
    absent_min: float
    posture: str | None  # the confirmed posture now (None: unknown)

    def to_dict(self) -> dict[str, float | int | str | None]:
        out: dict[str, float | int | str | None] = {}
        for key, value in asdict(self).items():
            if isinstance(value, float):
                value = round(value, 3) if math.isfinite(value) else None  # JSON has no NaN
            out[key] = value
        return out

    def gauges(self) -> dict[str, float]:
        """The numeric fields (for Prometheus gauges): NaN where undefined."""
        return {k: float(v) for k, v in asdict(self).items() if isinstance(v, (int, float)) and k != "t"}


SUMMARY_FIELDS: tuple[str, ...] = tuple(TimeBudgetSummary.__dataclass_fields__)


def _per_h(count: float, seconds: float) -> float:
    return count / (seconds / 3600.0) if seconds > 0 else math.nan


class TimeBudget:
    """Rolling counters of one horse (a track, or a camera with one horse). Feed :meth:`observe` in capture
    order; :meth:`summary` at any time. Not thread-safe."""

    def __init__(self, config: TimeBudgetConfig) -> None:
        self.config = config
        self.bin_s = float(config.bin_s)
        self.n_bins = int(math.ceil(config.window_s / self.bin_s))
        self._bins = np.zeros((self.n_bins, _N_COLUMNS), dtype=np.float32)
        self._bin_of_slot = np.full(self.n_bins, -1, dtype=np.int64)  # absolute bin number held by each slot
        self._first_t: float | None = None
        self._last_t: float | None = None
        self._last_posture: str | None = None
        self._last_moving = False
        self._state: str | None = None  # the confirmed posture (None: unknown, after a start or a gap)
        self._run_posture: str | None = None  # the raw spell in progress, since _run_start
        self._run_start = 0.0
        self._pending: list[tuple[float, float]] = []  # intervals of that spell while it is not confirmed
        self._bout_start: float | None = None
        self._bout_censored = False
        self._bouts: deque[Bout] = deque(maxlen=config.max_bouts)
        self._gap_bout: Bout | None = None  # a bout interrupted by a gap, until the posture after it is known
        self._zone = ZoneInfo(config.timezone)
        self._cached: TimeBudgetSummary | None = None

    # -- feeding ---------------------------------------------------------------------------------------
    def observe(self, t: float, posture: str, moving: bool = False) -> None:
        """One frame at capture time ``t``: the horse's raw posture in it and whether it moves."""
        if posture not in _COLUMN_OF:
            raise ValueError(f"posture must be one of {POSTURES}, got {posture!r}")
        t = float(t)
        if self._last_t is None:
            self._start(t, posture, moving)
            return
        dt = t - self._last_t
        if dt <= 0:
            return  # a repeated or older time: nothing elapsed
        if dt > self.config.max_gap_s:
            self.gap()
            self._start(t, posture, moving)
            return
        self._elapse(self._last_t, t)
        if posture != self._run_posture:
            self._end_run(t)
            self._run_posture, self._run_start = posture, t
        elif self._run_posture != self._state and t - self._run_start >= self._min_spell(self._run_posture):
            self._confirm()
        self._last_t, self._last_posture, self._last_moving = t, posture, moving

    def gap(self) -> None:
        """What follows the last frame is unknown (a frame gap, two horses in view): settle the spell in
        progress, hold a lying bout (it goes on if lying is confirmed again within ``bout_gap_s``, else it is
        kept as censored), forget the confirmed posture. The next frame starts afresh."""
        if self._last_t is None:
            return
        self._end_run(self._last_t)
        if self._state == LYING and self._bout_start is not None:
            # Held until the posture after the gap is known: lying again soon enough, the bout goes on.
            self._gap_bout = Bout(self._bout_start, self._last_t, censored=self._bout_censored)
        self._bout_start = None
        self._state = None
        self._run_posture = None
        self._last_t = None

    def _start(self, t: float, posture: str, moving: bool) -> None:
        if self._first_t is None:
            self._first_t = t
        self._last_t, self._last_posture, self._last_moving = t, posture, moving
        self._run_posture, self._run_start = posture, t
        self._pending = []
        if self._min_spell(posture) <= 0:
            self._confirm()

    def _elapse(self, t0: float, t1: float) -> None:
        """[t0, t1) had the last frame's raw posture: observed, moving, and held while its spell is unconfirmed."""
        self._add(t0, t1, _OBSERVED)
        if self._last_moving and self._last_posture != ABSENT:
            self._add(t0, t1, _MOVING)
        if self._run_posture == self._state:
            self._add(t0, t1, _COLUMN_OF[self._state])
        else:
            self._pending.append((t0, t1))

    def _end_run(self, t: float) -> None:
        """The raw spell in progress ends at ``t``: confirmed if it lasted, else its time goes to the posture
        around it (to its own posture when none is confirmed: nothing better is known)."""
        if self._run_posture is None or self._run_posture == self._state:
            return
        if t - self._run_start >= self._min_spell(self._run_posture):
            self._confirm()
            return
        # Too short to be a posture: its time goes to the confirmed posture, or to its own while none is (after
        # a start or a gap), without confirming it.
        column = _COLUMN_OF[self._state if self._state is not None else self._run_posture]
        for a, b in self._pending:
            self._add(a, b, column)
        self._pending = []

    def _min_spell(self, posture: str) -> float:
        return self.config.min_absent_s if posture == ABSENT else self.config.min_posture_s

    def _confirm(self) -> None:
        """The spell in progress is the posture now, from its first frame on."""
        new, at, old = self._run_posture, self._run_start, self._state
        if new is None:
            return
        held, self._gap_bout = self._gap_bout, None
        if held is not None and old is None and new == LYING and at - held.end <= self.config.bout_gap_s:
            self._bout_start, self._bout_censored = held.start, held.censored  # lying again: the bout goes on
        else:
            if held is not None:
                self._bouts.append(Bout(held.start, held.end, censored=True))
            if old == LYING and new != LYING and self._bout_start is not None:
                self._bouts.append(Bout(self._bout_start, at, censored=self._bout_censored))
                self._bout_start = None
                if new == STANDING:
                    self._count(at, _UPS)
            if new == LYING:
                self._bout_start = at
                self._bout_censored = old is None  # its start follows unknown time
                if old == STANDING:
                    self._count(at, _DOWNS)
        column = _COLUMN_OF[new]
        for a, b in self._pending:
            self._add(a, b, column)
        self._pending = []
        self._state = new

    # -- bins ------------------------------------------------------------------------------------------
    def _slot(self, b: int) -> int | None:
        slot = b % self.n_bins
        held = int(self._bin_of_slot[slot])
        if held == b:
            return slot
        if held > b:
            return None  # older than the window
        self._bins[slot] = 0.0
        self._bin_of_slot[slot] = b
        return slot

    def _add(self, t0: float, t1: float, column: int) -> None:
        b = int(t0 // self.bin_s)
        while t0 < t1:
            end = min(t1, (b + 1) * self.bin_s)
            slot = self._slot(b)
            if slot is not None:
                self._bins[slot, column] += end - t0
            t0, b = end, b + 1

    def _count(self, t: float, column: int) -> None:
        slot = self._slot(int(t // self.bin_s))
        if slot is not None:
            self._bins[slot, column] += 1

    # -- persistence -----------------------------------------------------------------------------------
    STATE_VERSION = 1

    def to_dict(self) -> dict:
        """The counters as plain JSON (never pickle): the bins still in the window (bin number after ``b0`` + the
        seven columns, rounded to 0.1 s; ~35 KB for a full day of 1-minute bins), the bouts and a lying bout in progress. What follows the last frame is not
        saved: a budget loaded from this continues as after a frame gap (:meth:`gap`) - the time until the next
        frame is unknown, and a lying bout goes on if lying is confirmed again within ``bout_gap_s``."""
        valid = np.flatnonzero(self._bin_of_slot >= 0)
        order = valid[np.argsort(self._bin_of_slot[valid])]
        b0 = int(self._bin_of_slot[order[0]]) if len(order) else 0

        def compact(v: float) -> float | int:
            v = round(float(v), 1)
            return int(v) if v.is_integer() else v

        rows = [[int(self._bin_of_slot[i]) - b0, *(compact(v) for v in self._bins[i])] for i in order
                if self._bins[i].any()]
        held = self._gap_bout
        if self._state == LYING and self._bout_start is not None and self._last_t is not None:
            held = Bout(self._bout_start, self._last_t, censored=self._bout_censored)
        return {
            "v": self.STATE_VERSION, "bin_s": self.bin_s, "n_bins": self.n_bins, "first_t": self._first_t,
            "last_t": self._last_t if self._last_t is not None else (held.end if held else None),
            "b0": b0, "bins": rows, "bouts": [[b.start, b.end, b.censored] for b in self._bouts],
            "held_bout": None if held is None else [held.start, held.end, held.censored],
        }

    def load(self, state: dict) -> None:
        """Restore :meth:`to_dict`'s counters into this (fresh) budget. ValueError when the state is of another
        version or bin layout (then the caller starts afresh)."""
        if state.get("v") != self.STATE_VERSION:
            raise ValueError(f"time budget state version {state.get('v')!r}, expected {self.STATE_VERSION}")
        if float(state["bin_s"]) != self.bin_s or int(state["n_bins"]) != self.n_bins:
            raise ValueError(f"time budget state has bins of {state['bin_s']} s x {state['n_bins']}, "
                             f"this config {self.bin_s} s x {self.n_bins}")
        self._bins[:] = 0.0
        self._bin_of_slot[:] = -1
        b0 = int(state.get("b0", 0))
        for row in state["bins"]:
            b = b0 + int(row[0])
            slot = b % self.n_bins
            if int(self._bin_of_slot[slot]) > b:
                continue
            self._bin_of_slot[slot] = b
            self._bins[slot] = np.asarray(row[1:1 + _N_COLUMNS], dtype=np.float32)
        self._bouts.clear()
        self._bouts.extend(Bout(float(a), float(b), bool(c)) for a, b, c in state["bouts"])
        held = state.get("held_bout")
        self._gap_bout = None if held is None else Bout(float(held[0]), float(held[1]), bool(held[2]))
        first_t = state.get("first_t")
        self._first_t = None if first_t is None else float(first_t)
        # As after a gap: the next frame starts afresh, the posture before it is unknown.
        self._last_t = self._state = self._run_posture = self._bout_start = None
        self._pending = []
        self._cached = None

    # -- reading ---------------------------------------------------------------------------------------
    @property
    def posture(self) -> str | None:
        return self._state

    @property
    def last_t(self) -> float | None:
        return self._last_t

    def bouts(self) -> list[Bout]:
        return list(self._bouts)

    def nbytes(self) -> int:
        """Memory of the counters (the bouts add ~100 bytes each, at most ``max_bouts``)."""
        return int(self._bins.nbytes + self._bin_of_slot.nbytes)

    def _valid(self, t: float, span_s: float) -> np.ndarray:
        now = int(t // self.bin_s)
        first = now - int(math.ceil(span_s / self.bin_s)) + 1
        return (self._bin_of_slot >= first) & (self._bin_of_slot <= now)

    def window_sums(self, t: float, span_s: float) -> dict[str, float]:
        """Sums over the bins of the last ``span_s`` seconds up to ``t`` (whole bins)."""
        sums = self._bins[self._valid(t, span_s)].sum(axis=0, dtype=np.float64)
        return {"observed_s": float(sums[_OBSERVED]), "lying_s": float(sums[_LYING]),
                "standing_s": float(sums[_STANDING]), "absent_s": float(sums[_ABSENT]),
                "moving_s": float(sums[_MOVING]), "lie_downs": float(sums[_DOWNS]), "get_ups": float(sums[_UPS])}

    def sums_between(self, t0: float, t1: float) -> dict[str, float]:
        """Sums over the bins that start in [t0, t1) and are still in the ring (the per-horse baseline closes
        its days with this)."""
        first, last = int(math.ceil(t0 / self.bin_s)), int(math.ceil(t1 / self.bin_s)) - 1
        rows = self._bins[(self._bin_of_slot >= first) & (self._bin_of_slot <= last)]
        sums = rows.sum(axis=0, dtype=np.float64)
        return {"observed_s": float(sums[_OBSERVED]), "lying_s": float(sums[_LYING]),
                "standing_s": float(sums[_STANDING]), "absent_s": float(sums[_ABSENT]),
                "moving_s": float(sums[_MOVING]), "lie_downs": float(sums[_DOWNS]), "get_ups": float(sums[_UPS])}

    def night_mask(self, bins: np.ndarray, t: float) -> np.ndarray:
        """Which of the absolute bin numbers ``bins`` start during the night hours (the zone's UTC offset at
        ``t`` for all: within a day of a DST change one hour may be off)."""
        offset = datetime.fromtimestamp(t, self._zone).utcoffset()
        offset_s = offset.total_seconds() if offset is not None else 0.0
        hours = ((bins * self.bin_s + offset_s) % 86_400.0) / 3600.0
        start, end = self.config.night_start_h, self.config.night_end_h
        if start > end:
            return (hours >= start) | (hours < end)
        return (hours >= start) & (hours < end)

    def is_night(self, t: float) -> bool:
        return bool(self.night_mask(np.array([int(t // self.bin_s)]), t)[0])

    def summary(self, t: float | None = None, *, fresh: bool = False) -> TimeBudgetSummary | None:
        """The window ending at ``t`` (default: the last frame); None before the first frame. Recomputed at
        most every ``summary_interval_s`` unless ``fresh``."""
        if t is None:
            t = self._last_t if self._last_t is not None else self._cached.t if self._cached else None
        if t is None or self._first_t is None:
            return None
        cached = self._cached
        if not fresh and cached is not None and 0 <= t - cached.t < self.config.summary_interval_s:
            return cached
        window = float(self.config.window_s)
        valid = self._valid(t, window)
        rows = self._bins[valid]
        sums = rows.sum(axis=0, dtype=np.float64)
        night = self.night_mask(self._bin_of_slot[valid], t)
        night_sums = rows[night].sum(axis=0, dtype=np.float64)
        covered = max(0.0, min(window, t - self._first_t))
        observed = float(sums[_OBSERVED])
        since = t - window
        ended = [*self._bouts, *([self._gap_bout] if self._gap_bout is not None else [])]
        bouts = [b.duration_s for b in ended if b.end > since]
        censored = sum(1 for b in ended if b.end > since and (b.censored or b is self._gap_bout))
        current = 0.0
        if self._state == LYING and self._bout_start is not None and self._last_t is not None:
            current = max(0.0, self._last_t - self._bout_start)
            bouts.append(current)
            censored += int(self._bout_censored)
        night_obs = float(night_sums[_OBSERVED])
        summary = TimeBudgetSummary(
            t=t,
            window_s=window,
            covered_s=covered,
            observed_s=observed,
            unknown_s=max(0.0, covered - observed),
            lying_s=float(sums[_LYING]),
            standing_s=float(sums[_STANDING]),
            absent_s=float(sums[_ABSENT]),
            moving_s=float(sums[_MOVING]),
            lying_min=float(sums[_LYING]) / 60.0,
            lying_pct=100.0 * float(sums[_LYING]) / observed if observed > 0 else math.nan,
            bouts=len(bouts),
            bouts_censored=censored,
            longest_bout_min=max(bouts) / 60.0 if bouts else 0.0,
            mean_bout_min=sum(bouts) / len(bouts) / 60.0 if bouts else 0.0,
            current_bout_min=current / 60.0,
            lie_downs=int(round(sums[_DOWNS])),
            get_ups=int(round(sums[_UPS])),
            lie_downs_per_h=_per_h(float(sums[_DOWNS]), observed),
            get_ups_per_h=_per_h(float(sums[_UPS]), observed),
            night_observed_h=night_obs / 3600.0,
            restless_moving_min_per_h=_per_h(float(night_sums[_MOVING]) / 60.0, night_obs),
            night_transitions_per_h=_per_h(float(night_sums[_DOWNS] + night_sums[_UPS]), night_obs),
            absent_min=float(sums[_ABSENT]) / 60.0,
            posture=self._state,
        )
        self._cached = summary
        return summary

    def bins_table(self, t: float | None = None) -> list[dict[str, float]]:
        """Per bin of the window ending at ``t`` (oldest first): bin start time and its counters (for plots)."""
        t = self._last_t if t is None else t
        if t is None:
            return []
        valid = self._valid(t, self.config.window_s)
        order = np.argsort(self._bin_of_slot[valid])
        starts = self._bin_of_slot[valid][order] * self.bin_s
        rows = self._bins[valid][order]
        names = ("observed_s", "lying_s", "standing_s", "absent_s", "moving_s", "lie_downs", "get_ups")
        return [{"t": float(s), **{n: float(v) for n, v in zip(names, row, strict=True)}}
                for s, row in zip(starts, rows, strict=True)]
