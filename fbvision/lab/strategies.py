"""Smoothing strategies: grids of rule settings run over a detection log's raw signal and scored against ground truth."""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any, cast

import pandas as pd

from fbvision.core.logic_config import (
    LogicConfig,
    RuleConfig,
    SmoothingConfig,
    SmoothingKind,
)
from fbvision.lab.detections import _as_scenario, _track_rows
from fbvision.lab.groundtruth import bout_scored_rules, expected_alerts, match_alerts, summarise
from fbvision.logic import rules as rule_registry
from fbvision.logic.features import TrackFeatures
from fbvision.logic.smoothing import build_filter, episode_tracker, episode_transitions, smooth
from fbvision.synth import Scenario

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------
# Strategies


@dataclass(frozen=True)
class Strategy:
    """One candidate setting of a rule: a family name, a readable label, its grid parameters, the config."""

    family: str
    label: str
    params: dict[str, Any]
    config: RuleConfig


#: Grid family -> the smoothing kind it uses. ``hysteresis`` is an EMA with separate enter/exit thresholds
#: (on a 0/1 signal only a continuous smoothed score makes hysteresis meaningful); ``min_duration`` is the
#: raw signal with only the episode's minimum duration (first escalation age) and gap tolerance.
FAMILIES: dict[str, SmoothingKind] = {
    "none": SmoothingKind.none,
    "k_of_n": SmoothingKind.vote,
    "ema": SmoothingKind.ema,
    "median": SmoothingKind.median,
    "hysteresis": SmoothingKind.ema,
    "min_duration": SmoothingKind.none,
}

#: A small default grid (every window in seconds; ``after_s`` is the first escalation age = minimum duration).
#: ``k_of_n`` is the vote (``smoothing.kind: vote``): a share of the frames seen in the last ``window_s``.
DEFAULT_GRID: dict[str, Any] = {
    "none": [{}],
    "k_of_n": {"window_s": [1.0, 2.0, 5.0], "fraction": [0.6, 0.8]},
    "ema": {"ema_half_life_s": [0.5, 1.0, 2.0, 4.0]},
    "median": {"window_s": [1.0, 1.8, 3.0, 5.0]},
    "hysteresis": {"ema_half_life_s": [1.0, 2.0], "enter": [0.6, 0.8], "exit": [0.2, 0.4]},
    "min_duration": {"after_s": [10.0, 20.0, 30.0], "exit_after_s": [0.0, 5.0]},
}

_SMOOTHING_KEYS = frozenset(SmoothingConfig.model_fields) - {"kind"}
_SHORT = {
    "ema_half_life_s": "half_life_s",
    "after_s": "min_s",
    "exit_after_s": "gap_s",
}


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _label(family: str, params: Mapping[str, Any]) -> str:
    parts = [f"{_SHORT.get(k, k)}={_fmt(v)}" for k, v in params.items()]
    return " ".join([family, *parts])


def with_params(base_rule: RuleConfig, params: Mapping[str, Any], kind: SmoothingKind | str | None = None) -> RuleConfig:
    """``base_rule`` with grid parameters applied (validated, same rule class).

    Smoothing fields (``window_s``, ``fraction``, ``min_frames``, ``ema_half_life_s``) go under ``smoothing``;
    ``after_s`` moves the escalation ladder so its first step (the minimum duration) is at ``after_s``;
    anything else (``enter``, ``exit``, ``exit_after_s``, ``cooldown_s``...) is a rule field.
    """
    tree = base_rule.model_dump(mode="json")
    if kind is not None:
        tree["smoothing"]["kind"] = SmoothingKind(kind).value
    for key, value in params.items():
        if key in _SMOOTHING_KEYS:
            tree["smoothing"][key] = value
        elif key == "after_s":
            delta = float(value) - tree["escalation"][0]["after_s"]
            for step in tree["escalation"]:
                step["after_s"] = step["after_s"] + delta
        else:
            tree[key] = value
    return type(base_rule).model_validate(tree)


