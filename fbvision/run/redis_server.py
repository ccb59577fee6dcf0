"""A private ``redis-server`` for one run or one test session.

Starts the Debian ``redis-server`` binary on a free loopback port with no persistence (frames are
ephemeral; the embedded default is for demos and tests), waits until it answers PING, and stops it on
exit - also on Ctrl-C and exceptions (atexit), and on Linux when the parent process dies (the kernel
sends the server SIGTERM through ``PR_SET_PDEATHSIG``), so no run leaves a server behind.

Also for tests of the deployment options: TLS (``EmbeddedRedis(tls=TlsFiles(...))`` serves TLS only, its
``url`` is ``rediss://`` with the CA in the query) and a three-master Redis Cluster on loopback
(:class:`EmbeddedRedisCluster`, built with ``redis-cli --cluster create``).

Authentication: by default every server gets a fresh random password (``secrets.token_urlsafe``), carried in
``url`` (which the stages receive) and masked in logs by :func:`fbvision.core.redact.redact_url`. Loopback is
not a trust boundary on a shared host: any local user could otherwise inject alerts or blind cameras.
``password=""`` opts out (no ``requirepass``); a given password is used as is.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from fbvision.core.procutil import own_session_dying_with_parent
from fbvision.core.transport.client import admin_client, answers_ping

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "redis-server not found. Install it: `sudo apt-get install redis-server` (Debian/Ubuntu), "
    "`brew install redis` (macOS), or point REDIS_URL at an existing server."
)


class RedisServerError(RuntimeError):
    pass


def find_redis_server() -> str:
    path = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if os.access(p, os.X_OK)), None
    )
    if not path:
        raise RedisServerError(INSTALL_HINT)
    return path


def generate_password() -> str:
    """A random Redis password: 32 bytes of entropy, URL-safe (no quoting needed in ``redis://:pw@host``)."""
    return secrets.token_urlsafe(32)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a TLS-serving redis-server: its certificate and key, and the CA that signed it (clients
    verify the server against ``ca_cert``). ``client_auth``: also require client certificates signed by it."""

    cert: Path
    key: Path
    ca_cert: Path
    client_auth: bool = False


def make_test_tls_files(directory: str | Path, hostname: str = "127.0.0.1", days: int = 2) -> TlsFiles:
    """A throwaway CA and a server certificate for ``hostname`` (an IP or a DNS name), made with the ``openssl``
    command-line tool. For tests only: the keys are unencrypted and never leave ``directory``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RedisServerError("openssl not found: `sudo apt-get install openssl` (needed to make test certificates)")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    san = f"IP:{hostname}" if hostname.replace(".", "").isdigit() else f"DNS:{hostname}"
    (d / "server.ext").write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                                  "extendedKeyUsage=serverAuth,clientAuth\n")

    def run(*args: str) -> None:
        proc = subprocess.run([openssl, *args], cwd=d, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RedisServerError(f"openssl {args[0]} failed: {proc.stderr.strip()[-500:]}")

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", str(days),
        "-subj", "/CN=fbvision test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", f"/CN={hostname}")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", str(days), "-extfile", "server.ext")
    for name in ("ca.key", "server.key"):
        os.chmod(d / name, 0o600)
    return TlsFiles(d / "server.pem", d / "server.key", d / "ca.pem")


