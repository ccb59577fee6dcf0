"""fbvision.lab.replay: boxes and labels land where the tracks are, recorded alerts replay into active state,
synthetic frames are re-rendered on the run's clock, preview MP4s and per-alert snapshots are written."""

from __future__ import annotations

import math
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from fbvision.lab import draw, replay
from fbvision.logic.features import TrackFeatures
from fbvision.logic.recorder import Recorder, read_recording
from fbvision.synth import Scenario, SceneRenderer

T0 = 1_700_000_000.0
BOX = (60.0, 70.0, 160.0, 150.0)


def grey(h: int = 240, w: int = 320) -> np.ndarray:
    return np.full((h, w, 3), 90, dtype=np.uint8)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=2)


def feat(track_id: int, seq: int, t: float, box, *, lying: bool = False, present: bool = True) -> TrackFeatures:
    x1, y1, x2, y2 = box
    return TrackFeatures("cam", track_id, t, seq, tuple(box), (x2 - x1) / (y2 - y1), 1.0, 0.5, 0.2, 0.9,
                         present, lying, y2 - y1)


def event(rule: str, state: str, severity: str, track_id: int | None):
    return SimpleNamespace(rule=rule, state=SimpleNamespace(value=state), severity=SimpleNamespace(value=severity),
                           track_id=track_id)


# -- drawing -----------------------------------------------------------------------------------------------------


def test_boxes_are_drawn_on_the_box_and_nowhere_else():
    frame = grey()
    out = draw.annotate_frame(frame, [draw.TrackView(3, BOX)], labels=False)
    assert np.array_equal(frame, grey()), "the input frame must not be modified"
    diff = changed(out, frame)
    ys, xs = np.nonzero(diff)
    x1, y1, x2, y2 = (int(v) for v in BOX)
    t = 3  # thickness 2, plus anti-aliasing slack
    assert xs.min() >= x1 - t and xs.max() <= x2 + t and ys.min() >= y1 - t and ys.max() <= y2 + t
    # every edge is drawn, the inside is left alone
    assert diff[y1, x1 + 10: x2 - 10].all() and diff[y2, x1 + 10: x2 - 10].all()
    assert diff[y1 + 10: y2 - 10, x1].all() and diff[y1 + 10: y2 - 10, x2].all()
    assert not diff[y1 + 5: y2 - 5, x1 + 5: x2 - 5].any()


def test_labels_sit_at_the_box_and_alerts_are_red():
    frame = grey()
    calm = draw.annotate_frame(frame, [draw.TrackView(3, BOX, lying=True, speed_bl_s=0.2)])
    diff = changed(calm, frame)
    x1, y1, x2, y2 = (int(v) for v in BOX)
    assert diff[: y1, x1: x2].any(), "the label goes just above the box"
    assert not diff[y2 + 4:, :].any() and not diff[:, : x1 - 4].any(), "nothing below or left of the box"
    assert not diff[: y1 - 40, :].any() and not diff[:, x1 + 200:].any(), "the label is one short line"
    red = np.array(draw.ALERT_COLOR.as_bgr(), dtype=np.uint8)
    assert not np.all(calm == red, axis=2).any(), "no red without an alert"

    alarmed = draw.annotate_frame(frame, [draw.TrackView(3, BOX, lying=True, alerts={"horse_down": "warning"})])
    is_red = np.all(alarmed == red, axis=2)
    assert is_red[y1 - 2: y1 + 3, x1 + 10: x2 - 10].any() and is_red[y2 - 2: y2 + 3, x1 + 10: x2 - 10].any()


def test_label_text():
    assert draw.track_label(draw.TrackView(4, BOX, lying=True, speed_bl_s=0.04)) == "#4 lying 0.0 BL/s"
    assert draw.track_label(draw.TrackView(4, BOX, speed_bl_s=math.nan)) == "#4 standing"
    two = draw.track_label(draw.TrackView(4, BOX, speed_bl_s=2.5, alerts={"too_fast": "warning", "horse_down": "critical"}))
    assert two.splitlines() == ["#4 standing 2.5 BL/s", "horse_down critical", "too_fast warning"]


