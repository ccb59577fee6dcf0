"""A SIMULATED accelerator (and the null engine): the :class:`fbvision.inference.engines.ort.Engine` interface with
no model behind it, for benchmarks and tests of everything around the model.

:class:`SimEngine` ``infer`` sleeps ``overhead + a + b x batch`` milliseconds - ``time.sleep``, so the GIL is
released and no CPU is used, as while a real GPU runs - and returns a head of the right shape
``[B, 4 + nc, N]`` that is all zeros: no detection. ``a`` (fixed per call) and ``b`` (per image) come from a named
:data:`PROFILES` entry, derived from published TensorRT / ONNX Runtime CUDA figures for YOLO11n (sources and which
numbers are assumptions: docs/benchmarks.md, "Simulated accelerator"); ``overhead_ms`` adds a per-call cost
(a remote inference server's round trip, a Python binding's launch cost) on top. The ``null`` profile
(``a = b = 0``) returns at once: the pipeline with no model at all.

It is labelled as simulated wherever it appears: ``provider`` starts with ``SIMULATED``, ``simulated`` is True,
and the worker's log line, stats snapshot and run report carry that provider string. Selected by
``model.engine: sim`` (``model.sim_profile``, ``model.sim_overhead_ms``) or ``model.engine: null``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from fbvision.core.modelinfo import ModelInfo
from fbvision.inference.engines.ort import timed_warmup

logger = logging.getLogger(__name__)

#: What every simulated engine's ``provider`` starts with.
SIM_LABEL = "SIMULATED"


@dataclass(frozen=True)
class SimProfile:
    """``a + b x batch`` ms per call: ``fixed_ms`` = a, ``per_image_ms`` = b, for YOLO11n at ``imgsz``."""

    name: str
    fixed_ms: float
    per_image_ms: float
    imgsz: int
    basis: str  # where the numbers come from, in one line (docs/benchmarks.md has the sources)

    def latency_ms(self, batch: int, overhead_ms: float = 0.0) -> float:
        return overhead_ms + self.fixed_ms + self.per_image_ms * batch


# T4, TensorRT 10 FP16, YOLO11n 640: batch 1 = 1.5 ms (Ultralytics' YOLO11 table). The batch-32 point is an
# assumption: YOLO11n's batching curve taken to have the shape of YOLOv6-n's on the same card and runtime (T4, TRT
# FP16, 640: 788 frames/s at batch 1, 1242 at batch 32, meituan/YOLOv6 README), i.e. 1.5 / (1242 / 788) = 0.952 ms a
# frame at batch 32: a + b = 1.5, a + 32 b = 30.46 -> b = 0.934, a = 0.566. At 320 the per-image part is scaled
# by the pixel count (/4, assumption), the fixed part kept. ORT CUDA EP (FP32): 3.1 x the TensorRT FP16 time
# (YOLOv8n 640 on an RTX 4080: 2.57 ms vs 0.83 ms at batch 1, TRTBench), applied to both parts (assumption).
PROFILES: dict[str, SimProfile] = {
    p.name: p
    for p in (
        SimProfile("null", 0.0, 0.0, 320, "returns at once: no model (the CPU side alone)"),
        SimProfile("t4-trt-fp16-640", 0.566, 0.934, 640,
                   "T4 TensorRT10 FP16 YOLO11n 640: b1 1.5 ms (Ultralytics), batch curve of YOLOv6-n (assumed)"),
        SimProfile("t4-trt-fp16-320", 0.566, 0.234, 320,
                   "t4-trt-fp16-640 with the per-image part scaled by pixels (assumed)"),
        SimProfile("t4-ort-cuda-640", 1.755, 2.895, 640,
                   "t4-trt-fp16-640 x 3.1 (ORT CUDA FP32 vs TRT FP16, YOLOv8n, TRTBench; assumed to carry over)"),
        SimProfile("t4-ort-cuda-320", 1.755, 0.724, 320,
                   "t4-ort-cuda-640 with the per-image part scaled by pixels (assumed)"),
    )
}
DEFAULT_PROFILE = "t4-trt-fp16-320"


def anchors(input_size: tuple[int, int], strides: Sequence[int] = (8, 16, 32)) -> int:
    """Anchor count of a YOLO11 head at ``input_size`` (h, w): 2100 at 320x320, 8400 at 640x640."""
    h, w = input_size
    return sum((h // s) * (w // s) for s in strides)


class SimEngine:
    """A simulated accelerator: ``infer`` sleeps the profile's time and returns an empty YOLO head.

    ``profile``: a :data:`PROFILES` name; ``fixed_ms`` / ``per_image_ms`` override its a and b; ``overhead_ms``
    is added to every call. ``info`` (a real model's :class:`ModelInfo`) gives input size, class names and max
    batch, so the simulated engine is a drop-in for that model; without it ``input_size`` / ``class_names`` /
    ``max_batch`` apply. ``busy_s`` and ``calls`` count the simulated work (thread-safe).
    """

    simulated = True

    def __init__(
        self,
        profile: str = DEFAULT_PROFILE,
        *,
        overhead_ms: float = 0.0,
        fixed_ms: float | None = None,
        per_image_ms: float | None = None,
        info: ModelInfo | None = None,
        input_size: tuple[int, int] = (320, 320),
        class_names: Sequence[str] = ("horse",),
        max_batch: int = 32,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if profile not in PROFILES:
            raise ValueError(f"unknown simulated profile {profile!r}; expected one of {', '.join(PROFILES)}")
        base = PROFILES[profile]
        self.profile = SimProfile(
            base.name, base.fixed_ms if fixed_ms is None else float(fixed_ms),
            base.per_image_ms if per_image_ms is None else float(per_image_ms), base.imgsz, base.basis,
        )
        if overhead_ms < 0 or self.profile.fixed_ms < 0 or self.profile.per_image_ms < 0:
            raise ValueError("simulated times must be >= 0")
        self.overhead_ms = float(overhead_ms)
        self.info = info
        if info is not None:
            input_size, class_names, max_batch = info.input_size, info.class_names, info.max_batch
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.class_names = list(class_names)
        self.max_batch = int(max_batch)
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        self._sleep = sleep
        self._heads: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self.calls = 0
        self.busy_s = 0.0
        p = self.profile
        self.provider = (
            f"{SIM_LABEL} accelerator '{p.name}' ({p.fixed_ms:g} + {p.per_image_ms:g} ms x batch"
            + (f", +{self.overhead_ms:g} ms per call" if self.overhead_ms else "") + "; no model is run)"
        )
        logger.info("inference engine: %s", self.provider)

    def latency_ms(self, batch: int) -> float:
        """What one call with ``batch`` images sleeps."""
        return self.profile.latency_ms(batch, self.overhead_ms)

    def _head(self, batch: int) -> np.ndarray:
        head = self._heads.get(batch)
        if head is None:
            head = np.zeros((batch, 4 + len(self.class_names), anchors(self.input_size)), dtype=np.float32)
            head.setflags(write=False)  # shared by every call of this size
            self._heads[batch] = head
        return head

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if batch.ndim != 4 or batch.shape[1] != 3 or tuple(batch.shape[2:]) != self.input_size:
            raise ValueError(f"batch of shape {batch.shape}; expected [B, 3, {self.input_size[0]}, {self.input_size[1]}]")
        n = int(batch.shape[0])
        if not 1 <= n <= self.max_batch:
            raise ValueError(f"batch size {n} outside 1..{self.max_batch}")
        seconds = self.latency_ms(n) / 1000.0
        started = time.perf_counter()
        if seconds > 0:
            self._sleep(seconds)  # releases the GIL: the "device" is busy, the CPU is not
        head = self._head(n)
        with self._lock:
            self.calls += 1
            self.busy_s += time.perf_counter() - started
        return head

    def warmup(self, batch_sizes: Iterable[int]) -> dict[int, float]:
        return timed_warmup(self, batch_sizes, runs=1, fill=0.0)  # nothing to warm: one timed call per size


def null_engine(**kwargs) -> SimEngine:
    """The null engine: no model, no wait - an empty head at once (``SimEngine('null')``)."""
    return SimEngine("null", **kwargs)
