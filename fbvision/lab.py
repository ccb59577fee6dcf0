"""Research helpers for the notebooks: detection logs with ground truth, strategy sweeps, config snippets, plots.

Everything here drives the production code rather than re-implementing it:

* :func:`detection_log` renders synthetic scenarios (:mod:`fbvision.synth`), runs the ONNX detector the way
  the inference worker does (:func:`fbvision.letterbox.letterbox`, :func:`fbvision.postprocess.decode_yolo`)
  and then the real :class:`fbvision.camera_logic.CameraLogic` (NMS, thresholds, ByteTrack, features, rules),
  and joins each track row with the ground truth of its horse. Without the model file (or with
  ``use_model=False``) the detections are the ground-truth boxes with seeded jitter, dropouts and posture
  glitches, and the log says so (``source`` column, ``log.attrs["source"]``).
* :func:`evaluate_strategies` runs the same smoothing filters and :class:`~fbvision.smoothing.EpisodeTracker`
  as the logic worker (through the DataFrame drivers of :mod:`fbvision.smoothing`) over a log's raw rule
  signal, for a grid of rule settings, and scores the raised alerts with :mod:`fbvision.groundtruth`.
* :func:`config_snippet` writes a chosen rule setting as YAML that :func:`fbvision.config.load_settings`
  loads unchanged.
* :func:`plot_track_timeline` draws one track's features with ground-truth behaviour bands and alerts
  (matplotlib is imported only there).
"""

from __future__ import annotations

import itertools
import logging
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pandas as pd
import yaml

from fbvision import rules as rule_fns
from fbvision.camera_logic import CameraLogic
from fbvision.config import REPO_ROOT
from fbvision.groundtruth import RULE_BEHAVIOURS, expected_alerts, match_alerts, summarise
from fbvision.letterbox import letterbox
from fbvision.logic_config import (
    TRACK_RULES,
    LogicConfig,
    RuleConfig,
    RulesConfig,
    SmoothingConfig,
    SmoothingKind,
)
from fbvision.postprocess import Candidates, decode_yolo
from fbvision.smoothing import episode_transitions, smooth
from fbvision.synth import HorseTruth, Scenario, SceneRenderer

logger = logging.getLogger(__name__)

DEFAULT_MODEL = Path("models/horse-demo-yolo11n-320.onnx")
#: Source labels (``log.attrs["source"]`` and the ``source`` column).
SOURCE_MODEL = "model"
SOURCE_GROUND_TRUTH = "ground_truth"
_GT_CLASS_ID = 0
_MATCH_IOU = 0.3
_FEATURE_COLUMNS = (
    "camera_id", "track_id", "t", "seq", "aspect", "rel_height", "bottom", "speed_bl_s", "confidence", "present",
    "lying", "baseline_height", "x1", "y1", "x2", "y2",
)
#: Columns of a :func:`detection_log` (in order).
LOG_COLUMNS: tuple[str, ...] = (
    *_FEATURE_COLUMNS,
    "frame",
    "detections",
    *(f"{kind}_{rule}" for rule in TRACK_RULES for kind in ("raw", "smoothed", "open")),
    "alerts",
    "gt_horse",
    "gt_behaviour",
    "gt_posture",
    "gt_iou",
    "source",
)

# ---------------------------------------------------------------------------------------------------------
# Detection logs


@dataclass(frozen=True)
class TruthNoise:
    """How ground-truth boxes are degraded into detections when no model is used (all seeded).

    ``jitter``: std-dev of each box edge, as a fraction of the box width/height. ``dropout``: probability a
    horse is missed in a frame. ``glitch``: probability that a box has the wrong height for one frame (a
    standing horse cut low, a lying horse with its head up), which flips the posture for that frame.
    ``confidence``: uniform range of the detection scores.
    """

    jitter: float = 0.02
    dropout: float = 0.05
    glitch: float = 0.02
    confidence: tuple[float, float] = (0.55, 0.95)
    seed: int = 0


def _as_scenario(item: str | Path | Scenario) -> Scenario:
    if isinstance(item, Scenario):
        return item
    text = str(item)
    if text.endswith((".yaml", ".yml")) or "\n" in text:
        return Scenario.from_yaml(item if isinstance(item, Path) else text)
    return Scenario.builtin(text)


