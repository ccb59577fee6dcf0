"""The scripted runs of the fault suite, each computed once per session (memoised here, so the fault, scale-out
and security conftests can all ask for the same run without running it twice).

Times are scene seconds of the ``down_long`` camera (stands 15 s, lies 60 s from 15 s to 75 s; with the demo
thresholds horse_down is raised ~46 s, escalated to critical ~66 s and resolved ~81 s). Faults are placed in
separate windows so each one's recovery and drops are measured on their own, and several of them deliberately
fall while that episode is open (a restart must neither lose nor re-raise it).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import fbv_fault_harness as h

from fbvision.core import wire
from fbvision.core.config import REPO_ROOT
from fbvision.core.letterbox import Letterbox

logger = logging.getLogger("fbv.fault")

_CACHE: dict[str, object] = {}

DOWN_CAMERAS = {"cam-down": "synthetic:down_long", "cam-walk": "synthetic:normal_walk"}


@dataclass
class RunResult:
    run: h.FaultPipeline
    faults: dict[str, h.FaultRecord] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    error: BaseException | None = None


def memo(name: str, fn, *args):
    if name not in _CACHE:
        try:
            _CACHE[name] = fn(*args)
        except BaseException as exc:  # remember the failure: every test of the run reports it, none re-runs it
            _CACHE[name] = exc
    value = _CACHE[name]
    if isinstance(value, BaseException):
        raise value
    return value


# -- corrupt messages ------------------------------------------------------------------------------------------

def _valid_frame(camera_id: str = "cam-injected", jpeg: bytes | None = None) -> bytes:
    import cv2
    import numpy as np

    from fbvision.core.modelinfo import load_model_info

    height, width = load_model_info(h.model_path()).input_size
    if jpeg is None:
        jpeg = cv2.imencode(".jpg", np.zeros((height, width, 3), np.uint8))[1].tobytes()
    now = time.time()
    return wire.encode_frame(wire.FrameMessage(camera_id, 1, now, now, Letterbox(width, height, width, height, 1.0, 0.0, 0.0),
                                               jpeg))


def _valid_result(camera_id: str = "cam-injected") -> bytes:
    import numpy as np

    now = time.time()
    return wire.encode_result(wire.ResultMessage(
        camera_id, 1, 960, 540, wire.Timeline(now, now, now, now, now, now), 1,
        np.zeros((1, 4), np.float32), np.ones(1, np.float32), np.zeros(1, np.int32)))


def _wrong_version(message: bytes) -> bytes:
    return message[:2] + bytes((wire.WIRE_VERSION + 1,)) + message[3:]


def _alert_json(**changes) -> bytes:
    import json

    from fbvision.core.events import AlertEvent, AlertState, Evidence, Severity

    event = AlertEvent.create(camera_id="cam-injected", rule="horse_down", track_id=1, state=AlertState.raised,
                              severity=Severity.warning, started_at=time.time() - 60, updated_at=time.time(),
                              evidence=Evidence(seq=1), message=changes.pop("message", ""))
    body = json.loads(event.to_json())
    body.update(changes)
    return json.dumps(body).encode()


def corrupt_messages() -> dict[str, dict[str, bytes]]:  # noqa: D401
    """queue -> {kind -> payload}: garbage, truncated, oversized and wrong-version messages for every queue."""
    frame, result = _valid_frame(), _valid_result()
    return {
        "frames": {
            "garbage": b"\x00\x13not a frame at all" * 8,
            "truncated": frame[: len(frame) // 2],
            "oversized": frame[:4] + b"\x00" * (wire.MAX_FRAME_MESSAGE_BYTES + 1),
            "wrong_version": _wrong_version(frame),
            # parses, but the JPEG inside does not decode
            "corrupt_jpeg": _valid_frame(jpeg=b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8),
        },
        "results": {
            "garbage": b"GARBAGE" * 20,
            "truncated": result[: len(result) - 7],
            "oversized": result[:4] + b"\x00" * (wire.MAX_RESULT_MESSAGE_BYTES + 1),
            "wrong_version": _wrong_version(result),
        },
        "outbox": {
            "garbage": b"\x80\x04not json",  # (the bytes of a pickle header: must never be unpickled)
            "truncated": _alert_json()[:40],
            "oversized": _alert_json(message="x" * (80 * 1024)),
            "wrong_version": _alert_json(schema_version=99),
        },
    }


#: What each injected message must be counted as: (stage, counter).
EXPECTED_COUNTERS = {
    ("frames", "garbage"): ("inference", "dropped:wire_garbage"),
    ("frames", "truncated"): ("inference", "dropped:wire_truncated"),
    ("frames", "oversized"): ("inference", "dropped:wire_too_large"),
    ("frames", "wrong_version"): ("inference", "dropped:wire_version"),
    ("frames", "corrupt_jpeg"): ("inference", "dropped:corrupt"),
    ("results", "garbage"): ("logic", "dropped:wire_garbage"),
    ("results", "truncated"): ("logic", "dropped:wire_truncated"),
    ("results", "oversized"): ("logic", "dropped:wire_too_large"),
    ("results", "wrong_version"): ("logic", "dropped:wire_version"),
    ("outbox", "garbage"): ("delivery", "failed_permanent"),
    ("outbox", "truncated"): ("delivery", "failed_permanent"),
    ("outbox", "oversized"): ("delivery", "failed_permanent"),
}
#: Should be counted as failed_permanent too, but the backend stores it (see test_corrupt_messages.py, xfail).
WRONG_VERSION_ALERT = ("outbox", "wrong_version")


def inject_corrupt(run: h.FaultPipeline, partition_camera: str) -> h.FaultRecord:
    """Put every corrupt message into its queue, wait for the stages to skip them, record counters."""
    t = run.transport
    record = run.begin("corrupt/truncated/oversized/wrong-version msgs")
    dead_before = len(t.dead_letters(1000))
    msgs = corrupt_messages()
    part = t.partition_of(partition_camera)
    t.push_frames(list(msgs["frames"].values()))
    for payload in msgs["results"].values():
        t.client.xadd(t.keys.results(part), {"r": payload})
    t.add_alerts(list(msgs["outbox"].values()))
    run.injected["frames"] = run.injected.get("frames", 0) + len(msgs["frames"])
    run.injected["results"] = run.injected.get("results", 0) + len(msgs["results"])
    run.injected["alerts"] = run.injected.get("alerts", 0) + len(msgs["outbox"])
    record.started = record.ended = time.time()
    record.notes.append(f"{sum(len(v) for v in msgs.values())} messages into 3 queues")
    # Skipped = counted; wait for the counters (flushed ~1/s) rather than a fixed time.
    expected: dict[tuple[str, str], int] = {}
    for (_q, _k), key in EXPECTED_COUNTERS.items():
        expected[key] = expected.get(key, 0) + 1

    def counted() -> bool:
        now = run.snapshot_counters()
        return all(int(now[stage].get(name, 0)) - int(record.before[stage].get(name, 0)) >= n
                   for (stage, name), n in expected.items())

    run.measure_recovery(record, timeout_s=30, settle_s=0.0)
    try:
        h.wait_for(counted, 30, what="corrupt messages counted")
    except AssertionError as exc:
        record.notes.append(str(exc))
    record.after = run.snapshot_counters()
    dead = t.dead_letters(1000)
    record.extra = {"dead_letters": dead[: len(dead) - dead_before], "expected": expected,
                    "backend_keys": [a["idempotency_key"] for a in run.delivered()]}
    return record


# -- run A: Redis faults (+ corrupt messages) ------------------------------------------------------------------------

def redis_faults(base: Path) -> RunResult:
    settings = h.make_settings(DOWN_CAMERAS)
    run = h.FaultPipeline(settings, base / "redis-faults")
    result = RunResult(run)
    run.start()
    try:
        run.wait_flowing()
        run.sleep_until_scene("cam-down", 6)
        result.faults["corrupt"] = inject_corrupt(run, "cam-down")
        run.sleep_until_scene("cam-down", 20)
        result.faults["client_kill"] = run.measure_recovery(run.redis_client_kill())
        run.sleep_until_scene("cam-down", 28)
        # While the horse is lying (condition pending, not raised yet): its timer must survive the restart.
        result.faults["restart"] = run.measure_recovery(run.redis_restart(down_s=1.0))
        run.sleep_until_scene("cam-down", 50)
        # After the raise, before the critical escalation.
        result.faults["unreachable"] = run.measure_recovery(run.redis_unreachable(10.0))
        run.sleep_until_scene("cam-down", 90)
        run.stop()
    except BaseException:
        run.close()
        raise
    return result


# -- run B: worker kills, backend outage, RTSP outage, logic rebalancing (2 x camera, inference, logic) ----------------

def _rtsp_helper():
    name = "fbv_test_rtsp_server"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "tests" / "rtsp_server.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


RTSP_USER, RTSP_PASSWORD = "stallcam", "rtsp-secret-31f9"
#: cam-down, cam-walk -> partitions 6, 0 (logic-1's share); cam-flat, cam-rtsp -> 1, 3 (logic-2's share), so
#: each logic worker owns a horse that lies down. (The `running` scenario is not used: with the demo model its
#: horse's track fragments and too_fast does not fire reliably even without faults.)
WORKER_CAMERAS = {"cam-down": "synthetic:down_long", "cam-walk": "synthetic:normal_walk",
                  "cam-flat": "synthetic:down_long"}
#: camera_offline after 5 s without frames (not 60 s), so the outage test is short; 4 s of silence counts as
#: "no frames" (under load a camera's results can lag 2-3 s behind, which must not look like an outage).
RTSP_OVERRIDE = {"rules": {
    "camera_offline": {"stale_after_s": 4, "escalation": [{"after_s": 5, "severity": "warning"}],
                       "exit_after_s": 2},
    **{rule: {"enabled": False} for rule in ("horse_down", "too_fast", "rolling", "horse_absent")},
}}


def workers_and_backend(base: Path) -> RunResult:
    rtsp = _rtsp_helper()
    reason = rtsp.missing_requirements()  # without GStreamer the run goes on without its RTSP camera
    server = None
    cameras = dict(WORKER_CAMERAS)
    if not reason:
        server = rtsp.RtspServer(rtsp.make_test_video(base / "rtsp" / "stall.mp4")).start()
        cameras["cam-rtsp"] = f"rtsp://{RTSP_USER}:{RTSP_PASSWORD}@127.0.0.1:{server.port}{server.path}"
    settings = h.make_settings(
        cameras, overrides={"cam-rtsp": RTSP_OVERRIDE},
        camera={"watchdog_s": 3.0, "reconnect_initial_s": 0.5, "reconnect_max_s": 2.0},
        model={"intra_op_threads": 1},  # two workers on two cores: one thread each
    )
    run = h.FaultPipeline(settings, base / "workers", inference_workers=2, logic_workers=2,
                          camera_groups=[["cam-down", "cam-walk"], ["cam-flat", *(["cam-rtsp"] if server else [])]])
    result = RunResult(run, extra={"rtsp_skipped": reason})
    run.start()
    try:
        run.wait_flowing()
        if server is not None:
            h.wait_for(lambda: run.judged_after(time.time() - 5, "cam-rtsp"), 60, what="RTSP camera judged")
            run.sleep_until_scene("cam-down", 6)

            # 1. RTSP server stopped, then restarted on the same port.
            rec = run.begin("RTSP server stopped, restarted")
            server.stop()
            rec.started = time.time()
            offline = h.wait_for(lambda: [a for a in run.delivered() if a["camera_id"] == "cam-rtsp"
                                          and a["rule"] == "camera_offline" and a["state"] == "raised"], 40,
                                 what="camera_offline raised")
            rec.notes.append(f"offline alert after {offline[0]['_received_at'] - rec.started:.1f} s")
            server.start()
            rec.ended = time.time()
            run.measure_recovery(rec, timeout_s=60, camera_id="cam-rtsp")
            try:
                resolved = h.wait_for(lambda: [a for a in run.delivered() if a["camera_id"] == "cam-rtsp"
                                               and a["rule"] == "camera_offline" and a["state"] == "resolved"], 30,
                                      what="camera_offline resolved")
                rec.notes.append(f"resolved {resolved[0]['_received_at'] - rec.ended:.1f} s after restart")
            except AssertionError as exc:
                rec.notes.append(str(exc))
            result.faults["rtsp"] = rec

        # 2. One of two inference workers SIGKILLed mid-batch; the other carries on.
        run.sleep_until_scene("cam-down", 28)
        survivor_pid = run.pid_of("inference-2")
        out_before = _worker_frames_out(run, survivor_pid)
        rec = run.sigkill_stage("inference-1")
        killed_at = rec.ended
        run.measure_recovery(rec, settle_s=0.5)
        restarted = h.wait_for(lambda: _restarted_worker_ready(run, "inference-1"), 60, what="inference-1 back")
        rec.notes.append(f"inference-1 back after {restarted - killed_at:.1f} s")
        rec.extra = {"survivor_frames_while_down": _worker_frames_out(run, survivor_pid) - out_before,
                     "restart_s": round(restarted - killed_at, 1)}
        result.faults["inference_kill"] = rec

        # 3. Backend down for 30 s (both horse_down alerts are raised meanwhile).
        run.sleep_until_scene("cam-down", 36)
        rec = run.begin("backend down 30 s")
        run.backend.stop()
        rec.started = time.time()
        # 3b. Meanwhile a logic worker leaves (warm stop) and joins again: partitions move during open episodes.
        run.sleep_until_scene("cam-down", 44)
        flat_partition = run.transport.partition_of("cam-flat")
        leave = run.begin("logic-2 leaves, rejoins 8 s later")
        run.remove_stage("logic-2")
        leave.ended = left_at = time.time()
        h.wait_for(lambda: run.judged_after(left_at, "cam-flat"), 30, interval_s=0.1, what="cam-flat judged by logic-1")
        took_over = time.time() - left_at
        leave.notes.append(f"left: logic-1 holds {_held(run, 'logic-1')}, judging cam-flat after {took_over:.1f} s")
        time.sleep(max(0.0, left_at + 8.0 - time.time()))
        run.add_stage("logic-2")
        joined_at = time.time()
        h.wait_for(lambda: run.transport.lease_owner(flat_partition) == "logic-2", 30, interval_s=0.1,
                   what="logic-2 takes cam-flat's partition back")
        handed_at = time.time()
        h.wait_for(lambda: run.judged_after(handed_at, "cam-flat"), 30, interval_s=0.1, what="cam-flat judged by logic-2")
        rejoined = time.time() - joined_at
        leave.notes.append(f"rejoined: cam-flat judged by logic-2 {rejoined:.1f} s after its start; then logic-1 "
                           f"{_held(run, 'logic-1')}, logic-2 {_held(run, 'logic-2')}")
        leave.recovered_s = round(max(took_over, rejoined), 1)
        leave.after = run.snapshot_counters()
        run.records.append(leave)
        result.faults["logic_rebalance"] = leave

        time.sleep(max(0.0, rec.started + 30.0 - time.time()))
        run.backend.start()
        rec.ended = time.time()
        waiting = run.outbox_waiting()
        h.wait_for(run.outbox_drained, 90, interval_s=0.1, what="outbox drained")
        rec.recovered_s = round(time.time() - rec.ended, 1)
        rec.notes.append(f"{waiting} alert(s) waiting when it came back")
        rec.after = run.snapshot_counters()
        run.records.append(rec)
        result.faults["backend"] = rec

        # 4. Logic worker SIGKILLed while episodes are open; the supervisor restarts it (same worker id).
        run.sleep_until_scene("cam-down", 70)
        rec = run.sigkill_stage("logic-1")
        run.measure_recovery(rec, settle_s=0.5, camera_id="cam-down")
        result.faults["logic_kill"] = rec

        run.sleep_until_scene("cam-down", 90)
        run.stop()
    except BaseException:
        run.close()
        raise
    finally:
        if server is not None:
            server.cleanup()
    return result


def _worker_frames_out(run: h.FaultPipeline, pid: int) -> int:
    for name, snap in run.transport.snapshots().items():
        if name.startswith("inference:") and name.endswith(f":{pid}"):
            return int((snap.get("counters") or {}).get("frames_out", 0))
    return 0


def _restarted_worker_ready(run: h.FaultPipeline, stage: str) -> float | None:
    pid = run.pid_of(stage)
    snap = next((s for n, s in run.transport.snapshots().items()
                 if n.startswith("inference:") and n.endswith(f":{pid}")), None)
    if snap and int((snap.get("counters") or {}).get("frames_out", 0)) > 0:
        return time.time()
    return None


def _held(run: h.FaultPipeline, worker: str) -> list[int]:
    return sorted(p for p in range(run.transport.result_partitions) if run.transport.lease_owner(p) == worker)


# -- run C: offered load 2x capacity for 60 s (closed loop) ---------------------------------------------------------------------

OVERLOAD_S = 60.0


class LoadGenerator:
    """Offers frames of ``cameras`` extra cameras (pre-rendered stall frames, letterboxed and JPEG-encoded once,
    replayed with fresh capture times) at a rate that a controller keeps at ``factor`` x what the pipeline
    infers, measured every ``window_s`` - i.e. at ``factor`` x its capacity, whatever the machine gives it.
    The cameras' own producer cost is left out on purpose: in production the camera managers run elsewhere."""

    def __init__(self, run: h.FaultPipeline, factor: float = 2.0, cameras: int = 8, window_s: float = 2.0,
                 base_fps: float = 0.0):
        self.run, self.factor, self.window_s, self.base_fps = run, factor, window_s, base_fps
        self.cameras = [f"cam-load-{i:02d}" for i in range(1, cameras + 1)]
        self.pushed = 0
        self.rate = 0.0
        self.rates: list[float] = []
        self._stop = __import__("threading").Event()
        self._frames = self._render()
        self._thread = None

    def _render(self) -> list[tuple[bytes, object]]:
        import cv2

        from fbvision.camera.factory import load_scenario
        from fbvision.core.letterbox import letterbox
        from fbvision.core.modelinfo import load_model_info
        from fbvision.synth import SceneRenderer

        height, width = load_model_info(h.model_path()).input_size
        renderer = SceneRenderer(load_scenario("normal_walk"))
        out = []
        for i in range(0, renderer.n_frames, max(1, renderer.n_frames // 60)):
            image, box = letterbox(renderer.frame(i), (width, height))
            out.append((cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes(), box))
        return out

    def start(self, initial_fps: float) -> None:
        import threading

        self.rate = initial_fps
        self._thread = threading.Thread(target=self._loop, name="load-generator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.run.injected["frames"] = self.run.injected.get("frames", 0) + self.pushed

    def _loop(self) -> None:
        from fbvision.core.transport import TransportUnavailable

        t = self.run.transport
        seq, tick, credit = 0, 0.05, 0.0
        first_out = last_out = int(self.run.counters("inference").get("frames_out", 0))
        first_t = last_t = time.monotonic()
        while not self._stop.wait(tick):
            now_m = time.monotonic()
            if now_m - last_t >= self.window_s:
                out = int(self.run.counters("inference").get("frames_out", 0))
                inferred_fps = (out - last_out) / (now_m - last_t)
                if inferred_fps > 0:
                    # proportional to the last window, plus what the offer so far fell short of (or exceeded)
                    offered = self.pushed + self.base_fps * (now_m - first_t)
                    deficit = self.factor * (out - first_out) - offered
                    self.rate = max(0.0, self.factor * inferred_fps - self.base_fps + 0.5 * deficit / self.window_s)
                    self.rates.append(round(self.rate, 1))
                last_out, last_t = out, now_m
            credit += self.rate * tick
            n = int(credit)
            if not n:
                continue
            credit -= n
            now = time.time()
            batch = []
            for _ in range(n):
                jpeg, box = self._frames[seq % len(self._frames)]
                cam = self.cameras[seq % len(self.cameras)]
                batch.append(wire.encode_frame(wire.FrameMessage(
                    cam, seq, now, now, box, jpeg)))
                seq += 1
            try:
                t.push_frames(batch)
                self.pushed += n
            except TransportUnavailable:
                pass


def overload(base: Path) -> RunResult:
    fps = 5.0
    settings = h.make_settings({"cam-down": "synthetic:down_long"}, fps=fps)
    run = h.FaultPipeline(settings, base / "overload", record=False)
    result = RunResult(run)
    run.start()
    try:
        run.wait_flowing()
        load = LoadGenerator(run, factor=2.0, base_fps=fps)
        time.sleep(3.0)
        before = run.counters("inference").get("frames_out", 0)
        time.sleep(3.0)
        load.start(initial_fps=2.0 * max(5.0, (run.counters("inference").get("frames_out", 0) - before) / 3.0))
        time.sleep(6.0)  # let the controller settle
        rec = run.begin(f"offered load 2x capacity for {OVERLOAD_S:.0f} s")
        pushed_from = load.pushed
        mem_from = len(run.memory)
        latency = []
        t_end = time.time() + OVERLOAD_S
        while time.time() < t_end:
            time.sleep(5.0)
            snap = run.transport.snapshots().get("logic:logic-1", {})
            e2e = (snap.get("latency_s") or {}).get("end_to_end")
            if e2e:
                latency.append({"t": round(time.time() - rec.started, 1), **{k: e2e.get(k) for k in ("p50", "p95", "p99", "max")}})
        rec.ended = time.time()
        rec.after = run.snapshot_counters()
        offered_gen = load.pushed - pushed_from
        load.stop()
        d = h.counter_delta(rec.before, rec.after)
        secs = rec.ended - rec.started
        offered = offered_gen + d.get("camera:frames_pushed", 0) + d.get("camera:dropped:buffer_full", 0)
        inferred = d.get("inference:frames_out", 0)
        result.extra.update(offered_fps=round(offered / secs, 1), inferred_fps=round(inferred / secs, 1),
                            ratio=round(offered / max(1, inferred), 2), latency=latency,
                            memory_window=run.memory[mem_from:], rates=load.rates,
                            cameras=1 + len(load.cameras))
        run.records.append(rec)
        result.faults["overload"] = rec
        time.sleep(3.0)
        run.stop()
    except BaseException:
        run.close()
        raise
    return result
