"""Research helpers for the notebooks: detection logs with ground truth, strategy sweeps, config snippets, plots.

Everything here drives the production code rather than re-implementing it:

* :func:`detection_log` renders synthetic scenarios (:mod:`fbvision.synth`), runs the ONNX detector the way
  the inference worker does (:func:`fbvision.core.letterbox.letterbox`, :func:`fbvision.inference.decode.decode_yolo`)
  and then the real :class:`fbvision.logic.camera_logic.CameraLogic` (NMS, thresholds, ByteTrack, features, rules),
  and joins each track row with the ground truth of its horse. Without the model file (or with
  ``use_model=False``) the detections are the ground-truth boxes with seeded jitter, dropouts and posture
  glitches - made-up figures, or the detector's measured error model (:mod:`fbvision.lab.errormodel`) - and
  the log says so (``source`` column, ``log.attrs["source"]``: ``model``, ``error_model`` or ``ground_truth``).
* :func:`evaluate_strategies` runs the same smoothing filters and :class:`~fbvision.logic.smoothing.EpisodeTracker`
  as the logic worker (through the DataFrame drivers of :mod:`fbvision.logic.smoothing`) over a log's raw rule
  signal, for a grid of rule settings, and scores the raised alerts with :mod:`fbvision.lab.groundtruth`;
  :func:`rank_strategies` reports equivalent settings as ties and :func:`recommend` picks one (or refuses
  below ``MIN_EVENTS`` true events), naming the detection source it rests on.
* :func:`config_snippet` writes a chosen rule setting as YAML that :func:`fbvision.core.config.load_settings`
  loads unchanged.
* :func:`plot_track_timeline` draws one track's features with ground-truth behaviour bands and alerts
  (matplotlib is imported only there).
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import supervision as sv

from fbvision.core.candidates import Candidates
from fbvision.core.config import ModelConfig, resolve_data_path
from fbvision.core.letterbox import letterbox
from fbvision.core.logic_config import (
    TRACK_RULES,
    LogicConfig,
)
from fbvision.core.tensor import to_tensor
from fbvision.inference.decode import decode_yolo
from fbvision.inference.engines import build_engine
from fbvision.logic.camera_logic import CameraLogic
from fbvision.synth import HorseTruth, Scenario, SceneRenderer

logger = logging.getLogger(__name__)

DEFAULT_MODEL = Path("models/horse-demo-yolo11n-320.onnx")
#: Source labels (``log.attrs["source"]`` and the ``source`` column).
SOURCE_MODEL = "model"
SOURCE_GROUND_TRUTH = "ground_truth"
#: Ground-truth boxes degraded by a detector's *measured* error model (:mod:`fbvision.lab.errormodel`).
SOURCE_ERROR_MODEL = "error_model"
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
    ``confidence``: uniform range of the detection scores. ``false_positive``: expected spurious boxes per
    frame (a box the size of a visible horse's, anywhere in the frame; none are drawn at 0, so the random
    stream of the other errors does not depend on it). ``measured_from``: the detector these figures were
    measured on (:mod:`fbvision.lab.errormodel`); a log made with such a model says ``source = "error_model"``.
    """

    jitter: float = 0.02
    dropout: float = 0.05
    glitch: float = 0.02
    confidence: tuple[float, float] = (0.55, 0.95)
    seed: int = 0
    false_positive: float = 0.0
    measured_from: str | None = None

    def describe(self) -> str:
        return (
            f"jitter {self.jitter:.1%}, dropout {self.dropout:.1%}, posture glitches {self.glitch:.1%}, "
            f"false positives {self.false_positive:.3f}/frame, seed {self.seed}"
        )


def _as_scenario(item: str | Path | Scenario) -> Scenario:
    if isinstance(item, Scenario):
        return item
    text = str(item)
    if text.endswith((".yaml", ".yml")) or "\n" in text:
        return Scenario.from_yaml(item if isinstance(item, Path) else text)
    return Scenario.builtin(text)


