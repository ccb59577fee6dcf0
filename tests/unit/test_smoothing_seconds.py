"""Smoothing windows are seconds: the same config gives the same alerts at any frame rate and with lost frames;
the gap policy; old frame-count configs are refused with how to convert them."""

from __future__ import annotations

import random
import textwrap

import pydantic
import pytest

from fbvision.core.config import ConfigError, load_settings
from fbvision.core.logic_config import LogicConfig, SmoothingConfig
from fbvision.logic.smoothing import MedianOverWindow, VoteOverWindow, build_filter, episode_tracker

T_ON = 300.0  # the horse lies down...
T_OFF = T_ON + 2400.0  # ...for 40 min (past the 30 min warning, short of the 60 min critical)
END = T_OFF + 300.0
RISE = (T_ON + 600.0, T_ON + 630.0)  # a 30 s stand within the bout: shorter than exit_after_s, not an end
GLITCH = (100.0, 100.5)  # half a second misread as lying while standing


def lying(t: float) -> float:
    if GLITCH[0] <= t < GLITCH[1]:
        return 1.0
    if RISE[0] <= t < RISE[1]:
        return 0.0
    return 1.0 if T_ON <= t < T_OFF else 0.0


def frame_times(fps: float, loss: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [i / fps for i in range(int(END * fps)) if loss == 0 or rng.random() >= loss]


def transitions(fps: float, loss: float = 0.0, seed: int = 0) -> list:
    rule = LogicConfig().rules.horse_down  # the shipped rule and its smoothing
    f, tracker = build_filter(rule.smoothing), episode_tracker(rule)
    return [tr for t in frame_times(fps, loss, seed) for tr in tracker.update(float(f.update(lying(t), t)), t)]


SAMPLINGS = [
    pytest.param(1.0, 0.0, 0, id="1fps"),
    pytest.param(2.5, 0.0, 0, id="2.5fps"),
    pytest.param(5.0, 0.0, 0, id="5fps"),
    pytest.param(15.0, 0.0, 0, id="15fps"),
    *[pytest.param(fps, 0.3, seed, id=f"{fps:g}fps-30%lost-seed{seed}") for fps in (2.5, 5.0, 15.0) for seed in (1, 2, 3)],
]


@pytest.mark.parametrize(("fps", "loss", "seed"), SAMPLINGS)
def test_same_alerts_within_one_window_at_any_frame_rate(fps, loss, seed):
    rule = LogicConfig().rules.horse_down
    window = rule.smoothing.window_s
    first_age = rule.escalation[0].after_s
    got = transitions(fps, loss, seed)
    # The same decisions: one warning raised after 30 min down, resolved once standing for exit_after_s;
    # the glitch and the short rise change nothing.
    assert [(tr.state.value, tr.severity.value) for tr in got] == [("raised", "warning"), ("resolved", "warning")]
    raised, resolved = got
    assert T_ON <= raised.started_at <= T_ON + window  # onset found within one window
    assert T_ON + first_age <= raised.t <= T_ON + first_age + window
    assert raised.started_at == resolved.started_at
    assert T_OFF <= resolved.ended_at <= T_OFF + window  # the end found within one window
    assert resolved.t == pytest.approx(resolved.ended_at + rule.exit_after_s, abs=window)


def test_onset_lag_does_not_grow_at_a_low_frame_rate():
    """Frame counts lagged 14 s at 1 fps and 0.9 s at 15 fps (15 of 25 frames); seconds lag alike."""
    lags = {fps: transitions(fps)[0].started_at - T_ON for fps in (1.0, 2.5, 5.0, 15.0)}
    assert max(lags.values()) - min(lags.values()) <= 1.0, lags
    assert all(0.0 <= lag <= 3.0 for lag in lags.values()), lags


def test_a_vote_is_a_share_of_the_frames_seen_in_the_window():
    vote = VoteOverWindow(window_s=1.0, fraction=0.6)
    # 5 fps: the window holds the 5 frames of the last second.
    out = [vote.update(v, i * 0.2) for i, v in enumerate([0, 0, 1, 1, 1, 1, 0, 0, 0])]
    assert out == [False, False, False, False, True, True, True, True, False]
    # A frame exactly window_s old has left the window (n frames at fps span n / fps), float times or not.
    edge = VoteOverWindow(window_s=0.3, fraction=1.0)
    assert [edge.update(0, 0.0), edge.update(1, 3 * 0.1)] == [False, True]
    # The same second at 1 frame in 3 (2/3 lost): the share of what was seen decides.
    sparse = VoteOverWindow(window_s=1.0, fraction=0.6)
    assert [sparse.update(v, t) for v, t in [(0, 0.0), (1, 0.6), (1, 1.2)]] == [False, False, True]


def test_gap_policy_too_few_frames_keep_the_last_decision():
    vote = VoteOverWindow(window_s=5.0, fraction=0.6, min_frames=3)
    assert [vote.update(1, t) for t in (0.0, 1.0)] == [False, False]  # not enough seen to decide yet
    assert vote.update(1, 2.0) is True
    # A 60 s gap (no frames): unknown. The first frames after it are too few to decide: "down" stands...
    assert [vote.update(0, t) for t in (62.0, 63.0)] == [True, True]
    # ...until the window holds min_frames again; the frames from before the gap have left it.
    assert vote.update(0, 64.0) is False
    # A frame that arrives without the horse in it is seen: it counts as "not lying".
    assert [vote.update(None, t) for t in (65.0, 66.0, 67.0)] == [False, False, False]
    median = MedianOverWindow(window_s=2.0, min_frames=2)
    assert [median.update(v, t) for v, t in [(4.0, 0.0), (2.0, 1.0), (9.0, 10.0), (7.0, 10.5)]] == [0.0, 3.0, 3.0, 8.0]


def test_window_settings_are_checked():
    with pytest.raises(pydantic.ValidationError):
        SmoothingConfig(kind="vote", window_s=0)
    with pytest.raises(pydantic.ValidationError):
        SmoothingConfig(kind="vote", fraction=1.5)
    with pytest.raises(pydantic.ValidationError):
        SmoothingConfig(kind="median", min_frames=0)
    assert set(SmoothingConfig.model_fields) == {"kind", "window_s", "fraction", "min_frames", "ema_half_life_s"}


@pytest.mark.parametrize(
    ("smoothing", "field", "hint"),
    [
        ("{kind: vote, vote_k: 15, vote_n: 25}", "vote_n",
         "vote_n=25 counts frames; windows are seconds now: use window_s = vote_n / fps"),
        ("{kind: vote, vote_k: 15}", "vote_k", "fraction = vote_k / vote_n"),
        ("{kind: median, median_n: 5}", "median_n", "5 frames at 5 fps = window_s: 1.0"),
    ],
)
def test_frame_count_keys_are_refused_with_how_to_convert(tmp_path, smoothing, field, hint):
    path = tmp_path / "old.yaml"
    path.write_text(textwrap.dedent(f"""\
        logic:
          rules:
            horse_down:
              smoothing: {smoothing}
        """))
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={})
    message = str(err.value)
    assert f"logic.rules.horse_down.smoothing.{field}: " in message  # the field...
    assert f"[from {path}:4]" in message  # ...where it was set...
    assert hint in message  # ...and how to convert it
    if field == "vote_n":
        assert "25 frames at 5 fps = window_s: 5.0" in message and "15 of 25 = fraction: 0.6" in message


