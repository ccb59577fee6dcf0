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
* ``GET /evidence/<episode key>[-<severity>].jpg|.mp4`` - the alerts' evidence files (``evidence_dir``), 404 until
  the camera manager has written them; byte ranges for the ``<video>`` element.
* The review page (``/review``, verdicts, missed events): see :mod:`fbvision.alerts.review`.

It always answers: any failure while handling a request (a database error included) is a ``500`` with a JSON
body, never a dropped connection; a client that sends its request slower than ``request_timeout_s`` per read
gets a ``408`` (or, stuck in its headers, its connection closed) so it cannot hold a thread for ever.

Security: binds ``127.0.0.1`` by default. With a ``token`` every ``/alerts``, review and evidence request needs
``Authorization: Bearer <token>`` or basic auth with the token as password (a browser asks for it), else ``401``;
binding any non-loopback address without a token is refused. Form posts from another origin are refused (403).

Standard library only (``http.server.ThreadingHTTPServer`` + ``sqlite3``); no eval, no pickle.
Run on its own: ``python -m fbvision.alerts.backend --port 8088 --db runs/alerts.sqlite``
(``--host 0.0.0.0`` needs ``--token`` or ``FBV_BACKEND_TOKEN``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
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
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import ValidationError

from fbvision.alerts import review
from fbvision.core.events import AlertEvent, is_not_json
from fbvision.core.evidence import FILE_RE

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
CREATE INDEX IF NOT EXISTS alerts_episode ON alerts (episode_key, row);
""" + review.REVIEW_SCHEMA
MAX_EPISODE_ROWS = 20_000  # alert events the review list reads (newest)


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

    # -- review (fbvision.alerts.review) ------------------------------------------------------------------------
    _EVENT_COLS = "row, episode_key, camera_id, track_id, rule, state, severity, started_at, updated_at, body"

    def _event_rows(self, where: str = "", args: tuple = ()) -> list[dict]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT * FROM (SELECT {self._EVENT_COLS} FROM alerts {where} ORDER BY row DESC LIMIT ?)"
                " ORDER BY row", (*args, MAX_EPISODE_ROWS)).fetchall()
        out = []
        for row in rows:
            d = dict(zip(("row", "episode_key", "camera_id", "track_id", "rule", "state", "severity", "started_at",
                          "updated_at"), row[:9], strict=True))
            body = json.loads(row[9])
            d["message"] = body.get("message", "")
            d["evidence"] = body.get("evidence") or {}
            out.append(d)
        return out

    def latest_verdicts(self) -> dict[str, dict]:
        """Episode key -> its latest verdict (``verdict``, ``note``, ``who``, ``at``, ``start_at``, ``end_at``)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT episode_key, verdict, note, who, at, start_at, end_at FROM verdicts WHERE row IN "
                "(SELECT MAX(row) FROM verdicts GROUP BY episode_key)").fetchall()
        return {k: {"verdict": v, "note": n, "who": w, "at": a, "start_at": s, "end_at": e}
                for k, v, n, w, a, s, e in rows}

    def episodes(self, camera_id: str | None = None, since: float | None = None) -> list[dict]:
        where, args = [], []
        if camera_id is not None:
            where.append("camera_id = ?")
            args.append(camera_id)
        if since is not None:
            where.append("started_at >= ?")
            args.append(since)
        rows = self._event_rows(("WHERE " + " AND ".join(where)) if where else "", tuple(args))
        return review.episodes_from_rows(rows, self.latest_verdicts())

    def episode(self, key: str) -> dict | None:
        eps = review.episodes_from_rows(self._event_rows("WHERE episode_key = ?", (key,)), self.latest_verdicts())
        return eps[0] if eps else None

    def add_verdict(self, key: str, verdict: str, note: str, who: str, start_at: float | None = None,
                    end_at: float | None = None) -> bool:
        with self._lock:
            if self._conn.execute("SELECT 1 FROM alerts WHERE episode_key = ? LIMIT 1", (key,)).fetchone() is None:
                return False
            self._conn.execute("INSERT INTO verdicts (episode_key, verdict, note, who, at, start_at, end_at) "
                               "VALUES (?,?,?,?,?,?,?)", (key, verdict, note, who, time.time(), start_at, end_at))
        return True

    def verdict_history(self, key: str) -> list[dict]:
        with self._lock:
            rows = self._conn.execute("SELECT verdict, note, who, at FROM verdicts WHERE episode_key = ? ORDER BY row",
                                      (key,)).fetchall()
        return [{"verdict": v, "note": n, "who": w, "at": a} for v, n, w, a in rows]

    def verdicts(self) -> list[dict]:
        """Every episode's latest verdict with the episode's camera, rule, track, start and highest severity."""
        latest = self.latest_verdicts()
        out = []
        for ep in review.episodes_from_rows(self._event_rows(), latest):
            v = ep["verdict_info"]
            if v:
                raised = next((r["updated_at"] for r in ep["events"] if r["state"] == "raised"), None)
                resolved = next((r["updated_at"] for r in ep["events"] if r["state"] == "resolved"), None)
                out.append({k: ep[k] for k in ("episode_key", "camera_id", "rule", "track_id", "started_at",
                                                "severity")} | {"raised_at": raised, "resolved_at": resolved} | v)
        return sorted(out, key=lambda r: (r["started_at"], r["episode_key"]))

    def add_missed(self, camera_id: str, rule: str, start_at: float, end_at: float, note: str, who: str) -> None:
        with self._lock:
            self._conn.execute("INSERT INTO missed (camera_id, rule, start_at, end_at, note, who, at) VALUES "
                               "(?,?,?,?,?,?,?)", (camera_id, rule, start_at, end_at, note, who, time.time()))

    def missed(self, camera_id: str | None = None) -> list[dict]:
        query = "SELECT camera_id, rule, start_at, end_at, note, who, at FROM missed"
        args: tuple = ()
        if camera_id is not None:
            query += " WHERE camera_id = ?"
            args = (camera_id,)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY row", args).fetchall()
        return [dict(zip(("camera_id", "rule", "start_at", "end_at", "note", "who", "at"), r, strict=True))
                for r in rows]

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
        self._user = ""  # the basic-auth user name, when the review page was opened with one
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

    def _authorized(self, browser: bool = False) -> bool:
        """With a token: ``Authorization: Bearer <token>``, or (for a browser on the review page) basic auth with
        the token as the password and any user name (recorded as who gave a verdict)."""
        self._user = ""
        token = self.server.token
        if token is None:
            return True
        given = self.headers.get("Authorization") or ""
        if hmac.compare_digest(given.encode("utf-8", "replace"), f"Bearer {token}".encode()):
            return True
        if given.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(given[6:], validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, password = "", ""
            if hmac.compare_digest(password.encode(), token.encode()):
                self._user = user[:100]
                return True
        logger.warning("%s: %s %s without a valid bearer token: 401", self.address_string(), self.command,
                       urlsplit(self.path).path)
        challenge = 'Basic realm="fbvision review", charset="UTF-8"' if browser else "Bearer"
        self._reply(401, {"error": "Authorization: Bearer <token> required (or basic auth, the token as password)"},
                    {"WWW-Authenticate": challenge})
        return False

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self._replied = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        if content_type.startswith("text/html"):
            self.send_header("Content-Security-Policy", review.CSP)  # only our inline scripts (by hash) run
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _html(self, body: bytes, status: int = 200) -> None:
        self._send(status, body, "text/html; charset=utf-8", {"Cache-Control": "no-store"})

    def _redirect(self, location: str) -> None:
        self._send(303, b"", "text/plain", {"Location": location})

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self._answering(self._get)

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        self._answering(self._post)

    def do_HEAD(self) -> None:  # noqa: N802 - the stdlib's name
        self._answering(self._get)

    def _get(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/" or url.path.startswith(("/review", "/evidence/", "/api/", "/verdicts.csv", "/missed.csv")):
            if self._authorized(browser=True):
                self._get_review(url.path, {k: v[0] for k, v in parse_qs(url.query).items()})
            return
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

    def _body(self, *content_types: str) -> bytes | None:
        """The request body, or None when an error was answered (length, size, content type)."""
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            self._reply(411, {"error": "Content-Length required"})
            return None
        try:
            length = int(length_header)
        except ValueError:
            self._reply(400, {"error": "bad Content-Length"})
            return None
        if length < 0 or length > self.server.max_body_bytes:
            self._reply(413, {"error": f"body over {self.server.max_body_bytes} bytes"})
            return None
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type not in content_types:
            self._reply(415, {"error": f"Content-Type must be {' or '.join(content_types)}"})
            return None
        raw = self.rfile.read(length)
        if len(raw) != length:
            self._reply(400, {"error": f"body shorter than Content-Length ({len(raw)} < {length})"})
            return None
        return raw

    def _post(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith(("/review/", "/api/")):
            if self._authorized(browser=True):
                self._post_review(path)
            return
        if path != "/alerts":
            self._reply(404, {"error": "POST /alerts only"})
            return
        if not self._authorized():
            return
        raw = self._body("application/json")
        if raw is None:
            return
        try:
            event = AlertEvent.from_json(raw)  # parsed once; fields a newer writer added are ignored
        except ValidationError as exc:
            if is_not_json(exc):  # not UTF-8 included
                self._reply(400, {"error": "body is not JSON", "detail": str(exc)[:300]})
            else:
                self._reply(422, {"error": "not an alert event", "detail": str(exc)[:500]})
            return
        text = raw.decode("utf-8")  # valid: the parse above checked it
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


    # -- the review page (fbvision.alerts.review) ----------------------------------------------------------------
    def _get_review(self, path: str, query: dict[str, str]) -> None:
        store = self.server.store
        if path == "/":
            self._send(302, b"", "text/plain", {"Location": "/review"})
        elif path.startswith("/evidence/"):
            self._evidence(unquote(path[len("/evidence/"):]))
        elif path == "/review":
            try:
                episodes = review.filter_episodes(store.episodes(), query)
            except ValueError as exc:
                self._html(review.page("bad filter", f"<p>bad filter: {review.e(str(exc))}</p>"), 400)
                return
            everything = store.episodes()
            cameras = sorted({ep["camera_id"] for ep in everything})
            rules = sorted({ep["rule"] for ep in everything})
            self._html(review.list_page(episodes, query, cameras, rules))
        elif path.startswith("/review/alert/"):
            key = unquote(path[len("/review/alert/"):])
            ep = store.episode(key)
            if ep is None:
                self._html(review.page("no such alert", "<p>No such alert.</p>"), 404)
                return
            try:
                ordered = [x["episode_key"] for x in review.filter_episodes(store.episodes(), query)]
            except ValueError:
                ordered = []
            qs = review._qs(query)
            prev_href = next_href = None
            if key in ordered:
                i = ordered.index(key)
                if i > 0:
                    prev_href = f"/review/alert/{ordered[i - 1]}{qs}"
                if i + 1 < len(ordered):
                    next_href = f"/review/alert/{ordered[i + 1]}{qs}"
            self._html(review.alert_page(ep, self._media(ep), store.verdict_history(key), prev_href, next_href, query))
        elif path.startswith("/review/camera/"):
            camera_id = unquote(path[len("/review/camera/"):])
            status = None
            if self.server.status_source is not None:
                try:
                    status = self.server.status_source().get(camera_id)
                except Exception:  # noqa: BLE001 - Redis away: the page says "unknown"
                    status = None
            horse_day = None
            if self.server.horse_day_source is not None:
                try:
                    horse_day = self.server.horse_day_source().get(camera_id)
                except Exception:  # noqa: BLE001 - Redis away: the page goes without it
                    horse_day = None
            episodes = store.episodes(camera_id=camera_id, since=time.time() - 86400)
            self._html(review.camera_page(camera_id, status, episodes, store.missed(camera_id), horse_day))
        elif path == "/api/verdicts":
            self._reply(200, store.verdicts())
        elif path == "/api/missed":
            self._reply(200, store.missed())
        elif path == "/missed.csv":
            self._send(200, review.missed_csv(store.missed()), "text/csv; charset=utf-8",
                       {"Content-Disposition": "attachment; filename=missed.csv"})
        elif path == "/verdicts.csv":
            self._send(200, review.verdicts_csv(store.verdicts()), "text/csv; charset=utf-8",
                       {"Content-Disposition": "attachment; filename=verdicts.csv"})
        else:
            self._reply(404, {"error": f"no such path {path}"})

    def _media(self, ep: dict) -> dict:
        """The raised event's snapshot and clip URLs when the files exist (or when the backend has no evidence
        directory to look in: an external store), and the escalations' snapshots."""
        def present(url: str | None) -> str | None:
            if not url:
                return None
            folder = self.server.evidence_dir
            if folder is None or not url.startswith("/evidence/"):
                return url
            name = url[len("/evidence/"):]
            return url if FILE_RE.match(name) and (folder / name).is_file() else None

        first = ep["events"][0]["evidence"]
        escalations = [present(r["evidence"].get("snapshot")) for r in ep["events"][1:] if r["state"] == "ongoing"]
        return {"snapshot": present(first.get("snapshot")), "clip": present(first.get("clip")),
                "escalations": [u for u in escalations if u]}

    def _evidence(self, name: str) -> None:
        folder = self.server.evidence_dir
        if folder is None or not FILE_RE.match(name):
            self._reply(404, {"error": "no such evidence"})
            return
        path = folder / name
        try:
            data = path.read_bytes()
        except OSError:
            self._reply(404, {"error": "no such evidence (yet)"})
            return
        content_type = "image/jpeg" if name.endswith(".jpg") else "video/mp4"
        headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=60"}
        rng = self.headers.get("Range") or ""
        if rng.startswith("bytes=") and "," not in rng:
            first, _, last = rng[6:].partition("-")
            try:
                if first:
                    start, end = int(first), (int(last) if last else len(data) - 1)
                else:
                    start, end = max(0, len(data) - int(last)), len(data) - 1
            except ValueError:
                start, end = -1, -1
            end = min(end, len(data) - 1)
            if not 0 <= start <= end:
                self._send(416, b"", content_type, {"Content-Range": f"bytes */{len(data)}"})
                return
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            self._send(206, data[start:end + 1], content_type, headers)
            return
        self._send(200, data, content_type, headers)

    def _same_origin(self) -> bool:
        """A form post must come from this page (no cross-site posts from a browser that can reach us)."""
        origin = self.headers.get("Origin")
        if origin and urlsplit(origin).netloc != (self.headers.get("Host") or ""):
            self._reply(403, {"error": "cross-origin post refused"})
            return False
        return True

    def _post_review(self, path: str) -> None:
        store = self.server.store
        if not self._same_origin():
            return
        is_form = path.startswith("/review/")
        raw = self._body("application/x-www-form-urlencoded" if is_form else "application/json")
        if raw is None:
            return
        try:
            data = ({k: v[0] for k, v in parse_qs(raw.decode("utf-8")).items()} if is_form else json.loads(raw))
            if not isinstance(data, dict):
                raise ValueError("a JSON object is expected")
        except ValueError as exc:
            self._reply(400, {"error": f"unreadable body: {exc}"[:300]})
            return
        try:
            if path == "/api/verdicts" or (is_form and path.startswith("/review/alert/") and path.endswith("/verdict")):
                key = str(data.get("episode_key") or "") if not is_form else \
                    unquote(path[len("/review/alert/"):-len("/verdict")])
                verdict, note, who, start, end = review.check_verdict(data)
                if not store.add_verdict(key, verdict, note, who or self._user or "reviewer", start, end):
                    self._reply(404, {"error": "no such alert episode"})
                    return
                logger.info("verdict %s on episode %s by %s", verdict, key, who or self._user or "reviewer")
                if is_form:
                    self._redirect(f"/review/alert/{key}?{urlsplit(self.path).query}".rstrip("?"))
                else:
                    self._reply(201, {"stored": True})
            elif path == "/api/missed" or (is_form and path.startswith("/review/camera/") and path.endswith("/missed")):
                camera_id = str(data.get("camera_id") or "") if not is_form else \
                    unquote(path[len("/review/camera/"):-len("/missed")])
                if not camera_id:
                    raise ValueError("camera_id is required")
                rule, start, end, note, who = review.check_missed(data)
                store.add_missed(camera_id, rule, start, end, note, who or self._user or "reviewer")
                if is_form:
                    self._redirect(f"/review/camera/{camera_id}")
                else:
                    self._reply(201, {"stored": True})
            else:
                self._reply(404, {"error": f"no such path {path}"})
        except ValueError as exc:
            self._reply(400, {"error": str(exc)[:300]})


class _AlertHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # restart on the same port right after a stop (outage tests)

    def __init__(self, address: tuple[str, int], store: AlertStore, max_body_bytes: int, *,
                 token: str | None = None, request_timeout_s: float = REQUEST_TIMEOUT_S,
                 evidence_dir: Path | None = None, status_source=None, horse_day_source=None):
        self.evidence_dir = evidence_dir
        self.status_source = status_source
        self.horse_day_source = horse_day_source
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
        evidence_dir: str | Path | None = None, status_source=None, horse_day_source=None,
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
        self.evidence_dir = Path(evidence_dir) if evidence_dir else None  # served under /evidence/
        self.status_source = status_source  # () -> {camera id: status} for the camera pages (optional)
        # () -> {camera id: time budget (TimeBudgetSummary.to_dict())}: a horse's day on the camera pages (optional)
        self.horse_day_source = horse_day_source
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
                                        request_timeout_s=self.request_timeout_s, evidence_dir=self.evidence_dir,
                                        status_source=self.status_source, horse_day_source=self.horse_day_source)
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
    parser.add_argument("--evidence", default=None,
                        help="evidence directory served under /evidence/ (snapshots and clips; the review page shows them)")
    parser.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT_S,
                        help=f"seconds a client may take per read of its request (default {REQUEST_TIMEOUT_S:g})")
    args = parser.parse_args(argv)
    token = args.token or os.environ.get(TOKEN_ENV) or None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        backend = EmbeddedBackend(args.db, host=args.host, port=args.port, token=token,
                                  request_timeout_s=args.request_timeout, evidence_dir=args.evidence).start()
    except ValueError as exc:
        parser.error(str(exc))
    print(f"alert backend: POST {backend.url}  GET {backend.base_url}/alerts  review {backend.base_url}/review"
          "  (Ctrl-C to stop)", flush=True)
    try:
        _wait_forever()
    except KeyboardInterrupt:
        pass
    finally:
        backend.stop()


if __name__ == "__main__":
    main()
