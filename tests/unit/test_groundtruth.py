import pytest

from fbvision.core.logic_config import RulesConfig
from fbvision.lab import groundtruth
from fbvision.lab.groundtruth import ExpectedAlert, expected_alerts, match_alerts, smoothing_lag_s, summarise
from fbvision.logic import rules as rule_registry
from fbvision.synth import Scenario


@pytest.fixture
def rules():
    return RulesConfig.model_validate({
        "horse_down": {"escalation": [{"after_s": 30, "severity": "warning"}], "cooldown_s": 10, "exit_after_s": 5},
    })


def test_long_lie_down_is_due_and_a_short_rest_is_not(rules):
    down = expected_alerts("c", Scenario.builtin("down_long"), rules, t0=1000.0, t_end=1080.0, loop=False)
    assert [(e.rule, e.onset) for e in down] == [("horse_down", 1015.0)]
    lag = smoothing_lag_s(rules.horse_down, 5.0)
    assert down[0].deadline == pytest.approx(1015.0 + 30 + lag + 2.0)
    assert expected_alerts("c", Scenario.builtin("normal_rest"), rules, 0.0, 500.0) == []


def test_looping_scenario_repeats_and_cooldown_suppresses(rules):
    sc = Scenario.builtin("running")
    period = sc.effective_duration_s
    got = expected_alerts("c", sc, rules, 0.0, 5 * period)
    # too_fast's default cooldown (120 s) swallows the next loop's run (44 s later)
    assert [e.rule for e in got] == ["too_fast"] * len(got)
    assert got[1].onset - got[0].onset > rules.too_fast.cooldown_s
    no_cooldown = rules.model_copy(update={"too_fast": rules.too_fast.model_copy(update={"cooldown_s": 0.0})})
    assert len(expected_alerts("c", sc, no_cooldown, 0.0, 5 * period)) == 5


def test_matching_outcomes():
    exp = [ExpectedAlert("a", "horse_down", 100.0, 140.0, 200.0), ExpectedAlert("a", "too_fast", 300.0, 310.0, 320.0),
           ExpectedAlert("b", "horse_down", 500.0, 540.0, 600.0)]
    raised = [{"camera_id": "a", "rule": "horse_down", "updated_at": 135.0},
              {"camera_id": "a", "rule": "too_fast", "updated_at": 330.0},  # too late: a miss and a false alert
              {"camera_id": "b", "rule": "too_fast", "updated_at": 50.0}]
    matches = match_alerts(exp, raised, t_end=400.0)
    outcomes = sorted((m.camera_id, m.rule, m.outcome) for m in matches)
    assert outcomes == [("a", "horse_down", "hit"), ("a", "too_fast", "false"), ("a", "too_fast", "miss"),
                        ("b", "horse_down", "not_due"), ("b", "too_fast", "false")]
    s = summarise(matches)
    assert (s["hits"], s["misses"], s["false_alerts"], s["not_due"]) == (1, 1, 2, 1)
    assert s["time_to_alert_s_median"] == pytest.approx(35.0)


def test_every_registered_rule_has_its_ground_truth():
    assert set(groundtruth.RULE_TRUTH) == {r.name for r in rule_registry.registered()}
    groundtruth.check_rule_truth()  # what the import ran
    assert groundtruth.bout_scored_rules() == ("horse_down", "too_fast")
    assert groundtruth.RULE_BEHAVIOURS == {
        "horse_down": frozenset({"lying_down", "lying_sternal", "lying_flat", "rolling"}),
        "too_fast": frozenset({"running"}),
        "rolling": frozenset({"rolling"}),
    }
    rule = rule_registry.Rule(
        "kicking", "track", lambda ctx: rule_registry.Score(0.0), rule_registry.track_evidence
    )
    rule_registry.register(rule)
    try:
        with pytest.raises(RuntimeError, match=r"no entry for \['kicking'\]"):
            groundtruth.check_rule_truth()
        with pytest.raises(KeyError, match="kicking"):
            expected_alerts("c", Scenario.builtin("running"), RulesConfig(), 0.0, 100.0)
    finally:
        rule_registry.unregister("kicking")


def test_rolling_and_the_camera_rules_are_never_due_from_bouts():
    quick = RulesConfig.model_validate({
        "horse_down": {"escalation": [{"after_s": 5, "severity": "warning"}], "cooldown_s": 0, "exit_after_s": 0},
        "horse_absent": {"escalation": [{"after_s": 0, "severity": "info"}]},
        "camera_offline": {"escalation": [{"after_s": 0, "severity": "warning"}]},
    })
    got = expected_alerts("c", Scenario.builtin("rolling"), quick, 0.0, 60.0, loop=False)
    assert [(e.rule, e.onset) for e in got] == [("horse_down", 22.0)]  # the only lying bout >= 5 s + lag