class EmbeddedRedis:
    """``with EmbeddedRedis() as r: r.url``. Restartable on the same port (for fault tests), with the same password.

    ``password``: None (the default) generates one; ``""`` runs without a password; anything else is used.

    With ``tls`` it listens on ``port`` with TLS only (no plaintext port) and ``url`` is a ``rediss://`` URL
    that names the CA to verify the server with."""

    def __init__(
        self,
        port: int | None = None,
        *,
        password: str | None = None,
        maxmemory_mb: int = 512,
        extra_args: list[str] | None = None,
        tls: TlsFiles | None = None,
    ):
        self.binary = find_redis_server()
        self.port = port or free_port()
        self.password = generate_password() if password is None else password
        self.maxmemory_mb = maxmemory_mb
        self.extra_args = extra_args or []
        self.tls = tls
        self.workdir = Path(tempfile.mkdtemp(prefix="fbv-redis-"))
        self.proc: subprocess.Popen | None = None
        self._atexit_registered = False

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        if self.tls is not None:
            query = f"ssl_cert_reqs=required&ssl_ca_certs={quote(str(self.tls.ca_cert))}"
            if self.tls.client_auth:
                query += f"&ssl_certfile={quote(str(self.tls.cert))}&ssl_keyfile={quote(str(self.tls.key))}"
            return f"rediss://{auth}127.0.0.1:{self.port}/0?{query}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _port_args(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        return [
            "--port", "0", "--tls-port", str(self.port),
            "--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key),
            "--tls-ca-cert-file", str(self.tls.ca_cert),
            "--tls-auth-clients", "yes" if self.tls.client_auth else "no",
        ]

    def _auth_config(self) -> list[str]:
        """The password goes in a config file only we can read (the first argument, where redis-server expects
        one), not on the command line, where ``ps`` shows it to every local user."""
        if not self.password:
            return []
        conf = self.workdir / "auth.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            # redis.conf double-quoted string: backslash escapes, so any password survives the round trip
            quoted = (self.password.replace("\\", "\\\\").replace('"', '\\"')
                      .replace("\n", "\\n").replace("\r", "\\r"))
            f.write(f'requirepass "{quoted}"\n')
        return [str(conf)]

    def client(self, **kwargs):
        """A plain redis-py client of this server (for readiness checks and tests)."""
        return admin_client(self.url, **kwargs)

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        if self.proc is not None and self.proc.poll() is None:
            return self
        args = [
            self.binary,
            *self._auth_config(),
            *self._port_args(),
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
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=own_session_dying_with_parent
        )
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        client = self.client(socket_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                    log = (self.workdir / "redis.log")
                    err += log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    raise RedisServerError(f"redis-server exited with {self.proc.returncode}: {err.strip()}")
                if answers_ping(client):
                    break
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


def free_cluster_port(attempts: int = 200) -> int:
    """A free loopback port for a cluster node: at most 55535, with its cluster bus port (+10000) free too."""
    import random

    for _ in range(attempts):
        port = random.randint(20000, 55535)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as a, \
                    socket.socket(socket.AF_INET, socket.SOCK_STREAM) as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue
    raise RedisServerError("no free port pair (port, port + 10000) for a Redis Cluster node")


class EmbeddedRedisCluster:
    """Three (``masters``) cluster-enabled redis-servers on loopback joined into one Redis Cluster with
    ``redis-cli --cluster create`` (no replicas, no persistence). ``url`` names the first node and carries
    ``?cluster=1``, which :class:`fbvision.core.transport.Transport` reads as "use RedisCluster". Node ports are at
    most 55535: Redis puts each node's cluster bus on its port + 10000."""

    def __init__(self, masters: int = 3, *, password: str | None = None, maxmemory_mb: int = 256):
        if masters < 3:
            raise ValueError("a Redis Cluster needs at least three masters")
        # One password for all nodes: the client follows MOVED redirects with the first node's credentials.
        self.password = generate_password() if password is None else password
        self.nodes = [
            EmbeddedRedis(free_cluster_port(), password=self.password, maxmemory_mb=maxmemory_mb,
                          extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                      "--cluster-node-timeout", "5000"])
            for _ in range(masters)
        ]

    @property
    def url(self) -> str:
        return self.nodes[0].url + "?cluster=1"

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def start(self, timeout_s: float = 30.0) -> EmbeddedRedisCluster:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            self.stop()
            raise RedisServerError("redis-cli not found (it comes with redis-server: `sudo apt-get install redis-tools`)")
        client = self.nodes[0].client(socket_timeout=1.0)
        try:
            if client.execute_command("CLUSTER", "INFO").decode().find("cluster_state:ok") < 0:
                args = [cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                        "--cluster-replicas", "0", "--cluster-yes"]
                env = dict(os.environ)
                if self.password:
                    env["REDISCLI_AUTH"] = self.password  # not on the command line, where ps would show it
                proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, env=env)
                if proc.returncode != 0:
                    raise RedisServerError(f"redis-cli --cluster create failed: {(proc.stdout + proc.stderr)[-1500:]}")
            deadline = time.monotonic() + timeout_s
            while True:
                states = []
                for node in self.nodes:
                    c = node.client(socket_timeout=1.0)
                    try:
                        states.append("cluster_state:ok" in c.execute_command("CLUSTER", "INFO").decode())
                    finally:
                        c.close()
                if all(states):
                    break
                if time.monotonic() > deadline:
                    raise RedisServerError(f"Redis Cluster on ports {self.ports} not ok within {timeout_s} s")
                time.sleep(0.1)
        except BaseException:
            client.close()
            self.stop()
            raise
        client.close()
        logger.info("embedded Redis Cluster on 127.0.0.1 ports %s", self.ports)
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()

    def __enter__(self) -> EmbeddedRedisCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