def _resolve_model(model_path: str | Path | None) -> Path:
    path = Path(model_path) if model_path is not None else DEFAULT_MODEL
    return path if path.is_absolute() else REPO_ROOT / path


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.size == 0 or b.size == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def truth_candidates(
    truths: Sequence[HorseTruth],
    rng: np.random.Generator,
    noise: TruthNoise,
    frame_size: tuple[int, int],
    class_id: int = _GT_CLASS_ID,
) -> Candidates:
    """Detections made from one frame's ground truth: jittered boxes, some dropped, a few posture glitches."""
    width, height = frame_size
    boxes, scores = [], []
    for truth in truths:
        if not truth.visible:
            continue
        # Draw every random number whatever happens, so one horse's luck does not shift another's.
        drop, glitch, conf = rng.random(), rng.random(), rng.uniform(*noise.confidence)
        edges = rng.normal(0.0, noise.jitter, size=4)
        if drop < noise.dropout:
            continue
        x1, y1, x2, y2 = truth.box
        w, h = x2 - x1, y2 - y1
        if glitch < noise.glitch:
            factor = 1.8 if truth.posture == "lying" else 0.55
            y1 = y2 - h * factor
        x1, x2 = x1 + edges[0] * w, x2 + edges[2] * w
        y1, y2 = y1 + edges[1] * h, y2 + edges[3] * h
        box = np.clip([x1, y1, x2, y2], 0, [width, height, width, height])
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            continue
        boxes.append(box)
        scores.append(conf)
    return Candidates.create(np.reshape(boxes, (-1, 4)), scores, [class_id] * len(scores))


class _Detector:
    """The inference worker's path on CPU: letterbox (+ the producer's JPEG), BGR->RGB /255, ORT, decode."""

    def __init__(self, path: Path, *, threads: int, conf_floor: float, top_k: int, jpeg_quality: int | None):
        import onnxruntime as ort

        from fbvision.modelinfo import load_model_info

        self.info = load_model_info(path)
        self.class_id = self.info.class_id("horse")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.dtype = np.float16 if self.info.input_dtype == "float16" else np.float32
        self.conf_floor, self.top_k, self.jpeg_quality = conf_floor, top_k, jpeg_quality

    def __call__(self, frames: Sequence[np.ndarray]) -> list[Candidates]:
        h, w = self.info.input_size
        images, boxes = [], []
        for frame in frames:
            image, box = letterbox(frame, (w, h))
            if self.jpeg_quality is not None:
                ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
                image = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else image
            images.append(image[:, :, ::-1].transpose(2, 0, 1))
            boxes.append(box)
        tensor = (np.stack(images).astype(np.float32) / np.float32(255.0)).astype(self.dtype, copy=False)
        output = self.session.run([self.info.output_name], {self.info.input_name: tensor})[0]
        return decode_yolo(output.astype(np.float32, copy=False), boxes, [self.class_id], self.conf_floor,
                           self.top_k)