def _combos(spec: Any) -> list[dict[str, Any]]:
    if isinstance(spec, Mapping):
        keys = list(spec)
        values = [v if isinstance(v, (list, tuple)) else [v] for v in spec.values()]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]
    return [dict(item) for item in spec]


#: The smoothing fields each kind reads (the others do not change what it does).
_KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "none": (),
    "vote": ("window_s", "fraction", "min_frames"),
    "ema": ("ema_half_life_s",),
    "median": ("window_s", "min_frames"),
}


def effective_setting(rule: RuleConfig) -> str:
    """A key for what a setting does: the rule's fields with the smoothing reduced to the fields its kind reads.
    Two settings with the same key behave the same on any signal (``none`` and ``min_duration`` at the base
    rule's own minimum duration and gap, say), whatever their family or label."""
    tree = rule.model_dump(mode="json")
    smoothing = tree["smoothing"]
    tree["smoothing"] = {"kind": smoothing["kind"], **{k: smoothing[k] for k in _KIND_FIELDS[smoothing["kind"]]}}
    return json.dumps({"rule": type(rule).__name__, **tree}, sort_keys=True)


def dedupe_strategies(strategies: Iterable[Strategy]) -> list[Strategy]:
    """``strategies`` without those that behave like an earlier one (:func:`effective_setting`); the first
    keeps its place, each drop is logged."""
    kept: dict[str, Strategy] = {}
    for strategy in strategies:
        key = effective_setting(strategy.config)
        if key in kept:
            logger.info("strategy %r is the same setting as %r: dropped", strategy.label, kept[key].label)
            continue
        kept[key] = strategy
    return list(kept.values())


def strategy_grid(
    grid: Mapping[str, Any] | Iterable[Any] | None, base_rule: RuleConfig, *, dedupe: bool = True
) -> list[Strategy]:
    """Expand a grid into :class:`Strategy` items on top of ``base_rule``.

    ``grid`` is either a dict ``{family: {param: [values...]}}`` (cartesian product; or a list of param dicts)
    with families from :data:`FAMILIES`, or a list of :class:`Strategy`, :class:`RuleConfig`,
    :class:`SmoothingConfig` or ``(label, RuleConfig | SmoothingConfig | param dict)`` items. Combinations
    that are invalid (``exit > enter``) are skipped. Settings that behave the same as an earlier one (see
    :func:`effective_setting`: e.g. ``none`` and ``min_duration`` at the base rule's own minimum duration and
    gap) are dropped unless ``dedupe=False``; the drop is logged with both labels.
    """
    grid = DEFAULT_GRID if grid is None else grid
    out: list[Strategy] = []
    if isinstance(grid, Mapping):
        for family, spec in grid.items():
            if family not in FAMILIES:
                raise ValueError(f"unknown strategy family {family!r}; known: {', '.join(FAMILIES)}")
            for params in _combos(spec):
                if params.get("exit", base_rule.exit) > params.get("enter", base_rule.enter):
                    continue
                config = with_params(base_rule, params, FAMILIES[family])
                out.append(Strategy(family, _label(family, params), params, config))
        return dedupe_strategies(out) if dedupe else out
    for item in grid:
        label: str | None = None
        if isinstance(item, Strategy):
            out.append(item)
            continue
        if isinstance(item, tuple):
            label, item = item
        if isinstance(item, SmoothingConfig):
            config = base_rule.model_copy(update={"smoothing": item})
            config = type(base_rule).model_validate(config.model_dump(mode="json"))
        elif isinstance(item, RuleConfig):
            config = type(base_rule).model_validate(item.model_dump(mode="json"))
        elif isinstance(item, Mapping):
            config = with_params(base_rule, item, item.get("kind"))  # type: ignore[arg-type]
        else:
            raise TypeError(f"cannot make a strategy of {type(item).__name__}")
        out.append(Strategy("custom", label or describe(config), {}, config))
    return dedupe_strategies(out) if dedupe else out


