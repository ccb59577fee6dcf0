"""A private ``redis-server`` for one run or one test session.

Starts the Debian ``redis-server`` binary on a free loopback port with no persistence (frames are
ephemeral; the embedded default is for demos and tests), waits until it answers PING, and stops it on
exit - also on Ctrl-C and exceptions (atexit), and on Linux when the parent process dies (the kernel
sends the server SIGTERM through ``PR_SET_PDEATHSIG``), so no run leaves a server behind.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "redis-server not found. Install it: `sudo apt-get install redis-server` (Debian/Ubuntu), "
    "`brew install redis` (macOS), or point REDIS_URL at an existing server."
)


class RedisServerError(RuntimeError):
    pass


def _die_with_parent() -> None:
    """preexec_fn: own session (so Ctrl-C in a terminal reaches only us), SIGTERM when the parent dies."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def find_redis_server() -> str:
    path = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if os.access(p, os.X_OK)), None
    )
    if not path:
        raise RedisServerError(INSTALL_HINT)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    """``with EmbeddedRedis() as r: r.url``. Restartable on the same port (for fault tests)."""

    def __init__(
        self,
        port: int | None = None,
        *,
        password: str | None = None,
        maxmemory_mb: int = 512,
        extra_args: list[str] | None = None,
    ):
        self.binary = find_redis_server()
        self.port = port or free_port()
        self.password = password
        self.maxmemory_mb = maxmemory_mb
        self.extra_args = extra_args or []
        self.workdir = Path(tempfile.mkdtemp(prefix="fbv-redis-"))
        self.proc: subprocess.Popen | None = None
        self._atexit_registered = False

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        if self.proc is not None and self.proc.poll() is None:
            return self
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--maxmemory", f"{self.maxmemory_mb}mb",
            "--maxmemory-policy", "noeviction",
            "--loglevel", "warning",
            "--logfile", str(self.workdir / "redis.log"),
            *self.extra_args,
        ]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_die_with_parent
        )
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        client = redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                    log = (self.workdir / "redis.log")
                    err += log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    raise RedisServerError(f"redis-server exited with {self.proc.returncode}: {err.strip()}")
                try:
                    if client.ping():
                        break
                except redis.RedisError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RedisServerError(f"redis-server on port {self.port} did not answer within {timeout_s} s")
                time.sleep(0.02)
        finally:
            client.close()
        logger.info("embedded redis-server pid %d on 127.0.0.1:%d", self.proc.pid, self.port)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout_s)
        if proc.stderr:
            proc.stderr.close()

    def kill(self) -> None:
        """Hard stop (SIGKILL), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        if down_s:
            time.sleep(down_s)
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
