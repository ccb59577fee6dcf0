"""camera_offline judged by arrivals on the reference clock; impossible capture times counted and survived.

Times here: ``now`` is the reference clock (when a result arrived / a tick happens), ``t`` a capture time as
the result carries it (on the camera's clock, which may be skewed, stepped or injected).
"""

from __future__ import annotations

import random

import pytest

from fbvision.core.candidates import Candidates
from fbvision.core.events import AlertState
from fbvision.core.logic_config import CameraLogicOverrides, LogicConfig
from fbvision.logic.camera_logic import MAX_FUTURE_S, CameraLogic

HORSE = 17
FRAME = (1280, 720)
STAND = (400.0, 200.0, 700.0, 500.0)
T0 = 1_700_000_000.0


def make(**kwargs) -> CameraLogic:
    return CameraLogic("stall-7", LogicConfig(), CameraLogicOverrides(), [HORSE], **kwargs)


def horse() -> Candidates:
    return Candidates.create([STAND], [0.9], [HORSE])


def offline_events(events):
    return [(e.state, e.severity.value) for e in events if e.rule == "camera_offline"]


class Feed:
    """5 fps frames into one CameraLogic, a tick every second of reference time, everything collected."""

    def __init__(self, logic: CameraLogic, skew: float = 0.0):
        self.logic, self.skew = logic, skew
        self.seq, self.now, self.events, self.outcomes = 0, T0, [], []
        self._next_tick = T0

    def frame(self, captured: float, arrived: float):
        out = self.logic.process(seq=self.seq, t=captured, candidates=horse(), frame_size=FRAME, arrived=arrived)
        self.seq += 1
        self.events += out.alerts
        self.outcomes.append(out)
        return out

    def until(self, end: float, *, frames: bool, latency=lambda: 0.2):
        while self.now < end:
            self.now = round(self.now + 0.2, 6)
            if frames:
                captured = self.now - latency()
                self.frame(captured + self.skew, self.now)
            if self.now >= self._next_tick:
                self._next_tick += 1.0
                self.events += self.logic.tick_reference(self.now)


def test_skewed_camera_clock_and_jittery_latency_raise_nothing():
    """The issue's case: a camera host 120 s behind (and one 9 s ahead: inside the future bound) at 5 fps with
    latencies jumping between 0 and 3 s: zero camera_offline events in 10 minutes."""
    rng = random.Random(7)
    for skew in (-120.0, 9.0):
        feed = Feed(make(), skew=skew)
        feed.until(T0 + 600, frames=True, latency=lambda: rng.uniform(0.0, 3.0))
        assert offline_events(feed.events) == [], skew
        assert feed.logic.frames_future == 0


def test_backlog_caught_up_late_does_not_flap():
    """Results of a 60 s backlog (old capture times) arrive within 3 s after a pipeline stall; the camera
    streamed all along: no camera_offline (capture gaps are not arrival gaps)."""
    feed = Feed(make())
    feed.until(T0 + 30, frames=True)
    # the inference stage stalls 40 s, then its queue drains fast: 40 s of frames arrive in 3 s
    captured = [feed.now + i * 0.2 for i in range(200)]
    arrive_from = feed.now + 40
    feed.now = arrive_from
    for i, c in enumerate(captured):
        feed.frame(c, arrive_from + i * 0.015)
        if i % 60 == 0:
            feed.events += feed.logic.tick_reference(arrive_from + i * 0.015)
    feed.now = arrive_from + 3.0
    feed._next_tick = feed.now
    feed.until(feed.now + 120, frames=True)
    assert offline_events(feed.events) == []


def test_real_outage_raises_once_and_resolves_once():
    feed = Feed(make())
    feed.until(T0 + 20, frames=True)
    feed.until(T0 + 20 + 300, frames=False)  # 5 minutes without a result
    feed.until(T0 + 20 + 300 + 60, frames=True)
    assert offline_events(feed.events) == [(AlertState.raised, "warning"), (AlertState.resolved, "warning")]
    raised = next(e for e in feed.events if e.rule == "camera_offline")
    # the onset is the last frame before the outage, the raise 60 s (escalation) after it
    assert abs(raised.started_at - (T0 + 20 - 0.2)) < 0.5
    assert abs(raised.updated_at - raised.started_at - 60.0) <= 1.0


