"""Camera manager against a real redis-server: synthetic and scripted cameras, letterbox metadata, status,
counters, several managers on one queue, and a Redis outage."""

from __future__ import annotations

import logging
import random
import threading
import time

import cv2
import numpy as np
import pytest
from fbv_testutil import wait_for

from fbvision.camera.manager import CameraManager
from fbvision.camera.source import FrameSource
from fbvision.core.config import CameraConfig, CameraManagerConfig
from fbvision.core.letterbox import compute_letterbox
from fbvision.core.transport import Transport
from fbvision.core.wire import decode_frame

pytestmark = pytest.mark.timeout(90)

INPUT = (160, 160)  # (w, h)


def start(manager: CameraManager) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=manager.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def finish(stop: threading.Event, thread: threading.Thread, within_s: float = 10.0) -> float:
    t0 = time.monotonic()
    stop.set()
    thread.join(within_s)
    assert not thread.is_alive(), "camera manager did not stop"
    return time.monotonic() - t0


class PatternCapture:
    """A 400x300 frame, mid grey, with a white box at source pixels (100, 50)-(300, 250); 20 fps, real time."""

    def __init__(self):
        self.frame = np.full((300, 400, 3), 60, dtype=np.uint8)
        self.frame[50:250, 100:300] = 255
        self.next_at = time.monotonic()

    def grab(self, timeout_s):
        wait = self.next_at - time.monotonic()
        if wait > timeout_s:
            time.sleep(timeout_s)
            return False
        time.sleep(max(wait, 0))
        self.next_at += 0.05
        return True

    def retrieve(self):
        return self.frame

    def close(self):
        pass


def pattern_factory(camera, producer, *, status_sink=None, offline_after_s=None):
    return FrameSource(camera.id, PatternCapture, fps=camera.fps, description="pattern", status_sink=status_sink,
                       watchdog_s=producer.watchdog_s, status_interval_s=producer.status_interval_s)


def drain(transport: Transport) -> list:
    return [decode_frame(m) for m in transport.pop_frames(10_000, timeout_s=0.05)]


