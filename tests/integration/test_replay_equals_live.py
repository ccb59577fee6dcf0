"""A recorded live run of the logic worker, replayed at 20x, gives the same alerts and idempotency keys.

Live: a synthetic horse (ground-truth boxes of a short scenario, a little seeded jitter) is published to a real
Redis at its own 5 fps in real time, capture times on the wall clock, with a 4 s camera silence while the horse
is down, and the logic worker judges it with a recorder. Frames raise horse_down; the worker's ticks (wall
clock) raise and resolve camera_offline during the silence. Replay: fbvision.logic.playback feeds the
recording to fresh CameraLogic objects at 20x, ticks driven by the recording's clock.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from fbv_testutil import Running, wait_until

from fbvision import lab
from fbvision.core.config import Settings
from fbvision.core.events import AlertEvent
from fbvision.core.logic_config import LogicConfig
from fbvision.core.wire import ResultMessage, Timeline, encode_result
from fbvision.logic.playback import replay_recording, replay_steps
from fbvision.logic.recorder import Recorder, read_recording, read_ticks
from fbvision.logic.worker import LogicWorker
from fbvision.synth import Scenario, SceneRenderer

CAMERA = "stall-replay"
SCENE = Scenario.from_yaml(
    """
name: replay_live
seed: 5
fps: 5
size: [640, 360]
horses:
  - id: bay
    script:
      - standing: 2
      - lying_down: 1
      - lying_flat: 9
      - getting_up: 1
      - standing: 3
