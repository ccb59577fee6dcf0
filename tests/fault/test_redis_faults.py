"""Redis faults on a running pipeline: all client connections killed, the server restarted (append-only file,
as a production Redis keeps), and the server unreachable for 10 s (frozen with SIGSTOP: connections hang as
behind a dead link, the harder case for timeouts than a refused connection).

Each fault: no stage crashes (no restart at all), frames flow end to end again within a stated time, no alert
is lost or duplicated, and the counters explain every frame that did not reach the logic stage.
"""

from __future__ import annotations

import fbv_fault_harness as h
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

#: Recovery bounds (s, from the fault being lifted to a fresh frame judged by the logic stage). Generous for
#: a busy 2-core CI runner; measured figures are in docs/reliability.md.
RECOVERY_BOUND_S = {"client_kill": 10.0, "restart": 15.0, "unreachable": 15.0}
CAMERAS = ("cam-down", "cam-walk")


def test_no_stage_crashed(redis_run):
    run = redis_run.run
    assert run.crash_loop is None
    assert sum(run.supervisor.restart_counts.values()) == 0, run.supervisor.restart_counts


@pytest.mark.parametrize("fault", ["client_kill", "restart", "unreachable"])
def test_recovers_within_bound(redis_run, fault):
    rec = redis_run.faults[fault]
    h.add_row(rec.fault, recovered_s=rec.recovered_s, expected=None, delivered=None, duplicated=None,
              drops=rec.drops(), test=f"test_redis_faults[{fault}]", notes="; ".join(rec.notes))
    assert rec.recovered_s is not None, rec.notes
    assert rec.recovered_s <= RECOVERY_BOUND_S[fault], rec


def test_no_alert_lost_or_duplicated(redis_run):
    run = redis_run.run
    unreachable = redis_run.faults["unreachable"]
    # A fault holds frames back for its duration plus the recovery: a raise may come that much later.
    allowance = (unreachable.ended - unreachable.started) + (unreachable.recovered_s or 0) + 5.0
    expected = h.expected_for(run, CAMERAS, run.stopped_at)
    acc = h.account_alerts(run, CAMERAS, expected, allowance)
    h.add_row("Redis faults (run A, all three): alerts", recovered_s=None, expected=acc.expected,
              delivered=acc.delivered, duplicated=len(acc.duplicated), drops={}, test="test_redis_faults",
              notes=f"{acc.events} events stored")
    assert acc.expected >= 1, "the run was too short for the horse_down alert to be due"
    assert acc.lost == [] and acc.duplicated == [] and acc.unexpected == [], acc
    assert acc.incomplete == [], acc
    assert h.episode_lifecycles_ok([a for a in run.alerts if a["camera_id"] in CAMERAS]) == []
    # the critical escalation and the resolve of the episode that spanned all three faults
    states = {(a["state"], a["severity"]) for a in run.alerts if a["camera_id"] == "cam-down" and a["rule"] == "horse_down"}
    assert {("raised", "warning"), ("ongoing", "critical"), ("resolved", "critical")} <= states, states


def test_counters_explain_every_dropped_frame(redis_run):
    """pushed = popped + trimmed by the cap + left; popped = inferred + dropped by reason; inferred = judged.

    Pushes, publishes and counter reports retried after a lost reply land once (once ids, running totals), so
    the only thing not countable is a pop whose reply was lost to the freeze or to CLIENT KILL: it takes frames
    nobody receives (popped < pushed), hence the one-sided tolerance on the queue line. With the append-only
    file nothing is lost in the restart.
    """
    b = redis_run.run.frame_balance()
    print(b)
    assert b["queue_left"] == 0 and b["result_backlog"] == 0
    assert 0 <= b["unaccounted_queue"] <= 32, b  # lost pops: a few batches (max_batch 8) over the three faults
    assert b["unaccounted_inference"] == 0, b
    assert b["unaccounted_logic"] == 0, b
    assert set(b["inference_drops"]) <= {"dropped:stale", "dropped:wire_garbage", "dropped:wire_truncated",
                                         "dropped:wire_too_large", "dropped:wire_version", "dropped:corrupt"}, b


def test_secrets_stay_out_of_logs(redis_run):
    assert redis_run.run.secrets_in_logs([h.REDIS_PASSWORD]) == []


def test_every_frame_inferred_at_most_once(redis_run):
    dups = redis_run.run.duplicate_results()
    assert dups == [], f"{len(dups)} frames inferred twice, e.g. {dups[:5]}"