def detection_log(
    scenarios: Sequence[str | Scenario],
    model_path: str | Path | None = None,
    *,
    fps: float | None = None,
    max_frames: int | None = None,
    use_model: bool = True,
    config: LogicConfig | None = None,
    noise: TruthNoise | None = None,
    batch_size: int = 8,
    threads: int = 2,
    conf_floor: float = 0.05,
    top_k: int = 100,
    jpeg_quality: int | None = 85,
) -> pd.DataFrame:
    """One row per frame per known track of each scenario, with features, rule signals and ground truth.

    ``camera_id`` is the scenario name; ``t`` the frame time in seconds from the scenario start. Columns:
    the :class:`~fbvision.features.TrackFeatures` fields (``track_id, t, seq, aspect, rel_height, bottom,
    speed_bl_s, confidence, present, lying, baseline_height, x1..y2``), ``frame``, ``detections`` (boxes
    kept in that frame), ``raw_<rule>``/``smoothed_<rule>``/``open_<rule>`` for the track rules (what the
    worker computed with ``config``), ``alerts`` (``rule:state:severity`` as the recorder writes them),
    ``gt_horse, gt_behaviour, gt_posture, gt_iou`` (the horse matched by IoU; rows of a track not seen
    in a frame carry the truth of the horse it last matched) and ``source``.

    Detections come from the ONNX model at ``model_path`` (default ``models/horse-demo-yolo11n-320.onnx``)
    when ``use_model`` and the file exists, else from the ground truth degraded by ``noise``.
    ``log.attrs``: ``source``, ``source_note`` (say it in the notebook), ``model`` and ``cameras``
    (per camera: scenario YAML, fps, t0, t_end, duration_s) for :func:`evaluate_strategies`.
    """
    config = config or LogicConfig()
    noise = noise or TruthNoise()
    path = _resolve_model(model_path)
    detector: _Detector | None = None
    if use_model and path.is_file():
        detector = _Detector(path, threads=threads, conf_floor=conf_floor, top_k=top_k, jpeg_quality=jpeg_quality)
        source = SOURCE_MODEL
        note = f"detections from the ONNX model {path.name} (classes: horse = {detector.class_id})"
    else:
        source = SOURCE_GROUND_TRUTH
        why = "use_model=False" if not use_model else f"model file {path} not found"
        note = (
            f"detections derived from the ground-truth boxes ({why}): jitter {noise.jitter:.0%}, "
            f"dropout {noise.dropout:.0%}, posture glitches {noise.glitch:.0%}, seed {noise.seed}"
        )
        if use_model:
            logger.warning("lab: %s; using ground-truth detections", why)
    class_id = detector.class_id if detector is not None else _GT_CLASS_ID

    frames: list[pd.DataFrame] = []
    cameras: dict[str, dict[str, Any]] = {}
    for item in scenarios:
        scenario = _as_scenario(item)
        if fps is not None:
            scenario = scenario.model_copy(update={"fps": float(fps)})
        renderer = SceneRenderer(scenario)
        n = renderer.n_frames if max_frames is None else max(1, min(renderer.n_frames, int(max_frames)))
        rows = _run_scenario(scenario, renderer, n, config, detector, class_id, noise, batch_size)
        rows["source"] = source
        frames.append(rows)
        cameras[scenario.name] = {
            "scenario": scenario.to_yaml(),
            "fps": float(scenario.fps),
            "t0": 0.0,
            "t_end": (n - 1) / scenario.fps,
            "duration_s": n / scenario.fps,
        }
    frames = [f for f in frames if len(f)]
    log = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(LOG_COLUMNS))
    log["track_id"] = log["track_id"].astype("Int64")
    log.attrs.update(
        source=source, source_note=note, model=str(path) if detector is not None else None, cameras=cameras
    )
    return log


def variants(names: Sequence[str | Scenario], seeds: Sequence[int]) -> list[Scenario]:
    """Each scenario re-seeded (coat, placement, noise... whatever the scenario does not pin), named
    ``<name>-s<seed>``: more camera-hours of the same behaviour scripts."""
    out = []
    for item in names:
        scenario = _as_scenario(item)
        for seed in seeds:
            out.append(scenario.model_copy(update={"seed": int(seed), "name": f"{scenario.name}-s{seed}"}))
    return out


def log_summary(log: pd.DataFrame) -> pd.DataFrame:
    """Per camera: frames, tracks, share of frames with a detected track matched to a horse, and how often
    the posture (``lying``) agrees with the ground truth on present, matched rows."""
    cameras = log.attrs.get("cameras") or {}
    records = []
    rows = _track_rows(log)
    for camera_id in sorted(set(cameras) | set(rows["camera_id"].dropna().unique())):
        group = rows[rows["camera_id"] == camera_id]
        present = group[group["present"].astype(bool)]
        matched = present[present["gt_iou"].notna()]
        known = matched[matched["gt_posture"].isin(["standing", "lying"])]
        info = cameras.get(camera_id, {})
        frames = round(info["duration_s"] * info["fps"]) if info else group["t"].nunique()
        records.append(
            {
                "camera_id": camera_id,
                "frames": frames,
                "tracks": group["track_id"].nunique(),
                "frames_detected": present["t"].nunique() / frames if frames else math.nan,
                "rows_matched": len(matched) / len(present) if len(present) else math.nan,
                "posture_agreement": float((known["lying"].astype(bool) == (known["gt_posture"] == "lying")).mean())
                if len(known)
                else math.nan,
            }
        )
    return pd.DataFrame.from_records(
        records, columns=["camera_id", "frames", "tracks", "frames_detected", "rows_matched", "posture_agreement"]
    )


