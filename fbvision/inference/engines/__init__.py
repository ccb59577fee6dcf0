"""The engines that run the detector, and the one place that picks one: :func:`build_engine`.

``model.engine`` in the config chooses: ``ort`` (default) is :class:`fbvision.inference.engines.ort.OrtEngine`,
ONNX Runtime trying ``model.providers`` in order (TensorRT -> CUDA -> CPU by default); ``torch`` is
:class:`fbvision.inference.engines.pytorch.TorchEngine`, the same ONNX file run by PyTorch (imported only then:
torch and onnx are optional); ``sim`` is :class:`fbvision.inference.engines.sim.SimEngine`, a SIMULATED accelerator
(it sleeps ``model.sim_profile``'s time plus ``model.sim_overhead_ms`` and returns no detection: benchmarks and
tests of everything around the model); ``null`` is the same with no wait at all. The inference worker, the lab's
detector and the benchmarks all build their engine here; every engine satisfies the
:class:`fbvision.inference.engines.ort.Engine` protocol.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from fbvision.core.config import ConfigError, ModelConfig
from fbvision.core.modelinfo import ModelError, ModelInfo, load_model_info
from fbvision.inference.engines.ort import Engine, OrtEngine, build_providers
from fbvision.inference.engines.sim import PROFILES as SIM_PROFILES
from fbvision.inference.engines.sim import SimEngine

__all__ = ["ENGINES", "SIM_PROFILES", "Engine", "OrtEngine", "SimEngine", "build_engine", "build_providers"]

#: Values of ``model.engine``.
ENGINES = ("ort", "torch", "sim", "null")


def _require(modules: tuple[str, ...], engine: str) -> None:
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing.append(f"{name} ({exc})")
    if missing:
        needs = f"{', '.join(modules[:-1])} and {modules[-1]}" if len(modules) > 1 else modules[0]
        raise ConfigError(
            f"model.engine: {engine!r} needs {needs} installed, and this environment lacks "
            f"{', '.join(missing)}; install them (pip install -e '.[export]') or set model.engine: ort"
        )


def build_engine(
    model: ModelConfig,
    *,
    max_batch: int | None = None,
    model_info: ModelInfo | None = None,
    device: str | None = None,
    half: bool | None = None,
    cuda_graphs: bool = False,
) -> Engine:
    """The engine ``model.engine`` names, over ``model.path`` (relative: ``ModelConfig.resolved_path``).

    ``max_batch`` caps the model's declared largest batch; ``model_info`` saves reading the model again.
    ``ort``: ``model.providers`` (tried in order, CPU always last), ``model.tensorrt_fp16``,
    ``model.tensorrt_cache_dir``, ``model.intra_op_threads``, ``model.intra_op_spinning``. ``torch`` only: ``device`` ('cuda', 'cuda:1',
    'cpu'; default CUDA when torch sees one), ``half`` (FP16; default on CUDA), ``cuda_graphs``. ``sim`` / ``null``:
    ``model.sim_profile``, ``model.sim_overhead_ms``; the model file is read for its contract only (input size,
    classes, max batch), never run.

    Raises :class:`fbvision.core.modelinfo.ModelError` for a missing or unusable model file, ``ConfigError``
    for an engine this environment cannot run (``torch`` without torch/onnx) or an unknown ``model.engine``,
    ``ValueError`` for torch-only options given to the ``ort`` engine.
    """
    path = model.resolved_path()
    if not path.is_file():
        raise ModelError(
            f"model file not found: {path} (model.path in the config; export one with export/export_onnx.py)"
        )
    if model.engine in ("sim", "null"):
        if device is not None or half is not None or cuda_graphs:
            raise ValueError("device, half and cuda_graphs are options of model.engine: torch")
        profile = "null" if model.engine == "null" else model.sim_profile
        if profile not in SIM_PROFILES:
            raise ConfigError(f"model.sim_profile: unknown simulated profile {profile!r}; expected one of "
                              f"{', '.join(SIM_PROFILES)}")
        # The model's contract (input size, classes, max batch) without running it: a drop-in for that model.
        info = model_info or load_model_info(path)
        overhead = model.sim_overhead_ms if model.engine == "sim" else 0.0
        engine = SimEngine(profile, overhead_ms=overhead, info=info)
        if max_batch is not None:
            engine.max_batch = min(engine.max_batch, int(max_batch))
        return engine
    if model.engine == "ort":
        if device is not None or half is not None or cuda_graphs:
            raise ValueError("device, half and cuda_graphs are options of model.engine: torch, not ort")
        # relative to the working directory, like runner.report_dir: an installed package's folder may be read-only
        cache_dir = Path(model.tensorrt_cache_dir).expanduser().resolve()
        return OrtEngine(
            path, model.providers, tensorrt_fp16=model.tensorrt_fp16, cache_dir=cache_dir,
            intra_op_threads=model.intra_op_threads, intra_op_spinning=model.intra_op_spinning, max_batch=max_batch,
            model_info=model_info,
        )
    if model.engine == "torch":
        _require(("torch", "onnx", "onnx2torch"), "torch")
        from fbvision.inference.engines.pytorch import TorchEngine

        return TorchEngine(
            path, device=device, half=half, cuda_graphs=cuda_graphs, max_batch=max_batch, model_info=model_info,
        )
    raise ConfigError(f"model.engine: unknown engine {model.engine!r}; expected one of {', '.join(ENGINES)}")