"""
)
SILENT = range(30, 50)  # frames not published: 4 s without results while the horse lies flat
FAST_WORKER = dict(lease_ttl_s=1.0, heartbeat_s=0.2, read_count=8, tick_interval_s=0.5, report_interval_s=0.2)


def config() -> LogicConfig:
    return LogicConfig.model_validate(
        {
            "tracker": {"min_consecutive_frames": 1},
            "features": {"baseline_sample_interval_s": 0, "baseline_min_samples": 3},
            "rules": {
                "horse_down": {
                    "smoothing": {"kind": "vote", "window_s": 1.0, "fraction": 0.6, "min_frames": 3},
                    "exit_after_s": 0.5, "cooldown_s": 0,
                    "escalation": [{"after_s": 2.0, "severity": "warning"}, {"after_s": 4.0, "severity": "critical"}],
                },
                "camera_offline": {"stale_after_s": 1.0, "escalation": [{"after_s": 1.0, "severity": "warning"}]},
                "rolling": {"enabled": False},
                "too_fast": {"enabled": False},
                "horse_absent": {"enabled": False},
            },
        }
    )


def publish_live(transport, stop: threading.Event) -> None:
    """The scene in real time: frame i at start + i / fps, captured 'now', except the silent ones."""
    renderer = SceneRenderer(SCENE)
    rng = np.random.default_rng(7)
    noise = lab.TruthNoise(jitter=0.01, dropout=0.0, glitch=0.0)
    start = time.time()
    for i in range(renderer.n_frames):
        candidates = lab.truth_candidates(renderer.truth(i), rng, noise, renderer.size)
        wait = start + i / SCENE.fps - time.time()
        if wait > 0 and stop.wait(wait):
            return
        if i in SILENT:
            continue
        t = time.time()
        msg = ResultMessage(
            camera_id=CAMERA, seq=i, src_w=renderer.size[0], src_h=renderer.size[1],
            timeline=Timeline(t, t + 0.001, t + 0.002, t + 0.003, t + 0.004, t + 0.005), batch_size=1,
            boxes=candidates.xyxy, scores=candidates.scores, class_ids=candidates.class_ids,
        )
        transport.publish_results([(CAMERA, encode_result(msg))])


def outbox_alerts(transport) -> list[AlertEvent]:
    return [AlertEvent.from_json(fields[b"a"]) for _id, fields in transport.client.xrange(transport.keys.outbox)]


#: The live worker runs with the default evidence settings: its raised/escalated alerts carry evidence URLs.
EVIDENCE_URLS = Settings().evidence.url_prefix


def comparable(alerts: list[AlertEvent]) -> list[dict]:
    """Every field of every event except ``id``: a fresh uuid4 per emitted event by design (the backend
    deduplicates by ``idempotency_key``, which must be equal). Nothing else is excluded: the times are capture
    and reference-clock times from the recording, not the wall clock of either run."""
    dumped = [a.model_dump(mode="json", exclude={"id"}) for a in alerts]
    return sorted(dumped, key=lambda a: (a["camera_id"], a["updated_at"], a["rule"], a["idempotency_key"]))


@pytest.mark.timeout(90)
def test_replay_at_20x_equals_the_live_run(transport, tmp_path):
    cfg = config()
    recorder = Recorder(tmp_path / "rec", rows_per_part=40, flush_interval_s=1.0)
    worker = LogicWorker(Settings(logic=cfg), transport, "live", class_ids={"horse": 0}, recorder=recorder,
                         **FAST_WORKER)
    stop = threading.Event()
    started = time.monotonic()
    with Running(worker):
        publisher = threading.Thread(target=publish_live, args=(transport, stop), daemon=True)
        publisher.start()
        publisher.join(timeout=60)
        assert not publisher.is_alive()
        transport.ensure_groups()
        assert wait_until(lambda: transport.result_backlog() == 0, 10)
        time.sleep(1.0)  # a few more ticks after the last frame
    recorder.close()
    live_s = time.monotonic() - started
    live = outbox_alerts(transport)

    # The live run did what the test is about: frame-driven and tick-driven alerts.
    kinds = {(a.rule, a.state.value) for a in live}
    assert {("horse_down", "raised"), ("horse_down", "ongoing"), ("camera_offline", "raised"),
            ("camera_offline", "resolved")} <= kinds, kinds
    recording, ticks = read_recording(tmp_path / "rec"), read_ticks(tmp_path / "rec")
    assert recording["in_candidates"].notna().sum() == SCENE.n_frames - len(SILENT)
    assert len(ticks) >= 10 and (ticks["camera_id"] == CAMERA).all()

    replay_start = time.monotonic()
    replayed = replay_recording(tmp_path / "rec", cfg, class_ids=[0], speed=20.0, evidence_url_prefix=EVIDENCE_URLS)
    replay_s = time.monotonic() - replay_start
    steps = replay_steps(recording, ticks)
    span = steps[-1].clock - steps[0].clock
    assert span / 20.0 - 0.1 <= replay_s < span / 5.0  # paced at 20x, not as fast as possible, not real time
    assert replay_s < live_s / 5.0

    assert sorted(a.idempotency_key for a in replayed) == sorted(a.idempotency_key for a in live)
    assert comparable(replayed) == comparable(live)
    # As fast as possible: the same again (the pace is not an input of the logic).
    again = replay_recording(tmp_path / "rec", cfg, class_ids=[0], evidence_url_prefix=EVIDENCE_URLS)
    assert comparable(again) == comparable(live)
    assert all(a.evidence.snapshot for a in live if a.state.value != "resolved")  # the URLs were compared too


def test_a_recording_without_ticks_replays_frames_with_ticks_on_the_results_clock(tmp_path):
    """Synthetic ticks every tick_interval_s of arrival time: a 4 s silence gets ticks inside it."""
    cfg = config()
    renderer = SceneRenderer(SCENE)
    rng = np.random.default_rng(1)
    noise = lab.TruthNoise(jitter=0.01, dropout=0.0, glitch=0.0)
    from fbvision.logic.camera_logic import CameraLogic

    logic = CameraLogic(CAMERA, cfg, None, [0])
    t0 = 1_700_000_000.0
    with Recorder(tmp_path / "rec") as rec:
        for i in range(renderer.n_frames):
            if i in SILENT:
                continue
            c = lab.truth_candidates(renderer.truth(i), rng, noise, renderer.size)
            t = t0 + i / SCENE.fps
            outcome = logic.process(seq=i, t=t, candidates=c, frame_size=renderer.size, arrived=t + 0.05)
            rec.record_outcome(CAMERA, outcome, inputs={"t": t, "arrived": t + 0.05, "src_w": renderer.size[0],
                                                         "src_h": renderer.size[1],
                                                         "candidates": (c.xyxy, c.scores, c.class_ids)})
    steps = replay_steps(read_recording(tmp_path / "rec"), None, tick_interval_s=0.5)
    silent_ticks = [s for s in steps if s.candidates is None and t0 + 6.0 < s.clock < t0 + 9.0]
    assert len(silent_ticks) == 6
    alerts = replay_recording(tmp_path / "rec", cfg, class_ids=[0], tick_interval_s=0.5)
    assert {(a.rule, a.state.value) for a in alerts} >= {("horse_down", "raised"), ("camera_offline", "raised")}
