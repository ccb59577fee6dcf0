"""Smoothing filters and the episode state machine, streamed and over a DataFrame (same classes)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fbvision.core.events import AlertState, Severity
from fbvision.logic.smoothing import (
    Ema,
    EpisodeTracker,
    Hysteresis,
    Identity,
    MedianOverWindow,
    VoteOverWindow,
    episode_transitions,
    smooth,
)

FPS = 5.0


def KOfN(k, n, min_frames=None):  # noqa: N802 - the frame-count vote these tables were written for, in seconds at FPS
    return VoteOverWindow(window_s=n / FPS, fraction=k / n, min_frames=k if min_frames is None else min_frames)


def MedianOfLast(n):  # noqa: N802 - the median of n frames, as a window in seconds at FPS
    return MedianOverWindow(window_s=n / FPS)


def stream(f, values, dt=1 / FPS):
    return [f.update(v, i * dt) for i, v in enumerate(values)]


@pytest.mark.parametrize(
    ("make", "values", "expected"),
    [
        pytest.param(
            lambda: KOfN(2, 3), [1, 0, 1, 0, 0, 1], [False, False, True, False, False, False], id="kofn"
        ),
        pytest.param(lambda: KOfN(1, 1), [1, None, 1], [True, False, True], id="kofn-none-is-zero"),
        pytest.param(
            lambda: KOfN(3, 5, min_frames=4), [1, 1, float("nan"), 1, 0], [False, False, False, True, True],
            id="kofn-nan",
        ),
        pytest.param(lambda: MedianOfLast(3), [0, 5, 0, 5, 5], [0.0, 2.5, 0.0, 5.0, 5.0], id="median"),
        pytest.param(lambda: MedianOfLast(3), [4, None, None], [4.0, 2.0, 0.0], id="median-absent-zero"),
        pytest.param(
            lambda: Hysteresis(0.7, 0.3),
            [0.5, 0.8, 0.5, 0.31, 0.29, 0.5],
            [False, True, True, True, False, False],
            id="hysteresis",
        ),
        pytest.param(lambda: Identity(), [0.3, None], [0.3, 0.0], id="identity"),
    ],
)
def test_filter_tables(make, values, expected):
    assert stream(make(), values) == expected


def test_ema_uses_capture_time_half_life():
    ema = Ema(half_life_s=1.0)
    assert ema.update(0.0, 0.0) == 0.0
    assert ema.update(1.0, 1.0) == pytest.approx(0.5)  # one half-life later: halfway
    assert ema.update(1.0, 3.0) == pytest.approx(1 - 0.5 * 0.25)
    ema.reset()
    assert ema.update(1.0, 10.0) == 1.0


def test_bad_parameters_fail():
    with pytest.raises(ValueError):
        VoteOverWindow(window_s=1.0, fraction=4 / 3)
    with pytest.raises(ValueError):
        VoteOverWindow(window_s=0.0, fraction=0.5)
    with pytest.raises(ValueError):
        MedianOverWindow(window_s=1.0, min_frames=0)
    with pytest.raises(ValueError):
        Hysteresis(0.3, 0.7)
    with pytest.raises(ValueError):
        EpisodeTracker(escalation=[(10, "critical"), (20, "warning")])


# ----------------------------------------------------------------------------------------------------------
# Episodes


def run_episode(tracker, samples):
    """samples: list of (t, score); returns [(state, severity, started_at, t, ended_at)]."""
    out = []
    for t, score in samples:
        for tr in tracker.update(score, t):
            out.append((tr.state.value, tr.severity.value, tr.started_at, tr.t, tr.ended_at))
    return out


def seconds(on_off, step=1.0):
    """[(value, n_seconds), ...] -> per-second samples starting at t=0."""
    samples, t = [], 0.0
    for value, n in on_off:
        for _ in range(int(n / step)):
            samples.append((t, value))
            t += step
    return samples


@pytest.mark.parametrize(
    ("kwargs", "samples", "expected"),
    [
        pytest.param(
            dict(escalation=[(10, "warning"), (20, "critical")], exit_after_s=3),
            seconds([(0, 5), (1, 30), (0, 10)]),
            [
                ("raised", "warning", 5, 15, None),
                ("ongoing", "critical", 5, 25, None),
                ("resolved", "critical", 5, 38, 35),
            ],
            id="raise-escalate-resolve",
        ),
        pytest.param(
            dict(escalation=[(10, "warning")], exit_after_s=3),
            seconds([(1, 8), (0, 5), (1, 8)]),
            [],
            id="short-bouts-never-raise",
        ),
        pytest.param(
            dict(escalation=[(10, "warning")], exit_after_s=3),
            seconds([(1, 8), (0, 2), (1, 5), (0, 5)]),
            [("raised", "warning", 0, 10, None), ("resolved", "warning", 0, 18, 15)],
            id="gap-shorter-than-exit-keeps-the-run",
        ),
        pytest.param(
            dict(escalation=[(0, "warning")], exit_after_s=0, cooldown_s=10),
            seconds([(1, 2), (0, 2), (1, 2), (0, 10), (1, 2)]),
            [
                ("raised", "warning", 0, 0, None),
                ("resolved", "warning", 0, 2, 2),
                ("raised", "warning", 16, 16, None),
            ],
            id="cooldown-suppresses-flapping",
        ),
        pytest.param(
            dict(escalation=[(0, "info")], enter=0.8, exit=0.2),
            [(0, 0.5), (1, 0.9), (2, 0.5), (3, 0.1)],
            [("raised", "info", 1, 1, None), ("resolved", "info", 1, 3, 3)],
            id="hysteresis-thresholds",
        ),
    ],
)
def test_episode_tracker_table(kwargs, samples, expected):
    assert run_episode(EpisodeTracker(**kwargs), samples) == expected


def test_episode_since_sets_onset_and_close_resolves():
    tracker = EpisodeTracker(escalation=[(60, "warning")])
    assert tracker.update(1.0, 80.0, since=30.0) == []
    (raised,) = tracker.update(1.0, 90.5, since=85.0)  # `since` only matters when a run starts
    assert (raised.state, raised.started_at) == (AlertState.raised, 30.0)
    (resolved,) = tracker.close(120.0)
    assert resolved.state is AlertState.resolved and resolved.ended_at == 120.0
    assert tracker.is_idle and not tracker.is_open


def test_episode_state_round_trip_resumes_without_raising_again():
    kwargs = dict(escalation=[(10, "warning"), (20, "critical")], exit_after_s=5)
    first = EpisodeTracker(**kwargs)
    before = run_episode(first, seconds([(1, 15)]))
    assert [e[0] for e in before] == ["raised"]

    resumed = EpisodeTracker(**kwargs)
    resumed.load_state(first.state_dict())
    # A warming-up filter gives a few zeros right after the restart: no resolve, no second raise.
    after = run_episode(resumed, [(100.0, 0.0), (101.0, 0.0)] + [(102.0 + i, 1.0) for i in range(3)])
    assert after == [("ongoing", "critical", 0.0, 102.0, None)]
    assert resumed.severity is Severity.critical


# ----------------------------------------------------------------------------------------------------------
# One implementation, two drivers


def scripted_frame(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for track_id in (1, 2):
        for i in range(200):
            value = float(rng.random() < (0.8 if 50 <= i < 120 else 0.1))
            rows.append(
                {
                    "camera_id": "c1",
                    "track_id": track_id,
                    "t": 1000 + i / FPS,
                    "score": np.nan if i % 37 == 0 else value,
                }
            )
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed)  # shuffled: the driver must sort by time


@pytest.mark.parametrize(
    "factory",
    [
        lambda: KOfN(3, 5),
        lambda: Ema(1.5),
        lambda: MedianOfLast(5),
    ],
    ids=["vote", "ema", "median"],
)
def test_dataframe_driver_equals_streaming(factory):
    df = scripted_frame()
    notebook = smooth(df, "score", factory)
    assert notebook.index.equals(df.index)
    for _, group in df.groupby("track_id"):
        group = group.sort_values("t")
        f = factory()
        streamed = [
            f.update(None if math.isnan(v) else v, t) for v, t in zip(group["score"], group["t"], strict=True)
        ]
        assert list(notebook.loc[group.index]) == streamed


def test_dataframe_driver_keeps_row_order_with_a_duplicate_index():
    df = pd.DataFrame(
        {"track_id": [1, 1, 2, 1], "t": [0.2, 0.0, 0.0, 0.4], "score": [1.0, 0.0, 1.0, 1.0]},
        index=[7, 7, 7, 8],
    )
    out = smooth(df, "score", lambda: KOfN(2, 2), by=("track_id",))
    assert list(out) == [False, False, False, True] and list(out.index) == [7, 7, 7, 8]


def test_episode_transitions_over_dataframe_equals_streaming():
    df = scripted_frame()
    df["smoothed"] = smooth(df, "score", lambda: KOfN(3, 5))

    def make():
        return EpisodeTracker(escalation=[(2, "warning"), (8, "critical")], exit_after_s=1.0)

    table = episode_transitions(df, "smoothed", make)
    assert len(table) > 0
    for track_id, group in df.groupby("track_id"):
        group = group.sort_values("t")
        expected = run_episode(make(), zip(group["t"], group["smoothed"].astype(float), strict=True))
        got = table[table.track_id == track_id]
        ended = [None if pd.isna(v) else v for v in got.ended_at]
        assert list(zip(got.state, got.severity, got.started_at, got.t, ended, strict=True)) == expected