def describe(rule: RuleConfig) -> str:
    """A one-line summary of a rule setting (smoothing, thresholds, minimum duration, gap, cooldown)."""
    s = rule.smoothing
    smoothing = {
        "vote": f"vote {_fmt(s.fraction)} of {_fmt(s.window_s)}s (min {s.min_frames} frames)",
        "ema": f"ema half_life={_fmt(s.ema_half_life_s)}s",
        "median": f"median over {_fmt(s.window_s)}s (min {s.min_frames} frames)",
        "none": "raw",
    }[s.kind.value]
    return (
        f"{smoothing} enter={_fmt(rule.enter)} exit={_fmt(rule.exit)} min={_fmt(rule.escalation[0].after_s)}s "
        f"gap={_fmt(rule.exit_after_s)}s cooldown={_fmt(rule.cooldown_s)}s"
    )


#: Numeric track-feature columns a log row gives a recomputed score (NaN when the log lacks one).
_FEATURE_VALUES = ("t", "aspect", "rel_height", "bottom", "speed_bl_s", "confidence", "baseline_height")


def raw_signal(log: pd.DataFrame, rule: str = "horse_down", base: LogicConfig | None = None) -> pd.Series:
    """The rule's raw per-frame score: the ``raw_<rule>`` column when the log has it (what the worker
    computed), else recomputed from the feature columns by the registered rule's score function
    (:mod:`fbvision.logic.rules`; recorder logs), for the track rules that read only track features."""
    column = f"raw_{rule}"
    if column in log:
        return log[column].astype(float)
    base = base or LogicConfig()
    spec = rule_registry.REGISTRY.get(rule)
    if spec is None or not spec.from_features:
        raise ValueError(f"the log has no {column!r} column and {rule!r} cannot be derived from features")
    params = getattr(base.rules, rule)
    nan = pd.Series(math.nan, index=log.index)
    numbers = [log[name] if name in log else nan for name in _FEATURE_VALUES]
    values = []
    for present, lying, *others in zip(log["present"], log["lying"], *numbers, strict=True):
        row = SimpleNamespace(present=bool(present) if pd.notna(present) else False,
                              lying=bool(lying) if pd.notna(lying) else False,
                              **{name: float(v) if pd.notna(v) else math.nan
                                 for name, v in zip(_FEATURE_VALUES, others, strict=True)})
        ctx = rule_registry.RuleContext(t=row.t, params=params, rules=base.rules,
                                        features=cast(TrackFeatures, row))
        score = spec.score(ctx).value
        values.append(math.nan if score is None else float(score))
    return pd.Series(values, index=log.index, name=column, dtype=float)


def run_strategy(
    log: pd.DataFrame, rule: str, rule_config: RuleConfig, base: LogicConfig | None = None
) -> pd.DataFrame:
    """Alert transitions of one setting over a log: ``smooth`` then ``episode_transitions`` (the worker's
    classes), per camera and track. Columns: camera_id, track_id, state, severity, started_at, t, ended_at."""
    rows = _track_rows(log)
    frame = pd.DataFrame(
        {"camera_id": rows["camera_id"], "track_id": rows["track_id"], "t": rows["t"].astype(float),
         "raw": raw_signal(rows, rule, base)}
    )
    frame["smoothed"] = smooth(frame, "raw", functools.partial(build_filter, rule_config.smoothing)).astype(float)
    return episode_transitions(frame, "smoothed", functools.partial(episode_tracker, rule_config))


