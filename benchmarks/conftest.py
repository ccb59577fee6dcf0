"""Fixtures of the benchmark suites: the run profile, the models and their engines, one private Redis, the
auto-tune result shared by the suites of one run, and the machine description written into the JSON.

A plain ``pytest benchmarks`` is the smoke pass (tiny model, one round; no timing is asserted anywhere);
``FBV_BENCH_QUICK=0`` - what ``make bench`` / run_bench.py set - is the full run. See benchmarks/common.py for the
other variables and docs/benchmarks.md for what is measured.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from benchmarks import common


@pytest.fixture(autouse=True)
def _quiet_fbvision_logs():
    """The benchmarks' own output stays readable: fbvision logs WARNING and up while a benchmark runs. A fixture,
    not an import-time setLevel: conftest files of every folder are imported at collection, so a module-level
    setting would silence INFO for the tests/ suites of the same session as well."""
    log = logging.getLogger("fbvision")
    saved = log.level
    log.setLevel(logging.WARNING)
    yield
    log.setLevel(saved)

#: Model keys the suites are parametrised over. "demo" is the trained horse model when it is committed.
MODEL_KEYS = ("yolo11n", "demo")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "bench: a benchmark suite under benchmarks/ (plain pytest: smoke pass; FBV_BENCH_QUICK=0: full run)"
    )


def pytest_report_header(config):
    prof = common.profile()
    return (f"fbvision benchmarks: {'QUICK smoke pass' if prof.quick else 'full run'}, "
            f"headline model yolo11n@{prof.imgsz}, batch sizes {list(prof.batch_sizes)}")


# -- pytest-benchmark hooks: the machine and the run profile go into the JSON ------------------------------------


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["fbvision"] = common.machine_info()


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["fbvision"] = {
        "profile": dataclasses.asdict(common.profile()),
        "models": _MODEL_DESCRIPTIONS,
    }


_MODEL_DESCRIPTIONS: dict[str, dict] = {}


# -- fixtures ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prof() -> common.Profile:
    return common.profile()


@pytest.fixture(scope="session")
def model_paths(prof) -> dict[str, Path | None]:
    """Model key -> ONNX path (None: not available in this run)."""
    paths: dict[str, Path | None] = {"yolo11n": common.headline_model(prof), "demo": None}
    if not prof.quick and common.DEMO_MODEL.is_file():
        paths["demo"] = common.DEMO_MODEL
    for key, path in paths.items():
        if path is not None:
            _MODEL_DESCRIPTIONS[key] = common.describe_model(path)
    return paths


@pytest.fixture(params=MODEL_KEYS)
def model_key(request, model_paths) -> str:
    key = request.param
    if model_paths.get(key) is None:
        reason = "quick pass: headline model only" if common.quick_mode() else f"{common.DEMO_MODEL} not present"
        pytest.skip(reason)
    return key


@pytest.fixture(scope="session")
def engines(model_paths):
    """Lazily built ONNX Runtime engines, one per model key (the provider list of the default config), by
    :func:`common.make_engine` (that is, :func:`fbvision.inference.engines.build_engine`)."""
    cache: dict = {}

    def get(key: str):
        if key not in cache:
            cache[key] = common.make_engine(model_paths[key], "ort")
        return cache[key]

    return get


@pytest.fixture(scope="session")
def tuning() -> dict:
    """model key -> AutotuneResult, filled by test_autotune (or on demand by :func:`tuned`)."""
    return {}


@pytest.fixture(scope="session")
def sweeps() -> dict:
    """model key -> the batching sweep's summary (frames/s per mode), filled by test_batching."""
    return {}


@pytest.fixture
def tuned(model_key, engines, tuning, prof):
    """The auto-tuned (max_batch, max_wait_ms) of this model on this machine, measured once per run."""
    from fbvision.inference.batcher import autotune

    if model_key not in tuning:
        engine = engines(model_key)
        sizes = [b for b in prof.batch_sizes if b <= engine.max_batch]
        tuning[model_key] = autotune(engine, sizes, max_wait_ms=10.0, budget_s=prof.autotune_budget_s)
    return tuning[model_key]


@pytest.fixture(scope="session")
def bench_redis():
    """One private redis-server (the project's embedded one) for the run; suites flush it before use."""
    from fbvision.run.redis_server import EmbeddedRedis

    with EmbeddedRedis(maxmemory_mb=1024) as server:
        yield server


@pytest.fixture(scope="session")
def results(prof, tmp_path_factory) -> Path:
    """Where side outputs (autotune.yaml) go: FBV_BENCH_RESULTS, else benchmarks/results (a temp dir when quick)."""
    import os

    if os.environ.get("FBV_BENCH_RESULTS") or not prof.quick:
        return common.results_dir()
    return tmp_path_factory.mktemp("bench-results")