def _resolve_model(model_path: str | Path | None) -> Path:
    # Relative: from the current directory, else the package's data (the demo model).
    return resolve_data_path(Path(model_path) if model_path is not None else DEFAULT_MODEL)


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
    visible_boxes = [truth.box for truth in truths if truth.visible]
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
    if noise.false_positive > 0 and visible_boxes:
        for _ in range(int(rng.poisson(noise.false_positive))):
            x1, y1, x2, y2 = visible_boxes[int(rng.integers(len(visible_boxes)))]
            w, h = min(x2 - x1, width - 1), min(y2 - y1, height - 1)
            left, top = rng.uniform(0, width - w), rng.uniform(0, height - h)
            boxes.append(np.array([left, top, left + w, top + h]))
            scores.append(rng.uniform(*noise.confidence))
    return Candidates.create(np.reshape(boxes, (-1, 4)), scores, [class_id] * len(scores))


class _Detector:
    """The inference worker's path on CPU: letterbox (+ the camera manager's JPEG), BGR->RGB /255 (``to_tensor``),
    the engine of :func:`fbvision.inference.engines.build_engine` (ONNX Runtime on the CPU), decode."""

    def __init__(self, path: Path, *, threads: int, conf_floor: float, top_k: int, jpeg_quality: int | None):
        self.engine = build_engine(ModelConfig(path=path, engine="ort", providers=["cpu"], intra_op_threads=threads))
        self.info = self.engine.info
        self.class_id = self.info.class_id("horse")
        self.conf_floor, self.top_k, self.jpeg_quality = conf_floor, top_k, jpeg_quality

    def __call__(self, frames: Sequence[np.ndarray]) -> list[Candidates]:
        h, w = self.info.input_size
        images, boxes = [], []
        for frame in frames:
            image, box = letterbox(frame, (w, h))
            if self.jpeg_quality is not None:
                ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
                image = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else image
            images.append(image)
            boxes.append(box)
        out: list[Candidates] = []
        step = self.engine.max_batch  # a lab batch larger than the model's is run in chunks
        for start in range(0, len(images), step):
            output = self.engine.infer(to_tensor(images[start : start + step]))
            out.extend(decode_yolo(output, boxes[start : start + step], [self.class_id], self.conf_floor,
                                   self.top_k))
        return out


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
    the :class:`~fbvision.logic.features.TrackFeatures` fields (``track_id, t, seq, aspect, rel_height, bottom,
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
        why = "use_model=False" if not use_model else f"model file {path} not found"
        if noise.measured_from:
            source = SOURCE_ERROR_MODEL
            note = (
                f"detections derived from the ground-truth boxes ({why}) with the error model measured on "
                f"{noise.measured_from}: {noise.describe()}"
            )
        else:
            source = SOURCE_GROUND_TRUTH
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


def _track_rows(log: pd.DataFrame) -> pd.DataFrame:
    return log[log["track_id"].notna()] if "track_id" in log else log


def variants(names: Sequence[str | Scenario], seeds: Sequence[int], *, jitter: float = 0.0) -> list[Scenario]:
    """Each scenario re-seeded (coat, placement, noise... whatever the scenario does not pin), named
    ``<name>-s<seed>``: more camera-hours of the same behaviour scripts.

    ``jitter`` > 0 also stretches each script segment (and a pinned ``duration_s``) by a factor drawn uniformly
    from ``[1 - jitter, 1 + jitter]`` (seeded by the seed and the scenario name): the same behaviour families
    with bouts of other lengths, some just above and some just below a rule's minimum duration - what tells
    smoothing strategies apart. The ground truth follows the stretched script."""
    if not 0.0 <= jitter < 1.0:
        raise ValueError("jitter must be within [0, 1)")
    out = []
    for item in names:
        scenario = _as_scenario(item)
        for seed in seeds:
            update: dict[str, Any] = {"seed": int(seed), "name": f"{scenario.name}-s{seed}"}
            if jitter:
                rng = np.random.default_rng([int(seed), zlib.crc32(scenario.name.encode())])
                horses = []
                for horse in scenario.horses:
                    script = [
                        seg.model_copy(update={"duration_s": round(seg.duration_s * rng.uniform(1 - jitter, 1 + jitter), 1)})
                        for seg in horse.script
                    ]
                    horses.append(horse.model_copy(update={"script": script}))
                update["horses"] = horses
                if scenario.duration_s is not None:
                    update["duration_s"] = round(scenario.duration_s * rng.uniform(1 - jitter, 1 + jitter), 1)
            out.append(type(scenario).model_validate({**scenario.model_dump(), **update}))
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
        iou = sv.box_iou_batch(np.array([f.box for f in present]), np.array([tr.box for tr in visible])).astype(np.float64)
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


