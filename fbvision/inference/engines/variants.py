"""Which precision of the model to run: FP32, or its INT8 variant when that passed its check and is faster here.

``model.precision``: ``fp32`` runs ``model.path``; ``int8`` runs its INT8 variant (``<stem>.int8.onnx`` beside it,
written by ``python -m fbvision.export.quantize``), refused with a clear error when it is missing, failed its
accuracy check, or was made from another FP32 file; ``auto`` (the demo's) runs the INT8 variant only when ONNX
Runtime runs on the CPU, the variant passed (mAP50 loss within ``max_map_loss`` on the unseen synthetic scenes,
recorded in ``<stem>.int8.quant.json``), was made from this very FP32 file (SHA-256), and measures faster than the
FP32 model on this machine, now, by at least ``AUTO_MARGIN`` (both timed in interleaved pairs at batch 1, so the
moment's load falls on both). Otherwise FP32. :class:`Choice` says which and why (the run report shows it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fbvision.core.config import ConfigError, ModelConfig

logger = logging.getLogger(__name__)

AUTO_MARGIN = 0.05  # INT8 must be 5 % faster than FP32 here to be picked
PAIRS = 7  # interleaved timing pairs at batch 1


@dataclass(frozen=True)
class Choice:
    precision: str  # "fp32" or "int8"
    path: str  # the model file run
    reason: str  # one line for the report
    map50_fp32: float | None = None
    map50_int8: float | None = None
    ms_fp32: float | None = None  # median ms per batch-1 call measured at this start (auto)
    ms_int8: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def int8_variant(fp32: Path) -> Path:
    return fp32.with_name(f"{fp32.stem}.int8.onnx")


def quant_record(int8: Path) -> Path:
    return int8.with_name(f"{int8.stem}.quant.json")


def _usable(fp32: Path) -> tuple[Path | None, dict, str]:
    """(the INT8 variant or None, its check record, why not)."""
    int8 = int8_variant(fp32)
    if not int8.is_file():
        return None, {}, f"no INT8 variant ({int8.name}; python -m fbvision.export.quantize makes one)"
    try:
        record = json.loads(quant_record(int8).read_text())
    except (OSError, ValueError) as exc:
        return None, {}, f"{int8.name} has no readable check record ({quant_record(int8).name}: {exc})"
    if not record.get("passed"):
        return None, record, (f"{int8.name} failed its accuracy check (mAP50 {record.get('map50_int8')} vs FP32 "
                              f"{record.get('map50_fp32')}, at most {record.get('max_map_loss')} lost)")
    if record.get("source_sha256") != hashlib.sha256(fp32.read_bytes()).hexdigest():
        return None, record, f"{int8.name} was made from another FP32 model than {fp32.name}: quantize it again"
    return int8, record, ""


def _median_ms(build, path: Path, other: Path) -> tuple[float, float]:
    """Median ms per batch-1 call of ``path`` and ``other``, timed in interleaved pairs."""
    a, b = build(path), build(other)
    h, w = a.input_size
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    for engine in (a, b):
        engine.infer(x)
        engine.infer(x)
    ta, tb = [], []
    for _ in range(PAIRS):
        for engine, times in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            engine.infer(x)
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(ta), 1000 * statistics.median(tb)


def choose(model: ModelConfig, provider: str, build) -> Choice:
    """The precision to run for ``model`` (``model.precision``) with ``provider`` (the FP32 engine's);
    ``build(path)`` makes an engine of a model file (for the timing of ``auto``)."""
    fp32 = model.resolved_path()
    if model.precision == "fp32" or model.engine != "ort":
        return Choice("fp32", str(fp32), "model.precision: fp32" if model.precision == "fp32"
                      else f"model.engine {model.engine}: FP32")
    int8, record, why_not = _usable(fp32)
    if model.precision == "int8":
        if int8 is None:
            raise ConfigError(f"model.precision: int8 cannot run: {why_not}")
        return Choice("int8", str(int8), f"model.precision: int8 (mAP50 {record['map50_int8']} vs FP32 "
                      f"{record['map50_fp32']})", record.get("map50_fp32"), record.get("map50_int8"))
    if provider != "CPUExecutionProvider":
        return Choice("fp32", str(fp32), f"auto: FP32 on {provider} (the INT8 variant is for the CPU)")
    if int8 is None:
        return Choice("fp32", str(fp32), f"auto: FP32 - {why_not}")
    ms32, ms8 = _median_ms(build, fp32, int8)
    maps = dict(map50_fp32=record.get("map50_fp32"), map50_int8=record.get("map50_int8"),
                ms_fp32=round(ms32, 2), ms_int8=round(ms8, 2))
    if ms8 * (1 + AUTO_MARGIN) <= ms32:
        return Choice("int8", str(int8), f"auto: INT8, {ms32 / ms8:.2f}x faster here ({ms8:.1f} vs {ms32:.1f} ms "
                      f"at batch 1) and mAP50 {record['map50_int8']} vs FP32 {record['map50_fp32']}", **maps)
    return Choice("fp32", str(fp32), f"auto: FP32 - INT8 not {AUTO_MARGIN:.0%} faster here ({ms8:.1f} vs "
                  f"{ms32:.1f} ms at batch 1)", **maps)