def test_frame_count_keys_are_refused_from_the_environment_and_camera_overrides(tmp_path):
    path = tmp_path / "cams.yaml"
    path.write_text(textwrap.dedent("""\
        cameras:
          - id: cam1
            source: synthetic:down_long
            logic:
              rules:
                too_fast:
                  smoothing: {kind: median, median_n: 9}
        """))
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={"FBV_LOGIC__RULES__HORSE_ABSENT__SMOOTHING__VOTE_N": "5"})
    message = str(err.value)
    assert "cameras.0.logic.rules.too_fast.smoothing.median_n: median_n=9 counts frames" in message
    assert "9 frames at 5 fps = window_s: 1.8" in message
    assert "logic.rules.horse_absent.smoothing.vote_n: vote_n=5 counts frames" in message
    assert "[from environment variable FBV_LOGIC__RULES__HORSE_ABSENT__SMOOTHING__VOTE_N]" in message


def test_a_window_too_short_for_min_frames_at_a_cameras_fps_is_refused(tmp_path):
    path = tmp_path / "slow.yaml"
    path.write_text(textwrap.dedent("""\
        cameras:
          - id: slow
            source: synthetic:down_long
            fps: 0.4
        """))
    with pytest.raises(ConfigError, match=r"camera 'slow' at 0.4 fps: rules.horse_down.smoothing window_s 5 holds "
                                          r"2 frame\(s\), fewer than its min_frames 3.*at least 7.5"):
        load_settings(path, environ={})
    path.write_text(textwrap.dedent("""\
        cameras:
          - id: slow
            source: synthetic:down_long
            fps: 0.4
            logic:
              rules:
                horse_down:
                  smoothing: {window_s: 7.5}
        """))
    assert load_settings(path, environ={}).cameras[0].fps == 0.4
