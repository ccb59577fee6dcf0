"""Evidence through Redis from a file camera: the logic's request on ``evidence:requests`` is served by the camera
manager that owns the camera (snapshot, then clip), other managers' cameras are left alone, and the manager's
stats show the frame rings within their budget (docs/evidence-and-review.md)."""

from __future__ import annotations

import threading
import time

import av
import cv2
import numpy as np
import pytest
from fbv_testutil import wait_for

from fbvision.camera.manager import CameraManager
from fbvision.core.config import CameraConfig, EvidenceConfig
from fbvision.core.evidence import EvidenceRequest
from fbvision.synth.video import write_mp4

pytestmark = pytest.mark.timeout(90)

KEY = "fedcba9876543210fedcba9876543210"


def video(path, n=300, size=(800, 450)):
    def frames():
        for i in range(n):
            img = np.full((size[1], size[0], 3), 30, np.uint8)
            cv2.circle(img, (50 + (i * 5) % (size[0] - 100), size[1] // 2), 40, (0, 200, 255), -1)
            yield img
    return write_mp4(frames(), path, fps=10)


def test_file_camera_evidence_through_redis(tmp_path, transport):
    source = video(tmp_path / "cam.mp4")
    cfg = EvidenceConfig(dir=tmp_path / "evidence", clip_pre_s=2, clip_post_s=1, max_width=640, fps=5.0)
    manager = CameraManager([CameraConfig(id="file-cam", source=str(source), fps=5, loop=True)], transport,
                            (160, 160), evidence=cfg, stats_interval_s=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=manager.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(manager.evidence.rings["file-cam"]) >= 15, 20, what="3 s of frames in the ring")
        now = transport.server_time()
        decided = manager.evidence.rings["file-cam"].latest_ts()
        req = EvidenceRequest(camera_id="file-cam", name=KEY, episode_key=KEY, rule="horse_down",
                              severity="warning", state="raised", decided_at=decided, requested_at=now,
                              track_id=3, box=(100, 100, 300, 300))
        other = EvidenceRequest(**{**req.__dict__, "camera_id": "elsewhere", "name": "0" * 32})
        transport.request_evidence([other.to_json(), b"not json", req.to_json()], maxlen=100)
        snap = cfg.dir / f"{KEY}.jpg"
        clip = cfg.dir / f"{KEY}.mp4"
        wait_for(snap.is_file, 10, what="the snapshot")
        assert cv2.imread(str(snap)).shape == (360, 640, 3)  # 800x450 source kept at max_width 640
        wait_for(clip.is_file, 15, what="the clip")
        with av.open(str(clip)) as c:
            n = sum(1 for _ in c.decode(c.streams.video[0]))
        assert 12 <= n <= 17, n  # 2 s before + 1 s after at 5 fps
        assert not (cfg.dir / f"{'0' * 32}.jpg").exists()
        wait_for(lambda: (manager.stats().get("evidence") or {}).get("latency_s", {}).get("evidence_clip"), 5,
                 what="the evidence latency in the stats")
        stats = manager.stats()["evidence"]
        assert 0 < stats["ring_bytes"] <= stats["ring_budget_bytes"] == 16 * 2**20
        assert manager.counters.get("evidence:bad_request") == 1
    finally:
        stop.set()
        thread.join(20)
    assert not thread.is_alive()
    assert transport.client.xlen(transport.keys.evidence_requests) == 3


def test_evidence_requests_stream_is_capped(transport):
    req = EvidenceRequest(camera_id="c", name=KEY, episode_key=KEY, rule="r", severity="info", state="raised",
                          decided_at=1.0, requested_at=1.0)
    for _ in range(30):
        transport.request_evidence([req.to_json()] * 100, maxlen=100)
    assert transport.client.xlen(transport.keys.evidence_requests) < 300  # approximate MAXLEN ~ 100
    assert len(transport.read_evidence_requests(f"{int(time.time() * 1000) + 60_000}-0")) == 0
