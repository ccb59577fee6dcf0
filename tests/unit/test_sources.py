"""Camera sources: the state machine driven by a scripted capture and a fake clock (no sleeping), the fps
sampler, back-off, spec parsing, and the real OpenCV / synthetic captures on small local inputs."""

from __future__ import annotations

import logging
import random
import time

import cv2
import numpy as np
import pytest

from fbvision.camera.captures import CvCapture, SyntheticCapture
from fbvision.camera.factory import open_source, source_kind
from fbvision.camera.source import EndOfStream, FpsSampler, FrameSource, SourceError, SourceState
from fbvision.core.config import CameraConfig, CameraManagerConfig
from fbvision.core.loop import Backoff, LogThrottle

pytestmark = pytest.mark.timeout(60)

WALL0 = 1_700_000_000.0


class FakeClock:
    """Monotonic + wall clock that only ``sleep`` (or a capture) moves forward."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def wall(self) -> float:
        return WALL0 + self.t

    def sleep(self, dt: float) -> None:
        self.t += max(dt, 0.0)


class ScriptedCapture:
    """Frames every ``interval`` s of fake time; after ``n_frames`` it fails (or hangs, or ends)."""

    def __init__(self, clock: FakeClock, interval: float = 0.1, n_frames: int | None = None, after: str = "fail"):
        self.clock, self.interval, self.n_frames, self.after = clock, interval, n_frames, after
        self.next_at = clock.t
        self.grabbed = 0
        self.closed = False

    def grab(self, timeout_s: float) -> bool:
        if self.n_frames is not None and self.grabbed >= self.n_frames:
            if self.after == "fail":
                raise SourceError("connection reset by peer rtsp://admin:hunter2@cam/1")
            if self.after == "end":
                raise EndOfStream("end of file")
            self.clock.sleep(timeout_s)  # "hang": no frame, no error
            return False
        wait = self.next_at - self.clock.t
        if wait > timeout_s:
            self.clock.sleep(timeout_s)
            return False
        self.clock.sleep(wait)
        self.next_at += self.interval
        self.grabbed += 1
        return True

    def retrieve(self) -> np.ndarray:
        return np.full((48, 64, 3), self.grabbed % 256, dtype=np.uint8)

    def close(self) -> None:
        self.closed = True


class ScriptedOpener:
    """Each call takes the next item: a capture factory, or an exception to raise."""

    def __init__(self, script):
        self.script = list(script)
        self.calls = 0
        self.opened: list[ScriptedCapture] = []

    def __call__(self):
        self.calls += 1
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            raise item
        capture = item()
        self.opened.append(capture)
        return capture


def make_source(clock, opener, statuses=None, **kw) -> FrameSource:
    defaults = dict(fps=10.0, watchdog_s=2.0, reconnect_initial_s=0.5, reconnect_max_s=4.0, offline_after_s=5.0,
                    status_interval_s=1.0, max_block_s=0.5)
    defaults.update(kw)
    sink = (lambda cam, status: statuses.append(dict(status))) if statuses is not None else None
    return FrameSource("cam1", opener, description="rtsp://admin:hunter2@cam/1", status_sink=sink,
                       clock=clock, wall=clock.wall, sleep=clock.sleep, rng=random.Random(1), **defaults)


def drive(source: FrameSource, clock: FakeClock, seconds: float) -> list[float]:
    """Call read() until ``seconds`` of fake time passed; returns the capture timestamps of the frames."""
    end = clock.t + seconds
    got = []
    while clock.t < end:
        before = clock.t
        frame = source.read()
        if frame is not None:
            got.append(frame[1])
        if clock.t == before:  # a read that returned at once must still let time pass
            clock.sleep(0.01)
    return got


# -- sampler, back-off, throttle ---------------------------------------------------------------------------------


@pytest.mark.parametrize("source_fps,target_fps", [(30, 5), (25, 10), (10, 10), (12, 5), (60, 15)])
def test_sampler_keeps_the_target_rate_on_average(source_fps, target_fps):
    sampler = FpsSampler(target_fps)
    rng = np.random.default_rng(0)
    times = np.arange(0, 20, 1 / source_fps) + rng.normal(0, 0.002, int(np.ceil(20 * source_fps)))[: len(np.arange(0, 20, 1 / source_fps))]
    kept = [t for t in times if sampler.accept(float(t))]
    assert len(kept) == pytest.approx(20 * target_fps, rel=0.06)
    gaps = np.diff(kept)
    assert gaps.min() >= 0.8 / target_fps - 0.01  # never a burst


def test_sampler_reanchors_after_a_stall_instead_of_bursting():
    sampler = FpsSampler(5)
    assert sampler.accept(0.0)
    assert sampler.accept(10.0)  # 10 s gap
    assert not sampler.accept(10.05)
    assert not sampler.accept(10.1)


def test_backoff_grows_exponentially_with_jitter_and_is_capped():
    backoff = Backoff(0.5, 8.0, random.Random(3))
    for attempt in range(10):
        ceiling = min(8.0, 0.5 * 2**attempt)
        delays = [backoff.delay(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > 0.1 * ceiling  # jitter actually varies


def test_log_throttle_counts_what_it_holds_back():
    clock = FakeClock()
    throttle = LogThrottle(10.0, clock)
    assert throttle("x") == 0
    assert throttle("x") is None
    assert throttle("x") is None
    assert throttle("y") == 0
    clock.sleep(10.0)
    assert throttle("x") == 2


# -- the state machine -------------------------------------------------------------------------------------------


def test_frames_flow_and_source_goes_online():
    clock = FakeClock()
    statuses: list[dict] = []
    opener = ScriptedOpener([lambda: ScriptedCapture(clock, interval=1 / 30)])
    source = make_source(clock, opener, statuses, fps=10.0)
    stamps = drive(source, clock, 3.0)
    assert source.state is SourceState.ONLINE
    assert len(stamps) == pytest.approx(30, abs=2)  # 30 fps sampled to 10 fps
    assert all(WALL0 < s <= clock.wall() for s in stamps)
    assert stamps == sorted(stamps)
    assert statuses[0]["state"] == "connecting"
    assert statuses[-1]["state"] == "online"
    assert source.status()["frames"] == source.frames == len(stamps)
    assert source.status()["last_frame_ts"] == stamps[-1]
    assert 0 < statuses[-1]["frames"] <= len(stamps)
    assert {"state", "since", "last_frame_ts", "frames", "detail"} <= set(statuses[-1])
    # heartbeat: at least one status per status_interval_s even without a state change
    assert len(statuses) >= 3


def test_lost_stream_reconnects_with_backoff_and_reports_the_outage(caplog):
    clock = FakeClock()
    statuses: list[dict] = []
    opener = ScriptedOpener([
        lambda: ScriptedCapture(clock, interval=0.1, n_frames=20, after="fail"),
        SourceError("connection refused rtsp://admin:hunter2@cam/1"),
        SourceError("connection refused"),
        lambda: ScriptedCapture(clock, interval=0.1),
    ])
    source = make_source(clock, opener, statuses, fps=10.0, reconnect_initial_s=0.5)
    with caplog.at_level(logging.DEBUG, logger="fbvision"):
        drive(source, clock, 2.5)
        assert source.state is SourceState.RECONNECTING
        lost_at = clock.wall()
        drive(source, clock, 5.0)
    assert source.state is SourceState.ONLINE
    assert opener.calls == 4
    assert source.outages == 1
    # 2 failed opens after the loss: delays ~U(0.25,0.5) + U(0.5,1) + U(1,2), plus the loss itself
    assert 0.5 < source.last_outage_s < 4.0
    states = [s["state"] for s in statuses]
    assert "reconnecting" in states and states[-1] == "online"
    back = [s for s in statuses if s["state"] == "online" and s["outages"] == 1]
    assert back and back[0]["last_outage_s"] == pytest.approx(source.last_outage_s)
    assert back[0]["since"] > lost_at - 3
    assert all(c.closed for c in opener.opened[:-1])
    assert "hunter2" not in caplog.text
    assert all("hunter2" not in str(s) for s in statuses)
    assert "back online" in caplog.text


def test_backoff_spacing_between_failed_attempts_grows():
    clock = FakeClock()
    attempts: list[float] = []

    def opener():
        attempts.append(clock.t)
        raise SourceError("refused")

    source = make_source(clock, opener, fps=10.0, reconnect_initial_s=0.5, reconnect_max_s=4.0, offline_after_s=100)
    drive(source, clock, 20.0)
    gaps = np.diff(attempts)
    assert len(gaps) >= 5
    for n, gap in enumerate(gaps[:6]):
        ceiling = min(4.0, 0.5 * 2**n)
        assert ceiling / 2 - 0.02 <= gap <= ceiling + 0.02, (n, gap)


def test_watchdog_reconnects_a_capture_that_stops_delivering():
    clock = FakeClock()
    opener = ScriptedOpener([
        lambda: ScriptedCapture(clock, interval=0.1, n_frames=5, after="hang"),
        lambda: ScriptedCapture(clock, interval=0.1),
    ])
    statuses: list[dict] = []
    source = make_source(clock, opener, statuses, fps=10.0, watchdog_s=2.0)
    drive(source, clock, 1.0)
    assert source.state is SourceState.ONLINE
    last_frame = source.last_frame_ts
    drive(source, clock, 5.0)
    assert source.state is SourceState.ONLINE
    assert opener.calls == 2 and source.outages == 1
    lost = next(s for s in statuses if s["state"] == "reconnecting")
    assert "watchdog" in lost["detail"]
    assert 2.0 <= lost["since"] - last_frame <= 2.0 + 0.5 + 0.01  # watchdog_s, within one bounded read


def test_long_outage_turns_offline_and_back_online():
    clock = FakeClock()
    statuses: list[dict] = []
    opener = ScriptedOpener([
        lambda: ScriptedCapture(clock, interval=0.1, n_frames=5, after="fail"),
        *[SourceError("refused")] * 6,
        lambda: ScriptedCapture(clock, interval=0.1),
    ])
    source = make_source(clock, opener, statuses, offline_after_s=3.0, reconnect_max_s=1.0)
    drive(source, clock, 4.5)
    assert source.state is SourceState.OFFLINE
    drive(source, clock, 6.0)
    assert source.state is SourceState.ONLINE
    states = [s["state"] for s in statuses]
    assert states.index("reconnecting") < states.index("offline") < len(states) - 1
    assert source.outages == 1 and source.last_outage_s > 3.0


def test_never_reachable_camera_goes_offline_without_counting_an_outage():
    clock = FakeClock()
    source = make_source(clock, ScriptedOpener([SourceError("refused")]), offline_after_s=3.0)
    drive(source, clock, 2.0)
    assert source.state is SourceState.RECONNECTING
    drive(source, clock, 2.0)
    assert source.state is SourceState.OFFLINE
    assert source.outages == 0 and source.frames == 0


def test_read_is_bounded_while_backing_off():
    clock = FakeClock()
    source = make_source(clock, ScriptedOpener([SourceError("refused")]), reconnect_initial_s=30, reconnect_max_s=60,
                         max_block_s=0.5)
    source.read()
    for _ in range(5):
        before = clock.t
        assert source.read() is None
        assert clock.t - before <= 0.5 + 1e-9


def test_non_looping_file_end_finishes_the_source():
    clock = FakeClock()
    opener = ScriptedOpener([lambda: ScriptedCapture(clock, interval=0.1, n_frames=10, after="end")])
    source = make_source(clock, opener, fps=10.0)
    stamps = drive(source, clock, 3.0)
    assert len(stamps) == 10
    assert source.finished and source.state is SourceState.OFFLINE
    assert opener.calls == 1  # no reconnect after the end


def test_close_releases_the_capture_and_reports_closed():
    clock = FakeClock()
    statuses: list[dict] = []
    opener = ScriptedOpener([lambda: ScriptedCapture(clock)])
    source = make_source(clock, opener, statuses)
    drive(source, clock, 0.5)
    source.close()
    assert opener.opened[0].closed
    assert statuses[-1]["state"] == "closed"
    assert source.read() is None


def test_status_sink_failure_does_not_break_reading():
    clock = FakeClock()

    def broken_sink(camera_id, status):
        raise RuntimeError("redis down")

    source = FrameSource("cam1", ScriptedOpener([lambda: ScriptedCapture(clock)]), fps=10, status_sink=broken_sink,
                         clock=clock, wall=clock.wall, sleep=clock.sleep)
    assert len(drive(source, clock, 1.0)) >= 8


# -- spec parsing and real captures --------------------------------------------------------------------------------


@pytest.mark.parametrize("spec,kind", [
    ("rtsp://u:p@10.0.0.5:554/stream1", "rtsp"),
    ("RTSPS://host/x", "rtsp"),
    ("http://host/mjpeg", "stream"),
    ("device:0", "device"),
    ("synthetic:normal_walk", "synthetic"),
    ("videos/stall 1.mp4", "file"),
])
def test_source_kind(spec, kind):
    assert source_kind(spec) == kind


@pytest.mark.parametrize("spec,message,may_appear", [
    ("synthetic:no_such_scene", "no built-in scenario", False),
    ("synthetic:/nope/scene.yaml", "not found", True),
    ("device:abc", "device:<index>", False),
    ("/nope/video.mp4", "not found", True),
])
def test_bad_specs_make_that_camera_offline_with_the_reason(spec, message, may_appear):
    """One bad camera is one offline camera (issue 13): no exception at start, which used to crash-loop the
    camera manager and stop every other camera; the first open reports why, at once, without a grace period."""
    statuses: list[dict] = []
    clock = FakeClock()
    source = open_source(CameraConfig(id="c", source=spec), status_sink=lambda cam, s: statuses.append(s),
                         clock=clock, wall=clock.wall, sleep=clock.sleep)
    assert source.read() is None
    assert source.state is SourceState.OFFLINE
    assert message in source.detail
    assert statuses[-1]["state"] == "offline" and message in statuses[-1]["detail"]
    assert statuses[-1]["failed"] is (not may_appear)  # a file may appear; a misspelt name will not
    retry_in = source._retry_at - clock()
    assert (retry_in <= 1.0) if may_appear else (retry_in >= 59.0)  # retried with back-off, or rarely
    for _ in range(20):  # it stays offline (no crash, no flapping state) while nothing changes
        assert source.read() is None
    assert source.state is SourceState.OFFLINE


def test_a_video_file_that_appears_later_is_picked_up(small_video, tmp_path):
    path = tmp_path / "later.avi"
    camera = CameraConfig(id="late", source=str(path), fps=10, loop=True)
    source = open_source(camera, CameraManagerConfig(reconnect_initial_s=0.05, reconnect_max_s=0.2))
    assert source.read() is None and source.state is SourceState.OFFLINE
    assert "not found" in source.detail
    path.write_bytes(small_video.read_bytes())
    got, deadline = None, time.monotonic() + 5
    while got is None and time.monotonic() < deadline:
        got = source.read()
    source.close()
    assert got is not None and got[0].shape == (48, 64, 3)
    assert source.status()["failed"] is False


def test_unreachable_rtsp_camera_never_logs_its_password(caplog):
    camera = CameraConfig(id="cam-x", source="rtsp://admin:hunter2@127.0.0.1:1/live?token=abc", fps=5)
    statuses: list[dict] = []
    source = open_source(camera, CameraManagerConfig(reconnect_initial_s=0.05, reconnect_max_s=0.1, watchdog_s=1.0),
                         status_sink=lambda cam, s: statuses.append(s), offline_after_s=0.5)
    with caplog.at_level(logging.DEBUG, logger="fbvision"):
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert source.read() is None
    source.close()
    assert source.state is SourceState.CLOSED
    assert "offline" in [s["state"] for s in statuses]
    assert "hunter2" not in caplog.text and "token=abc" not in caplog.text
    assert "127.0.0.1:1" in caplog.text  # the host is still there to debug with
    assert all("hunter2" not in str(s) for s in statuses)


@pytest.fixture(scope="module")
def small_video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (64, 48))
    assert writer.isOpened()
    for i in range(8):
        writer.write(np.full((48, 64, 3), i * 30, dtype=np.uint8))
    writer.release()
    return path


def test_file_capture_paces_at_the_file_fps_and_loops(small_video):
    capture = CvCapture(str(small_video), "file", description="clip", loop=True)
    assert capture.fps == pytest.approx(20.0)
    started = time.monotonic()
    values = []
    while len(values) < 20:
        if capture.grab(0.5):
            values.append(int(capture.retrieve().mean()))
    elapsed = time.monotonic() - started
    capture.close()
    assert elapsed >= 19 / 20.0 - 0.05  # real time at 20 fps, not as fast as decoding allows
    assert values[:8] == sorted(values[:8])
    assert values[8] < values[7]  # rewound: frame 0 again
    assert abs(values[8] - values[0]) <= 3


def test_file_capture_without_loop_ends(small_video):
    capture = CvCapture(str(small_video), "file", description="clip", loop=False, realtime=False)
    grabbed = 0
    with pytest.raises(EndOfStream):
        for _ in range(20):
            grabbed += capture.grab(0.5)
    assert grabbed == 8


def test_file_source_end_to_end_through_open_source(small_video):
    camera = CameraConfig(id="f", source=str(small_video), fps=10, loop=False)
    source = open_source(camera, CameraManagerConfig(hw_decode=True))
    frames = []
    deadline = time.monotonic() + 5
    while not source.finished and time.monotonic() < deadline:
        got = source.read()
        if got is not None:
            frames.append(got)
    assert source.finished
    assert 3 <= len(frames) <= 5  # 8 frames at 20 fps sampled at 10 fps
    assert frames[0][0].shape == (48, 64, 3)
    assert abs(frames[0][1] - time.time()) < 5


def test_synthetic_capture_follows_wall_time_and_loops():
    class Renderer:
        fps, n_frames = 5.0, 10  # a 2-second scene

        def frame(self, i):
            return np.full((4, 4, 3), i, dtype=np.uint8)

    clock = FakeClock()
    capture = SyntheticCapture(Renderer(), fps=2.0, clock=clock, sleep=clock.sleep)
    indices = []
    for _ in range(12):
        while not capture.grab(0.5):
            pass
        indices.append(int(capture.retrieve()[0, 0, 0]))
    # 2 camera fps over a 5 fps scene: every 0.5 s the scene advances 2.5 frames, and wraps after 2 s
    assert indices[:5] == [0, 2, 5, 7, 0]
    assert max(indices) <= 9

    ending = SyntheticCapture(Renderer(), fps=2.0, loop=False, clock=clock, sleep=clock.sleep)
    with pytest.raises(EndOfStream):
        for _ in range(20):
            ending.grab(1.0)


@pytest.mark.slow
def test_synthetic_source_renders_live_at_the_camera_fps():
    camera = CameraConfig(id="syn", source="synthetic:normal_walk", fps=8)
    source = open_source(camera)
    first = None
    stamps = []
    deadline = time.monotonic() + 30
    while len(stamps) < 12 and time.monotonic() < deadline:
        got = source.read()
        if got is not None:
            frame, ts = got
            first = first if first is not None else frame
            stamps.append(ts)
    source.close()
    assert len(stamps) == 12
    assert first.dtype == np.uint8 and first.ndim == 3
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert 6.0 <= rate <= 9.0
    assert abs(stamps[-1] - time.time()) < 2.0


def test_network_source_alternates_hardware_and_software_decoding_one_open_per_attempt(monkeypatch):
    opens: list[bool] = []
    script = iter([False, False, True, False, True])  # does this open succeed?

    class FakeCvCapture:
        def __init__(self, target, kind, *, hw_decode, software_fallback, **kw):
            assert kind == "rtsp" and software_fallback is False
            opens.append(hw_decode)
            if not next(script):
                raise SourceError("cannot open")

        def close(self):
            pass

    monkeypatch.setattr("fbvision.camera.factory.CvCapture", FakeCvCapture)
    source = open_source(CameraConfig(id="c", source="rtsp://cam/1"), CameraManagerConfig(hw_decode=True))
    for _ in range(5):
        try:
            source.opener()
        except SourceError:
            pass
    # hw fails -> sw fails -> hw opens; next connection starts with hw again, fails -> sw opens
    assert opens == [True, False, True, True, False]

    opens.clear()
    script = iter([False, True])
    source = open_source(CameraConfig(id="c", source="rtsp://cam/1"), CameraManagerConfig(hw_decode=False))
    for _ in range(2):
        try:
            source.opener()
        except SourceError:
            pass
    assert opens == [False, False]
