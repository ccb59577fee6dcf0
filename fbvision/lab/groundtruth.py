"""Alerts versus ground truth for synthetic cameras.

A synthetic scenario says exactly when a horse lies down, runs or rolls. From its behaviour intervals
and the camera's rule settings we derive the alerts a correct pipeline must raise, each with a deadline
(onset + the rule's first escalation age + the smoothing window + a tolerance), and match them against
the alerts the backend actually received: hits, misses, false alerts and time-to-alert.

:data:`RULE_TRUTH` says, per rule of the registry (:mod:`fbvision.logic.rules`), which ground-truth behaviours
make its condition true and whether its alerts are due per behaviour bout. It is keyed by the registry's
rule names and checked against the registry at import: a rule added to the logic without an entry here
fails the import of the lab.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import pandas as pd

from fbvision.core.logic_config import RuleConfig, RulesConfig
from fbvision.logic import rules as rule_registry
from fbvision.synth import Scenario, events


@dataclass(frozen=True)
class RuleTruth:
    """How the ground truth of a synthetic scenario scores one rule."""

    behaviours: frozenset[str] = frozenset()  # ground-truth behaviours during which the condition holds
    per_bout: bool = False  # one alert is due per bout of those behaviours long enough for the rule
    why: str = ""


#: Per registered rule (:func:`fbvision.logic.rules.registered`): its ground truth. Every rule needs an entry.
RULE_TRUTH: dict[str, RuleTruth] = {
    "horse_down": RuleTruth(
        frozenset({"lying_down", "lying_sternal", "lying_flat", "rolling"}), per_bout=True, why="a lying bout"
    ),
    "too_fast": RuleTruth(frozenset({"running"}), per_bout=True, why="a running bout"),
    "rolling": RuleTruth(
        frozenset({"rolling"}),
        why="needs several down/ups: only the dedicated scenario is scored, by presence",
    ),
    "horse_absent": RuleTruth(why="no scripted behaviour takes the horse out of view"),
    "camera_offline": RuleTruth(why="a camera fault, not a behaviour of the scene"),
    "lying_time_low": RuleTruth(why="a 24 h time budget: scored on a synthetic day (fbvision.lab.horseday)"),
    "restless": RuleTruth(why="posture changes per hour at night: scored on a synthetic day (fbvision.lab.horseday)"),
}
#: Which ground-truth behaviours make each rule's condition true (the rules that have any).
RULE_BEHAVIOURS: dict[str, frozenset[str]] = {
    name: truth.behaviours for name, truth in RULE_TRUTH.items() if truth.behaviours
}
TOLERANCE_S = 2.0


def check_rule_truth() -> None:
    """Fail unless :data:`RULE_TRUTH` has exactly one entry per registered rule. Runs at import."""
    names = [r.name for r in rule_registry.registered()]
    missing = [n for n in names if n not in RULE_TRUTH]
    extra = sorted(set(RULE_TRUTH) - set(names))
    if missing or extra:
        raise RuntimeError(
            f"fbvision.lab.groundtruth.RULE_TRUTH and the rule registry disagree: no entry for {missing}, "
            f"entries of unregistered rules {extra}"
        )


def rule_truth(name: str) -> RuleTruth:
    """The ground truth of the registered rule ``name``."""
    try:
        return RULE_TRUTH[name]
    except KeyError:
        raise KeyError(f"rule {name!r} has no entry in fbvision.lab.groundtruth.RULE_TRUTH") from None


def bout_scored_rules() -> tuple[str, ...]:
    """Registered rules whose alerts :func:`expected_alerts` derives from behaviour bouts (registry order)."""
    return tuple(r.name for r in rule_registry.registered() if rule_truth(r.name).per_bout)


check_rule_truth()


@dataclass(frozen=True)
class ExpectedAlert:
    camera_id: str
    rule: str
    onset: float  # unix seconds: the ground-truth start of the condition
    deadline: float  # the alert must be raised by then
    condition_end: float


@dataclass(frozen=True)
class Match:
    camera_id: str
    rule: str
    onset: float | None
    raised_at: float | None
    time_to_alert_s: float | None
    outcome: str  # "hit", "miss", "false", "not_due"

    def as_dict(self) -> dict:
        return asdict(self)


def smoothing_lag_s(rule: RuleConfig, fps: float) -> float:
    """How long the rule's smoothing needs before a sustained condition shows (seconds)."""
    s = rule.smoothing
    kind = s.kind.value
    if kind in ("vote", "median"):
        return s.window_s  # seconds at any frame rate
    if kind == "ema":
        return 3 * s.ema_half_life_s
    return 1.0 / fps


