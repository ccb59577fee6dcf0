"""Scale-out tests reuse the fault suite's harness and its run B (two camera managers, two inference workers,
two logic workers on one Redis), computed once per session whichever suite asks first."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

FAULT_DIR = Path(__file__).resolve().parents[1] / "fault"
if str(FAULT_DIR) not in sys.path:
    sys.path.insert(0, str(FAULT_DIR))

import fbv_fault_runs as runs  # noqa: E402


@pytest.fixture(scope="session")
def workers_run(tmp_path_factory) -> runs.RunResult:
    return runs.memo("workers", runs.workers_and_backend, tmp_path_factory.getbasetemp() / "fault-workers")
