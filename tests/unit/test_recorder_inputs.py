"""The recorder keeps what the logic was given (frames' inputs, ticks) so a recording can be replayed."""

from __future__ import annotations

import json

import pytest

from fbvision.core.candidates import Candidates
from fbvision.core.logic_config import LogicConfig
from fbvision.logic.camera_logic import CameraLogic
from fbvision.logic.playback import replay_recording, replay_steps
from fbvision.logic.recorder import PART_GLOB, TICK_GLOB, Recorder, read_recording, read_ticks

STAND = (100.0, 100.0, 200.0, 300.0)
LIE = (90.0, 200.0, 250.0, 300.0)
FRAME = (640, 480)
T0 = 1_700_000_000.0


def config() -> LogicConfig:
    return LogicConfig.model_validate({
        "tracker": {"min_consecutive_frames": 1},
        "features": {"baseline_sample_interval_s": 0, "baseline_min_samples": 3},
        "rules": {
            "horse_down": {"smoothing": {"kind": "none"}, "exit_after_s": 0.5, "cooldown_s": 0,
                           "escalation": [{"after_s": 1.0, "severity": "warning"}]},
            "camera_offline": {"stale_after_s": 1.0, "escalation": [{"after_s": 1.0, "severity": "warning"}]},
            "rolling": {"enabled": False}, "too_fast": {"enabled": False}, "horse_absent": {"enabled": False},
        },
    })


def test_inputs_go_on_the_frames_first_row_and_ticks_into_their_own_parts(tmp_path):
    logic = CameraLogic("cam", config(), None, [0])
    with Recorder(tmp_path, rows_per_part=7) as rec:
        for seq in range(12):
            box = STAND if seq < 4 else LIE
            t = T0 + seq * 0.2
            c = Candidates.create([box], [0.9], [0])
            outcome = logic.process(seq=seq, t=t, candidates=c, frame_size=FRAME, arrived=t + 0.01)
            rec.record_outcome("cam", outcome, inputs={"t": t, "arrived": t + 0.01, "src_w": 640, "src_h": 480,
                                                      "candidates": (c.xyxy, c.scores, c.class_ids)})
            if seq % 5 == 4:
                rec.record_tick("cam", t + 0.1, None, logic.tick_reference(t + 0.1))
        rec.record_outcome("cam", logic.process(seq=12, t=T0 + 2.4, candidates=Candidates.create([], [], []),
                                                frame_size=FRAME))  # no inputs: nothing to replay for this one
    assert rec.rows_written == 13  # frame rows only
    assert len(list(tmp_path.glob(TICK_GLOB))) >= 1 and not set(tmp_path.glob(TICK_GLOB)) & set(tmp_path.glob(PART_GLOB))
    df = read_recording(tmp_path)
    assert len(df) == 13
    with_inputs = df[df["in_candidates"].notna()]
    assert len(with_inputs) == 12 and with_inputs["in_w"].eq(640).all()
    first = json.loads(with_inputs.iloc[0]["in_candidates"])
    assert first == {"xyxy": [list(STAND)], "scores": [pytest.approx(0.9)], "class_ids": [0]}
    assert with_inputs["in_arrived"].sub(with_inputs["in_t"]).round(6).eq(0.01).all()
    ticks = read_ticks(tmp_path)
    assert list(ticks["camera_id"]) == ["cam", "cam"] and ticks["now"].tolist() == pytest.approx(
        [T0 + 0.9, T0 + 1.9])
    # One running number over frames and ticks: the order they were judged in.
    orders = sorted([*with_inputs["in_order"].astype(int), *ticks["in_order"].astype(int)])
    assert orders == list(range(14))
    steps = replay_steps(df, ticks)
    assert [s.candidates is None for s in steps][:6] == [False] * 5 + [True]


def test_replay_of_a_recording_equals_what_the_logic_raised(tmp_path):
    logic = CameraLogic("cam", config(), None, [0])
    live = []
    with Recorder(tmp_path) as rec:
        for seq in range(40):
            box = LIE if 5 <= seq < 25 else STAND
            t = T0 + seq * 0.2
            if 28 <= seq < 38:  # a silence: only ticks
                if seq % 2 == 0:
                    alerts = logic.tick_reference(t + 0.01)
                    live += alerts
                    rec.record_tick("cam", t + 0.01, None, alerts)
                continue
            c = Candidates.create([box], [0.9], [0])
            outcome = logic.process(seq=seq, t=t, candidates=c, frame_size=FRAME, arrived=t + 0.01)
            live += outcome.alerts
            rec.record_outcome("cam", outcome, inputs={"t": t, "arrived": t + 0.01, "src_w": 640, "src_h": 480,
                                                      "candidates": (c.xyxy, c.scores, c.class_ids)})
    assert {(a.rule, a.state.value) for a in live} >= {("horse_down", "raised"), ("camera_offline", "raised")}
    replayed = replay_recording(tmp_path, config(), class_ids=[0])
    assert [a.model_dump(exclude={"id"}) for a in replayed] == [a.model_dump(exclude={"id"}) for a in live]


def test_a_recording_without_inputs_cannot_be_replayed(tmp_path):
    with Recorder(tmp_path) as rec:
        rec.record("cam", 0, T0, detections=0)
    with pytest.raises(ValueError, match="no logic inputs"):
        replay_recording(tmp_path, config())