def _run_scenario(
    scenario: Scenario,
    renderer: SceneRenderer,
    n: int,
    config: LogicConfig,
    detector: _Detector | None,
    class_id: int,
    noise: TruthNoise,
    batch_size: int,
) -> pd.DataFrame:
    camera_id = scenario.name
    frame_size = renderer.size
    logic = CameraLogic(camera_id, config, None, [class_id], frame_size=frame_size)
    rng = np.random.default_rng([noise.seed, scenario.seed, zlib.crc32(camera_id.encode())])
    horse_of_track: dict[int, str] = {}
    rows: list[dict[str, Any]] = []
    step = max(1, int(batch_size))
    for start in range(0, n, step):
        indices = range(start, min(n, start + step))
        truths = [renderer.truth(i) for i in indices]
        if detector is not None:
            batch = detector([renderer.frame(i) for i in indices])
        else:
            batch = [truth_candidates(tr, rng, noise, frame_size, class_id) for tr in truths]
        for i, candidates, truth in zip(indices, batch, truths, strict=True):
            t = i / scenario.fps
            outcome = logic.process(seq=i, t=t, candidates=candidates, frame_size=frame_size)
            rows += _frame_rows(outcome, truth, horse_of_track)
    return pd.DataFrame(rows, columns=[c for c in LOG_COLUMNS if c != "source"])


def _frame_rows(outcome: Any, truth: Sequence[HorseTruth], horse_of_track: dict[int, str]) -> list[dict]:
    by_horse = {tr.horse_id: tr for tr in truth}
    present = [f for f in outcome.features if f.present and f.box is not None]
    visible = [tr for tr in truth if tr.visible]
    matched: dict[int, tuple[str, float]] = {}
    if present and visible:
        iou = _box_iou(np.array([f.box for f in present]), np.array([tr.box for tr in visible]))
        while iou.size and iou.max() >= _MATCH_IOU:
            r, c = np.unravel_index(int(np.argmax(iou)), iou.shape)
            matched[present[r].track_id] = (visible[c].horse_id, float(iou[r, c]))
            iou[r, :], iou[:, c] = -1.0, -1.0
    signals = {(s.rule, s.track_id): s for s in outcome.signals if s.track_id is not None}
    alerts: dict[int | None, list[str]] = {}
    for a in outcome.alerts:
        alerts.setdefault(a.track_id, []).append(f"{a.rule}:{a.state.value}:{a.severity.value}")
    rows = []
    for f in outcome.features:
        row = f.to_dict()
        row["frame"] = outcome.seq
        row["detections"] = len(outcome.detections)
        for rule in TRACK_RULES:
            s = signals.get((rule, f.track_id))
            row[f"raw_{rule}"] = s.raw if s is not None else math.nan
            row[f"smoothed_{rule}"] = s.smoothed if s is not None else math.nan
            row[f"open_{rule}"] = bool(s.open) if s is not None else False
        row["alerts"] = ";".join(alerts.get(f.track_id, ()))
        horse, iou = matched.get(f.track_id, (None, math.nan))
        if horse is not None:
            horse_of_track[f.track_id] = horse
        else:
            horse = horse_of_track.get(f.track_id)
        gt = by_horse.get(horse) if horse is not None else None
        row.update(
            gt_horse=horse,
            gt_behaviour=gt.behaviour if gt is not None else None,
            gt_posture=gt.posture if gt is not None else None,
            gt_iou=iou,
        )
        rows.append(row)
    return rows


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


def raw_signal(log: pd.DataFrame, rule: str = "horse_down", base: LogicConfig | None = None) -> pd.Series:
    """The rule's raw per-frame score: the ``raw_<rule>`` column when the log has it (what the worker
    computed), else derived from the feature columns with :mod:`fbvision.rules` (recorder logs)."""
    column = f"raw_{rule}"
    if column in log:
        return log[column].astype(float)
    base = base or LogicConfig()
    if rule == "horse_down":
        fn = rule_fns.horse_down
    elif rule == "too_fast":
        def fn(f: Any) -> float | None:
            return rule_fns.too_fast(f, base.rules.too_fast)
    else:
        raise ValueError(f"the log has no {column!r} column and {rule!r} cannot be derived from features")
    values = []
    speeds = log["speed_bl_s"] if "speed_bl_s" in log else pd.Series(math.nan, index=log.index)
    for present, lying, speed in zip(log["present"], log["lying"], speeds, strict=True):
        row = SimpleNamespace(present=bool(present) if pd.notna(present) else False,
                              lying=bool(lying) if pd.notna(lying) else False,
                              speed_bl_s=float(speed) if pd.notna(speed) else math.nan)
        score = fn(row)
        values.append(math.nan if score is None else float(score))
    return pd.Series(values, index=log.index, name=column, dtype=float)