def test_lost_tracks_are_hidden_unless_asked_and_header_is_drawn():
    frame = grey()
    lost = [draw.TrackView(5, BOX, present=False)]
    assert np.array_equal(draw.annotate_frame(frame, lost), frame)
    shown = draw.annotate_frame(frame, lost, annotator=draw.FrameAnnotator(show_lost=True))
    assert changed(shown, frame).any()
    headed = draw.annotate_frame(frame, [], header="cam  scene 1.0 s", camera_alerts={"horse_absent": "warning"})
    diff = changed(headed, frame)
    assert diff[:40, :60].any() and not diff[60:, :].any()


# -- recordings --------------------------------------------------------------------------------------------------


@pytest.fixture
def recording(tmp_path):
    """Track 1 lies from frame 2; horse_down raised at 3, escalated at 5, resolved at 7; horse_absent at 8."""
    with Recorder(tmp_path / "rec") as rec:
        for i in range(10):
            t, seq = T0 + i * 0.2, 500 + i
            alerts = {3: [event("horse_down", "raised", "warning", 1)],
                      5: [event("horse_down", "ongoing", "critical", 1)],
                      7: [event("horse_down", "resolved", "critical", 1)],
                      8: [event("horse_absent", "raised", "warning", None)]}.get(i, [])
            feats = [] if i >= 8 else [feat(1, seq, t, BOX, lying=i >= 2), feat(2, seq, t, (200, 20, 260, 90))]
            rec.record("cam", seq, t, detections=len(feats), features=feats, alerts=alerts)
        rec.record("cam", 503, T0 + 0.6, detections=2, features=[feat(1, 503, T0 + 0.6, BOX, lying=True)])  # replay
    return read_recording(tmp_path / "rec")


def test_recorded_frames_replay_alerts_into_active_state(recording):
    frames = draw.recorded_frames(recording, "cam")
    assert [f.seq for f in frames] == list(range(500, 510))
    active = [{tr.track_id: dict(tr.alerts) for tr in f.tracks}.get(1) for f in frames]
    assert active[:3] == [{}, {}, {}]
    assert active[3] == active[4] == {"horse_down": "warning"}
    assert active[5] == active[6] == {"horse_down": "critical"}
    assert active[7] == {}
    assert all(not tr.alerts for f in frames for tr in f.tracks if tr.track_id == 2)
    assert frames[8].tracks == () and frames[8].camera_alerts == {"horse_absent": "warning"}
    assert frames[3].events == ("horse_down:raised:warning",)
    assert [tr.lying for tr in frames[1].tracks if tr.track_id == 1] == [False]
    assert draw.recorded_frames(recording, "other") == []


def test_scene_index_follows_the_producer_clock():
    scenario = Scenario.builtin("running")
    renderer = SceneRenderer(scenario, precompute=False)
    scene = replay.SyntheticScene(renderer, T0)
    fps, n = renderer.fps, renderer.n_frames
    assert scene.index(T0) == 0
    assert scene.index(T0 + 3 / fps + 0.0005) == 3
    assert scene.index(T0 + 3.6 / fps) == 3  # floor, like SyntheticCapture
    assert scene.index(T0 + (n + 2) / fps) == 2  # loops
    assert replay.SyntheticScene(renderer, T0, loop=False).index(T0 + (n + 2) / fps) == n - 1


