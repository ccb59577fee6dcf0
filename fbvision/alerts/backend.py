"""Embedded alert backend: a small HTTP receiver that stores alerts in SQLite, deduplicated by key.

The demo and the tests need somebody to deliver alerts to; a real deployment points
``alerts.backend_url`` at its own service, which must honour the same contract (docs/alerts.md):

* ``POST /alerts`` - body: one alert event as JSON (``fbvision.core.events.AlertEvent``), header
  ``Idempotency-Key`` (must equal the body's ``idempotency_key`` when given). New key: ``201
  {"stored": true, "duplicate": false}``. Known key: ``200 {"stored": false, "duplicate": true}``, and no
  second row. Body not JSON (or not UTF-8): ``400``; JSON that is not a valid alert event (a field out of range,
  e.g. ``track_id`` 2**70): ``422``; header and body keys differ: ``400``; body over the limit: ``413``;
  Content-Type not JSON: ``415``.
* ``GET /alerts[?camera=ID][&since=ROWID][&limit=N]`` - stored events, oldest first, each with its
  ``_row`` id and ``_received_at``; at most ``MAX_PAGE`` per request (a larger ``limit`` is clamped, one below
  1 is ``400``): page with ``since``.
* ``GET /health`` - ``{"status": "ok", "alerts": n}`` (no token needed: for liveness probes).

It always answers: any failure while handling a request (a database error included) is a ``500`` with a JSON
body, never a dropped connection; a client that sends its request slower than ``request_timeout_s`` per read
gets a ``408`` (or, stuck in its headers, its connection closed) so it cannot hold a thread for ever.

Security: binds ``127.0.0.1`` by default. With a ``token`` every ``/alerts`` request needs
``Authorization: Bearer <token>`` (else ``401``); binding any non-loopback address without a token is refused.

Standard library only (``http.server.ThreadingHTTPServer`` + ``sqlite3``); no eval, no pickle.
Run on its own: ``python -m fbvision.alerts.backend --port 8088 --db runs/alerts.sqlite``
(``--host 0.0.0.0`` needs ``--token`` or ``FBV_BACKEND_TOKEN``).
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import logging
import os
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from pydantic import ValidationError

from fbvision.core.events import AlertEvent

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_PAGE = 10_000  # most alerts one GET returns
REQUEST_TIMEOUT_S = 10.0  # socket timeout per read of a request: a stalled client frees its thread
TOKEN_ENV = "FBV_BACKEND_TOKEN"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    row INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    event_id TEXT NOT NULL,
    episode_key TEXT NOT NULL,
    camera_id TEXT NOT NULL,
    track_id INTEGER,
    rule TEXT NOT NULL,
    state TEXT NOT NULL,
    severity TEXT NOT NULL,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    received_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_camera ON alerts (camera_id, row);
"""


