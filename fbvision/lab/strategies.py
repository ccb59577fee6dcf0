"""Smoothing strategies: grids of rule settings run over a detection log's raw signal and scored against ground truth."""

from __future__ import annotations

import functools
import itertools
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

#: A small default grid (seconds at 5 fps; ``after_s`` is the first escalation age = minimum duration).
DEFAULT_GRID: dict[str, Any] = {
    "none": [{}],
    "k_of_n": {"vote_k": [3, 8, 15], "vote_n": [5, 10, 25]},
    "ema": {"ema_half_life_s": [0.5, 1.0, 2.0, 4.0]},
    "median": {"median_n": [5, 9, 15, 25]},
    "hysteresis": {"ema_half_life_s": [1.0, 2.0], "enter": [0.6, 0.8], "exit": [0.2, 0.4]},
    "min_duration": {"after_s": [10.0, 20.0, 30.0], "exit_after_s": [0.0, 5.0]},
}

_SMOOTHING_KEYS = frozenset(SmoothingConfig.model_fields) - {"kind"}
_SHORT = {
    "vote_k": "k",
    "vote_n": "n",
    "ema_half_life_s": "half_life_s",
    "median_n": "n",
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

    Smoothing fields (``vote_k``, ``vote_n``, ``ema_half_life_s``, ``median_n``) go under ``smoothing``;
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


def strategy_grid(grid: Mapping[str, Any] | Iterable[Any] | None, base_rule: RuleConfig) -> list[Strategy]:
    """Expand a grid into :class:`Strategy` items on top of ``base_rule``.

    ``grid`` is either a dict ``{family: {param: [values...]}}`` (cartesian product; or a list of param dicts)
    with families from :data:`FAMILIES`, or a list of :class:`Strategy`, :class:`RuleConfig`,
    :class:`SmoothingConfig` or ``(label, RuleConfig | SmoothingConfig | param dict)`` items. Combinations
    that are invalid (``vote_k > vote_n``, ``exit > enter``) are skipped.
    """
    grid = DEFAULT_GRID if grid is None else grid
    out: list[Strategy] = []
    if isinstance(grid, Mapping):
        for family, spec in grid.items():
            if family not in FAMILIES:
                raise ValueError(f"unknown strategy family {family!r}; known: {', '.join(FAMILIES)}")
            for params in _combos(spec):
                if "vote_k" in params and params["vote_k"] > params.get("vote_n", base_rule.smoothing.vote_n):
                    continue
                if params.get("exit", base_rule.exit) > params.get("enter", base_rule.enter):
                    continue
                config = with_params(base_rule, params, FAMILIES[family])
                out.append(Strategy(family, _label(family, params), params, config))
        return out
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
    return out


def describe(rule: RuleConfig) -> str:
    """A one-line summary of a rule setting (smoothing, thresholds, minimum duration, gap, cooldown)."""
    s = rule.smoothing
    smoothing = {
        "vote": f"k_of_n {s.vote_k}/{s.vote_n}",
        "ema": f"ema half_life={_fmt(s.ema_half_life_s)}s",
        "median": f"median n={s.median_n}",
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
    table.attrs.update(rule=rule, camera_hours=hours, max_delay_s=max_delay_s, source=log.attrs.get("source"))
    return table


def rank_strategies(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` best first: highest recall (no recall last), then fewest false alerts, then the shortest
    median time-to-alert; ties keep the grid order."""
    ranked = table.assign(
        _recall=table["recall"].fillna(-1.0), _tta=table["tta_median_s"].fillna(math.inf)
    ).sort_values(["_recall", "false_alerts", "_tta"], ascending=[False, True, True], kind="stable")
    return ranked.drop(columns=["_recall", "_tta"])


def best_strategy(table: pd.DataFrame, *, max_false_per_cam_h: float | None = None) -> pd.Series:
    """The row to adopt: the first of :func:`rank_strategies`, among the rows with at most
    ``max_false_per_cam_h`` false alerts per camera-hour when given."""
    candidates = table
    if max_false_per_cam_h is not None:
        candidates = table[table["false_per_cam_h"] <= max_false_per_cam_h]
        if candidates.empty:
            raise ValueError(f"no strategy has <= {max_false_per_cam_h} false alerts per camera-hour")
    return rank_strategies(candidates).iloc[0]