@pytest.mark.slow
def test_three_synthetic_cameras_push_letterboxed_frames_with_metadata(transport):
    cameras = [CameraConfig(id=f"stall-{i}", source=f"synthetic:{name}", fps=5)
               for i, name in enumerate(["normal_walk", "two_horses", "night_down"])]
    manager = CameraManager(cameras, transport, INPUT, CameraManagerConfig(status_interval_s=0.5), seq_start=1000)
    stop, thread = start(manager)
    try:
        time.sleep(3.0)
        statuses = transport.camera_statuses()
    finally:
        finish(stop, thread)
    frames = drain(transport)
    by_camera: dict[str, list] = {}
    for f in frames:
        by_camera.setdefault(f.camera_id, []).append(f)
    assert sorted(by_camera) == [c.id for c in cameras]
    expected = compute_letterbox((960, 540), INPUT)
    now = time.time()
    for cam_id, got in by_camera.items():
        assert 8 <= len(got) <= 17, (cam_id, len(got))  # ~5 fps for ~3 s, scene renderer start-up included
        assert [f.seq for f in got] == list(range(1000, 1000 + len(got)))
        for f in got:
            assert (f.src_w, f.src_h, f.input_w, f.input_h) == (960, 540, 160, 160)
            assert (f.scale, f.pad_x, f.pad_y) == pytest.approx((expected.scale, expected.pad_x, expected.pad_y))
            assert f.capture_ts <= f.push_ts <= now
            assert now - f.capture_ts < 10
        image = cv2.imdecode(np.frombuffer(got[-1].jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (160, 160, 3)
        stamps = [f.capture_ts for f in got]
        assert np.median(np.diff(stamps)) == pytest.approx(0.2, abs=0.06)
        assert statuses[cam_id]["state"] == "online"
        assert statuses[cam_id]["frames"] >= 5
    after = transport.camera_statuses()
    assert {s["state"] for s in after.values()} == {"closed"}
    stats = transport.stats("camera")
    assert stats["frames_pushed"] == len(frames)
    assert stats["frames_read"] == len(frames)
    for cam in cameras:
        assert stats[f"frames_pushed:{cam.id}"] == len(by_camera[cam.id])
    snapshot = transport.snapshots()[f"camera:{manager.name}"]
    assert set(snapshot["cameras"]) == {c.id for c in cameras}


def test_letterbox_geometry_in_the_message_maps_the_picture_back(transport):
    manager = CameraManager([CameraConfig(id="pattern", source="synthetic:normal_walk", fps=10)], transport, (160, 128),
                            CameraManagerConfig(jpeg_quality=85), source_factory=pattern_factory)
    stop, thread = start(manager)
    try:
        wait_for(lambda: transport.frame_queue_depth() >= 3, 10)
    finally:
        finish(stop, thread)
    frame = drain(transport)[0]
    assert (frame.src_w, frame.src_h, frame.input_w, frame.input_h) == (400, 300, 160, 128)
    # 400x300 into 160x128: scale 0.4 -> 160x120, 4 px of padding top and bottom
    assert (frame.scale, frame.pad_x, frame.pad_y) == pytest.approx((0.4, 0.0, 4.0))
    image = cv2.imdecode(np.frombuffer(frame.jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
    ys, xs = np.nonzero(image > 200)
    found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
    from fbvision.core.letterbox import Letterbox

    box = Letterbox(frame.src_w, frame.src_h, frame.input_w, frame.input_h, frame.scale, frame.pad_x, frame.pad_y)
    back = box.to_source(found[None])[0]
    assert back == pytest.approx([100, 50, 300, 250], abs=4)  # JPEG q85 edges: a pixel or two
    assert image[1, 80] == pytest.approx(114, abs=6)  # the padding is Ultralytics grey


def test_two_managers_feed_one_queue(redis_url):
    producer = CameraManagerConfig()
    transports = [Transport(redis_url) for _ in range(2)]
    managers = [
        CameraManager([CameraConfig(id=f"host{i}-cam", source="x", fps=10)], transports[i], INPUT, producer,
                      source_factory=pattern_factory, name=f"host{i}")
        for i in range(2)
    ]
    runs = [start(m) for m in managers]
    try:
        wait_for(lambda: transports[0].frame_queue_depth() >= 20, 15)
    finally:
        for stop, thread in runs:
            finish(stop, thread)
    frames = drain(transports[0])
    cams = {f.camera_id for f in frames}
    assert cams == {"host0-cam", "host1-cam"}
    for cam in cams:
        seqs = [f.seq for f in frames if f.camera_id == cam]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    snapshots = transports[0].snapshots()
    assert {"camera:host0", "camera:host1"} <= set(snapshots)
    for t in transports:
        t.close()


def test_a_bad_source_spec_is_one_offline_camera_not_a_crash(transport):
    """Issue 13: a missing file or a misspelt scene used to raise here and crash-loop the manager, stopping
    every other camera. Now that camera is offline with the reason (published), and the others stream."""
    from fbvision.camera.factory import open_source

    def factory(camera, producer, **kwargs):
        return pattern_factory(camera, producer, **kwargs) if camera.source == "x" else open_source(
            camera, producer, **kwargs)

    def boom(camera, producer, **kwargs):  # a factory that raises is contained all the same
        if camera.id == "boom":
            raise ValueError("no such thing")
        return factory(camera, producer, **kwargs)

    cameras = [CameraConfig(id="good", source="x", fps=10), CameraConfig(id="c", source="/no/such/video.mp4"),
               CameraConfig(id="typo", source="synthetic:normal_walkk"), CameraConfig(id="boom", source="y")]
    manager = CameraManager(cameras, transport, INPUT, CameraManagerConfig(status_interval_s=0.5),
                            source_factory=boom)
    stop, thread = start(manager)
    try:
        wait_for(lambda: transport.frame_queue_depth() >= 3, 10)
        wait_for(lambda: {"c", "typo", "boom"} <= set(transport.camera_statuses()), 10, what="bad cameras' status")
        statuses = transport.camera_statuses()
        assert thread.is_alive()
    finally:
        finish(stop, thread)
    assert statuses["good"]["state"] == "online"
    assert statuses["c"]["state"] == "offline" and "not found" in statuses["c"]["detail"]
    assert statuses["typo"]["state"] == "offline" and "no built-in scenario" in statuses["typo"]["detail"]
    assert statuses["typo"]["failed"] is True and statuses["c"]["failed"] is False
    assert statuses["boom"]["state"] == "offline" and "no such thing" in statuses["boom"]["detail"]
    assert {f.camera_id for f in drain(transport)} == {"good"}


def test_stop_is_prompt_and_disabled_cameras_are_not_opened(transport):
    cameras = [CameraConfig(id="on", source="x", fps=10), CameraConfig(id="off", source="x", enabled=False)]
    manager = CameraManager(cameras, transport, INPUT, source_factory=pattern_factory)
    assert list(manager.sources) == ["on"]
    stop, thread = start(manager)
    wait_for(lambda: transport.frame_queue_depth() >= 2, 10)
    assert finish(stop, thread) < 3.0
    assert set(transport.camera_statuses()) == {"on"}


@pytest.mark.slow
def test_producer_survives_a_redis_outage(private_redis, caplog):
    transport = Transport(private_redis.url, retries=1, retry_max_s=0.2, socket_timeout_s=1.0)
    manager = CameraManager([CameraConfig(id="cam", source="x", fps=10)], transport, INPUT,
                            CameraManagerConfig(status_interval_s=0.5), source_factory=pattern_factory, max_buffered=8,
                            seq_start=0)
    stop, thread = start(manager)
    try:
        wait_for(lambda: transport.frame_queue_depth() >= 3, 10)
        with caplog.at_level(logging.WARNING, logger="fbvision"):
            private_redis.kill()
            before = manager.stats()["cameras"]["cam"]["pushed"]
            time.sleep(2.5)  # ~25 frames read while Redis is away: the 8-frame buffer keeps the newest
            assert thread.is_alive()
            restarted_at = time.time()
            private_redis.start()
            transport.wait_ready(10)
            wait_for(lambda: transport.frame_queue_depth() >= 10, 15)
        assert "Redis unavailable" in caplog.text
        stats = manager.stats()
        assert stats["cameras"]["cam"]["dropped_buffer"] >= 5
        assert stats["push_failures"] >= 1
    finally:
        finish(stop, thread)
    frames = drain(transport)
    seqs = [f.seq for f in frames]
    assert seqs == sorted(seqs) and np.diff(seqs).max() == 1
    # What reached Redis after the restart starts with frames read during the outage (the buffer kept
    # the newest 8), after a gap of the ones it dropped.
    assert sum(f.capture_ts < restarted_at for f in frames) >= 5
    assert seqs[0] > before + 5
    assert transport.camera_statuses()["cam"]["state"] == "closed"
    transport.close()


def test_seq_starts_from_the_clock_so_a_restart_never_reuses_one(transport):
    def run_once() -> list[int]:
        manager = CameraManager([CameraConfig(id="cam", source="x", fps=20)], transport, INPUT,
                                source_factory=pattern_factory)
        stop, thread = start(manager)
        wait_for(lambda: transport.frame_queue_depth() >= 3, 10)
        finish(stop, thread)
        return [f.seq for f in drain(transport)]

    first = run_once()
    time.sleep(0.01 + random.random() * 0.01)
    second = run_once()
    assert min(second) > max(first)
