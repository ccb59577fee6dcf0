"""Rule functions as tables: scripted features/posture sequences -> raw scores and counted events; the rule
registry (declarations, agreement with the config, same scores as the functions, a rule added by a test)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import Field

from fbvision.core.candidates import Candidates
from fbvision.core.logic_config import (
    CAMERA_RULES,
    RULE_NAMES,
    TRACK_RULES,
    CameraOfflineRule,
    EscalationStep,
    LogicConfig,
    RollingRule,
    RuleConfig,
    RulesConfig,
    SmoothingConfig,
    TooFastRule,
)
from fbvision.logic import rules
from fbvision.logic.camera_logic import CameraLogic
from fbvision.logic.features import TrackFeatures

FPS = 5.0
NAN = float("nan")


def feature(*, present=True, lying=False, speed=0.0):
    return TrackFeatures(
        camera_id="c",
        track_id=1,
        t=0.0,
        seq=0,
        box=(0, 0, 10, 10),
        aspect=1.0,
        rel_height=1.0,
        bottom=0.5,
        speed_bl_s=speed,
        confidence=0.9,
        present=present,
        lying=lying,
        baseline_height=10.0,
    )


@pytest.mark.parametrize(
    ("f", "expected"),
    [
        pytest.param(feature(lying=True), 1.0, id="lying"),
        pytest.param(feature(lying=False), 0.0, id="standing"),
        pytest.param(feature(present=False), None, id="not-seen"),
    ],
)
def test_horse_down_score(f, expected):
    assert rules.horse_down(f) == expected


@pytest.mark.parametrize(
    ("f", "expected"),
    [
        pytest.param(feature(speed=1.2), 1.0, id="fast"),
        pytest.param(feature(speed=1.0), 1.0, id="at-threshold"),
        pytest.param(feature(speed=0.4), 0.0, id="walking"),
        pytest.param(feature(speed=NAN), None, id="no-speed-yet"),
        pytest.param(feature(present=False), None, id="not-seen"),
    ],
)
def test_too_fast_score(f, expected):
    assert rules.too_fast(f, TooFastRule(speed_bl_s=1.0)) == expected


def posture_script(*segments):
    """[('stand'|'lie', seconds), ...] -> (times, lying) sampled at 5 fps from t=0, and the end time."""
    times, lying, t = [], [], 0.0
    for posture, duration in segments:
        for _ in range(round(duration * FPS)):
            times.append(t)
            lying.append(posture == "lie")
            t += 1 / FPS
    return np.array(times), np.array(lying), t


PARAMS = RollingRule()  # min_posture 3 s, flips 0.6..5 s, 3 downs or 4 events


@pytest.mark.parametrize(
    ("segments", "downs", "flips"),
    [
        pytest.param([("stand", 60), ("lie", 600)], 1, 0, id="one-normal-lie-down"),
        pytest.param([("lie", 600)], 0, 0, id="already-down-at-window-start"),
        pytest.param(
            [("stand", 30), ("lie", 60), ("stand", 30), ("lie", 60), ("stand", 30), ("lie", 30)],
            3,
            0,
            id="three-downs",
        ),
        pytest.param(
            [("stand", 30), ("lie", 20), ("stand", 2), ("lie", 20), ("stand", 3), ("lie", 20)],
            1,
            2,
            id="down-then-two-flips",
        ),
        pytest.param(
            [("stand", 30), ("lie", 20), ("stand", 0.2), ("lie", 20)], 1, 0, id="one-frame-rise-is-noise"
        ),
        pytest.param([("stand", 30), ("lie", 0.2), ("stand", 30)], 0, 0, id="one-frame-lying-is-noise"),
        pytest.param(
            [("stand", 30), ("lie", 20), ("stand", 2)], 1, 0, id="flip-not-confirmed-until-down-again"
        ),
        pytest.param(
            [("stand", 30), ("lie", 20), ("stand", 10), ("lie", 20)], 2, 0, id="long-rise-is-a-stand"
        ),
    ],
)
def test_posture_events_table(segments, downs, flips):
    times, lying, t = posture_script(*segments)
    assert rules.posture_events(times, lying, t, PARAMS) == rules.PostureEvents(downs, flips)


def test_posture_events_empty_history():
    assert rules.posture_events(np.zeros(0), np.zeros(0, dtype=bool), 5.0, PARAMS).total == 0


@pytest.mark.parametrize(
    ("downs", "flips", "expected"),
    [(1, 0, 0.0), (3, 0, 1.0), (2, 1, 0.0), (2, 2, 1.0), (1, 3, 1.0), (0, 3, 0.0)],
    ids=lambda v: str(v),
)
def test_rolling_score(downs, flips, expected):
    assert rules.rolling(rules.PostureEvents(downs, flips), PARAMS) == expected


@pytest.mark.parametrize(
    ("t", "last_frame_t", "online", "expected"),
    [
        pytest.param(10.0, 9.5, None, 0.0, id="frames-fresh"),
        pytest.param(10.0, 7.0, None, 1.0, id="frames-stale"),
        pytest.param(10.0, 9.9, False, 1.0, id="producer-says-offline"),
        pytest.param(10.0, 7.0, True, 1.0, id="online-but-no-frames"),
        pytest.param(10.0, None, None, 1.0, id="never-a-frame"),
        pytest.param(10.0, None, True, 0.0, id="just-connected"),
    ],
)
def test_camera_offline_score(t, last_frame_t, online, expected):
    assert rules.camera_offline(t, last_frame_t, online, CameraOfflineRule(stale_after_s=2.0)) == expected


@pytest.mark.parametrize(("present", "expected"), [(0, 1.0), (1, 0.0), (2, 0.0)])
def test_horse_absent_score(present, expected):
    assert rules.horse_absent(present) == expected


def test_scores_are_finite_or_none():
    for f in (feature(), feature(lying=True), feature(present=False)):
        for score in (rules.horse_down(f), rules.too_fast(f, TooFastRule())):
            assert score is None or math.isfinite(score)


# ---------------------------------------------------------------------------------------------------------
# The registry


def test_registry_covers_exactly_the_rules_of_the_config_with_their_scopes():
    names = [r.name for r in rules.registered()]
    assert sorted(names) == sorted(RULE_NAMES) == sorted(TRACK_RULES + CAMERA_RULES)
    assert len(set(names)) == len(names)
    assert {r.name for r in rules.registered(rules.Scope.track)} == set(TRACK_RULES)
    assert {r.name for r in rules.registered("camera")} == set(CAMERA_RULES)
    for name in TRACK_RULES:
        assert rules.lookup(name).scope is rules.Scope.track and rules.REGISTRY[name].on_tick is rules.OnTick.skip
    for name in CAMERA_RULES:
        assert rules.lookup(name).scope is rules.Scope.camera
    rules.check_registry()  # what the import ran
    # Evaluation order (= the order of a frame's alerts) is what CameraLogic always did.
    assert names == ["camera_offline", "horse_down", "too_fast", "rolling", "horse_absent", "lying_time_low", "restless"]
    with pytest.raises(KeyError, match="no rule 'horse_asleep'"):
        rules.lookup("horse_asleep")


@pytest.mark.parametrize(
    ("track", "camera", "names", "message"),
    [
        pytest.param(TRACK_RULES[:-1], CAMERA_RULES, RULE_NAMES, "not in TRACK_RULES", id="config-lacks-a-rule"),
        pytest.param(
            TRACK_RULES + ("kicking",), CAMERA_RULES, (*RULE_NAMES, "kicking"), "not registered", id="unregistered"
        ),
        pytest.param(
            TRACK_RULES[1:], CAMERA_RULES + TRACK_RULES[:1], RULE_NAMES, "the config: camera", id="wrong-scope"
        ),
        pytest.param(TRACK_RULES, CAMERA_RULES, RULE_NAMES[1:], "RulesConfig fields", id="config-tree-differs"),
        pytest.param(TRACK_RULES, CAMERA_RULES + TRACK_RULES[:1], RULE_NAMES, "in both", id="in-both"),
    ],
)
def test_check_registry_fails_when_the_config_disagrees(track, camera, names, message):
    with pytest.raises(RuntimeError, match=message):
        rules.check_registry(track, camera, names)


def ctx(name, *, params=None, **situation):
    config = RulesConfig()
    return rules.RuleContext(
        t=situation.pop("t", 0.0), params=params or getattr(config, name), rules=config, **situation
    )


FEATURE_TABLE = [
    feature(),
    feature(lying=True),
    feature(present=False),
    feature(present=False, lying=True),
    feature(speed=0.4),
    feature(speed=1.0),
    feature(speed=1.2, lying=True),
    feature(speed=NAN),
    feature(present=False, speed=3.0),
]


@pytest.mark.parametrize("f", FEATURE_TABLE)
def test_registered_feature_rules_score_as_the_rule_functions(f):
    assert rules.lookup("horse_down").score(ctx("horse_down", features=f)) == rules.Score(rules.horse_down(f))
    for threshold in (0.5, 1.0, 2.0):
        params = TooFastRule(speed_bl_s=threshold)
        got = rules.lookup("too_fast").score(ctx("too_fast", params=params, features=f))
        assert got == rules.Score(rules.too_fast(f, params))
    assert rules.lookup("horse_down").from_features and rules.lookup("too_fast").from_features
    assert not rules.lookup("rolling").from_features and not rules.lookup("horse_absent").from_features


def posture_runs(times, lying):
    """Sample arrays -> runs (start t, lying), as CameraLogic records them."""
    runs = []
    for t, flag in zip(times, lying, strict=True):
        if not runs or runs[-1][1] != bool(flag):
            runs.append((float(t), bool(flag)))
    return runs


def rolling_before_the_registry(runs, t, params):
    """What CameraLogic computed inline for a present track before the registry (the window clipping)."""
    window_start = t - params.window_s
    times = np.array([max(start, window_start) for start, _ in runs], dtype=float)
    lying = np.array([flag for _, flag in runs], dtype=bool)
    events = rules.posture_events(times, lying, t, params)
    return rules.rolling(events, params), events


ROLLING_SCRIPTS = [
    [("stand", 60), ("lie", 600)],
    [("lie", 600)],
    [("stand", 30), ("lie", 60), ("stand", 30), ("lie", 60), ("stand", 30), ("lie", 30)],
    [("stand", 30), ("lie", 20), ("stand", 2), ("lie", 20), ("stand", 3), ("lie", 20)],
    [("stand", 30), ("lie", 20), ("stand", 2), ("lie", 20), ("stand", 2), ("lie", 20), ("stand", 2), ("lie", 9)],
    [("stand", 600), ("lie", 20), ("stand", 10), ("lie", 20), ("stand", 10), ("lie", 20)],
    [("stand", 30), ("lie", 0.2), ("stand", 30)],
    [],
]


@pytest.mark.parametrize("segments", ROLLING_SCRIPTS)
@pytest.mark.parametrize("params", [RollingRule(), RollingRule(window_s=60), RollingRule(min_downs=2, min_events=3)])
def test_registered_rolling_scores_as_before(segments, params):
    times, lying, t = posture_script(*segments)
    runs = posture_runs(times, lying)
    score = rules.lookup("rolling").score(ctx("rolling", t=t, params=params, features=feature(), postures=runs))
    expected, events = rolling_before_the_registry(runs, t, params)
    assert score == rules.Score(expected, {"downs": float(events.downs), "flips": float(events.flips)})
    unseen = ctx("rolling", t=t, params=params, features=feature(present=False), postures=runs)
    assert rules.lookup("rolling").score(unseen) == rules.Score(None)
    assert rules.lookup("rolling").posture_window_s(params) == params.window_s


@pytest.mark.parametrize("present", [0, 1, 2, 5])
def test_registered_horse_absent_scores_as_the_rule_function(present):
    assert rules.lookup("horse_absent").score(ctx("horse_absent", present_tracks=present)).value == (
        rules.horse_absent(present)
    )
    assert rules.lookup("horse_absent").reads_tracks


@pytest.mark.parametrize(
    ("t", "last_frame_t", "online"),
    [(10.0, 9.5, None), (10.0, 7.0, None), (10.0, 9.9, False), (10.0, 7.0, True), (10.0, None, None),
     (10.0, None, True), (10.0, 8.0, None), (10.0, 8.01, True)],
)
def test_registered_camera_offline_scores_as_the_rule_function(t, last_frame_t, online):
    rule = rules.lookup("camera_offline")
    params = CameraOfflineRule(stale_after_s=2.0)
    gap = {} if last_frame_t is None else {"gap_s": t - last_frame_t}
    on_tick = ctx("camera_offline", t=t, params=params, frame=False, last_frame_t=last_frame_t, camera_online=online)
    assert rule.score(on_tick) == rules.Score(rules.camera_offline(t, last_frame_t, online, params), gap)
    # A frame arriving scores 0 (what CameraLogic always passed), whatever the gap before it.
    on_frame = ctx("camera_offline", t=t, params=params, frame=True, last_frame_t=last_frame_t, camera_online=True)
    assert rule.score(on_frame) == rules.Score(0.0, gap)
    assert rule.on_tick is rules.OnTick.score and not rule.reads_tracks


def test_horse_absent_holds_on_ticks_only_while_frames_are_fresh():
    rule = rules.lookup("horse_absent")
    assert rule.on_tick is rules.OnTick.hold
    stale = RulesConfig().camera_offline.stale_after_s
    assert rule.hold_while(ctx("horse_absent", t=10.0, frame=False, last_frame_t=10.0 - stale / 2))
    assert not rule.hold_while(ctx("horse_absent", t=10.0, frame=False, last_frame_t=10.0 - stale))
    assert not rule.hold_while(ctx("horse_absent", t=10.0, frame=False, last_frame_t=None))


def test_evidence_is_what_the_alerts_carried():
    f = feature(lying=True, speed=0.3)
    for name in ("horse_down", "too_fast"):
        c = ctx(name, features=f)
        rule = rules.lookup(name)
        assert rule.evidence(c, rule.score(c)) == rules.RuleEvidence(box=f.box, values=f.numeric())
    c = ctx("rolling", t=700.0, features=f, postures=[(0.0, False), (100.0, True)])
    got = rules.lookup("rolling").evidence(c, rules.lookup("rolling").score(c))
    assert got == rules.RuleEvidence(box=f.box, values={**f.numeric(), "downs": 0.0, "flips": 0.0})
    c = ctx("camera_offline", t=70.0, frame=False, last_frame_t=5.0)
    assert rules.lookup("camera_offline").evidence(c, rules.lookup("camera_offline").score(c)) == (
        rules.RuleEvidence(values={"gap_s": 65.0})
    )
    c = ctx("horse_absent", present_tracks=0)
    assert rules.lookup("horse_absent").evidence(c, rules.lookup("horse_absent").score(c)) == rules.RuleEvidence()


def _score_one(c):
    return rules.Score(1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"scope": "track", "inputs": {"present_tracks"}}, "cannot read", id="camera-input-on-track"),
        pytest.param({"scope": "camera", "inputs": {"features"}}, "cannot read", id="track-input-on-camera"),
        pytest.param({"scope": "track", "on_tick": "score"}, "on_tick", id="track-rule-on-ticks"),
        pytest.param({"scope": "track", "inputs": {"features", "postures"}}, "posture_window_s", id="no-window"),
        pytest.param({"scope": "track", "posture_window_s": lambda p: 1.0}, "posture_window_s", id="window-unused"),
        pytest.param({"scope": "camera", "name": "horse-down"}, "identifier", id="bad-name"),
        pytest.param({"scope": "moon"}, "moon", id="bad-scope"),
    ],
)
def test_rule_declarations_are_checked(kwargs, message):
    declared = {"name": "dummy", "score": _score_one, "evidence": rules.camera_evidence, **kwargs}
    with pytest.raises(ValueError, match=message):
        rules.Rule(**declared)


def test_register_refuses_a_second_rule_of_the_same_name():
    with pytest.raises(ValueError, match="already registered"):
        rules.register(rules.Rule("horse_down", "track", _score_one, rules.track_evidence))
    assert rules.lookup("horse_down").score is not _score_one


# A rule registered by a test: CameraLogic picks it up from the registry and its parameters from the config
# tree (a RulesConfig with a field of its name), without a change to CameraLogic.

HORSE = 17
FRAME = (1280, 720)
WIDE = (380.0, 380.0, 720.0, 500.0)  # 340 x 120: aspect 2.8
TALL = (400.0, 200.0, 700.0, 500.0)  # 300 x 300


class DummyRules(RulesConfig):
    wide_box: RuleConfig = Field(
        default_factory=lambda: RuleConfig(
            smoothing=SmoothingConfig(kind="none"),
            escalation=[EscalationStep(after_s=2.0, severity="warning")],
            exit_after_s=1.0,
        )
    )
    two_horses: RuleConfig = Field(
        default_factory=lambda: RuleConfig(smoothing=SmoothingConfig(kind="none"), exit_after_s=0.0)
    )


def _score_wide_box(c):
    f = c.features
    return rules.Score(None if not f.present else float(f.aspect >= 2.0), {"aspect_seen": f.aspect})


def _score_two_horses(c):
    return rules.Score(float(c.present_tracks >= 2))


@pytest.fixture
def dummy_rules():
    registered = [
        rules.register(
            rules.Rule("wide_box", "track", _score_wide_box, rules.track_evidence, inputs=frozenset({"features"}))
        ),
        rules.register(
            rules.Rule(
                "two_horses", "camera", _score_two_horses, rules.camera_evidence, inputs=frozenset({"present_tracks"})
            )
        ),
    ]
    try:
        yield registered
    finally:
        for rule in registered:
            rules.unregister(rule.name)
    assert [r.name for r in rules.registered()] == [
        "camera_offline", "horse_down", "too_fast", "rolling", "horse_absent", "lying_time_low", "restless"
    ]


def _frames(logic, boxes, fps=5.0, t0=1000.0):
    alerts, signals = [], []
    for i, box in enumerate(boxes):
        cands = Candidates.create([box], [0.9], [HORSE]) if box is not None else Candidates.empty()
        outcome = logic.process(seq=i, t=t0 + i / fps, candidates=cands, frame_size=FRAME)
        alerts += outcome.alerts
        signals += outcome.signals
    return alerts, signals


def test_a_registered_rule_is_picked_up_by_camera_logic(dummy_rules):
    with pytest.raises(RuntimeError, match="not in TRACK_RULES"):
        rules.check_registry()  # the config's tuples do not list them: only the import-time check would fail
    with pytest.raises(ValueError, match="no parameters for rule"):
        CameraLogic("cam", LogicConfig(), None, [HORSE])

    config = LogicConfig(rules=DummyRules())
    logic = CameraLogic("cam", config, None, [HORSE])
    alerts, signals = _frames(logic, [TALL] * 25 + [WIDE] * 25 + [TALL] * 25)
    wide = [a for a in alerts if a.rule == "wide_box"]
    assert [(a.state.value, a.severity.value, a.track_id) for a in wide] == [
        ("raised", "warning", 1),
        ("resolved", "warning", 1),
    ]
    raised = wide[0]
    assert raised.started_at == pytest.approx(1005.0) and raised.updated_at == pytest.approx(1007.0)
    assert raised.evidence.box == WIDE
    assert raised.evidence.features["aspect_seen"] == pytest.approx(340 / 120)
    assert {"aspect", "rel_height", "score", "smoothed", "age_s"} <= set(raised.evidence.features)
    assert {s.rule for s in signals} >= {"wide_box", "two_horses"}
    assert all(s.raw == 0.0 for s in signals if s.rule == "two_horses")
    # Track rules' states are kept per track and saved for a restart like the built-in ones.
    assert any(e["rule"] == "wide_box" for e in logic.episodes()["episodes"])

    # The camera rule reads present_tracks: scored after the frame's tracks.
    logic = CameraLogic("cam", config, None, [HORSE])
    two = (800.0, 200.0, 1100.0, 500.0)
    frames = []
    for i in range(30):
        cands = Candidates.create([TALL, two], [0.9, 0.9], [HORSE, HORSE])
        frames.append(logic.process(seq=i, t=2000.0 + i / 5, candidates=cands, frame_size=FRAME))
    rules_seen = [[s.rule for s in o.signals] for o in frames]
    assert rules_seen[-1][-1] == "two_horses" and rules_seen[-1][0] == "camera_offline"
    assert [a.rule for o in frames for a in o.alerts] == ["two_horses"]
    assert frames[-1].signals[-1].raw == 1.0

    # The built-in rules score as without the dummies.
    for rule in dummy_rules:
        rules.unregister(rule.name)
    _, plain = _frames(CameraLogic("cam", LogicConfig(), None, [HORSE]), [TALL] * 25 + [WIDE] * 25 + [TALL] * 25)
    for rule in dummy_rules:
        rules.register(rule)
    assert [s for s in signals if s.rule not in ("wide_box", "two_horses")] == plain


def test_a_rule_registered_after_a_camera_logic_was_made_is_not_seen_by_it(dummy_rules):
    for rule in dummy_rules:
        rules.unregister(rule.name)
    logic = CameraLogic("cam", LogicConfig(rules=DummyRules()), None, [HORSE])
    for rule in dummy_rules:
        rules.register(rule)
    _, signals = _frames(logic, [TALL] * 10)
    assert {s.rule for s in signals} == {"camera_offline", "horse_down", "too_fast", "rolling", "horse_absent"}