class AlertStore:
    """SQLite table of received alerts; one connection shared under a lock (writes are tiny)."""

    def __init__(self, db_path: str | Path):
        self.db_path = str(db_path)
        if self.db_path != ":memory:":
            Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            if self.db_path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)

    def insert(self, event: AlertEvent, body: str) -> bool:
        """Store ``event``; False when its idempotency key is already stored (nothing written)."""
        with self._lock:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO alerts (idempotency_key, event_id, episode_key, camera_id, track_id, rule,"
                " state, severity, started_at, updated_at, received_at, body) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    event.idempotency_key, event.id, event.episode_key, event.camera_id, event.track_id, event.rule,
                    event.state.value, event.severity.value, event.started_at, event.updated_at, time.time(), body,
                ),
            )
            return cur.rowcount == 1

    def alerts(self, *, camera_id: str | None = None, since_row: int = 0, limit: int = MAX_PAGE) -> list[dict]:
        query = "SELECT row, received_at, body FROM alerts WHERE row > ?"
        args: list[object] = [since_row]
        if camera_id is not None:
            query += " AND camera_id = ?"
            args.append(camera_id)
        query += " ORDER BY row LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._conn.execute(query, args).fetchall()
        out = []
        for row, received_at, body in rows:
            event = json.loads(body)
            event["_row"] = row
            event["_received_at"] = received_at
            out.append(event)
        return out

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _Handler(BaseHTTPRequestHandler):
    server: _AlertHTTPServer
    protocol_version = "HTTP/1.0"  # one request per connection: a stopped backend leaves no idle sockets
    server_version = "fbvision-backend/1"

    def setup(self) -> None:
        self.timeout = self.server.request_timeout_s  # StreamRequestHandler puts it on the socket
        self._replied = False
        super().setup()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        logger.debug("%s " + format, self.address_string(), *args)

    def _reply(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        self._replied = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _answering(self, handle) -> None:
        """Run ``handle``; whatever goes wrong, the client gets an HTTP answer, not a dropped connection."""
        try:
            handle()
        except TimeoutError:
            logger.warning("%s: request not received within %.1f s: 408", self.address_string(),
                           self.server.request_timeout_s)
            self._last_resort(408, "request timeout")
        except Exception:  # noqa: BLE001 - a request must never take the connection (or the server) down
            logger.exception("%s %s failed", self.command, urlsplit(self.path).path)
            self._last_resort(500, "internal error")

    def _last_resort(self, status: int, error: str) -> None:
        if self._replied:
            return  # the answer was (partly) sent: nothing valid can follow it
        try:
            self._reply(status, {"error": error})
        except OSError:
            pass  # the client is gone

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        given = self.headers.get("Authorization") or ""
        if hmac.compare_digest(given.encode("utf-8", "replace"), f"Bearer {token}".encode()):
            return True
        logger.warning("%s: %s %s without a valid bearer token: 401", self.address_string(), self.command,
                       urlsplit(self.path).path)
        self._reply(401, {"error": "Authorization: Bearer <token> required"}, {"WWW-Authenticate": "Bearer"})
        return False

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self._answering(self._get)

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        self._answering(self._post)

    def _get(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/health":
            self._reply(200, {"status": "ok", "alerts": self.server.store.count()})
            return
        if url.path == "/alerts":
            if not self._authorized():
                return
            query = parse_qs(url.query)
            try:
                since = int(query.get("since", ["0"])[0])
                limit = int(query.get("limit", [str(MAX_PAGE)])[0])
            except ValueError:
                self._reply(400, {"error": "since and limit must be integers"})
                return
            if limit < 1:
                self._reply(400, {"error": f"limit must be 1..{MAX_PAGE} (larger is clamped)"})
                return
            camera = query.get("camera", [None])[0]
            alerts = self.server.store.alerts(camera_id=camera, since_row=max(0, since), limit=min(limit, MAX_PAGE))
            self._reply(200, alerts)
            return
        self._reply(404, {"error": f"no such path {url.path}"})

    def _post(self) -> None:
        if urlsplit(self.path).path != "/alerts":
            self._reply(404, {"error": "POST /alerts only"})
            return
        if not self._authorized():
            return
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self._reply(411, {"error": "Content-Length required"})
            return
        try:
            length = int(length_header)
        except ValueError:
            self._reply(400, {"error": "bad Content-Length"})
            return
        if length < 0 or length > self.server.max_body_bytes:
            self._reply(413, {"error": f"body over {self.server.max_body_bytes} bytes"})
            return
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            self._reply(415, {"error": "Content-Type must be application/json"})
            return
        raw = self.rfile.read(length)
        if len(raw) != length:
            self._reply(400, {"error": f"body shorter than Content-Length ({len(raw)} < {length})"})
            return
        try:
            text = raw.decode("utf-8")
            json.loads(text)
        except ValueError as exc:  # UnicodeDecodeError included
            self._reply(400, {"error": "body is not JSON", "detail": str(exc)[:300]})
            return
        try:
            event = AlertEvent.model_validate_json(text)
        except ValidationError as exc:
            self._reply(422, {"error": "not an alert event", "detail": str(exc)[:500]})
            return
        header_key = self.headers.get("Idempotency-Key")
        if header_key is not None and header_key != event.idempotency_key:
            self._reply(400, {"error": "Idempotency-Key header differs from the body's idempotency_key"})
            return
        fail_key = self.server.fail_key
        if self.server.fail_status is not None and fail_key in (None, event.idempotency_key):
            # test hook: answer like a broken backend would (to every alert, or to one)
            self._reply(self.server.fail_status, {"error": "failing on purpose"})
            return
        stored = self.server.store.insert(event, text)
        if stored:
            logger.info(
                "camera %s: stored %s %s %s (key %s)",
                event.camera_id, event.rule, event.state.value, event.severity.value, event.idempotency_key,
            )
            self._reply(201, {"stored": True, "duplicate": False})
        else:
            self._reply(200, {"stored": False, "duplicate": True})


class _AlertHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # restart on the same port right after a stop (outage tests)

    def __init__(self, address: tuple[str, int], store: AlertStore, max_body_bytes: int, *,
                 token: str | None = None, request_timeout_s: float = REQUEST_TIMEOUT_S):
        self.store = store
        self.max_body_bytes = max_body_bytes
        self.token = token
        self.request_timeout_s = request_timeout_s
        self.fail_status: int | None = None
        self.fail_key: str | None = None
        super().__init__(address, _Handler)


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1); ``0.0.0.0`` and any real interface are not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class EmbeddedBackend:
    """``with EmbeddedBackend(db) as b: b.url`` - the receiver on a background thread.

    Restartable: :meth:`stop` then :meth:`start` serves again on the same port and the same database
    (the outage tests rely on it)."""

    def __init__(
        self, db_path: str | Path, host: str = "127.0.0.1", port: int = 0, *, max_body_bytes: int = MAX_BODY_BYTES,
        token: str | None = None, request_timeout_s: float = REQUEST_TIMEOUT_S,
    ):
        if not is_loopback(host) and not token:
            raise ValueError(f"the alert backend binds {host}, which is not loopback: give it a bearer token "
                             f"(token=, --token or {TOKEN_ENV}) or bind 127.0.0.1")
        if token is not None and (len(token) < 16 or not token.isascii() or not token.isprintable() or " " in token):
            raise ValueError("a backend token needs at least 16 visible ASCII characters")
        self.db_path = db_path
        self.host = host
        self.port = port
        self.max_body_bytes = max_body_bytes
        self.token = token
        self.request_timeout_s = request_timeout_s
        self._server: _AlertHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._store: AlertStore | None = None

    @property
    def url(self) -> str:
        """Where to POST alerts."""
        return f"http://{self.host}:{self.port}/alerts"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> EmbeddedBackend:
        if self._server is not None:
            return self
        self._store = AlertStore(self.db_path)
        self._server = _AlertHTTPServer((self.host, self.port), self._store, self.max_body_bytes, token=self.token,
                                        request_timeout_s=self.request_timeout_s)
        self.port = self._server.server_address[1]  # keep the port: a restart reuses it
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="alert-backend", daemon=True
        )
        self._thread.start()
        logger.info("alert backend on %s (db %s, %s)", self.url, self.db_path,
                    "bearer token required" if self.token else "no token: loopback only")
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._store is not None:
            self._store.close()
            self._store = None

    def fail_with(self, status: int | None, key: str | None = None) -> None:
        """Answer every valid POST (or only the one with idempotency key ``key``) with ``status`` instead of
        storing it (None: back to normal). For tests."""
        if self._server is not None:
            self._server.fail_status = status
            self._server.fail_key = key

    def alerts(self, camera_id: str | None = None) -> list[dict]:
        """The stored events (works while stopped too: reads the database)."""
        store = self._store or AlertStore(self.db_path)
        try:
            return store.alerts(camera_id=camera_id)
        finally:
            if store is not self._store:
                store.close()

    def __enter__(self) -> EmbeddedBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_forever() -> None:
    while True:
        time.sleep(3600)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="fbvision embedded alert backend (HTTP -> SQLite)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8088, help="port (default 8088; 0 = a free one)")
    parser.add_argument("--db", default="runs/alerts.sqlite", help="SQLite file (created if missing)")
    parser.add_argument("--token", default=None,
                        help=f"bearer token required on /alerts (default: ${TOKEN_ENV}); needed unless bound to loopback")
    parser.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT_S,
                        help=f"seconds a client may take per read of its request (default {REQUEST_TIMEOUT_S:g})")
    args = parser.parse_args(argv)
    token = args.token or os.environ.get(TOKEN_ENV) or None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        backend = EmbeddedBackend(args.db, host=args.host, port=args.port, token=token,
                                  request_timeout_s=args.request_timeout).start()
    except ValueError as exc:
        parser.error(str(exc))
    print(f"alert backend: POST {backend.url}  GET {backend.base_url}/alerts  (Ctrl-C to stop)", flush=True)
    try:
        _wait_forever()
    except KeyboardInterrupt:
        pass
    finally:
        backend.stop()


if __name__ == "__main__":
    main()
