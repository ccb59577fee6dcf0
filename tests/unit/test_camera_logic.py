"""The whole per-camera pipeline as rule tables: scripted detections -> expected alerts and their times.

Scripts are built from plain boxes at 5 fps capture times (1 fps where hours of real time are needed; rules
use capture times, so the frame rate only changes how finely those times are sampled).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pydantic
import pytest

from fbvision.core.candidates import Candidates
from fbvision.core.events import AlertEvent, AlertState, episode_key, idempotency_key
from fbvision.core.logic_config import (
    CameraLogicOverrides,
    FeatureConfig,
    LogicConfig,
    RulesConfig,
    effective_rules,
)
from fbvision.logic.camera_logic import CameraLogic
from fbvision.logic.smoothing import (
    EpisodeTracker,
    build_filter,
    episode_tracker,
    episode_transitions,
    smooth,
)

HORSE = 17
T0 = 1_700_000_000.0
FRAME = (1280, 720)
STAND = (400.0, 200.0, 700.0, 500.0)  # 300 x 300
LYING = (380.0, 380.0, 720.0, 500.0)  # 340 x 120

Box = tuple[float, float, float, float]
Segment = tuple[Box | None | Callable[[float], Box], float]


def circling(t: float) -> Box:
    """A horse circling the stall from where it stood: 200 px radius, one lap per 2 s (1.33 body lengths/s
    over the 1 s speed window); whole laps end where they began."""
    cx, cy = 350 + 200 * math.cos(math.pi * t), 350 + 200 * math.sin(math.pi * t)
    return (cx - 150, cy - 150, cx + 150, cy + 150)


def walking_out(t: float) -> Box:
    """Walks right at 0.5 body lengths/s (normal), until it leaves the frame."""
    return (STAND[0] + 150 * t, STAND[1], STAND[2] + 150 * t, STAND[3])


def jump_once(at: float, dx: float) -> Callable[[float], Box]:
    def box(t: float) -> Box:
        shift = dx if abs(t - at) < 1e-6 else 0.0
        return (STAND[0] + shift, STAND[1], STAND[2] + shift, STAND[3])

    return box


def script(*segments: Segment, fps: float = 5.0) -> list[tuple[float, Box | None]]:
    frames, t = [], 0.0
    for what, duration in segments:
        n = round(duration * fps)
        for i in range(n):
            local = round(i / fps, 6)
            frames.append((t + local, what(local) if callable(what) else what))
        t += n / fps
    return frames


def candidates(box: Box | None) -> Candidates:
    if box is None:
        return Candidates.empty()
    return Candidates.create([box], [0.9], [HORSE])


def run(logic: CameraLogic, frames, t0: float = T0, seq0: int = 0):
    alerts, outcomes = [], []
    for i, (t, box) in enumerate(frames):
        outcome = logic.process(seq=seq0 + i, t=t0 + t, candidates=candidates(box), frame_size=FRAME)
        alerts += outcome.alerts
        outcomes.append(outcome)
    return alerts, outcomes


def summary(alerts: Sequence[AlertEvent], t0: float = T0):
    return [(a.rule, a.state.value, a.severity.value, a.updated_at - t0) for a in alerts]


def assert_alerts(alerts, expected, tol):
    got = summary(alerts)
    assert [g[:3] for g in got] == [e[:3] for e in expected], got
    for g, e in zip(got, expected, strict=True):
        assert abs(g[3] - e[3]) <= tol, (g, e)


def make(config: LogicConfig | None = None, rules: dict | None = None, polygon=None, **kwargs) -> CameraLogic:
    overrides = CameraLogicOverrides(rules=rules or {}, stall_polygon=polygon)
    return CameraLogic("stall-7", config or LogicConfig(), overrides, [HORSE], **kwargs)


FAST_DOWN = {
    "horse_down": {
        "escalation": [{"after_s": 60, "severity": "warning"}, {"after_s": 120, "severity": "critical"}],
        "exit_after_s": 10,
    }
}

SCENARIOS = [
    pytest.param([(STAND, 60), (LYING, 10), (STAND, 60)], None, 5.0, [], 0, id="lies-down-10s-normal"),
    pytest.param([(STAND, 60), (LYING, 1200), (STAND, 200)], None, 1.0, [], 0, id="rests-20min-normal"),
    pytest.param(
        [(STAND, 60), (LYING, 4200), (STAND, 200)],
        None,
        1.0,
        [
            ("horse_down", "raised", "warning", 60 + 1800),
            ("horse_down", "ongoing", "critical", 60 + 3600),
            ("horse_down", "resolved", "critical", 4260 + 120),
        ],
        20,
        id="down-70min-escalates-default",
    ),
    pytest.param(
        [(STAND, 30), (LYING, 150), (STAND, 30)],
        FAST_DOWN,
        5.0,
        [
            ("horse_down", "raised", "warning", 30 + 60),
            ("horse_down", "ongoing", "critical", 30 + 120),
            ("horse_down", "resolved", "critical", 180 + 10),
        ],
        4,
        id="down-beyond-threshold-scaled",
    ),
    pytest.param(
        [(STAND, 20), (circling, 10), (STAND, 20)],
        None,
        5.0,
        [("too_fast", "raised", "warning", 21 + 3), ("too_fast", "resolved", "warning", 31 + 3)],
        1,
        id="running-horse",
    ),
    pytest.param(
        [(STAND, 30), (walking_out, 6), (None, 400), (STAND, 30)],
        None,
        5.0,
        [("horse_absent", "raised", "info", 36 + 300), ("horse_absent", "resolved", "info", 436 + 10)],
        3,
        id="horse-leaves-the-view",
    ),
    pytest.param(
        [(STAND, 30)] + [(LYING, 20), (STAND, 10)] * 3 + [(LYING, 60)],
        None,
        5.0,
        [("rolling", "raised", "critical", 90 + 3)],
        1,
        id="colic-down-up-three-times",
    ),
    pytest.param(
        [(STAND, 30), (LYING, 20), (STAND, 2), (LYING, 20), (STAND, 2), (LYING, 20), (STAND, 2), (LYING, 20)],
        None,
        5.0,
        [("rolling", "raised", "critical", 96 + 3)],
        1,
        id="rolling-flips-while-down",
    ),
    pytest.param(
        [(STAND, 30), (LYING, 20), (STAND, 2), (LYING, 60), (STAND, 60)],
        None,
        5.0,
        [],
        0,
        id="one-roll-then-up-is-normal",
    ),
]


@pytest.mark.parametrize(("segments", "rules", "fps", "expected", "tol"), SCENARIOS)
def test_rule_table(segments, rules, fps, expected, tol):
    logic = make(rules=rules)
    alerts, _ = run(logic, script(*segments, fps=fps))
    assert_alerts(alerts, expected, tol)
    assert all(a.track_id == 1 for a in alerts if a.rule in ("horse_down", "too_fast", "rolling"))


INSTANT_DOWN = {"horse_down": {"escalation": [{"after_s": 0, "severity": "warning"}]}}
INSTANT_FAST = {"too_fast": {"escalation": [{"after_s": 0, "severity": "warning"}]}}
NO_SMOOTHING = {"smoothing": {"kind": "none"}}
SHORT_SPEED_WINDOW = LogicConfig(features=FeatureConfig(speed_window_s=0.2))


@pytest.mark.parametrize(
    ("segments", "config", "rules", "expected_rules"),
    [
        pytest.param(
            [(STAND, 30), (LYING, 0.2), (STAND, 30)], None, INSTANT_DOWN, [], id="lying-glitch-voted-out"
        ),
        pytest.param(
            [(STAND, 30), (LYING, 0.2), (STAND, 30)],
            None,
            {"horse_down": {**INSTANT_DOWN["horse_down"], **NO_SMOOTHING}},
            ["horse_down"],
            id="lying-glitch-unsmoothed-alerts",
        ),
        pytest.param(
            [(jump_once(10.0, 120.0), 30)], SHORT_SPEED_WINDOW, INSTANT_FAST, [], id="box-jump-median-out"
        ),
        pytest.param(
            [(jump_once(10.0, 120.0), 30)],
            SHORT_SPEED_WINDOW,
            {"too_fast": {**INSTANT_FAST["too_fast"], **NO_SMOOTHING}},
            ["too_fast", "too_fast"],
            id="box-jump-unsmoothed-alerts",
        ),
    ],
)
def test_one_frame_glitch_is_suppressed_by_smoothing(segments, config, rules, expected_rules):
    alerts, _ = run(make(config, rules=rules), script(*segments))
    assert [a.rule for a in alerts] == expected_rules


def test_two_horses_only_the_one_lying_alerts():
    logic = make(rules=FAST_DOWN)
    foal = (900.0, 300.0, 1100.0, 500.0)
    events = []
    for i in range(int(120 * 5)):
        t = i / 5
        mare = LYING if t >= 30 else STAND
        cands = Candidates.create([mare, foal], [0.9, 0.8], [HORSE, HORSE])
        outcome = logic.process(seq=i, t=T0 + t, candidates=cands, frame_size=FRAME)
        events += outcome.alerts
    mare_id = int(outcome.detections.tracker_id[np.argmin(outcome.detections.xyxy[:, 0])])
    assert [(e.rule, e.state.value, e.track_id) for e in events] == [("horse_down", "raised", mare_id)]
    assert sorted(outcome.detections.tracker_id) == [1, 2]


def test_camera_offline_from_ticks_and_back():
    logic = make()
    run(logic, script((STAND, 10)))
    last_frame = T0 + 9.8
    events = []
    for second in range(1, 1000):
        events += logic.tick(last_frame + second)
    assert_alerts(
        events,
        [
            ("camera_offline", "raised", "warning", 9.8 + 60),
            ("camera_offline", "ongoing", "critical", 9.8 + 900),
        ],
        0.01,
    )
    assert all(e.started_at == last_frame for e in events)
    outcome = logic.process(seq=99, t=last_frame + 1000, candidates=candidates(STAND), frame_size=FRAME)
    (resolved,) = [a for a in outcome.alerts if a.rule == "camera_offline"]
    assert resolved.state is AlertState.resolved and resolved.episode_key == events[0].episode_key


def test_producer_reports_offline_and_camera_never_sent_a_frame():
    logic = make()
    run(logic, script((STAND, 10)))
    events = []
    for tenth in range(1, 700):
        events += logic.tick(T0 + 9.8 + tenth / 10, camera_online=False)
    assert [(e.rule, e.state.value) for e in events] == [("camera_offline", "raised")]

    silent = make()
    silent_events = []
    for second in range(100):
        silent_events += silent.tick(T0 + second)
    assert_alerts(silent_events, [("camera_offline", "raised", "warning", 60)], 0.01)


def test_stall_polygon_ignores_the_horse_next_door():
    this_stall = [(0, 0), (350, 0), (350, 720), (0, 720)]  # STAND's bottom-centre (550, 500) is outside
    alerts, outcomes = run(make(polygon=this_stall), script((STAND, 310)))
    assert len(outcomes[-1].detections) == 0
    assert [(a.rule, a.state.value) for a in alerts] == [("horse_absent", "raised")]
    alerts, outcomes = run(make(polygon=[(0, 0), (1280, 0), (1280, 720), (0, 720)]), script((STAND, 310)))
    assert alerts == [] and list(outcomes[-1].detections.tracker_id) == [1]


def test_restart_resumes_open_episode_without_raising_again():
    first = make(rules=FAST_DOWN)
    before, _ = run(first, script((STAND, 30), (LYING, 90)))
    assert [(a.rule, a.state.value) for a in before] == [("horse_down", "raised")]
    saved = json.loads(json.dumps(first.episodes()))

    resumed = make(rules=FAST_DOWN, open_episodes=saved)
    after, outcomes = run(resumed, script((LYING, 60), (STAND, 30)), t0=T0 + 125.0, seq0=1000)
    assert [(a.rule, a.state.value, a.severity.value) for a in after] == [
        ("horse_down", "ongoing", "critical"),
        ("horse_down", "resolved", "critical"),
    ]
    assert {a.episode_key for a in after} == {before[0].episode_key}
    assert {a.track_id for a in after} == {1}
    assert list(outcomes[-1].detections.tracker_id) == [1]


def test_restart_when_the_horse_is_gone_resolves_the_orphan():
    first = make(rules=FAST_DOWN)
    run(first, script((STAND, 30), (LYING, 90)))
    resumed = make(rules=FAST_DOWN, open_episodes=first.episodes())
    after, _ = run(resumed, script((None, 30)), t0=T0 + 125.0)
    assert [(a.rule, a.state.value) for a in after] == [("horse_down", "resolved")]


def test_replay_gives_the_same_idempotency_keys_and_events_round_trip_json():
    frames = script((STAND, 30), (LYING, 150), (STAND, 30))
    first, _ = run(make(rules=FAST_DOWN), frames)
    second, _ = run(make(rules=FAST_DOWN), frames)
    assert len(first) == 3
    assert [a.idempotency_key for a in first] == [a.idempotency_key for a in second]
    assert len({a.idempotency_key for a in first}) == 3 and len({a.episode_key for a in first}) == 1
    assert [a.id for a in first] != [a.id for a in second]
    for event in first:
        assert AlertEvent.from_json(event.to_json()) == event
    raised = first[0]
    assert raised.evidence.box == LYING and raised.evidence.features["rel_height"] == pytest.approx(0.4)
    assert raised.idempotency_key == idempotency_key(
        "stall-7", "horse_down", raised.started_at, 1, AlertState.raised, raised.severity
    )


def test_alert_event_schema_checks_and_defaults():
    base = dict(
        idempotency_key="k",
        camera_id="stall-7",
        rule="horse_down",
        track_id=1,
        severity="warning",
        state="raised",
        started_at=10.0,
        updated_at=20.0,
        evidence={"seq": 3},
    )
    event = AlertEvent(**base)
    assert event.schema_version == 1 and len(event.id) == 36
    assert event.episode_key == episode_key("stall-7", "horse_down", 10.0, 1)
    with pytest.raises(pydantic.ValidationError):
        AlertEvent(**{**base, "updated_at": 5.0})  # before it started
    with pytest.raises(pydantic.ValidationError):
        AlertEvent(**{**base, "resolved_at": 20.0})  # only resolved events have resolved_at
    with pytest.raises(pydantic.ValidationError):
        AlertEvent(**{**base, "severity": "catastrophic"})


def test_notebook_replay_of_signals_equals_streaming():
    logic = make(rules=FAST_DOWN)
    frames = script((STAND, 30), (LYING, 150), (STAND, 20), *[(LYING, 20), (STAND, 10)] * 3, (circling, 10))
    alerts, outcomes = run(logic, frames)
    signals = pd.DataFrame([s.to_dict() for o in outcomes for s in o.signals])
    rules = effective_rules(LogicConfig(), CameraLogicOverrides(rules=FAST_DOWN))
    for rule in ("horse_down", "rolling", "too_fast", "horse_absent"):
        params = getattr(rules, rule)
        part = signals[signals.rule == rule]
        notebook = smooth(part, "raw", functools.partial(build_filter, params.smoothing), by=("camera_id", "rule", "track_id"))
        np.testing.assert_array_equal(notebook.astype(float).to_numpy(), part.smoothed.to_numpy())
        table = episode_transitions(
            part.assign(s=notebook), "s", functools.partial(episode_tracker, params), by=("camera_id", "track_id")
        )
        streamed = [
            (a.state.value, a.severity.value, a.started_at, a.updated_at) for a in alerts if a.rule == rule
        ]
        assert list(zip(table.state, table.severity, table.started_at, table.t, strict=True)) == streamed
    assert {a.rule for a in alerts} >= {"horse_down", "rolling", "too_fast"}


def test_out_of_order_frame_is_skipped():
    logic = make()
    run(logic, script((STAND, 2)))
    outcome = logic.process(seq=5, t=T0, candidates=candidates(STAND), frame_size=FRAME)
    assert outcome.alerts == [] and len(outcome.detections) == 0 and logic.frames_out_of_order == 1


# ----------------------------------------------------------------------------------------------------------
# Configuration


def test_overrides_deep_merge_and_revalidate():
    overrides = CameraLogicOverrides(
        rules={"horse_down": {"exit_after_s": 5}, "too_fast": {"speed_bl_s": 2.5}}
    )
    rules = effective_rules(LogicConfig(), overrides)
    assert rules.horse_down.exit_after_s == 5 and rules.too_fast.speed_bl_s == 2.5
    assert rules.horse_down.escalation == RulesConfig().horse_down.escalation  # untouched siblings kept
    assert effective_rules(LogicConfig(), None) == LogicConfig().rules


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param({"horse_down": {"exit_afters": 5}}, id="typo"),
        pytest.param({"horse_dawn": {}}, id="unknown-rule"),
        pytest.param({"too_fast": {"speed_bl_s": -1}}, id="out-of-bounds"),
        pytest.param(
            {
                "horse_down": {
                    "escalation": [
                        {"after_s": 60, "severity": "critical"},
                        {"after_s": 120, "severity": "warning"},
                    ]
                }
            },
            id="de-escalation",
        ),
        pytest.param(
            {"horse_down": {"smoothing": {"kind": "vote", "fraction": 1.8}}}, id="fraction-above-1"
        ),
        pytest.param(
            {"horse_down": {"smoothing": {"kind": "vote", "vote_k": 15, "vote_n": 25}}}, id="frame-counts"
        ),
    ],
)
def test_bad_overrides_fail_at_load(bad):
    with pytest.raises(pydantic.ValidationError):
        CameraLogicOverrides(rules=bad)


def test_config_is_strict_and_documented():
    with pytest.raises(pydantic.ValidationError):
        LogicConfig(nms_iuo=0.5)

    def walk(model_cls):
        for name, field in model_cls.model_fields.items():
            assert field.description, f"{model_cls.__name__}.{name} has no description"
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
                walk(annotation)

    walk(LogicConfig)
    walk(CameraLogicOverrides)
    assert LogicConfig().offline_after_s == 60 and LogicConfig().absent_after_s == 300


def test_episode_tracker_from_config_matches_defaults():
    tracker = episode_tracker(LogicConfig().rules.horse_down)
    assert isinstance(tracker, EpisodeTracker)
    assert [(a, s.value) for a, s in tracker.escalation] == [(1800.0, "warning"), (3600.0, "critical")]
