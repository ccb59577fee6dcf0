"""Camera manager on a real RTSP stream (GStreamer RTSP server serving a synthetic H.264 MP4), an RTSP outage
and recovery without restarting the camera manager, and producer + inference worker side by side."""

from __future__ import annotations

import json
import logging
import threading
import time

import cv2
import numpy as np
import pytest
from fbv_testutil import wait_for

from fbvision.camera.manager import CameraManager
from fbvision.core.config import CameraConfig, CameraManagerConfig, InferenceConfig, ModelConfig
from fbvision.core.letterbox import compute_letterbox
from fbvision.core.wire import decode_frame, decode_result
from fbvision.inference.worker import InferenceWorker

pytestmark = [pytest.mark.rtsp, pytest.mark.slow, pytest.mark.timeout(180)]

INPUT = (160, 160)
CLIP_SIZE = (320, 240)  # make_test_video's default
PASSWORD = "s3cret-Pa55"


def with_credentials(url: str) -> str:
    return url.replace("rtsp://", f"rtsp://viewer:{PASSWORD}@")


def producer_config() -> CameraManagerConfig:
    return CameraManagerConfig(watchdog_s=2.0, reconnect_initial_s=0.2, reconnect_max_s=1.0, status_interval_s=0.25)


def test_rtsp_frames_arrive_and_the_producer_rides_out_a_server_outage(rtsp_server, transport, caplog):
    camera = CameraConfig(id="rtsp-stall", source=with_credentials(rtsp_server.url), fps=5)
    manager = CameraManager([camera], transport, INPUT, producer_config(), offline_after_s=3.0, seq_start=0)
    stop = threading.Event()
    thread = threading.Thread(target=manager.run, args=(stop,), daemon=True)
    status_log: list[dict] = []

    def status():
        s = transport.camera_statuses().get(camera.id)
        if s and (not status_log or s != status_log[-1]):
            status_log.append(s)
        return s or {}

    with caplog.at_level(logging.DEBUG, logger="fbvision"):
        thread.start()
        try:
            # 1. frames flow, with the right metadata
            wait_for(lambda: transport.frame_queue_depth() >= 8, 30)
            assert status()["state"] == "online"
            frames = [decode_frame(m) for m in transport.pop_frames(1000, 0.1)]
            box = compute_letterbox(CLIP_SIZE, INPUT)
            for f in frames:
                assert f.camera_id == camera.id
                assert (f.src_w, f.src_h, f.input_w, f.input_h) == (*CLIP_SIZE, *INPUT)
                assert (f.scale, f.pad_x, f.pad_y) == pytest.approx((box.scale, box.pad_x, box.pad_y))
                assert f.capture_ts <= f.push_ts <= time.time()
            assert [f.seq for f in frames] == list(range(len(frames)))
            image = cv2.imdecode(np.frombuffer(frames[-1].jpeg, np.uint8), cv2.IMREAD_COLOR)
            assert image.shape == (160, 160, 3)
            assert 20 < image[20:140].mean() < 235  # a picture, not a blank
            assert image[:20].mean() == pytest.approx(114, abs=8)  # letterbox bars top and bottom
            # sampled to the camera fps, not the clip's 10 fps (frames buffered at connect come in a burst)
            wait_for(lambda: transport.frame_queue_depth() >= 10, 10)
            steady = [decode_frame(m) for m in transport.pop_frames(1000, 0.1)]
            rate = (len(steady) - 1) / (steady[-1].capture_ts - steady[0].capture_ts)
            assert 3.5 <= rate <= 7.0

            # 2. the server goes away for several seconds
            rtsp_server.stop()
            down_at = time.time()
            wait_for(lambda: status().get("state") in ("reconnecting", "offline"), 15)
            wait_for(lambda: status().get("state") == "offline", 10)
            time.sleep(max(0.0, 5.0 - (time.time() - down_at)))
            transport.pop_frames(1000, 0.1)  # whatever was read before the drop
            assert thread.is_alive()

            # 3. it comes back on the same port: the same producer resumes and reports the outage
            rtsp_server.start()
            up_at = time.time()
            wait_for(lambda: transport.frame_queue_depth() >= 3, 30)
            reconnect_s = time.time() - up_at
            back = wait_for(lambda: status() if status().get("state") == "online" else None, 10)
            resumed = [decode_frame(m) for m in transport.pop_frames(1000, 0.1)]
            assert all(f.capture_ts > down_at for f in resumed)
            assert back["outages"] >= 1
            assert back["last_outage_s"] >= 5.0
            assert back["reconnects"] >= 2
            assert [f.seq for f in resumed] == sorted(f.seq for f in resumed)
            assert resumed[0].seq > frames[-1].seq
        finally:
            stop.set()
            thread.join(15)
        assert not thread.is_alive()
    print(f"\nRTSP reconnect: first frame {reconnect_s:.1f} s after the server came back "
          f"(outage reported: {back['last_outage_s']:.1f} s)")
    states = [s["state"] for s in status_log]
    assert states.index("online") < states.index("offline") < len(states) - 1
    assert "back online" in caplog.text
    # Credentials never reach a log record or the published status.
    assert PASSWORD not in caplog.text
    assert all(PASSWORD not in json.dumps(s) for s in status_log)
    assert "viewer:" not in caplog.text and "***@127.0.0.1" in caplog.text


