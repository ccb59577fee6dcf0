"""Against the horse's own normal: a per-camera baseline of lying bouts and lying time over the last N days.

One :class:`HorseBaseline` per camera (the camera's :class:`~fbvision.logic.timebudget.TimeBudget`: one horse
stabled there). Policy:

* **Days.** A *baseline day* runs from ``day_start_h`` (local time in the time budget's ``timezone``; default
  noon, so a night's sleep falls in one day) to the same hour the next day. When the first frame of a new day
  arrives, the day before is **closed** from the camera's time budget: its observed and lying seconds (the
  budget's per-minute bins that start in the day) and the durations of the lying bouts that *ended* in it
  (censored bouts left out: their true length is unknown). A bout belongs to the day it ended in.
* **Which days count.** A closed day counts once it had at least ``min_observed_h`` hours observed (frames, not
  gaps; a worker restart mid-day loses the hours before the restart, since the time budget is not persisted).
  Days older than ``days`` are dropped (by date, so a camera off for a week learns afresh); at most ``days``
  are kept, each with at most ``max_bouts_per_day`` bouts (the longest kept): the state is bounded.
* **Ready** once ``min_days`` counting days hold at least ``min_bouts`` bouts together. Until then the
  baseline says nothing (``p95_bout_s`` is None) and ``horse_down`` in ``baseline`` mode behaves as ``fixed``.
* **Persistence.** :meth:`to_dict` / :meth:`from_dict` are plain JSON (never pickle); the logic worker saves
  the state in the durable Redis (``K logic:baselines``) whenever a day closes, in the same fenced commit as
  the camera's episodes, and loads it when it takes the camera (start, lease takeover).

What the baseline is for, and the evidence for and against it: ``docs/rules.md``, "Against the horse's own
normal".
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from fbvision.core.logic_config import BaselineConfig
from fbvision.logic.timebudget import TimeBudget

logger = logging.getLogger(__name__)

BASELINE_VERSION = 1
_DAY_S = 86_400.0


@dataclass(frozen=True)
class DaySummary:
    """One closed baseline day: its number (local days since 1970, shifted by ``day_start_h``), the hours
    observed, the minutes lying, and the durations (s) of the uncensored lying bouts that ended in it."""

    day: int
    observed_h: float
    lying_min: float
    bouts_s: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"day": self.day, "observed_h": round(self.observed_h, 3), "lying_min": round(self.lying_min, 3),
                "bouts_s": [round(b, 1) for b in self.bouts_s]}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DaySummary:
        bouts = tuple(float(b) for b in raw.get("bouts_s", []))
        values = (float(raw["observed_h"]), float(raw["lying_min"]), *bouts)
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"baseline day {raw.get('day')!r}: values must be finite and >= 0")
        return cls(int(raw["day"]), values[0], values[1], bouts)


class HorseBaseline:
    """The camera's horse over its last ``days`` days (see the module docstring). Feed :meth:`update` after the
    camera's time budget has seen each frame; read :attr:`ready`, :meth:`p95_bout_s`, :meth:`summary`."""

    def __init__(self, config: BaselineConfig, timezone: str = "UTC", camera_id: str = "") -> None:
        self.config = config
        self.camera_id = camera_id
        self._zone = ZoneInfo(timezone)
        self._days: list[DaySummary] = []  # closed days, oldest first
        self._open_day: int | None = None  # the day the frames are in now
        self._p95: float | None = None
        self.changed = False  # a day closed since the state was last saved (the worker clears it)

    # -- days ------------------------------------------------------------------------------------------
    def _offset_s(self, t: float) -> float:
        offset = datetime.fromtimestamp(t, self._zone).utcoffset()
        return (offset.total_seconds() if offset is not None else 0.0) - self.config.day_start_h * 3600.0

    def day_of(self, t: float) -> int:
        """The baseline day of capture time ``t``."""
        return int((t + self._offset_s(t)) // _DAY_S)

    def day_span(self, day: int, t: float) -> tuple[float, float]:
        """Start and end (epoch s) of baseline ``day`` (the UTC offset at ``t`` for both: a DST day is off by
        an hour at one end)."""
        start = day * _DAY_S - self._offset_s(t)
        return start, start + _DAY_S

    def update(self, t: float, budget: TimeBudget) -> bool:
        """The frame at ``t`` was fed to ``budget``: close the open day if ``t`` is in a later one. True when a
        day closed (the state changed)."""
        day = self.day_of(t)
        if self._open_day is None:
            self._open_day = day
            return False
        if day <= self._open_day:
            return False
        closed = self._open_day
        self._open_day = day
        self._close(closed, budget, t)
        return True

    def _close(self, day: int, budget: TimeBudget, t: float) -> None:
        start, end = self.day_span(day, t)
        sums = budget.sums_between(start, end)
        bouts = sorted((b.duration_s for b in budget.bouts() if start <= b.end < end and not b.censored),
                       reverse=True)[: self.config.max_bouts_per_day]
        summary = DaySummary(day, sums["observed_s"] / 3600.0, sums["lying_s"] / 60.0, tuple(bouts))
        self.add_day(summary)
        logger.info("camera %s: baseline day %d closed: %.1f h observed, %.0f min lying, %d bout(s)%s",
                    self.camera_id, day, summary.observed_h, summary.lying_min, len(bouts),
                    "" if self._counts(summary) else " (too little observed: not counted)")

    def add_day(self, summary: DaySummary) -> None:
        """Add a closed day (also the lab's and the tests' way in), drop days older than ``days``."""
        self._days = [d for d in self._days if d.day != summary.day]
        self._days.append(summary)
        self._days.sort(key=lambda d: d.day)
        newest = max(summary.day, self._open_day if self._open_day is not None else summary.day)
        self._days = [d for d in self._days if d.day > newest - self.config.days][-self.config.days:]
        self._p95 = None
        self.changed = True

    # -- reading ---------------------------------------------------------------------------------------
    def _counts(self, day: DaySummary) -> bool:
        return day.observed_h >= self.config.min_observed_h

    def counted_days(self) -> list[DaySummary]:
        """The kept days that had enough observed hours, oldest first."""
        return [d for d in self._days if self._counts(d)]

    def bouts_s(self) -> list[float]:
        return [b for d in self.counted_days() for b in d.bouts_s]

    @property
    def ready(self) -> bool:
        """``min_days`` counted days with ``min_bouts`` bouts between them."""
        return len(self.counted_days()) >= self.config.min_days and len(self.bouts_s()) >= self.config.min_bouts

    def p95_bout_s(self) -> float | None:
        """The 95th percentile of the counted days' bout lengths (s); None until :attr:`ready`."""
        if not self.ready:
            return None
        if self._p95 is None:
            self._p95 = float(np.percentile(np.asarray(self.bouts_s()), 95.0))
        return self._p95

    def summary(self) -> dict[str, float | int | bool | None]:
        """The baseline as numbers (reports, alert evidence): days counted, bouts, p95 and median bout (min),
        lying minutes per day (mean, min, max)."""
        days = self.counted_days()
        bouts = self.bouts_s()
        lying = [d.lying_min for d in days]
        p95 = self.p95_bout_s()
        return {
            "ready": self.ready,
            "days": len(days),
            "bouts": len(bouts),
            "p95_bout_min": None if p95 is None else p95 / 60.0,
            "median_bout_min": float(np.median(bouts)) / 60.0 if bouts else None,
            "lying_min_per_day": float(np.mean(lying)) if lying else None,
            "lying_min_per_day_min": min(lying) if lying else None,
            "lying_min_per_day_max": max(lying) if lying else None,
        }

    # -- persistence -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able state (for :meth:`from_dict`)."""
        return {"version": BASELINE_VERSION, "camera_id": self.camera_id, "open_day": self._open_day,
                "days": [d.to_dict() for d in self._days]}

    def load(self, saved: dict[str, Any]) -> None:
        """Restore :meth:`to_dict`'s state (ValueError when it is not this version's or this camera's)."""
        if saved.get("version") != BASELINE_VERSION:
            raise ValueError(f"unsupported baseline state version {saved.get('version')!r}")
        if saved.get("camera_id") not in (None, "", self.camera_id):
            raise ValueError(f"baseline of camera {saved.get('camera_id')!r} given to {self.camera_id!r}")
        open_day = saved.get("open_day")
        days = [DaySummary.from_dict(d) for d in saved.get("days", [])]
        self._days, self._open_day, self._p95 = [], None if open_day is None else int(open_day), None
        for day in days:
            self.add_day(day)
        self.changed = False

    @classmethod
    def from_dict(cls, saved: dict[str, Any], config: BaselineConfig, timezone: str = "UTC",
                  camera_id: str = "") -> HorseBaseline:
        baseline = cls(config, timezone, camera_id)
        baseline.load(saved)
        return baseline