def _track_rows(log: pd.DataFrame) -> pd.DataFrame:
    return log[log["track_id"].notna()] if "track_id" in log else log


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
    frame["smoothed"] = smooth(frame, "raw", rule_config.smoothing.build).astype(float)
    return episode_transitions(frame, "smoothed", rule_config.episode_tracker)


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
) -> pd.DataFrame:
    """Score every strategy of ``grid`` (see :func:`strategy_grid`; default :data:`DEFAULT_GRID`) on ``log``.

    For each setting, :func:`run_strategy` gives the raised alerts, which :func:`fbvision.groundtruth.match_alerts`
    matches against :func:`expected_for` (same expected set for all). Columns: ``strategy`` (label),
    ``family``, ``expected``, ``hits``, ``misses``, ``false_alerts``, ``recall``, ``false_per_cam_h`` (false
    alerts per camera-hour of log), ``tta_median_s``/``tta_max_s`` (time from the ground-truth onset to the
    raise), ``raised``, ``setting`` (:func:`describe`) and ``rule_config`` (the :class:`RuleConfig`, for
    :func:`config_snippet`). A raise after the deadline counts as a miss *and* a false alert.
    """
    base = base or LogicConfig()
    if rule not in RULE_BEHAVIOURS or rule == "rolling":
        raise ValueError(f"ground truth scores only {sorted(set(RULE_BEHAVIOURS) - {'rolling'})}, not {rule!r}")
    base_rule = getattr(base.rules, rule)
    strategies = strategy_grid(grid, base_rule)
    cameras = _camera_info(log, scenarios)
    expected = expected_for(log, rule, base, scenarios=scenarios, max_delay_s=max_delay_s)
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


# ---------------------------------------------------------------------------------------------------------
# Config snippets


def config_snippet(rule_name: str, rule_config: RuleConfig | Mapping[str, Any], *, header: str | None = None,
                   full: bool = True) -> str:
    """YAML of one rule setting. ``full=True``: a settings file (``logic: rules: <rule>: ...``) that
    :func:`fbvision.config.load_settings` loads as is (other sections keep their defaults); ``full=False``:
    just ``<rule>: ...``, to paste under ``logic: rules:`` of an existing file. Validated before returning."""
    if rule_name not in RulesConfig.model_fields:
        raise ValueError(f"unknown rule {rule_name!r}; rules: {', '.join(RulesConfig.model_fields)}")
    dump = rule_config.model_dump(mode="json") if isinstance(rule_config, RuleConfig) else dict(rule_config)
    validated = getattr(RulesConfig.model_validate({rule_name: dump}), rule_name)
    tree: dict[str, Any] = {rule_name: validated.model_dump(mode="json")}
    if full:
        tree = {"logic": {"rules": tree}}
    text = yaml.safe_dump(tree, sort_keys=False, default_flow_style=False)
    if header:
        text = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + text
    return text


# ---------------------------------------------------------------------------------------------------------
# Plots

#: Background colour per ground-truth behaviour (standing is left blank).
BEHAVIOUR_COLOURS: dict[str, str] = {
    "walking": "#d9ead3",
    "running": "#9fc5e8",
    "lying_down": "#ffe599",
    "getting_up": "#fff2cc",
    "lying_sternal": "#f9cb9c",
    "lying_flat": "#ea9999",
    "rolling": "#b4a7d6",
    "absent": "#cccccc",
}
_PANELS = (
    ("aspect", "aspect w/h"),
    ("rel_height", "rel. height"),
    ("speed_bl_s", "speed BL/s"),
    ("confidence", "confidence"),
)


def _runs(values: Sequence[Any], times: Sequence[float], dt: float) -> list[tuple[Any, float, float]]:
    out: list[tuple[Any, float, float]] = []
    for value, t in zip(values, times, strict=True):
        if out and out[-1][0] == value and t - out[-1][2] <= 1.5 * dt:
            out[-1] = (value, out[-1][1], t + dt)
        else:
            out.append((value, t, t + dt))
    return out


def _alert_sets(alerts: Any) -> dict[str, pd.DataFrame]:
    if alerts is None:
        return {}
    if isinstance(alerts, pd.DataFrame):
        if "strategy" in alerts:
            return {str(k): g for k, g in alerts.groupby("strategy", sort=False)}
        return {"alerts": alerts}
    return {str(k): v for k, v in dict(alerts).items()}


