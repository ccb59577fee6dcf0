"""The suite's two passes (`make test`): what may share the two cores, and what runs alone.

A test is *serial* unless it is listed here as parallel-safe: serial tests start pipelines of processes, measure
time or throughput, or wait on deadlines that a neighbour eating a core would stretch (fault, e2e, scale-out and
security runs, the benchmarks' smoke rows, the RTSP and worker integration tests). Parallel-safe tests are
single-process computations (unit tests, the logic over scripted days, the notebooks that do not run a pipeline).
`make test` runs ``-m "not serial" -n 2`` (pytest-xdist) and then ``-m serial``; a new test file is serial until
someone adds it here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent

#: Paths (relative to the repository) whose tests may run two at a time. A directory covers everything under it.
PARALLEL_SAFE = (
    "tests/unit",
    "tests/integration/test_camera_encoding.py",
    "tests/integration/test_demo_model.py",
    "tests/integration/test_horse_baseline_days.py",
    "tests/integration/test_horse_day.py",
    "tests/integration/test_horse_day_on_review.py",
    "tests/integration/test_logic_clock.py",
    "tests/integration/test_outbox_groups.py",
    "tests/integration/test_report_bad_cameras.py",
    "tests/integration/test_tracking_scenarios.py",
    "notebooks/01_smoothing_rules.ipynb",
    "notebooks/03_your_own_stalls.ipynb",
)
#: Within PARALLEL_SAFE, still serial: they start processes or sleep against a clock.
SERIAL_EXCEPTIONS = (
    "tests/unit/test_supervisor.py",
    "tests/unit/test_dashboard_figures.py",
    "tests/unit/test_run_logs.py",
)


def _under(rel: str, paths: tuple[str, ...]) -> bool:
    return any(rel == p or rel.startswith(p + "/") for p in paths)


def _is_parallel_safe(path: Path) -> bool:
    try:
        rel = path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return False
    return _under(rel, PARALLEL_SAFE) and not _under(rel, SERIAL_EXCEPTIONS)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if not _is_parallel_safe(Path(str(item.path))):
            item.add_marker(pytest.mark.serial)
