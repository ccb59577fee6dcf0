"""The detector behind a small interface, and the ONNX Runtime implementation of it.

:class:`Engine` is what the inference worker and the benchmarks need: the input size, the largest batch, the
class names, which provider actually runs, ``infer`` on a ``[B, 3, H, W]`` float32 0..1 RGB batch returning the
raw head ``[B, 4 + nc, N]``, and ``warmup``. :class:`OrtEngine` builds an ONNX Runtime session that tries
TensorRT (FP16 option, engine + timing cache, explicit min/opt/max profile over batch 1..max_batch so no engine
is rebuilt at run time), then CUDA (``cudnn_conv_algo_search=HEURISTIC``), then CPU - skipping quietly the
providers this onnxruntime build lacks - and logs the one that actually runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from fbvision.core.modelinfo import ModelError, ModelInfo, load_model_info

logger = logging.getLogger(__name__)

#: Config names of the providers, in the order they are tried, and ONNX Runtime's names for them.
PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


@runtime_checkable
class Engine(Protocol):
    """A detector that takes letterboxed RGB batches. ``input_size`` is (height, width), as in the tensor."""

    input_size: tuple[int, int]
    max_batch: int
    class_names: Sequence[str]
    provider: str

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """``batch``: float32 [B, 3, H, W] in 0..1, RGB, B <= max_batch. Returns float32 [B, 4 + nc, N]."""
        ...

    def warmup(self, batch_sizes: Iterable[int]) -> dict[int, float]:
        """Run each batch size once (or more) before traffic; returns the last run's ms per size."""
        ...


def _shape(input_name: str, batch: int, size: tuple[int, int]) -> str:
    return f"{input_name}:{batch}x3x{size[0]}x{size[1]}"


def build_providers(
    requested: Sequence[str],
    available: Sequence[str],
    *,
    input_name: str,
    input_size: tuple[int, int],
    max_batch: int,
    opt_batch: int | None = None,
    tensorrt_fp16: bool = True,
    cache_dir: str | Path = ".cache/trt",
    device_id: int = 0,
) -> list[tuple[str, dict[str, str]]]:
    """ONNX Runtime ``providers=[(name, options), ...]`` for the ``requested`` config names
    ('tensorrt', 'cuda', 'cpu'), keeping only those in ``available``. CPU is always appended as the last resort.

    TensorRT gets an explicit optimisation profile over batch 1..max_batch at the model's fixed input size, so
    TensorRT never rebuilds an engine when the batcher forms a batch size it has not seen.
    """
    providers: list[tuple[str, dict[str, str]]] = []
    for name in requested:
        ort_name = PROVIDER_NAMES.get(name)
        if ort_name is None:
            raise ValueError(f"unknown provider {name!r}; expected one of {', '.join(PROVIDER_NAMES)}")
        if ort_name not in available:
            logger.debug("provider %s not in this onnxruntime build, skipped", ort_name)
            continue
        if name == "tensorrt":
            cache = str(cache_dir)
            options = {
                "device_id": str(device_id),
                "trt_fp16_enable": "True" if tensorrt_fp16 else "False",
                "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": cache,
                "trt_timing_cache_enable": "True",
                "trt_timing_cache_path": cache,
                "trt_profile_min_shapes": _shape(input_name, 1, input_size),
                "trt_profile_opt_shapes": _shape(input_name, opt_batch or max_batch, input_size),
                "trt_profile_max_shapes": _shape(input_name, max_batch, input_size),
            }
        elif name == "cuda":
            options = {"device_id": str(device_id), "cudnn_conv_algo_search": "HEURISTIC"}
        else:
            options = {}
        if all(p[0] != ort_name for p in providers):
            providers.append((ort_name, options))
    if all(p[0] != PROVIDER_NAMES["cpu"] for p in providers):
        providers.append((PROVIDER_NAMES["cpu"], {}))
    return providers


def timed_warmup(engine: Engine, batch_sizes: Iterable[int], runs: int = 2, fill: float = 0.447) -> dict[int, float]:
    """Run ``engine`` on a ``fill``-valued batch (0.447: letterbox grey) of each size ``runs`` times; the last
    call's milliseconds per size. ValueError for a size outside 1..max_batch. Every engine's ``warmup``."""
    timings: dict[int, float] = {}
    h, w = engine.input_size
    for b in sorted({int(b) for b in batch_sizes}):
        if not 1 <= b <= engine.max_batch:
            raise ValueError(f"warm-up batch size {b} outside 1..{engine.max_batch}")
        dummy = np.full((b, 3, h, w), fill, dtype=np.float32)
        for _ in range(runs):
            started = time.perf_counter()
            engine.infer(dummy)
            timings[b] = (time.perf_counter() - started) * 1000.0
    return timings


