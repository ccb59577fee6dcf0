"""One log for a whole run: every stage's records, the runner's own and the native (OpenCV/FFmpeg) stderr lines.

Each stage process sends its records through a multiprocessing queue (``logging.handlers.QueueHandler``); the
runner's :class:`RunLog` listens on it (``QueueListener``) and hands every record to the runner's handlers:

* ``runs/<time>/run.log``, always, at the run's log level;
* a :class:`PaneHandler`: the last warnings and errors, with the stage's name, shown in the dashboard's log pane;
* whatever else the root logger has: the terminal (``fbvision run`` adds one only when the dashboard is off -
  with the dashboard on, anything written to the terminal would be painted over by its next refresh).

Native libraries write to file descriptors 1 and 2, not through :mod:`logging` (OpenCV's FFmpeg log callback
even ``printf``s: ``[OPENCV:FFMPEG:16] Connection to tcp://... failed: Connection refused``):
:func:`capture_native_output` points a stage's fds 1 and 2 at a pipe whose lines become log records (logger
``native``), and :func:`quiet_native_libraries` lowers OpenCV's and FFmpeg's own log levels so that only their
warnings and errors arrive at all.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from fbvision.core.redact import KnownSecrets, redact_url

RUN_LOG = "run.log"
FORMAT = "%(asctime)s %(levelname)-7s [%(stage)s] %(name)s: %(message)s"
TRACEBACK_TAIL_LINES = 15


class StageName(logging.Filter):
    """Stamps ``record.stage`` (the process's stage name) on every record that has none."""

    def __init__(self, stage: str):
        super().__init__()
        self.stage = stage

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "stage"):
            record.stage = self.stage
        return True


def quiet_native_libraries() -> None:
    """OpenCV and FFmpeg: warnings and errors only. The environment variables reach the FFmpeg backend when it is
    first loaded, and capture threads opened later; ``cv2.setLogLevel`` covers OpenCV's own messages now."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "WARNING")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "24")  # AV_LOG_WARNING: no per-packet chatter
    try:
        import cv2

        cv2.setLogLevel(3)  # cv::utils::logging::LOG_LEVEL_WARNING
    except (ImportError, AttributeError):  # an OpenCV without the logging API: the variables still apply
        pass


def _line_buffer_c_stdout() -> None:
    """C's stdout is fully buffered on a pipe (a native message would wait for 4 KB): make it line-buffered."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        c_stdout = ctypes.c_void_p.in_dll(libc, "stdout")
        libc.setvbuf(c_stdout, None, 1, 0)  # _IOLBF
    except (OSError, ValueError, AttributeError):  # not glibc: lines arrive later, none are lost
        pass


def capture_native_output(stage: str) -> threading.Thread:
    """Route this process's fds 1 and 2 (and ``sys.stdout``/``sys.stderr``) through a pipe into the log, one
    record per line.

    Lines from native code (``[OPENCV:FFMPEG:16] ... Connection refused``, ``global cap.cpp:212 ...``) become
    WARNING records of the ``native`` logger; the runner's run.log and dashboard pane get them with the stage's
    name. A stage writes nothing to the terminal, where the dashboard would paint over it."""
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    os.dup2(write_fd, 1)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    _line_buffer_c_stdout()
    native = logging.getLogger("native")

    def pump() -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            pending = b""
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    # Native code knows nothing of masking: a URL it prints may hold credentials.
                    text = redact_url(line.decode("utf-8", "replace").rstrip())
                    if text:
                        native.warning("%s", text, extra={"stage": stage})

    thread = threading.Thread(target=pump, name="fbv-native-output", daemon=True)
    thread.start()
    return thread


def setup_stage_logging(stage: str, level: int, queue=None) -> None:
    """A stage process's logging: into the runner's queue when given one (else the terminal, as before), with the
    stage's name on each record, native messages quietened and captured."""
    quiet_native_libraries()
    root = logging.getLogger()
    if queue is None:
        logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)-7s [{stage}] %(name)s: %(message)s",
                            force=True)
        return
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.handlers.QueueHandler(queue)
    handler.addFilter(StageName(stage))
    root.addHandler(handler)
    root.setLevel(level)
    # A logging error must not be printed to stderr: that is the pipe into this same log.
    logging.raiseExceptions = False
    capture_native_output(stage)


class PaneHandler(logging.Handler):
    """Keeps the last ``size`` records at WARNING or above for the dashboard's log pane, and each stage's last
    error (with its traceback) for the report."""

    def __init__(self, size: int = 8):
        super().__init__(logging.WARNING)
        self.lines: deque[tuple[float, str, str, str]] = deque(maxlen=size)
        self.last_errors: dict[str, dict] = {}
        self._lock_lines = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                text = f"{text}\n{record.exc_text}"
            stage = getattr(record, "stage", "runner")
            first = text.splitlines()[0] if text else ""
            with self._lock_lines:
                self.lines.append((record.created, record.levelname, stage, first))
                if record.levelno >= logging.ERROR:
                    self.last_errors[stage] = {
                        "at": record.created, "level": record.levelname, "logger": record.name, "message": first,
                        "traceback_tail": text.splitlines()[1:][-TRACEBACK_TAIL_LINES:],
                    }
        except Exception:  # a log line must never take the runner down
            self.handleError(record)

    def recent(self) -> list[tuple[float, str, str, str]]:
        with self._lock_lines:
            return list(self.lines)


class _Dispatch(logging.Handler):
    """Hands a stage's record to the runner's logger of the same name, so that it reaches every handler the
    runner's own records reach (run.log, the pane, the terminal, a test's log capture)."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(record.name).handle(record)


class RunLog:
    """The runner side: run.log and the pane on the root logger, and the queue the stages log into.

    ``start()`` adds the two handlers to the root logger (the runner's own records go the same way) and listens
    on the queue; ``stop()`` handles what is still queued, then removes them."""

    def __init__(self, run_dir: Path, level: int = logging.INFO, *, context=None, pane_size: int = 8,
                 secrets: Iterable[str] = ()):
        import multiprocessing as mp

        self.path = Path(run_dir) / RUN_LOG
        self.level = level
        self.queue = (context or mp.get_context("spawn")).Queue()
        self.pane = PaneHandler(pane_size)
        # The configuration's secrets, masked literally in every record run.log and the pane get (add() more).
        self.secrets = KnownSecrets(secrets)
        self.file: logging.FileHandler | None = None
        self._listener: logging.handlers.QueueListener | None = None
        self._saved_level: int | None = None

    def start(self) -> RunLog:
        self.file = logging.FileHandler(self.path, encoding="utf-8")
        self.file.setLevel(self.level)
        formatter = logging.Formatter(FORMAT)
        formatter.converter = time.gmtime  # one clock across hosts: UTC in the file
        self.file.setFormatter(formatter)
        root = logging.getLogger()
        for handler in (self.file, self.pane):
            handler.addFilter(StageName("runner"))
            handler.addFilter(self.secrets)
            root.addHandler(handler)
        self._saved_level = root.level
        if root.level == logging.NOTSET or root.level > self.level:
            root.setLevel(self.level)
        self._listener = logging.handlers.QueueListener(self.queue, _Dispatch())
        self._listener.start()
        logging.getLogger(__name__).info("logging to %s", self.path)
        return self

    def stop(self) -> None:
        if self._listener is None:
            return
        self._listener.stop()  # handles every record still queued first
        self._listener = None
        root = logging.getLogger()
        for handler in (self.file, self.pane):
            root.removeHandler(handler)
        if self._saved_level is not None:
            root.setLevel(self._saved_level)
        self.file.close()
