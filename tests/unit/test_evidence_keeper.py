"""Evidence without Redis: the frame ring's memory budget, snapshots and clips from an evidence request, shorter
clips with a counted reason, retention (docs/evidence-and-review.md)."""

from __future__ import annotations

import os
import time

import av
import cv2
import numpy as np
import pytest

from fbvision.camera.evidence import EvidenceKeeper, FrameRing, KeptFrame, prune, ring_budget_bytes
from fbvision.core.config import EvidenceConfig
from fbvision.core.evidence import EvidenceRequest, evidence_name, evidence_urls

KEY = "0123456789abcdef0123456789abcdef"


def frame(i: int, w: int = 640, h: int = 360) -> np.ndarray:
    img = np.full((h, w, 3), 40, np.uint8)
    cv2.putText(img, str(i), (20, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 3, (255, 255, 255), 5)
    return img


def request(t: float, camera: str = "cam", name: str = KEY, requested_at: float | None = None) -> EvidenceRequest:
    return EvidenceRequest(camera_id=camera, name=name, episode_key=KEY, rule="horse_down", severity="warning",
                           state="raised", decided_at=t, requested_at=t if requested_at is None else requested_at,
                           track_id=7, box=(100.0, 80.0, 400.0, 300.0))


class FakeClock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_ring_never_exceeds_its_byte_budget_and_drops_the_oldest():
    ring = FrameRing(max_bytes=10_000, max_age_s=1000)
    for i in range(100):
        ring.add(KeptFrame(float(i), bytes(900 + i), 1.0))
        assert ring.nbytes <= 10_000
    assert ring.oldest_ts() > 80 and ring.latest_ts() == 99.0
    assert ring.evicted_bytes_cap > 0
    ring.add(KeptFrame(100.0, bytes(20_000), 1.0))  # larger than the whole budget: refused, counted
    assert ring.too_large == 1 and ring.latest_ts() == 99.0


def test_ring_keeps_only_its_time_window():
    ring = FrameRing(max_bytes=10**9, max_age_s=20)
    for i in range(100):
        ring.add(KeptFrame(i * 0.5, b"x" * 10, 1.0))
    assert ring.oldest_ts() >= 49.5 - 20 and len(ring) == 41


def test_one_hundred_cameras_fit_the_stated_budget():
    """The budget is per camera: 100 cameras at the default 16 MiB hold at most 1600 MiB of JPEG, whatever the
    cameras send (here 400 kB frames at 10 fps for longer than the window: the byte cap binds)."""
    cfg = EvidenceConfig()
    fps = {f"cam-{i:03d}": 10.0 for i in range(100)}
    keeper = EvidenceKeeper(cfg, fps, clock=time.time)
    big = bytes(400_000)  # one shared object: the accounting is what is tested, not this machine's RAM
    for step in range(300):
        for cam in fps:
            keeper.rings[cam].add(KeptFrame(step / 10.0, big, 1.0))
    assert all(r.nbytes <= 16 * 2**20 for r in keeper.rings.values())
    assert keeper.memory_bytes() <= ring_budget_bytes(cfg, 100) == 100 * 16 * 2**20


def test_frames_are_kept_downscaled_to_max_width():
    cfg = EvidenceConfig(max_width=320)
    keeper = EvidenceKeeper(cfg, {"cam": 5.0}, clock=time.time)
    keeper.keep("cam", frame(1, 1280, 720), 1.0)
    kept = keeper.rings["cam"].window(0, 2)[0]
    assert cv2.imdecode(np.frombuffer(kept.jpeg, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (180, 320)
    assert kept.scale == pytest.approx(0.25)
    keeper.keep("other", frame(1), 1.0)  # not ours: ignored
    assert "other" not in keeper.rings


def fill(keeper: EvidenceKeeper, t0: float, t1: float, fps: float = 5.0, camera: str = "cam") -> None:
    n = int(round((t1 - t0) * fps))
    for i in range(n + 1):
        keeper.keep(camera, frame(i), t0 + i / fps)


def test_the_ring_keeps_at_most_evidence_fps_and_averages_it():
    """A 5 fps camera kept at evidence.fps 2 keeps 2 frames a second on average (due times advance by whole
    periods: not every 3rd frame, 1.67/s), a 1 fps camera keeps all of its frames; after a gap it starts afresh."""
    keeper = EvidenceKeeper(EvidenceConfig(fps=2.0), {"fast": 5.0, "slow": 1.0}, clock=time.time)
    fill(keeper, 0.0, 60.0, fps=5.0, camera="fast")
    fill(keeper, 0.0, 60.0, fps=1.0, camera="slow")
    window = keeper.config.ring_s  # the ring holds the last ring_s seconds (20 s here)
    assert window == 20.0
    assert len(keeper.rings["fast"]) == 2 * 20 + 1 and len(keeper.rings["slow"]) == 20 + 1
    assert keeper.fps == {"fast": 2.0, "slow": 1.0}
    fill(keeper, 100.0, 101.0, fps=5.0, camera="fast")  # back after 40 s: kept at 100.0, 100.6, 101.0
    assert [round(f.ts, 1) for f in keeper.rings["fast"].window(99.0, 102.0)] == [100.0, 100.6, 101.0]


@pytest.mark.parametrize("evidence_fps, expected_frames", [(5.0, 31), (2.0, 13)])
def test_request_gives_an_annotated_snapshot_and_an_h264_clip(tmp_path, evidence_fps, expected_frames):
    clock = FakeClock(1000.0)
    cfg = EvidenceConfig(dir=tmp_path, clip_pre_s=4, clip_post_s=2, fps=evidence_fps)
    keeper = EvidenceKeeper(cfg, {"cam": 5.0}, clock=clock)
    fill(keeper, 990.0, 1000.0)
    assert keeper.submit(request(1000.0))
    assert keeper.process() == 1  # the snapshot at once; the clip waits for 2 s of frames after the decision
    snap, clip = keeper.paths(KEY)
    assert snap.is_file() and not clip.exists()
    image = cv2.imread(str(snap))
    assert image.shape == (360, 640, 3)
    fill(keeper, 1000.2, 1002.0)
    clock.t = 1002.1
    assert keeper.process() == 1 and clip.is_file() and keeper.pending() == 0
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = sum(1 for _ in container.decode(stream))
    assert frames == expected_frames  # 4 s before + 2 s after at the ring's rate (31 at 5 fps), both ends included
    assert keeper.counters.get("evidence:snapshots") == 1 and keeper.counters.get("evidence:clips") == 1
    assert not [k for k in keeper.counters.snapshot() if k.startswith("evidence:short:")]
    assert not list(tmp_path.glob("*.part"))
    assert keeper.latency.count("evidence_snapshot") == 1


def test_missing_frames_give_a_shorter_clip_and_a_counted_reason(tmp_path):
    clock = FakeClock(1000.0)
    keeper = EvidenceKeeper(EvidenceConfig(dir=tmp_path, clip_pre_s=10, clip_post_s=5), {"cam": 5.0}, clock=clock)
    fill(keeper, 997.0, 1000.0)  # the camera came up 3 s before the decision, and went away at it
    keeper.submit(request(1000.0))
    keeper.process()
    clock.t = 1000.0 + 5 + 3.5  # the grace after the clip's end: written with what there is
    keeper.process()
    snap, clip = keeper.paths(KEY)
    assert snap.is_file() and clip.is_file()
    counts = keeper.counters.snapshot()
    assert counts["evidence:short:pre_frames_missing"] == 1 and counts["evidence:short:post_frames_missing"] == 1


def test_no_frames_at_all_is_counted_never_raised(tmp_path):
    clock = FakeClock(1000.0)
    keeper = EvidenceKeeper(EvidenceConfig(dir=tmp_path), {"cam": 5.0}, clock=clock)
    keeper.submit(request(1000.0))
    keeper.stop(finish=True)  # at stop: everything pending is settled
    counts = keeper.counters.snapshot()
    assert counts["evidence:missing:snapshot_no_frame"] == 1 and counts["evidence:missing:clip_no_frames"] == 1
    assert keeper.pending() == 0 and not list(tmp_path.iterdir())


def test_other_cameras_and_replays_are_skipped(tmp_path):
    keeper = EvidenceKeeper(EvidenceConfig(dir=tmp_path), {"cam": 5.0}, clock=FakeClock(0.0))
    assert not keeper.submit(request(1.0, camera="not-mine"))
    for path in keeper.paths(KEY):
        path.write_bytes(b"x")
    assert not keeper.submit(request(1.0))  # both files there: a replayed alert asks again
    assert keeper.counters.get("evidence:already_written") == 1


def test_names_and_urls_follow_the_episode():
    assert evidence_name(KEY, "raised", "warning") == KEY
    assert evidence_name(KEY, "ongoing", "critical") == f"{KEY}-critical"
    assert evidence_urls(KEY) == (f"/evidence/{KEY}.jpg", f"/evidence/{KEY}.mp4")
    assert evidence_urls(KEY, "https://x.example/ev")[1] == f"https://x.example/ev/{KEY}.mp4"
    req = request(5.0)
    assert EvidenceRequest.from_json(req.to_json()) == req
    with pytest.raises(ValueError):
        EvidenceRequest.from_json(req.to_json().replace(KEY.encode(), b"../../etc/passwd", 1))


def test_retention_by_age_then_size(tmp_path):
    now = time.time()
    old = tmp_path / f"{KEY}.jpg"
    old.write_bytes(b"a" * 100)
    os.utime(old, (now - 10 * 86400, now - 10 * 86400))
    names = [f"{i:032x}.mp4" for i in range(5)]
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes(b"b" * 1000)
        os.utime(tmp_path / name, (now - 100 + i, now - 100 + i))
    (tmp_path / "keep-me.txt").write_bytes(b"c" * 10_000)  # not evidence: never touched
    assert prune(tmp_path, max_age_s=7 * 86400, max_bytes=3000, now=now) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names[2:], "keep-me.txt"])