def plot_track_timeline(
    log: pd.DataFrame,
    camera_id: str,
    alerts: pd.DataFrame | Mapping[str, pd.DataFrame] | None = None,
    ax: Sequence[Any] | None = None,
    *,
    track_id: int | None = None,
    config: LogicConfig | None = None,
):
    """One track's aspect, relative height, speed and confidence over time, on ground-truth behaviour bands,
    with the alert episodes of each strategy (``alerts``: :func:`run_strategy` output, or a dict label ->
    output, or one DataFrame with a ``strategy`` column) in a last panel.

    ``track_id`` defaults to the camera's track seen in most frames. ``ax``: 4 axes (5 with alerts) to draw
    into; else a new figure. Returns the figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    config = config or LogicConfig()
    rows = _track_rows(log[log["camera_id"] == camera_id])
    if rows.empty:
        raise ValueError(f"no track rows for camera {camera_id!r}")
    if track_id is None:
        track_id = int(rows[rows["present"].astype(bool)]["track_id"].value_counts().idxmax())
    track = rows[rows["track_id"] == track_id].sort_values("t")
    sets = _alert_sets(alerts)
    n_panels = len(_PANELS) + (1 if sets else 0)
    if ax is None:
        fig, axes = plt.subplots(n_panels, 1, sharex=True, figsize=(11, 1.6 * n_panels + 0.6))
        axes = np.atleast_1d(axes)
    else:
        axes = np.asarray(ax, dtype=object).reshape(-1)
        if len(axes) < n_panels:
            raise ValueError(f"need {n_panels} axes, got {len(axes)}")
        fig = axes[0].figure
    times = track["t"].to_numpy(float)
    dt = float(np.median(np.diff(times))) if len(times) > 1 else 0.2
    bands = _runs(list(track["gt_behaviour"].fillna("unknown")), list(times), dt)
    for axis in axes[:n_panels]:
        for behaviour, t0, t1 in bands:
            colour = BEHAVIOUR_COLOURS.get(behaviour)
            if colour is not None:
                axis.axvspan(t0, t1, color=colour, alpha=0.7, lw=0)
    present = track["present"].astype(bool).to_numpy()
    lying = track["lying"].astype(bool).to_numpy()
    for axis, (column, title) in zip(axes, _PANELS, strict=False):
        values = track[column].to_numpy(float)
        axis.plot(times, values, color="k", lw=1)
        axis.scatter(times[present & lying], values[present & lying], s=6, color="crimson", zorder=3)
        axis.set_ylabel(title, fontsize=8)
    axes[0].axhline(config.features.lying_min_aspect, color="grey", ls=":", lw=0.8)
    axes[1].axhline(config.features.lying_rel_height, color="grey", ls=":", lw=0.8)
    axes[2].axhline(config.rules.too_fast.speed_bl_s, color="grey", ls=":", lw=0.8)
    if sets:
        axis = axes[len(_PANELS)]
        end = float(times.max()) + dt
        labels = list(sets)
        for level, label in enumerate(labels):
            tr = sets[label]
            tr = tr[(tr["camera_id"] == camera_id) & (tr["track_id"] == track_id)]
            raised = tr[tr["state"] == "raised"]
            resolved = tr[tr["state"] == "resolved"]
            for _, r in raised.iterrows():
                ends = resolved[resolved["started_at"] == r["started_at"]]
                stop = float(ends["t"].iloc[0]) if len(ends) else end
                axis.plot([r["started_at"], r["t"]], [level, level], color="orange", lw=2)
                axis.plot([r["t"], stop], [level, level], color="red", lw=4)
                axis.plot([r["t"]], [level], marker="v", color="red")
        axis.set_yticks(range(len(labels)), labels, fontsize=7)
        axis.set_ylim(-0.7, len(labels) - 0.3)
        axis.set_ylabel("alerts", fontsize=8)
    axes[n_panels - 1].set_xlabel("t (s)")
    seen = [b for b, _, _ in bands if b in BEHAVIOUR_COLOURS]
    handles = [Patch(color=BEHAVIOUR_COLOURS[b], label=b) for b in dict.fromkeys(seen)]
    if handles:
        axes[0].legend(handles=handles, fontsize=7, ncol=len(handles), loc="upper left", framealpha=0.8)
    axes[0].set_title(f"{camera_id} - track {track_id} (red dots: classified lying)", fontsize=9)
    return fig