def test_rtsp_producer_and_worker_side_by_side_fill_results_per_camera(rtsp_server, transport, tiny_model):
    cameras = [
        CameraConfig(id="stall-1", source=with_credentials(rtsp_server.url), fps=5),
        CameraConfig(id="stall-2", source=rtsp_server.url, fps=5),
        CameraConfig(id="stall-3", source="synthetic:two_horses", fps=5),
    ]
    manager = CameraManager(cameras, transport, INPUT, producer_config())
    worker = InferenceWorker(
        InferenceConfig(max_batch=8, max_wait_ms=20, autotune=False, decode_threads=2, conf_floor=0.0, top_k=20),
        transport, ModelConfig(path=tiny_model, providers=["cpu"], intra_op_threads=1),
    )
    stop = threading.Event()
    threads = [threading.Thread(target=stage.run, args=(stop,), daemon=True) for stage in (manager, worker)]
    for t in threads:
        t.start()
    results = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            entries = transport.read_results(range(transport.result_partitions), pending=False, count=200,
                                             block_s=0.2)
            results += [decode_result(e.payload) for e in entries]
            if all(sum(r.camera_id == c.id for r in results) >= 8 for c in cameras):
                break
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert not any(t.is_alive() for t in threads)
    sizes = {"stall-1": CLIP_SIZE, "stall-2": CLIP_SIZE, "stall-3": (960, 540)}
    for cam in cameras:
        mine = [r for r in results if r.camera_id == cam.id]
        assert len(mine) >= 8, f"{cam.id}: {len(mine)} results"
        seqs = [r.seq for r in mine]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        for r in mine:
            assert (r.src_w, r.src_h) == sizes[cam.id]
            assert len(r.scores) == 20 and set(r.class_ids.tolist()) == {17}
            assert np.all(r.boxes[:, [0, 2]] <= r.src_w) and np.all(r.boxes[:, [1, 3]] <= r.src_h)
            t = r.timeline
            assert t.captured <= t.pushed <= t.popped <= t.infer_start <= t.infer_end <= t.published
    stats = transport.stats("inference")
    assert stats["frames_out"] >= len(results)
    assert stats.get("dropped:corrupt", 0) == 0 and stats.get("dropped:bad_size", 0) == 0


def test_rtsp_camera_evidence_snapshot_and_clip(rtsp_server, transport, tmp_path):
    """Evidence is one mechanism for every camera kind: an RTSP camera's alert gets its snapshot and clip."""
    import av

    from fbvision.core.config import EvidenceConfig
    from fbvision.core.evidence import EvidenceRequest

    key = "abcdef0123456789abcdef0123456789"
    cfg = EvidenceConfig(dir=tmp_path, clip_pre_s=1.0, clip_post_s=1.0, fps=5)  # the camera's rate: ~2 s = 8+ frames
    camera = CameraConfig(id="rtsp-stall", source=with_credentials(rtsp_server.url), fps=5)
    manager = CameraManager([camera], transport, INPUT, producer_config(), evidence=cfg)
    stop = threading.Event()
    thread = threading.Thread(target=manager.run, args=(stop,), daemon=True)
    thread.start()
    try:
        ring = manager.evidence.rings[camera.id]
        wait_for(lambda: len(ring) >= 8, 30)
        req = EvidenceRequest(camera_id=camera.id, name=key, episode_key=key, rule="horse_down", severity="warning",
                              state="raised", decided_at=ring.latest_ts(), requested_at=transport.server_time(),
                              track_id=1, box=(40.0, 40.0, 200.0, 200.0))
        transport.request_evidence([req.to_json()])
        wait_for(lambda: (tmp_path / f"{key}.mp4").is_file(), 20)
        assert cv2.imread(str(tmp_path / f"{key}.jpg")).shape == (CLIP_SIZE[1], CLIP_SIZE[0], 3)
        with av.open(str(tmp_path / f"{key}.mp4")) as c:
            assert c.streams.video[0].codec_context.name == "h264"
            assert sum(1 for _ in c.decode(c.streams.video[0])) >= 8  # ~2 s at 5 fps
    finally:
        stop.set()
        thread.join(20)