def _camera_info(log: pd.DataFrame, scenarios: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    known = dict(log.attrs.get("cameras") or {})
    info: dict[str, dict[str, Any]] = {}
    times = log.groupby("camera_id", sort=True)["t"].agg(["min", "max"]) if len(log) else None
    for camera_id in sorted(set(known) | set(log["camera_id"].dropna().unique())):
        camera = dict(known.get(camera_id, {}))
        if scenarios is not None and camera_id in scenarios:
            camera["scenario"] = scenarios[camera_id]
        if camera.get("scenario") is None:
            raise ValueError(
                f"no scenario for camera {camera_id!r}: pass scenarios={{camera_id: scenario}} to score it"
            )
        scenario = camera["scenario"]
        scenario = _as_scenario(scenario) if not isinstance(scenario, Scenario) else scenario
        camera["scenario"] = scenario
        fps = float(camera.get("fps", scenario.fps))
        if "t0" not in camera or "t_end" not in camera:
            if times is None or camera_id not in times.index:
                raise ValueError(f"camera {camera_id!r} has no rows and no time range in log.attrs['cameras']")
            camera.setdefault("t0", float(times.loc[camera_id, "min"]))
            camera.setdefault("t_end", float(times.loc[camera_id, "max"]))
        camera.setdefault("duration_s", camera["t_end"] - camera["t0"] + 1.0 / fps)
        info[str(camera_id)] = camera
    return info


def _camera_times(log: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Each camera's time range and frame rate from the log itself (``log.attrs['cameras']`` where it has them):
    what scoring needs when the truth is not a scenario."""
    known = dict(log.attrs.get("cameras") or {})
    out: dict[str, dict[str, Any]] = {}
    for camera_id, t in log.groupby("camera_id", sort=True)["t"]:
        camera = {k: v for k, v in dict(known.get(camera_id, {})).items() if k in ("fps", "t0", "t_end")}
        times = t.drop_duplicates().sort_values()
        if "fps" not in camera:
            step = float(times.diff().median()) if len(times) > 1 else math.nan
            camera["fps"] = round(1.0 / step, 3) if step > 0 else 5.0
        camera.setdefault("t0", float(times.min()))
        camera.setdefault("t_end", float(times.max()))
        camera["duration_s"] = camera["t_end"] - camera["t0"] + 1.0 / float(camera["fps"])
        out[str(camera_id)] = camera
    return out


def expected_for(
    log: pd.DataFrame,
    rule: str,
    base: LogicConfig,
    *,
    scenarios: Mapping[str, Any] | None = None,
    max_delay_s: float = 10.0,
) -> dict[str, list]:
    """Expected alerts per camera: every ground-truth bout at least the base rule's minimum duration long
    (first escalation age), due by ``onset + minimum duration + max_delay_s``. The same set scores every
    strategy, so their recall shares one denominator (the reference ignores smoothing lag)."""
    reference_rule = getattr(base.rules, rule).model_copy(update={"smoothing": SmoothingConfig(kind="none")})
    reference = base.rules.model_copy(update={rule: reference_rule})
    first_age = reference_rule.escalation[0].after_s
    out: dict[str, list] = {}
    for camera_id, camera in _camera_info(log, scenarios).items():
        expected = expected_alerts(camera_id, camera["scenario"], reference, camera["t0"], camera["t_end"], loop=False)
        out[camera_id] = [
            replace(e, deadline=e.onset + first_age + max_delay_s) for e in expected if e.rule == rule
        ]
    return out


def evaluate_strategies(
    log: pd.DataFrame,
    rule: str = "horse_down",
    grid: Mapping[str, Any] | Iterable[Any] | None = None,
    base: LogicConfig | None = None,
    *,
    scenarios: Mapping[str, Any] | None = None,
    max_delay_s: float = 10.0,
    expected: Mapping[str, list] | None = None,
) -> pd.DataFrame:
    """Score every strategy of ``grid`` (see :func:`strategy_grid`; default :data:`DEFAULT_GRID`) on ``log``.

    For each setting, :func:`run_strategy` gives the raised alerts, which :func:`fbvision.lab.groundtruth.match_alerts`
    matches against :func:`expected_for` (same expected set for all). Columns: ``strategy`` (label),
    ``family``, ``expected``, ``hits``, ``misses``, ``false_alerts``, ``recall``, ``false_per_cam_h`` (false
    alerts per camera-hour of log), ``tta_median_s``/``tta_max_s`` (time from the ground-truth onset to the
    raise), ``precision`` (hits / (hits + false alerts)), ``raised``, ``setting`` (:func:`describe`) and
    ``rule_config`` (the :class:`RuleConfig`, for :func:`config_snippet`). A raise after the deadline counts as a
    miss *and* a false alert.

    ``expected`` (camera id -> expected alerts) replaces the ground truth of scenarios: a reviewed run's
    (:func:`fbvision.lab.reviewed.evaluate_reviewed`); the cameras' time ranges then come from the log.
    """
    base = base or LogicConfig()
    if rule not in bout_scored_rules():
        raise ValueError(f"ground truth scores only {sorted(bout_scored_rules())}, not {rule!r}")
    base_rule = getattr(base.rules, rule)
    strategies = strategy_grid(grid, base_rule)
    if expected is None:
        cameras = _camera_info(log, scenarios)
        expected = expected_for(log, rule, base, scenarios=scenarios, max_delay_s=max_delay_s)
    else:
        cameras = _camera_times(log)
        expected = {cam: list(expected.get(cam, [])) for cam in cameras}
    hours = sum(c["duration_s"] for c in cameras.values()) / 3600.0
    records = []
    for strategy in strategies:
        transitions = run_strategy(log, rule, strategy.config, base)
        raised = transitions[transitions["state"] == "raised"]
        matches = []
        for camera_id, camera in cameras.items():
            alerts = [
                {"camera_id": camera_id, "rule": rule, "updated_at": float(t)}
                for t in raised.loc[raised["camera_id"] == camera_id, "t"]
            ]
            matches += match_alerts(expected[camera_id], alerts, camera["t_end"])
        summary = summarise(matches)
        false_cameras = sorted({m.camera_id for m in matches if m.outcome == "false"})
        due = summary["hits"] + summary["misses"]
        records.append(
            {
                "strategy": strategy.label,
                "family": strategy.family,
                "expected": due,
                "hits": summary["hits"],
                "misses": summary["misses"],
                "false_alerts": summary["false_alerts"],
                "recall": summary["hits"] / due if due else math.nan,
                "precision": (summary["hits"] / (summary["hits"] + summary["false_alerts"])
                              if summary["hits"] + summary["false_alerts"] else math.nan),
                "false_per_cam_h": summary["false_alerts"] / hours if hours > 0 else math.nan,
                "false_rate": false_rate_text(summary["false_alerts"], hours),
                "tta_median_s": summary["time_to_alert_s_median"],
                "tta_max_s": summary["time_to_alert_s_max"],
                "raised": len(raised),
                "false_cameras": ",".join(false_cameras),
                "setting": describe(strategy.config),
                "rule_config": strategy.config,
            }
        )
    table = pd.DataFrame.from_records(records)
    for column in ("tta_median_s", "tta_max_s"):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype(float)
    table.attrs.update(rule=rule, camera_hours=hours, max_delay_s=max_delay_s, source=log.attrs.get("source"),
                       source_note=log.attrs.get("source_note"), cameras=len(cameras),
                       base_setting=effective_setting(base_rule))
    return table


def false_rate_text(false_alerts: int, camera_hours: float) -> str:
    """False alerts with the camera-hours they were counted on: ``"1 in 0.09 camera-hours"`` (the rate alone,
    10.8 per camera-hour, hides that it rests on one event in five minutes)."""
    if not camera_hours > 0:
        return f"{int(false_alerts)} in no camera time"
    hours = f"{camera_hours:.2f}" if camera_hours < 10 else f"{camera_hours:.1f}"
    text = f"{int(false_alerts)} in {hours} camera-hours"
    if false_alerts:
        text += f" ({false_alerts / camera_hours:.2g}/camera-hour)"
    return text


#: Below this many expected (true) events the lab does not recommend a setting: with n events one miss moves
#: recall by 1/n, and recall 1.0 on n events only bounds the true recall above ~1 - 3/n (95 %, "rule of
#: three"): 0.85 at 20 events, 0.0 at 3.
MIN_EVENTS = 20
#: Settings with the same hits and false alerts whose median time-to-alert differs by less than this are
#: equivalent: a second on a bout that must last minutes is no evidence for either.
TIE_TTA_S = 1.0


def rank_strategies(table: pd.DataFrame, *, tie_tta_s: float = TIE_TTA_S) -> pd.DataFrame:
    """``table`` best first: highest recall (no recall last), then fewest false alerts, then the shortest
    median time-to-alert; ties keep the grid order. Adds ``rank`` and ``tie_group`` (1 = the best group):
    consecutive rows with the same recall and false alerts whose median time-to-alert is within ``tie_tta_s``
    of the group's first row are one group - equivalent on this data - and share a rank."""
    ranked = table.assign(
        _recall=table["recall"].fillna(-1.0), _tta=table["tta_median_s"].fillna(math.inf)
    ).sort_values(["_recall", "false_alerts", "_tta"], ascending=[False, True, True], kind="stable")
    groups, ranks = [], []
    group, head = 0, None
    for position, (recall, false, tta) in enumerate(zip(ranked["_recall"], ranked["false_alerts"], ranked["_tta"],
                                                        strict=True)):
        same = head is not None and (recall, false) == head[:2] and (
            tta == head[2] or abs(tta - head[2]) < tie_tta_s
        )
        if not same:
            group += 1
            head = (recall, false, tta, position + 1)
        groups.append(group)
        ranks.append(head[3])  # type: ignore[index]
    ranked = ranked.assign(rank=ranks, tie_group=groups)
    return ranked.drop(columns=["_recall", "_tta"])


def tie_notices(table: pd.DataFrame, *, tie_tta_s: float = TIE_TTA_S, top: int | None = None) -> list[str]:
    """One sentence per group of equivalent settings (see :func:`rank_strategies`), best first: ``"these 3
    settings are equivalent on this data (rank 1: 24/24 hits, 0 false alerts, median time to alert 21-21.6
    s): none, ema half_life_s=0.5, median window_s=1"``. ``top``: only the first ``top`` groups."""
    ranked = table if "tie_group" in table else rank_strategies(table, tie_tta_s=tie_tta_s)
    out = []
    for _, group in ranked.groupby("tie_group", sort=True):
        if len(group) < 2:
            continue
        first = group.iloc[0]
        tta = group["tta_median_s"]
        span = "n/a" if tta.isna().all() else f"{tta.min():.3g}-{tta.max():.3g} s"
        out.append(
            f"these {len(group)} settings are equivalent on this data (rank {first['rank']}: "
            f"{first['hits']}/{first['expected']} hits, {first['false_alerts']} false alerts, median time to "
            f"alert {span}): {', '.join(group['strategy'])}"
        )
    return out[:top] if top is not None else out


@dataclass(frozen=True)
class Recommendation:
    """What :func:`recommend` says. ``row`` is None when it refuses (``refused`` says why)."""

    text: str
    source: str | None
    events: int
    camera_hours: float
    row: pd.Series | None = None
    equivalent: tuple[str, ...] = ()
    refused: str | None = None

    @property
    def strategy(self) -> str | None:
        return None if self.row is None else str(self.row["strategy"])

    @property
    def rule_config(self) -> RuleConfig | None:
        return None if self.row is None else self.row["rule_config"]


_SOURCE_WORDS = {
    "model": "the detector model's own detections",
    "error_model": "ground-truth boxes degraded by the detector's measured error model (not the model itself)",
    "ground_truth": "ground-truth boxes with made-up noise (measures the smoothing, not the detector)",
}


def recommend(
    table: pd.DataFrame,
    *,
    min_events: int = MIN_EVENTS,
    tie_tta_s: float = TIE_TTA_S,
    max_false_per_cam_h: float | None = None,
) -> Recommendation:
    """The setting to adopt, or a refusal.

    Refuses below ``min_events`` expected events (:data:`MIN_EVENTS`). Otherwise takes the best group of
    equivalent settings (:func:`rank_strategies`, among those with at most ``max_false_per_cam_h`` when given)
    and, within it (the data cannot tell them apart, so a stated preference picks): the rule's current setting
    when it is one of them (no reason to change); else the first (fastest) with a smoothing kind other than
    ``none`` (a margin against detector errors the data does not show: a missed frame, a glitch); else the first. The text names the detection source it rests on
    (``table.attrs["source"]``), the events and camera-hours, and the equivalent settings.
    """
    source = table.attrs.get("source")
    hours = float(table.attrs.get("camera_hours", math.nan))
    events = int(table["expected"].max()) if len(table) else 0
    on = _SOURCE_WORDS.get(str(source), f"{source} detections")
    if events < min_events:
        why = (f"only {events} true event(s) on {hours:.2f} camera-hours (at least {min_events} are needed to "
               f"tell settings apart): no recommendation")
        return Recommendation(text=f"{why}; source: {on}", source=source, events=events, camera_hours=hours,
                              refused=why)
    candidates = table
    if max_false_per_cam_h is not None:
        candidates = table[table["false_per_cam_h"] <= max_false_per_cam_h]
        if candidates.empty:
            why = f"no strategy has <= {max_false_per_cam_h} false alerts per camera-hour"
            return Recommendation(text=why, source=source, events=events, camera_hours=hours, refused=why)
    ranked = rank_strategies(candidates, tie_tta_s=tie_tta_s)
    best = ranked[ranked["tie_group"] == ranked["tie_group"].iloc[0]]
    base = table.attrs.get("base_setting")
    current = [i for i, config in zip(best.index, best["rule_config"], strict=True)
               if base is not None and effective_setting(config) == base]
    smoothed = [i for i, config in zip(best.index, best["rule_config"], strict=True)
                if config.smoothing.kind is not SmoothingKind.none]
    if current:
        row, why = best.loc[current[0]], "the rule's current setting is among them: no change"
    elif smoothed:
        row = best.loc[smoothed[0]]
        why = ("a smoothed signal keeps a margin against detector errors this data does not show, and it is the "
               "fastest smoothed one")
    else:
        row, why = best.iloc[0], "it is the fastest of them"
    equivalent = tuple(s for s in best["strategy"] if s != row["strategy"])
    tta = row["tta_median_s"]
    text = (
        f"recommended: {row['strategy']} ({describe(row['rule_config'])}): {row['hits']}/{row['expected']} hits, "
        f"false alerts: {row['false_rate']}, median time to alert {tta:.1f} s; on {len(candidates)} settings, "
        f"{table.attrs.get('cameras', '?')} cameras, {hours:.2f} camera-hours; source: {on}"
    )
    if equivalent:
        text += (f". Equivalent on this data: {len(best)} settings ({', '.join(best['strategy'])}); picked because "
                 f"{why}")
    return Recommendation(text=text, source=source, events=events, camera_hours=hours, row=row,
                          equivalent=equivalent)


def best_strategy(table: pd.DataFrame, *, max_false_per_cam_h: float | None = None) -> pd.Series:
    """The row to adopt: the first of :func:`rank_strategies`, among the rows with at most
    ``max_false_per_cam_h`` false alerts per camera-hour when given."""
    candidates = table
    if max_false_per_cam_h is not None:
        candidates = table[table["false_per_cam_h"] <= max_false_per_cam_h]
        if candidates.empty:
            raise ValueError(f"no strategy has <= {max_false_per_cam_h} false alerts per camera-hour")
    return rank_strategies(candidates).iloc[0]