def test_annotate_recording_draws_on_the_re_rendered_scene(tmp_path):
    scenario = Scenario.builtin("down_long")
    renderer = SceneRenderer(scenario)
    with Recorder(tmp_path / "rec") as rec:
        for i in range(0, 6):
            truth = [h for h in renderer.truth(i * 10) if h.visible][0]
            t = T0 + i * 10 / renderer.fps + 0.002
            rec.record("cam", i, t, detections=1, features=[feat(1, i, t, truth.box)])
    df = read_recording(tmp_path / "rec")
    frames = list(replay.annotate_recording(df, "cam", renderer, scene_t0=T0, header=False, every=2))
    assert len(frames) == 3
    for k, out in zip((0, 2, 4), frames, strict=True):
        clean = renderer.frame(k * 10)
        x1, y1, x2, y2 = (int(v) for v in renderer.truth(k * 10)[0].box)
        diff = changed(out, clean)
        assert diff[y2, x1 + 5: x2 - 5].mean() > 0.9, "box drawn on the horse's true box"
        assert not diff[y2 + 5:, :].any()
    assert len(list(replay.annotate_recording(df, "cam", renderer, scene_t0=T0, start_t=T0 + 3, limit=2))) == 2
    with pytest.raises(ValueError):
        next(replay.annotate_recording(df, "cam", renderer))


# -- outputs -----------------------------------------------------------------------------------------------------


def test_preview_mp4_has_every_frame(tmp_path):
    frames = [np.full((48, 64, 3), 20 * k, dtype=np.uint8) for k in range(7)]
    frames[3] = np.zeros((24, 32, 3), dtype=np.uint8)  # another size: resized
    path = replay.write_preview_mp4(iter(frames), tmp_path / "sub" / "preview.mp4", fps=5)
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    read = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        assert img.shape == (48, 64, 3)
        read += 1
    cap.release()
    assert read == 7
    with pytest.raises(ValueError):
        replay.write_preview_mp4([], tmp_path / "empty.mp4")


def test_alert_snapshots_one_jpeg_per_raised_alert(tmp_path, recording):
    renderer = SceneRenderer(Scenario.builtin("down_long"), precompute=False)
    scenes = {"cam": replay.SyntheticScene(renderer, T0)}
    alerts = [
        {"camera_id": "cam", "rule": "horse_down", "severity": "warning", "state": "raised", "track_id": 1,
         "updated_at": T0 + 0.6, "idempotency_key": "aaaa1111", "evidence": {"seq": 503, "box": list(BOX)}},
        {"camera_id": "cam", "rule": "horse_down", "severity": "critical", "state": "resolved", "track_id": 1,
         "updated_at": T0 + 1.4, "idempotency_key": "bbbb2222", "evidence": {"seq": 507, "box": list(BOX)}},
        {"camera_id": "cam", "rule": "horse_absent", "severity": "warning", "state": "raised", "track_id": None,
         "updated_at": T0 + 1.6, "idempotency_key": "cccc3333", "evidence": {"seq": 508}},
        {"camera_id": "real-cam", "rule": "horse_down", "severity": "warning", "state": "raised", "track_id": 1,
         "updated_at": T0, "idempotency_key": "dddd4444"},  # no scene: skipped
    ]
    paths = replay.alert_snapshots(tmp_path, alerts, scenes, recording=recording)
    assert [p.parent for p in paths] == [tmp_path / "snapshots"] * 2
    assert len({p.name for p in paths}) == 2
    assert "horse_down" in paths[0].name and "horse_absent" in paths[1].name
    first = cv2.imread(str(paths[0]))
    assert first.shape == (renderer.size[1], renderer.size[0], 3)
    clean = renderer.frame(scenes["cam"].index(T0 + 0.6))
    x1, y1, x2, y2 = (int(v) for v in BOX)
    diff = np.abs(first.astype(int) - clean.astype(int)).max(axis=2) > 60  # beyond JPEG noise
    assert diff[y2 - 1: y2 + 2, x1 + 10: x2 - 10].any(), "the alert's box is drawn"
    # without a recording only the alert's own track is drawn; the report's alert dicts (no evidence) work too
    bare = replay.alert_snapshots(tmp_path / "b", [{k: v for k, v in alerts[0].items() if k != "evidence"}], scenes)
    assert len(bare) == 1 and bare[0].exists()
    assert replay.alert_snapshots(tmp_path / "c", alerts, {}) == []
