"""What every benchmark suite shares: the run profile (full or quick), the models, the frames, the machine.

The profile comes from the environment, so that ``pytest benchmarks`` and ``benchmarks/run_bench.py`` agree:

* ``FBV_BENCH_QUICK``      unset or 1: smoke pass (tiny image size, one round, a few seconds of pipeline) - what
                           a plain ``pytest benchmarks`` does; 0: the full run (``make bench`` sets it);
* ``FBV_BENCH_IMGSZ``      model input side for the headline model (default 640; quick 64);
* ``FBV_BENCH_MODEL``      an existing ONNX model to use instead of exporting YOLO11n (dynamic batch);
* ``FBV_BENCH_CAMERAS`` / ``FBV_BENCH_FPS`` / ``FBV_BENCH_E2E_S``   the end-to-end load (default 4 x 5 fps, 30 s);
* ``FBV_BENCH_RESULTS``    where side outputs go (autotune.yaml); run_bench.py sets it.

The headline model is Ultralytics' ``yolo11n.yaml`` exported by ``export/export_onnx.py`` with a dynamic batch
1..32 and random weights: the same layers, shapes and FLOPs as the COCO checkpoint, hence the same cost
(weights do not change the arithmetic). Only the number of candidates after the confidence floor differs - an
untrained head scores almost nothing, so post-processing and logic see empty frames; the demo model
(trained on horses) shows the realistic case when it is present.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fbvision.core.config import DEMO_MODEL  # noqa: F401 - the benchmarks' name for it
from fbvision.core.procutil import cpu_model
from fbvision.export.model_cache import MODEL_CACHE, cached_yolo11n

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def quick_mode() -> bool:
    """Quick unless asked for the full run: ``FBV_BENCH_QUICK=0`` (run_bench.py / ``make bench`` set it).

    So a plain ``pytest benchmarks`` (CI, ``make test``) is always the short smoke pass, never a 10-minute run."""
    value = os.environ.get("FBV_BENCH_QUICK", "").strip().lower()
    return value not in ("0", "false", "no", "off")


@dataclass(frozen=True)
class Profile:
    """How much of everything one run measures. ``full`` is sized for ~10 min on two CPU cores."""

    quick: bool
    imgsz: int  # headline model input side
    max_batch: int  # dynamic batch range of the headline model
    batch_sizes: tuple[int, ...]  # fixed batch sizes of the batching sweep
    sweep_frames: int  # frames per mode and round in the batching sweep (a multiple of the largest batch)
    sweep_rounds: int  # interleaved rounds of the sweep (median taken)
    autotune_budget_s: float
    micro_rounds: int
    e2e_cameras: int
    e2e_fps: float
    e2e_warmup_s: float
    e2e_measure_s: float
    overload_factor: float
    overload_measure_s: float
    sample_interval_s: float  # RSS sampling
    extra: dict = field(default_factory=dict)


def profile() -> Profile:
    quick = quick_mode()
    if quick:
        imgsz = _env_int("FBV_BENCH_IMGSZ", 64)
        return Profile(
            quick=True, imgsz=imgsz, max_batch=4, batch_sizes=(1, 2, 4), sweep_frames=4, sweep_rounds=1,
            autotune_budget_s=0.2, micro_rounds=3, e2e_cameras=_env_int("FBV_BENCH_CAMERAS", 2),
            e2e_fps=_env_float("FBV_BENCH_FPS", 5.0), e2e_warmup_s=1.0, e2e_measure_s=_env_float("FBV_BENCH_E2E_S", 2.0),
            overload_factor=2.0, overload_measure_s=2.0, sample_interval_s=0.5,
        )
    imgsz = _env_int("FBV_BENCH_IMGSZ", 640)
    return Profile(
        quick=False, imgsz=imgsz, max_batch=32, batch_sizes=(1, 2, 4, 8, 16, 32), sweep_frames=32,
        sweep_rounds=_env_int("FBV_BENCH_ROUNDS", 3), autotune_budget_s=6.0, micro_rounds=200,
        e2e_cameras=_env_int("FBV_BENCH_CAMERAS", 4), e2e_fps=_env_float("FBV_BENCH_FPS", 5.0), e2e_warmup_s=5.0,
        e2e_measure_s=_env_float("FBV_BENCH_E2E_S", 30.0), overload_factor=2.0,
        overload_measure_s=_env_float("FBV_BENCH_OVERLOAD_S", 30.0), sample_interval_s=1.0,
    )


def results_dir() -> Path:
    path = Path(os.environ.get("FBV_BENCH_RESULTS") or RESULTS_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- models ----------------------------------------------------------------------------------------------------


def ensure_yolo11n(imgsz: int, max_batch: int, *, timeout_s: float = 900) -> Path:
    """YOLO11n (random weights, COCO names) at ``imgsz``, dynamic batch 1..``max_batch`` - the shared cached
    export of ``fbvision/export/model_cache.py`` (first call: 20-60 s)."""
    return cached_yolo11n(imgsz, max_batch, timeout_s=timeout_s)


def _cached_quick_model(prof: Profile) -> Path | None:
    """For the smoke pass, a tiny YOLO11n export that is already there: ours, else the integration tests' one
    (same architecture and exporter; ``make test`` makes it first), so CI does not export twice."""
    ours = sorted(MODEL_CACHE.glob(f"yolo11n-{prof.imgsz}-b{prof.max_batch}-*.onnx"))
    ours = [p for p in ours if p.with_suffix(".json").is_file()]
    if ours:
        return ours[-1]
    # else the smallest one already there (the integration tests' model): same architecture and exporter
    others = sorted((p for p in MODEL_CACHE.glob("yolo11n-*-b*.onnx") if p.with_suffix(".json").is_file()),
                    key=lambda p: int(p.name.split("-")[1]) if p.name.split("-")[1].isdigit() else 1 << 30)
    return others[0] if others else None


def headline_model(prof: Profile) -> Path:
    override = os.environ.get("FBV_BENCH_MODEL", "").strip()
    if override:
        return Path(override).resolve()
    if prof.quick:
        cached = _cached_quick_model(prof)
        if cached is not None:
            return cached
    return ensure_yolo11n(prof.imgsz, prof.max_batch)


def describe_model(path: Path) -> dict:
    from fbvision.core.modelinfo import load_model_info

    info = load_model_info(path)
    sidecar = info.metadata.get("sidecar", {})
    return {
        "file": path.name,
        "input": f"{info.input_size[1]}x{info.input_size[0]}",
        "imgsz": int(info.input_size[0]),
        "max_batch": info.max_batch,
        "classes": info.num_classes,
        "fp16": info.fp16,
        "weights": info.source_weights or sidecar.get("source_weights") or "?",
        "size_mb": round(path.stat().st_size / 1e6, 2),
    }


# -- engines -----------------------------------------------------------------------------------------------------

#: The benchmarks' engine labels (``RunSpec.engine``, the suites): 'ort' is ONNX Runtime with the config's
#: providers; 'torch[-cuda|-cpu][-fp16][-graphs]' is the PyTorch engine on that device, FP16, with CUDA graphs.
#: 'sim[:<profile>[:<overhead ms>]]' is the SIMULATED accelerator (fbvision.inference.engines.sim), 'null' no model.
ENGINE_SPECS = "'ort', 'torch[-cuda|-cpu][-fp16][-graphs]', 'sim[:<profile>[:<overhead ms>]]' or 'null'"


def make_engine(model, spec: str = "ort", *, max_batch: int | None = None, **fields):
    """The engine a benchmark label names, built - like the inference worker's and the lab's - by
    :func:`fbvision.inference.engines.build_engine`.

    ``model``: a :class:`fbvision.core.config.ModelConfig` or an ONNX path (the default config over it);
    ``fields``: ModelConfig fields to override (``providers``, ``intra_op_threads`` ...). The label's first
    word is ``model.engine``; the rest are the torch engine's options.
    """
    from fbvision.core.config import ModelConfig
    from fbvision.inference.engines import ENGINES, build_engine

    base = model if isinstance(model, ModelConfig) else ModelConfig(path=Path(model))
    if spec.split(":")[0] in ("sim", "null"):
        name, *sim = spec.split(":")
        if len(sim) > 2 or (name == "null" and sim):
            raise ValueError(f"unknown engine spec {spec!r}; expected {ENGINE_SPECS}")
        if sim:
            fields["sim_profile"] = sim[0]
        if len(sim) == 2:
            fields["sim_overhead_ms"] = float(sim[1])
        config = ModelConfig.model_validate({**base.model_dump(), **fields, "engine": name})
        return build_engine(config, max_batch=max_batch)
    name, *options = spec.split("-")
    known = {"cuda", "cpu", "fp16", "graphs"} if name == "torch" else set()
    if name not in ENGINES or not set(options) <= known or ("cuda" in options and "cpu" in options):
        raise ValueError(f"unknown engine spec {spec!r}; expected {ENGINE_SPECS}")
    config = ModelConfig.model_validate({**base.model_dump(), **fields, "engine": name})
    kwargs: dict = {}
    if name == "torch":
        device = "cuda" if "cuda" in options else ("cpu" if "cpu" in options else None)
        kwargs = {"device": device, "half": ("fp16" in options) or None, "cuda_graphs": "graphs" in options}
    return build_engine(config, max_batch=max_batch, **kwargs)


# -- frames ------------------------------------------------------------------------------------------------------


def stall_images(n: int, seed: int = 11) -> list[np.ndarray]:
    """``n`` synthetic stall frames (BGR, the scenario's own size, 0-2 horses, day and night)."""
    from fbvision.synth.dataset import samples

    images = [s.image for s in samples(range(seed, seed + n), frames_per_seed=1)]
    while len(images) < n:  # a scenario may yield nothing; never expected, but keep n exact
        images.append(images[len(images) % max(len(images), 1)].copy())
    return images[:n]


def frame_messages(n: int, imgsz: int, *, jpeg_quality: int = 85, seed: int = 11) -> list:
    """``n`` wire :class:`FrameMessage` s as the camera manager makes them: letterboxed to ``imgsz``, JPEG q85,
    stamped now (their age is irrelevant to throughput)."""
    import cv2

    from fbvision.core.letterbox import letterbox
    from fbvision.core.wire import FrameMessage

    out = []
    now = time.time()
    for i, image in enumerate(stall_images(n, seed)):
        boxed, box = letterbox(image, (imgsz, imgsz))
        ok, buf = cv2.imencode(".jpg", boxed, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        assert ok
        out.append(FrameMessage(f"cam-{i % 32:02d}", i, now, now, box, buf.tobytes()))
    return out


# -- the machine -------------------------------------------------------------------------------------------------


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _gpu_names() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        return []


def machine_info() -> dict:
    """What the numbers were measured on. Load average matters: these are wall-clock timings."""
    import cv2
    import onnxruntime as ort

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    from fbvision.run.report import machine

    host = machine()  # the run report's reader of /proc/cpuinfo
    return {
        "cpu": cpu_model(),
        # the features that decide the model's speed on a CPU, and family/model (two "AMD EPYC"s differ 3-5x)
        "cpu_flags": host["cpu_flags"],
        "cpu_family_model": host["cpu_family_model"],
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "memory_gb": _mem_total_gb(),
        "gpus": _gpu_names(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "ort_providers": ort.get_available_providers(),
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "load_avg_at_start": load,
        "hostname": platform.node(),
    }


# -- process memory ----------------------------------------------------------------------------------------------


def rss_mb(pid: int | None = None) -> float | None:
    """Resident memory of a process (``/proc/<pid>/status`` VmRSS), MB; None when it is gone."""
    try:
        for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        return None
    return None


def percentiles_ms(values_s, pcts=(50, 95, 99)) -> dict[str, float]:
    vals = np.asarray(values_s, dtype=np.float64) * 1000.0
    if vals.size == 0:
        return {"count": 0}
    out = {"count": int(vals.size), "mean": round(float(vals.mean()), 3), "max": round(float(vals.max()), 3)}
    for p, v in zip(pcts, np.percentile(vals, pcts), strict=True):
        out[f"p{p}"] = round(float(v), 3)
    return out


def cdf_points(values_s, n: int = 101) -> list[float]:
    """``n`` evenly spaced quantiles (ms) - enough to draw a CDF, small enough for the JSON."""
    vals = np.asarray(values_s, dtype=np.float64) * 1000.0
    if vals.size == 0:
        return []
    return [round(float(v), 3) for v in np.quantile(vals, np.linspace(0.0, 1.0, n))]


def cpu_seconds(targets) -> float:
    """User + system CPU seconds of processes or threads: ``targets`` = [(pid, tid)], pid None = this process,
    tid a native thread id or None for the whole process. Gone ones count 0 (:func:`fbvision.core.procutil.cpu_seconds`)."""
    from fbvision.core.procutil import cpu_seconds as one

    return sum(one(pid, tid=tid) for pid, tid in targets)