class OrtEngine:
    """ONNX Runtime session over an exported YOLO model with a dynamic batch axis. From a config:
    :func:`fbvision.inference.engines.build_engine` (``model.engine: ort``).

    Raises :class:`fbvision.core.modelinfo.ModelError` at construction for a missing file, a fixed batch, a wrong
    input, or a ``max_batch`` beyond what the model declares.
    """

    def __init__(
        self,
        model_path: str | Path,
        providers: Sequence[str] = ("tensorrt", "cuda", "cpu"),
        *,
        tensorrt_fp16: bool = True,
        cache_dir: str | Path = ".cache/trt",
        intra_op_threads: int = 0,
        intra_op_spinning: bool = False,
        max_batch: int | None = None,
        device_id: int = 0,
        model_info: ModelInfo | None = None,
    ):
        import onnxruntime as ort

        self.info = model_info or load_model_info(model_path)
        if not self.info.dynamic_batch:
            raise ModelError(f"{self.info.path.name}: the batch dimension is not dynamic; re-export with dynamic=True")
        self.max_batch = int(max_batch or self.info.max_batch)
        if self.max_batch < 1:
            raise ModelError(f"max_batch must be >= 1, got {self.max_batch}")
        self.input_size = tuple(self.info.input_size)
        self.class_names = list(self.info.class_names)
        self.input_name = self.info.input_name
        self.output_name = self.info.output_name
        self._input_dtype = np.float16 if self.info.input_dtype == "float16" else np.float32

        available = ort.get_available_providers()
        cache_dir = Path(cache_dir)
        provider_list = build_providers(
            providers, available, input_name=self.input_name, input_size=self.input_size,
            max_batch=self.max_batch, tensorrt_fp16=tensorrt_fp16, cache_dir=cache_dir, device_id=device_id,
        )
        if any(name == PROVIDER_NAMES["tensorrt"] for name, _ in provider_list):
            cache_dir.mkdir(parents=True, exist_ok=True)

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if intra_op_threads:
            options.intra_op_num_threads = int(intra_op_threads)
        # Spinning threads poll for the next operator's work instead of sleeping: on cores the other stages need,
        # that is CPU taken from them (model.intra_op_spinning).
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if intra_op_spinning else "0")
        self.intra_op_spinning = bool(intra_op_spinning)
        options.log_severity_level = 3  # ORT's own chatter: errors only

        started = time.perf_counter()
        try:
            self.session = ort.InferenceSession(
                str(self.info.path), sess_options=options,
                providers=[name for name, _ in provider_list], provider_options=[opts for _, opts in provider_list],
            )
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise ModelError(f"{self.info.path.name}: ONNX Runtime could not create a session: {exc}") from exc
        self.provider = self.session.get_providers()[0]
        self.providers_requested = [name for name, _ in provider_list]
        logger.info(
            "model %s: running on %s (tried %s; this build offers %s), input %dx%d, max batch %d, "
            "session ready in %.1f s",
            self.info.path.name, self.provider, ", ".join(self.providers_requested), ", ".join(available),
            self.input_size[1], self.input_size[0], self.max_batch, time.perf_counter() - started,
        )

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if batch.ndim != 4 or batch.shape[1] != 3 or tuple(batch.shape[2:]) != self.input_size:
            raise ValueError(f"batch of shape {batch.shape}; expected [B, 3, {self.input_size[0]}, {self.input_size[1]}]")
        if not 1 <= batch.shape[0] <= self.max_batch:
            raise ValueError(f"batch size {batch.shape[0]} outside 1..{self.max_batch}")
        if batch.dtype != self._input_dtype:
            batch = batch.astype(self._input_dtype)
        output = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(batch)})[0]
        return output if output.dtype == np.float32 else output.astype(np.float32)

    def warmup(self, batch_sizes: Iterable[int]) -> dict[int, float]:
        timings = timed_warmup(self, batch_sizes)
        logger.info(
            "model %s warmed up on %s for batch sizes %s (ms: %s)", self.info.path.name, self.provider,
            list(timings), ", ".join(f"{b}:{ms:.1f}" for b, ms in timings.items()),
        )
        return timings
