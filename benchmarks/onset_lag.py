"""Onset lag of ``horse_down`` per frame rate: the frame-count smoothing shipped before (vote 15 of 25 frames)
against the shipped config (windows in seconds).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/onset_lag.py

One scripted bout, no detector noise: standing until ``T_ON`` (300 s), lying for 40 min, standing again. The
per-frame *lying* signal is sampled at 1, 2.5, 5 and 15 fps, and at 5 and 1 fps with 30 % of the frames lost
(seeded; median and worst of 20 seeds). Each row runs the logic worker's own classes
(:func:`fbvision.logic.smoothing.build_filter`, :func:`~fbvision.logic.smoothing.episode_tracker`) with the
default ``horse_down`` rule; the *before* column swaps its smoothing for the frame-count vote that was shipped
(lying in 15 of the last 25 frames, :class:`FramesVote` below). The onset lag is the episode's onset (the
first frame the smoothed signal says "down") minus the true onset; the warning is raised the first escalation
age (30 min) after that onset, so its delay is the same lag. docs/rules.md has the table this prints.
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections import deque
from collections.abc import Callable

from fbvision.core.logic_config import LogicConfig
from fbvision.logic.smoothing import SignalFilter, build_filter, episode_tracker

T_ON = 300.0  # s: the horse lies down
BOUT_S = 2400.0  # s lying (past the 30 min warning)
AFTER_S = 300.0  # s standing after the bout
SAMPLINGS: list[tuple[str, float, float]] = [  # label, fps, fraction of frames lost
    ("1 fps", 1.0, 0.0),
    ("2.5 fps", 2.5, 0.0),
    ("5 fps", 5.0, 0.0),
    ("15 fps", 15.0, 0.0),
    ("5 fps, 30 % frames lost", 5.0, 0.3),
    ("1 fps, 30 % frames lost", 1.0, 0.3),
]
SEEDS = 20


class FramesVote:
    """The frame-count vote shipped before windows were in seconds: at least ``k`` of the last ``n`` frames
    lying (a frame without a horse counts as not lying)."""

    def __init__(self, k: int = 15, n: int = 25) -> None:
        self.k, self.votes = k, deque[bool](maxlen=n)

    def update(self, value: float | None, t: float) -> bool:
        self.votes.append(value is not None and value >= 0.5)
        return sum(self.votes) >= self.k

    def reset(self) -> None:
        self.votes.clear()


def frame_times(fps: float, loss: float, seed: int) -> list[float]:
    """Capture times of the frames that arrive: every ``1/fps`` s, each lost with probability ``loss``."""
    rng = random.Random(seed)
    n = int((T_ON + BOUT_S + AFTER_S) * fps)
    return [i / fps for i in range(n) if loss <= 0 or rng.random() >= loss]


def lying(t: float) -> float:
    return 1.0 if T_ON - 1e-9 <= t < T_ON + BOUT_S - 1e-9 else 0.0


def run(make_filter: Callable[[], SignalFilter], times: list[float]) -> dict[str, float | None]:
    """Onset lag, warning delay (after true onset + first escalation age) and resolve delay, in seconds."""
    rule = LogicConfig().rules.horse_down
    first_age = rule.escalation[0].after_s
    f, tracker = make_filter(), episode_tracker(rule)
    out: dict[str, float | None] = {"onset_lag_s": None, "raise_delay_s": None, "raised": 0}
    for t in times:
        for tr in tracker.update(float(f.update(lying(t), t)), t):
            if tr.state.value == "raised":
                out["raised"] = int(out["raised"] or 0) + 1
                out["onset_lag_s"] = tr.started_at - T_ON
                out["raise_delay_s"] = tr.t - (T_ON + first_age)
    return out


def measure() -> list[dict[str, object]]:
    shipped = LogicConfig().rules.horse_down.smoothing
    rows: list[dict[str, object]] = []
    for label, fps, loss in SAMPLINGS:
        seeds = range(SEEDS) if loss > 0 else [0]
        row: dict[str, object] = {"sampling": label}
        for column, make in (("before", FramesVote), ("after", lambda: build_filter(shipped))):
            runs = [run(make, frame_times(fps, loss, seed)) for seed in seeds]
            lags = [r["onset_lag_s"] for r in runs]
            row[f"{column}_raised"] = sorted({r["raised"] for r in runs})
            if any(lag is None for lag in lags):
                row[column] = "no alert" if all(lag is None for lag in lags) else "alert missed in some runs"
                continue
            values = [float(lag) for lag in lags if lag is not None]
            if len(values) == 1:
                row[column] = f"{values[0]:.1f} s"
            else:
                row[column] = f"{statistics.median(values):.1f} s (worst {max(values):.1f} s)"
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    shipped = LogicConfig().rules.horse_down.smoothing
    print(f"horse_down onset lag; before: frame-count vote 15 of 25 frames; after: {shipped.model_dump(mode='json')}")
    print("| sampling | before: vote 15 of 25 frames | after: shipped smoothing (seconds) |")
    print("|---|---|---|")
    for row in measure():
        print(f"| {row['sampling']} | {row['before']} | {row['after']} |")


if __name__ == "__main__":
    main()
