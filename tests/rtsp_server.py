"""A real RTSP server for the tests: GStreamer's RTSP server (GstRtspServer) serving an H.264 MP4 in a loop.

Two halves in one file:

* run as a script with the system Python that has PyGObject (``/usr/bin/python3 tests/rtsp_server.py --file
  clip.mp4 --port 8554 --path /cam``) it serves ``rtsp://127.0.0.1:<port><path>``: the clip's H.264 access units
  are read once (qtdemux, no re-encoding) and pushed at the clip's frame rate, looping, into every client's
  media through an ``appsrc`` - a live camera that never ends. It prints ``READY <port>`` once listening and
  stops on SIGTERM/SIGINT or when its parent dies;
* imported by the test fixtures (venv Python, stdlib only at import time): :class:`RtspServer` starts/stops that
  script as a subprocess on a free port (restartable on the same port, to simulate an outage),
  :func:`make_test_video` renders a synthetic stall clip to H.264 MP4, :func:`missing_requirements` says why
  the RTSP tests must be skipped on a machine without the GStreamer bits.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = Path(__file__).resolve()
_CHECK = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
    "missing = [e for e in ('appsrc', 'qtdemux', 'h264parse', 'rtph264pay', 'appsink') "
    "if Gst.ElementFactory.find(e) is None]; print(','.join(missing))"
)
INSTALL_HINT = (
    "sudo apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base "
    "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly ffmpeg"
)


# -- fixture side (venv Python) ----------------------------------------------------------------------------------

_requirements_checked: list[str | None] = []


def missing_requirements() -> str | None:
    """None when the RTSP server can run here, else the reason (with the install command)."""
    if _requirements_checked:
        return _requirements_checked[0]
    reason = None
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        reason = f"{SYSTEM_PYTHON} not found"
    elif shutil.which("ffmpeg") is None:
        reason = "ffmpeg not found (needed to make the H.264 test clip)"
    else:
        try:
            proc = subprocess.run([SYSTEM_PYTHON, "-c", _CHECK], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            proc, reason = None, f"cannot run {SYSTEM_PYTHON}: {exc}"
        if proc is not None and proc.returncode != 0:
            reason = f"GStreamer RTSP server bindings unavailable: {proc.stderr.strip().splitlines()[-1:]}"
        elif proc is not None and proc.stdout.strip():
            reason = f"GStreamer elements missing: {proc.stdout.strip()}"
    if reason:
        reason = f"RTSP test server unavailable ({reason}); install: {INSTALL_HINT}"
    _requirements_checked.append(reason)
    return reason


def make_test_video(path: str | Path, *, seconds: float = 4.0, fps: float = 10.0, size=(320, 240),
                    scenario: str = "normal_walk") -> Path:
    """Render a synthetic stall clip and encode it as H.264 MP4 (a key frame every second, no B-frames)."""
    from fbvision.synth import Scenario, write_video

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scene = Scenario.builtin(scenario).model_copy(update={"fps": fps, "size": tuple(size), "duration_s": seconds})
    with tempfile.TemporaryDirectory() as tmp:
        raw = write_video(scene, Path(tmp) / "raw.mp4")
        gop = str(max(1, round(fps)))
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-i", str(raw), "-c:v", "libx264", "-preset", "ultrafast",
             "-tune", "zerolatency", "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-g", gop,
             "-keyint_min", gop, "-bf", "0", "-r", str(fps), str(path)],
            check=True, capture_output=True, timeout=120,
        )
    return path


def _die_with_parent() -> None:
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class RtspServer:
    """The script above as a subprocess. ``url`` has no credentials (the server asks for none; a client may
    still put some in the URL). ``stop()`` then ``start()`` brings it back on the same port."""

    def __init__(self, video: str | Path, port: int | None = None, path: str = "/stall"):
        # The project's one free_port, imported here: this module imports only the stdlib at import time.
        from fbvision.run.redis_server import free_port

        self.video = Path(video)
        self.port = port or free_port()
        self.path = path if path.startswith("/") else f"/{path}"
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="fbv-rtsp-", suffix=".log")[1])

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.path}"

    def start(self, timeout_s: float = 30.0) -> RtspServer:
        if self.running:
            return self
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(SCRIPT), "--file", str(self.video), "--port", str(self.port), "--path", self.path],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent,
            env={k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))},
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        buffered = b""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"RTSP server exited with {self.proc.returncode}: {self.log_tail()}")
            chunk = self.proc.stdout.read() or b""
            buffered += chunk
            if b"READY" in buffered:
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"RTSP server did not start within {timeout_s} s: {self.log_tail()}")

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout_s)
            except ProcessLookupError:
                pass
        if proc.stdout:
            proc.stdout.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def cleanup(self) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


# -- server side (system Python with PyGObject) ------------------------------------------------------------------


def _read_access_units(Gst, path: str):
    """All H.264 access units of the MP4 (byte-stream), their caps and the clip's frame duration (ns)."""
    pipeline = Gst.parse_launch(
        f'filesrc location="{path}" ! qtdemux ! h264parse config-interval=-1 ! '
        "video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false"
    )
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    units, caps, durations = [], None, []
    while True:
        sample = sink.emit("pull-sample")
        if sample is None:
            break
        caps = caps or sample.get_caps()
        buf = sample.get_buffer()
        units.append((buf.extract_dup(0, buf.get_size()), not buf.has_flags(Gst.BufferFlags.DELTA_UNIT)))
        if buf.duration != Gst.CLOCK_TIME_NONE:
            durations.append(buf.duration)
    pipeline.set_state(Gst.State.NULL)
    if not units:
        raise SystemExit(f"no H.264 frames in {path} (is it H.264 in MP4?)")
    frame_ns = int(sorted(durations)[len(durations) // 2]) if durations else Gst.SECOND // 10
    return units, caps, frame_ns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", required=True, help="H.264 MP4 to serve in a loop")
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--path", default="/stall")
    args = parser.parse_args(argv)

    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    units, caps, frame_ns = _read_access_units(Gst, args.file)
    first_key = next(i for i, (_, key) in enumerate(units) if key)
    units = units[first_key:]
    live: list[dict] = []  # one entry per prepared media: its appsrc and the clip position

    class LoopingFactory(GstRtspServer.RTSPMediaFactory):
        def do_create_element(self, url):
            return Gst.parse_launch(
                "appsrc name=src is-live=true do-timestamp=true format=time ! "
                "h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1"
            )

    def on_configure(factory, media):
        appsrc = media.get_element().get_child_by_name("src")
        appsrc.set_property("caps", caps)
        entry = {"src": appsrc, "i": 0}
        live.append(entry)
        media.connect("unprepared", lambda *_: live.remove(entry) if entry in live else None)

    def push_frames():
        for entry in list(live):
            data, _ = units[entry["i"] % len(units)]
            buf = Gst.Buffer.new_wrapped(data)
            buf.duration = frame_ns
            entry["i"] += 1
            entry["src"].emit("push-buffer", buf)
        return True

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = LoopingFactory()
    factory.set_shared(True)
    factory.connect("media-configure", on_configure)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on port {args.port}", file=sys.stderr)
        return 2
    loop = GLib.MainLoop()
    GLib.timeout_add(max(1, frame_ns // 1_000_000), push_frames)
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY {args.port} {len(units)} frames at {1e9 / frame_ns:.1f} fps", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
