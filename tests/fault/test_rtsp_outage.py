"""The RTSP server of one camera stopped, then restarted on the same port (run B): the camera manager reports the
camera down, the logic raises camera_offline (threshold 3 s for this camera), and when the stream is back the
alert is resolved - one raised and one resolved event, no other camera affected."""

from __future__ import annotations

import fbv_fault_harness as h
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]


def test_camera_offline_raised_then_resolved(workers_run):
    if "rtsp" not in workers_run.faults:
        pytest.skip(workers_run.extra["rtsp_skipped"])
    run, rec = workers_run.run, workers_run.faults["rtsp"]
    # (Once the run stops its cameras first, the logic rightly sees them go quiet: events after that are not
    # this fault's.)
    events = [(a["state"], a["severity"]) for a in run.alerts
              if a["camera_id"] == "cam-rtsp" and a["rule"] == "camera_offline" and a["updated_at"] < run.stopping_at]
    h.add_row(rec.fault, recovered_s=rec.recovered_s, expected=1, delivered=events.count(("raised", "warning")),
              duplicated=max(0, events.count(("raised", "warning")) - 1), drops=rec.drops(),
              test="test_rtsp_outage", notes="; ".join(rec.notes))
    assert events == [("raised", "warning"), ("resolved", "warning")], events
    assert rec.recovered_s is not None and rec.recovered_s <= 30.0, rec  # reconnect back-off is <= 2 s here
    others = [a for a in run.alerts if a["rule"] == "camera_offline" and a["camera_id"] != "cam-rtsp"
              and a["updated_at"] < run.stopping_at]
    assert others == []
    assert run.alerts and all("rtsp-secret" not in str(a) for a in run.alerts)