def test_future_stamped_frame_is_counted_and_the_camera_keeps_being_judged():
    feed = Feed(make())
    feed.until(T0 + 10, frames=True)
    out = feed.frame(feed.now + 86_400.0, feed.now)  # one injected message, a day ahead
    assert feed.logic.frames_future == 1 and len(out.detections) == 0
    feed.until(T0 + 20, frames=True)
    assert len(feed.outcomes[-1].detections) == 1  # later frames are judged (tracked) again
    assert feed.logic.frames_out_of_order == 0
    feed.until(T0 + 120, frames=False)  # and the camera's ticks still run: an outage is raised
    assert offline_events(feed.events) == [(AlertState.raised, "warning")]


def test_frame_just_inside_the_future_bound_is_judged():
    logic = make()
    logic.process(seq=1, t=T0 + MAX_FUTURE_S - 0.5, candidates=horse(), frame_size=FRAME, arrived=T0)
    assert logic.frames_future == 0


def test_backwards_clock_step_is_counted_and_frames_keep_being_judged():
    feed = Feed(make())
    feed.until(T0 + 20, frames=True)
    feed.skew = -3600.0  # the camera's clock steps back an hour
    feed.until(T0 + 40, frames=True)
    assert feed.logic.clock_steps_back == 1
    judged = [o for o in feed.outcomes[-50:] if len(o.detections)]
    assert len(judged) == 50  # not one skipped (before: every frame until the clock caught up, an hour)
    assert feed.logic.frames_out_of_order == 0
    assert offline_events(feed.events) == []
    feed.until(T0 + 140, frames=False)
    assert offline_events(feed.events) == [(AlertState.raised, "warning")]
    # small reordering (two inference workers) is still a skip, not a step
    logic = make()
    logic.process(seq=1, t=T0 + 1.0, candidates=horse(), frame_size=FRAME, arrived=T0 + 1.2)
    logic.process(seq=2, t=T0 + 0.8, candidates=horse(), frame_size=FRAME, arrived=T0 + 1.3)
    assert (logic.frames_out_of_order, logic.clock_steps_back) == (1, 0)


def test_open_camera_offline_survives_a_restart_and_is_not_raised_again():
    feed = Feed(make())
    feed.until(T0 + 20, frames=True)
    feed.until(T0 + 100, frames=False)
    assert offline_events(feed.events) == [(AlertState.raised, "warning")]
    saved = feed.logic.episodes()
    assert abs(saved["clock"]["last_arrival_t"] - (T0 + 20)) < 0.5  # persisted with the episode state
    # a new owner (restart or lease move) loads the state and keeps ticking the dead camera
    restarted = Feed(make(open_episodes=saved))
    restarted.now = restarted._next_tick = feed.now + 30
    restarted.until(feed.now + 1000, frames=False)
    # still open: the critical step (900 s) comes, no second raise and no resolve
    assert offline_events(restarted.events) == [(AlertState.ongoing, "critical")]
    restarted.until(restarted.now + 30, frames=True)
    assert offline_events(restarted.events)[-1] == (AlertState.resolved, "critical")
    assert [s for s, _ in offline_events(restarted.events)].count(AlertState.raised) == 0


def test_one_stray_old_message_costs_one_step_and_times_come_back():
    """An injected result stamped an hour in the past is taken as a step back (counted); the next real frame
    is a step forward again, so the shift is undone and alert times stay on the camera's own clock."""
    feed = Feed(make())
    feed.until(T0 + 10, frames=True)
    feed.frame(feed.now - 3600.0, feed.now + 0.01)
    assert feed.logic.clock_steps_back == 1
    feed.until(T0 + 20, frames=True)
    assert feed.logic._shift == 0.0
    assert abs(feed.outcomes[-1].t - (feed.now - 0.2)) < 1e-6  # judged at its own capture time again
    assert feed.logic.frames_out_of_order <= 1  # at most the one frame right after the stray message
    feed.until(T0 + 100, frames=False)
    raised = [e for e in feed.events if e.rule == "camera_offline"]
    assert [e.state for e in raised] == [AlertState.raised]
    assert abs(raised[0].started_at - (T0 + 20 - 0.2)) < 0.5


def test_unusable_saved_clock_is_refused():
    saved = make().episodes()
    saved["clock"] = {"last_frame_t": "soon"}
    with pytest.raises(ValueError, match="last_frame_t"):
        make(open_episodes=saved)
