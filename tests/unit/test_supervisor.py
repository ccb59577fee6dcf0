"""The supervisor: restarts with a budget, gives up loudly on a crash loop, warm and cold stops."""

import os
import time

import pytest

from fbvision.run.supervisor import CrashLoop, StageSpec, Supervisor

pytestmark = pytest.mark.timeout(60)


def crash_at_once(code, stop):
    raise SystemExit(code)


def run_until_stopped(marker, stop):
    while not stop.wait(0.05):
        pass
    with open(marker, "w") as fh:
        fh.write("clean exit")


def ignore_stop(stop):
    while True:
        time.sleep(0.1)


def poll_until(sup, predicate, timeout_s=20):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sup.poll()
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_crashing_stage_is_restarted_then_the_supervisor_gives_up():
    sup = Supervisor([StageSpec("flaky", crash_at_once, (3,))], max_restarts=2, window_s=60)
    sup.start()
    try:
        with pytest.raises(CrashLoop, match="flaky exited \\(code 3\\) 3 times"):
            poll_until(sup, lambda: False)
        assert sup.restart_counts["flaky"] == 2
    finally:
        sup.kill()


def test_restarts_outside_the_window_do_not_count():
    sup = Supervisor([StageSpec("flaky", crash_at_once, (1,))], max_restarts=1, window_s=0.01)
    sup.start()
    try:
        poll_until(sup, lambda: sup.restart_counts["flaky"] >= 3)  # never a crash loop: each is alone in its window
    finally:
        sup.kill()


def test_warm_stop_lets_the_stage_finish(tmp_path):
    marker = tmp_path / "done"
    sup = Supervisor([StageSpec("worker", run_until_stopped, (str(marker),))])
    sup.start()
    time.sleep(1.0)
    sup.stop(timeout_s=20)
    assert marker.read_text() == "clean exit"
    assert not any(r.process.is_alive() for r in sup.running.values())


def test_a_stage_that_ignores_stop_is_killed():
    sup = Supervisor([StageSpec("stubborn", ignore_stop)])
    sup.start()
    pid = sup.pids()["stubborn"]
    t0 = time.monotonic()
    sup.stop(timeout_s=1.0)
    assert time.monotonic() - t0 < 10
    assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()
