"""Fault suite fixtures and the end-of-session summary table.

Each session-scoped run fixture starts a real pipeline (stage processes under the project's supervisor, a
real redis-server, the embedded backend in this process, the demo model on CPU, synthetic cameras whose
scenarios say when alerts are due), injects its faults one after another in separate time windows, measures
each, and stops. The test modules (one per fault family) assert on what the run recorded, so a run serves
several tests and the suite fits the CI budget. Figures land in the table printed at the end of the session
(``pytest_terminal_summary``) and in ``runs/fault-suite/summary.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import fbv_fault_harness as harness  # noqa: E402
import fbv_fault_runs as runs  # noqa: E402

SUMMARY_JSON = HERE.parents[1] / "runs" / "fault-suite" / "summary.json"


@pytest.fixture(scope="session")
def redis_run(tmp_path_factory) -> runs.RunResult:
    """Run A: CLIENT KILL, Redis restart (AOF), Redis unreachable 10 s, corrupt messages in every queue."""
    return runs.memo("redis", runs.redis_faults, tmp_path_factory.getbasetemp() / "fault-redis")


@pytest.fixture(scope="session")
def workers_run(tmp_path_factory) -> runs.RunResult:
    """Run B (2 camera managers, 2 inference, 2 logic workers): RTSP outage, inference SIGKILL, backend down
    30 s, a logic worker leaving and joining, logic SIGKILL. Shared with tests/scaleout."""
    return runs.memo("workers", runs.workers_and_backend, tmp_path_factory.getbasetemp() / "fault-workers")


@pytest.fixture(scope="session")
def overload_run(tmp_path_factory) -> runs.RunResult:
    """Run C: offered load about 2x capacity for 60 s."""
    return runs.memo("overload", runs.overload, tmp_path_factory.getbasetemp() / "fault-overload")


#: Faults covered elsewhere, listed in the table so it is the whole picture.
COVERED_ELSEWHERE = [
    ("double SIGTERM -> cold exit, no orphans", "tests/e2e/test_acceptance.py::test_sigterm_twice_is_a_cold_exit"),
]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows, figures = harness.SUMMARY_ROWS, harness.FIGURES
    if not rows and not figures:
        return
    tr = terminalreporter
    tr.section("fault suite summary")
    header = f"{'fault':<44} {'recovered s':>11} {'alerts exp/deliv/dup':>21}  frames dropped by reason"
    tr.write_line(header)
    tr.write_line("-" * len(header))
    for r in rows:
        rec = "-" if r["recovered_s"] is None else f"{r['recovered_s']:.1f}"
        alerts = f"{r['expected']}/{r['delivered']}/{r['duplicated']}" if r["expected"] is not None else "-"
        tr.write_line(f"{r['fault'][:44]:<44} {rec:>11} {alerts:>21}  {harness.format_drops(r['drops'])}"
                      + (f"  [{r['notes']}]" if r["notes"] else ""))
    for fault, where in COVERED_ELSEWHERE:
        tr.write_line(f"{fault[:44]:<44} {'-':>11} {'-':>21}  (covered by {where})")
    for line in figures:
        tr.write_line(line)
    try:
        SUMMARY_JSON.parent.mkdir(parents=True, exist_ok=True)
        SUMMARY_JSON.write_text(json.dumps({"at": time.time(), "rows": rows, "figures": figures}, indent=2,
                                           default=str))
        tr.write_line(f"(also written to {SUMMARY_JSON})")
    except OSError:
        pass