def _intervals(ev: pd.DataFrame, behaviours: frozenset[str]) -> list[tuple[float, float]]:
    """Merge one horse's consecutive behaviour intervals that count for a rule."""
    out: list[tuple[float, float]] = []
    for start, end in ev.loc[ev["behaviour"].isin(behaviours), ["start_s", "end_s"]].itertuples(index=False):
        if out and abs(out[-1][1] - start) < 1e-6:
            out[-1] = (out[-1][0], end)
        else:
            out.append((float(start), float(end)))
    return out


def expected_alerts(camera_id: str, scenario: Scenario, rules: RulesConfig, t0: float, t_end: float,
                    loop: bool = True) -> list[ExpectedAlert]:
    """Alerts due for ``camera_id`` playing ``scenario`` from wall time ``t0`` until ``t_end``."""
    ev = events(scenario)
    period = scenario.effective_duration_s
    out: list[ExpectedAlert] = []
    for spec in rule_registry.registered():
        truth = rule_truth(spec.name)
        if not truth.per_bout:
            continue  # e.g. rolling (only its dedicated scenario, by presence) and the camera rules
        rule_name, behaviours = spec.name, truth.behaviours
        rule: RuleConfig = getattr(rules, rule_name)
        if not rule.enabled:
            continue
        first_age = rule.escalation[0].after_s
        lag = smoothing_lag_s(rule, scenario.fps)
        for _horse, horse_ev in ev.groupby("horse_id"):
            due = []
            for start, end in _intervals(horse_ev, behaviours):
                if end - start < first_age + lag:
                    continue  # too short to be due (e.g. a normal short rest)
                k = 0
                while True:
                    onset = t0 + k * period + start
                    if onset > t_end:
                        break
                    due.append((onset, t0 + k * period + end))
                    if not loop:
                        break
                    k += 1
            # An episode this soon after the previous one ended is suppressed by the rule's cooldown: not due.
            quiet_until = float("-inf")
            for onset, end in sorted(due):
                if onset < quiet_until:
                    continue
                out.append(ExpectedAlert(camera_id, rule_name, onset, onset + first_age + lag + TOLERANCE_S, end))
                quiet_until = end + rule.exit_after_s + rule.cooldown_s
    return sorted(out, key=lambda e: e.onset)


def match_alerts(expected: Iterable[ExpectedAlert], raised: Iterable[dict], t_end: float) -> list[Match]:
    """Greedy one-to-one matching of raised alerts (dicts with camera_id, rule, updated_at) to expected ones.

    A raised alert matches an expected one of the same camera and rule when it was raised between the
    onset and the deadline. Expected alerts whose deadline is after ``t_end`` and that were not matched
    are ``not_due``; unmatched raised alerts are ``false``.
    """
    remaining = sorted(raised, key=lambda a: a["updated_at"])
    out: list[Match] = []
    for exp in expected:
        hit = next(
            (a for a in remaining if a["camera_id"] == exp.camera_id and a["rule"] == exp.rule
             and exp.onset - 1.0 <= a["updated_at"] <= exp.deadline),
            None,
        )
        if hit is not None:
            remaining.remove(hit)
            out.append(Match(exp.camera_id, exp.rule, exp.onset, hit["updated_at"], hit["updated_at"] - exp.onset, "hit"))
        else:
            outcome = "miss" if exp.deadline <= t_end else "not_due"
            out.append(Match(exp.camera_id, exp.rule, exp.onset, None, None, outcome))
    for a in remaining:
        out.append(Match(a["camera_id"], a["rule"], None, a["updated_at"], None, "false"))
    return out


def summarise(matches: list[Match]) -> dict:
    hits = [m for m in matches if m.outcome == "hit"]
    tta = sorted(m.time_to_alert_s for m in hits if m.time_to_alert_s is not None)
    return {
        "hits": len(hits),
        "misses": sum(m.outcome == "miss" for m in matches),
        "false_alerts": sum(m.outcome == "false" for m in matches),
        "not_due": sum(m.outcome == "not_due" for m in matches),
        "time_to_alert_s_median": tta[len(tta) // 2] if tta else None,
        "time_to_alert_s_max": tta[-1] if tta else None,
    }
