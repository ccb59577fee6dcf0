"""Per-camera tracking: ByteTrack ids made stable across losses and restarts."""

from __future__ import annotations

import numpy as np
import pytest

from fbvision.logic_config import TrackerConfig
from fbvision.postprocess import Candidates
from fbvision.tracking import CameraTracker

FPS = 5.0
HORSE_A = (100.0, 200.0, 400.0, 500.0)
HORSE_B = (700.0, 200.0, 1000.0, 500.0)


def cands(*boxes, score=0.9) -> Candidates:
    return Candidates.create(
        np.array(boxes, dtype=np.float32).reshape(-1, 4), [score] * len(boxes), [17] * len(boxes)
    )


def run(tracker, frames, t0=0.0):
    """frames: list of box tuples (or empty) per frame -> list of {track_id: box} per frame."""
    out = []
    for i, boxes in enumerate(frames):
        d = tracker.update(cands(*boxes), t0 + i / FPS)
        out.append({int(tid): tuple(d.xyxy[j]) for j, tid in enumerate(d.tracker_id)})
    return out


def shifted(box, dx):
    return (box[0] + dx, box[1], box[2] + dx, box[3])


def test_walking_horse_keeps_one_id_and_two_horses_two():
    tracker = CameraTracker(TrackerConfig())
    frames = [[shifted(HORSE_A, 4 * i), shifted(HORSE_B, -3 * i)] for i in range(50)]
    seen = run(tracker, frames)
    assert seen[0] == {} and seen[1] == {}  # confirmed after min_consecutive_frames = 3
    ids = {frozenset(s) for s in seen[2:]}
    assert ids == {frozenset({1, 2})}
    a_id = min(seen[-1], key=lambda tid: seen[-1][tid][0])
    assert all(min(s, key=lambda tid: s[tid][0]) == a_id for s in seen[2:])


@pytest.mark.parametrize(
    ("gap_s", "expected_ids"),
    [
        pytest.param(2.0, {1}, id="short-gap-bytetrack-recovers"),
        pytest.param(30.0, {1}, id="gap-beyond-bytetrack-buffer-relinked"),
        pytest.param(90.0, {1, 2}, id="gap-beyond-relink-window-new-id"),
    ],
)
def test_lost_horse_gets_its_id_back_within_the_relink_window(gap_s, expected_ids):
    tracker = CameraTracker(TrackerConfig(lost_track_s=10.0, relink_s=60.0))
    frames = [[HORSE_A]] * 10 + [[]] * int(gap_s * FPS) + [[HORSE_A]] * 10
    seen = run(tracker, frames)
    assert set().union(*seen) == expected_ids
    assert set(seen[-1]) == {max(expected_ids)}


def test_one_frame_ghost_is_never_confirmed():
    tracker = CameraTracker(TrackerConfig())
    frames = [[HORSE_A]] * 10 + [[HORSE_A, HORSE_B]] + [[HORSE_A]] * 10
    seen = run(tracker, frames)
    assert set().union(*seen) == {1}


def test_low_confidence_boxes_only_continue_tracks():
    tracker = CameraTracker(TrackerConfig(high_conf_threshold=0.5, track_activation_threshold=0.5))
    for i in range(10):
        assert len(tracker.update(cands(HORSE_A, score=0.35), i / FPS)) == 0
    for i in range(10, 15):
        tracker.update(cands(HORSE_A, score=0.9), i / FPS)
    d = tracker.update(cands(HORSE_A, score=0.35), 15 / FPS)
    assert list(d.tracker_id) == [1]


def test_seeded_track_after_restart_keeps_its_id_and_new_ids_do_not_collide():
    tracker = CameraTracker(TrackerConfig())
    tracker.seed_lost(5, HORSE_A)
    seen = run(tracker, [[HORSE_A, HORSE_B]] * 5, t0=1000.0)
    assert set(seen[-1]) == {5, 6}
    assert seen[-1][5][0] == pytest.approx(HORSE_A[0])
