"""Deliver alerts from the durable outbox to the backend by HTTP POST (see docs/alerts.md).

The logic worker writes each alert event to the Redis stream ``alerts:outbox`` (in the same transaction
that acknowledges the results which produced it). :class:`AlertDelivery` reads that stream through the
consumer group ``delivery`` and POSTs each event, as JSON with an ``Idempotency-Key`` header, to the
backend. An entry is acknowledged only after the backend accepted it, so:

* **an outage delays, never drops**: a connection error, timeout, 5xx, 408/425/429, a redirect or a
  401/403/404/405/407 (the backend or its URL/credentials are wrong, not this alert) leaves the entry
  pending; delivery backs off exponentially with jitter (``retry_initial_s`` doubling up to
  ``retry_max_s``, or longer when a ``Retry-After`` asks for it, capped at ``retry_max_s``) and then retries the
  OLDEST pending entry first, so one camera's events arrive in order;
* **a crash or restart duplicates at most**: an event POSTed but not yet acknowledged is POSTed again,
  with the same idempotency key; the backend must store each key once (the embedded backend does);
* **a poison event cannot block the queue**: every entry is validated against the alert schema
  (:class:`~fbvision.core.events.AlertEvent`) and its idempotency key must be a valid header value (visible
  ASCII, no newline) before it is POSTed; what fails (``unparseable``, ``invalid_event``,
  ``invalid_idempotency_key``), or draws a 4xx that is about the payload (400, 413, 415, 422, ...), is
  dead-lettered with its FULL payload and the reason, acknowledged, counted (``failed_permanent`` and
  ``failed_permanent:<reason>``) and logged as an error;
* **retry budget**: an entry the backend fails on (HTTP 500), or on which delivery itself raises (any
  exception: one entry never stops the stage), is retried with the same back-off up to
  ``alerts.max_attempts`` times, then dead-lettered the same way. Outage answers (no connection, timeouts,
  502/503/504, 408/425/429, 401/403/404...) never count against it: an outage of any length delays, never
  drops. And a backend that fails on *every* alert is an outage too: once one entry was dead-lettered on its
  budget, the next ones are not until some alert has been accepted again (at most one per such period).

Delivered entries are acknowledged AND deleted (``Transport.ack_alerts``: XACK, then XDEL / XTRIM MINID of what no
sink's consumer group still needs, one script), so the outbox holds only what is not delivered yet; every XADD also carries ``MAXLEN ~ alerts.outbox_maxlen``.
With ``alerts.backend_token`` set every POST carries ``Authorization: Bearer <token>``.

Consumers: start with this consumer's own pending entries (what its previous incarnation left - keep the
name stable across restarts), then claim entries that another, dead, consumer left pending for
``claim_idle_s``, then new ones. With several consumers per-camera order is no longer guaranteed
(alerts carry ``updated_at`` for that); one consumer per pipeline is the intended deployment.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from typing import TYPE_CHECKING

import requests
from pydantic import ValidationError

from fbvision.core.configbase import reveal
from fbvision.core.events import AlertEvent, is_not_json
from fbvision.core.loop import Backoff, StageLoop
from fbvision.core.metrics import Counters, LatencyStats, set_queue_depth, snapshot
from fbvision.core.redact import mask_url
from fbvision.core.transport import OUTBOX_QUEUE, StreamEntry, Transport, TransportUnavailable

if TYPE_CHECKING:
    from fbvision.core.config import AlertsConfig

logger = logging.getLogger(__name__)

DEAD_LETTER_QUEUE = OUTBOX_QUEUE
#: 4xx answers that say "the backend (its URL, credentials, load) is not right now", not "this alert is bad".
RETRY_4XX = frozenset({401, 403, 404, 405, 407, 408, 421, 425, 429})
DUPLICATE_STATUS = 409
#: Answers that say "the backend failed on this alert" (it is up, and answered): they count against the entry's
#: retry budget (alerts.max_attempts). 502/503/504 are gateways and overload: outages, never counted.
ENTRY_FAILURE_5XX = frozenset({500})
#: Exceptions of a POST that say "the backend is not reachable (or its URL is wrong)", not "this alert is bad".
OUTAGE_ERRORS = (
    requests.ConnectionError, requests.Timeout, requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema,
)
#: An idempotency key travels as an HTTP header: visible ASCII only (no newline, nothing http.client would have
#: to encode as latin-1), and short.
HEADER_SAFE_KEY = re.compile(r"[\x21-\x7e]{1,200}")
REPORT_INTERVAL_S = 1.0

_DELIVERED, _RETRY, _POISON = "delivered", "retry", "poison"


class AlertDelivery:
    """Outbox -> HTTP POST with retry; ``run(stop)`` until ``stop`` is set."""

    def __init__(
        self,
        transport: Transport,
        config: AlertsConfig,
        consumer_name: str,
        *,
        session: requests.Session | None = None,
        backend_url: str | None = None,
        claim_idle_s: float | None = None,
        claim_interval_s: float = 5.0,
        batch_size: int = 50,
        clock=time.monotonic,
        rng: random.Random | None = None,
        token: str | None = None,
    ):
        self.transport = transport
        self.config = config
        self.consumer = consumer_name
        self.url = backend_url or config.backend_url
        if not self.url:
            raise ValueError("no backend URL: set alerts.backend_url or pass backend_url (the embedded backend's url)")
        self.safe_url = mask_url(self.url)
        self._headers = {"Content-Type": "application/json"}
        token = token or reveal(config.backend_token)
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._own_session = session is None
        self.session = session or requests.Session()
        # A live consumer touches its pending entries at least every retry_max_s; only take over what sat
        # idle clearly longer than that, or two live consumers would keep stealing from each other.
        self.claim_idle_s = claim_idle_s if claim_idle_s is not None else max(
            30.0, 2 * config.retry_max_s + config.timeout_s
        )
        self.claim_interval_s = claim_interval_s
        self.batch_size = batch_size
        self.clock = clock
        self.rng = rng or random.Random()
        self.counters = Counters(prometheus_stage="delivery")
        self.counters.declare("delivered", "duplicate", "retried", "failed_permanent", "lost_trimmed",
                              "entry_failures", "redis_unavailable")
        self.latency = LatencyStats(prometheus_stage_prefix="delivery_")
        self._failures = 0  # consecutive failed attempts
        self._retry_at = 0.0  # clock() time of the next attempt while backing off
        self._outage_since: float | None = None
        self._next_claim = 0.0
        self._outbox_pending = 0
        self._attempts: dict[str, int] = {}  # entry id -> failures that count against its budget
        self._gave_up_since_success = False  # an entry was dead-lettered on its budget, nothing accepted since

    # -- one pass ----------------------------------------------------------------------------------
    @property
    def backing_off(self) -> bool:
        return self.clock() < self._retry_at

    def step(self, block_s: float = 1.0) -> int:
        """Deliver what there is now (own pending, else claimed stale, else new - blocking up to
        ``block_s``); returns how many entries were settled (delivered or dead-lettered). Does nothing
        while backing off. Raises TransportUnavailable when Redis is away."""
        if self.backing_off:
            return 0
        entries = self.transport.read_alerts(self.consumer, pending=True, count=self.batch_size)
        if not entries and self.clock() >= self._next_claim:
            self._next_claim = self.clock() + self.claim_interval_s
            entries = self.transport.claim_stale_alerts(self.consumer, self.claim_idle_s, count=self.batch_size)
            if entries:
                self.counters.incr("claimed", len(entries))
                logger.warning("took over %d alert(s) a dead delivery consumer left pending", len(entries))
        if not entries:
            entries = self.transport.read_alerts(self.consumer, pending=False, count=self.batch_size, block_s=block_s)
        settled = 0
        for entry in entries:
            if self._settle(entry) == _RETRY:
                break  # keep order: nothing after an undelivered entry goes first
            settled += 1
        return settled

    def _settle(self, entry: StreamEntry) -> str:
        """:meth:`_deliver` with any failure of this one entry caught: it counts against the entry's retry
        budget (then the entry is dead-lettered), it never ends the stage."""
        try:
            return self._deliver(entry)
        except TransportUnavailable:
            raise  # Redis is away or refused (OOM, READONLY...): the loop backs off, the entry stays pending
        except Exception as exc:  # noqa: BLE001 - whatever one entry does, the ones behind it must go on
            logger.debug("alert outbox entry %s: delivery raised", entry.entry_id, exc_info=True)
            return self._entry_failed(entry, f"error_{type(exc).__name__}", f"{type(exc).__name__}: {exc}")

    def _deliver(self, entry: StreamEntry) -> str:
        if not entry.payload:
            # Trimmed out of the outbox (outbox_maxlen reached while undelivered): gone, say so loudly.
            logger.error("alert outbox entry %s was trimmed before delivery: raise alerts.outbox_maxlen", entry.entry_id)
            self.counters.incr("lost_trimmed")
            self.transport.ack_alerts([entry.entry_id])
            return _POISON
        try:
            event = AlertEvent.from_json(entry.payload)  # parsed once; fields a newer writer added are ignored
        except ValidationError as exc:
            if is_not_json(exc):  # not UTF-8 included
                return self._poison(entry, "unparseable", _short_errors(exc))
            return self._poison(entry, "invalid_event", _short_errors(exc))
        key = event.idempotency_key
        if not HEADER_SAFE_KEY.fullmatch(key):
            return self._poison(entry, "invalid_idempotency_key",
                                f"{key[:80]!r} is not a valid header value (1-200 visible ASCII characters)")
        headers = {**self._headers, "Idempotency-Key": key}
        t0 = time.monotonic()
        try:
            response = self.session.post(
                self.url, data=entry.payload, headers=headers, timeout=self.config.timeout_s, allow_redirects=False
            )
        except OUTAGE_ERRORS as exc:
            return self._retry_later(f"{type(exc).__name__}", None)
        finally:
            self.latency.add("post", time.monotonic() - t0)
        status = response.status_code
        if 200 <= status < 300 or status == DUPLICATE_STATUS:
            self.transport.ack_alerts([entry.entry_id])
            self._attempts.pop(entry.entry_id, None)
            duplicate = status == DUPLICATE_STATUS or _says_duplicate(response)
            self.counters.incr("duplicate" if duplicate else "delivered")
            if event.updated_at > 0:
                self.latency.add("capture_to_backend", time.time() - event.updated_at)
            self._recovered()
            logger.debug("camera %s: alert %s delivered (HTTP %d)", event.camera_id, key, status)
            return _DELIVERED
        if status in ENTRY_FAILURE_5XX:
            return self._entry_failed(entry, f"http_{status}", response.text[:300])
        if status >= 500 or status in RETRY_4XX or 300 <= status < 400 or status < 200:
            return self._retry_later(f"HTTP {status}", response.headers.get("Retry-After"))
        return self._poison(entry, f"http_{status}", response.text[:300])

    def _entry_failed(self, entry: StreamEntry, reason: str, detail: str) -> str:
        """One failure that is about this entry: back off and retry it (order is kept), or dead-letter it once
        it has failed ``max_attempts`` times - unless one was dead-lettered that way since the last accepted
        alert: then the backend fails on everything, which is an outage, and the entry waits."""
        self.counters.incr("entry_failures")
        n = self._attempts.get(entry.entry_id, 0) + 1
        budget = self.config.max_attempts
        if n >= budget and not self._gave_up_since_success:
            self._attempts.pop(entry.entry_id, None)
            self._gave_up_since_success = True
            return self._poison(entry, reason, f"{detail} (failed {n} times)")
        self._attempts[entry.entry_id] = n
        if len(self._attempts) > 10_000:  # entries another consumer settled meanwhile: forget, do not grow
            self._attempts = {entry.entry_id: n}
        if n >= budget:
            logger.error("alert outbox entry %s failed %d times (%s: %s) but so does every alert since the last "
                         "dead-lettered one: treating it as a backend outage, keeping it", entry.entry_id, n, reason,
                         detail[:200])
        else:
            logger.warning("alert outbox entry %s failed (%s: %s), attempt %d of %d", entry.entry_id, reason,
                           detail[:200], n, budget)
        return self._retry_later(reason, None, outage=False)

    def _poison(self, entry: StreamEntry, reason: str, detail: str) -> str:
        logger.error(
            "alert outbox entry %s rejected permanently (%s): %s - dead-lettered with its payload, not retried",
            entry.entry_id, reason, detail,
        )
        # Dead letter first, then ack+delete: a crash in between leaves a second dead letter, never none.
        self.transport.dead_letter(DEAD_LETTER_QUEUE, reason, entry.payload, detail=detail, full=True)
        self.transport.ack_alerts([entry.entry_id])
        self.counters.incr("failed_permanent")
        self.counters.incr(f"failed_permanent:{reason}")
        return _POISON

    def _retry_later(self, why: str, retry_after: str | None, *, outage: bool = True) -> str:
        self._failures += 1
        self.counters.incr("retried")
        cfg = self.config
        delay = min(cfg.retry_max_s, cfg.retry_initial_s * 2 ** min(self._failures - 1, 30))
        delay *= self.rng.uniform(0.5, 1.0)  # jitter: many pipelines do not hammer a recovering backend at once
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), cfg.retry_max_s))
            except ValueError:
                pass  # an HTTP-date: ignore, our own back-off applies
        self._retry_at = self.clock() + delay
        if not outage:
            return _RETRY  # _entry_failed logged it: the backend is up, it failed on this one entry
        if self._outage_since is None:
            self._outage_since = self.clock()
            logger.warning("backend %s unavailable (%s): keeping alerts in the outbox, retrying", self.safe_url, why)
        else:
            logger.info("backend %s still unavailable (%s, attempt %d), next try in %.1f s",
                        self.safe_url, why, self._failures, delay)
        return _RETRY

    def _recovered(self) -> None:
        if self._outage_since is not None:
            logger.warning("backend %s reachable again after %.1f s", self.safe_url, self.clock() - self._outage_since)
        self._failures = 0
        self._retry_at = 0.0
        self._outage_since = None
        self._gave_up_since_success = False

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        logger.info("alert delivery %s -> %s", self.consumer, self.safe_url)
        self.loop().run(stop)

    def loop(self) -> StageLoop:
        """The stage loop with the delivery's policy: a Redis outage backs off up to 5 s (the backend's own
        back-off is ``_retry_later``'s), an error of one entry is caught by :meth:`_settle` (retry budget,
        then dead letter); an error outside any entry (a bug) is not caught: the process restarts. Counters go
        out every ``REPORT_INTERVAL_S``, and while the backend is backed off from the loop idles (at most 1 s at
        a time) until the next attempt is due."""
        return StageLoop(
            f"alert delivery {self.consumer}", self._step, counters=self.counters,
            outage_counter="redis_unavailable", backoff=Backoff(0.1, 5.0, random.Random()), on_error="raise",
            flush=self.report, flush_interval_s=REPORT_INTERVAL_S, idle_wait_s=1.0, idle=self._wait_for_retry,
            shutdown=self._shutdown, clock=self.clock,
        )

    def _step(self, stop: threading.Event) -> bool:
        if self.backing_off:
            return False  # the loop idles until the retry is due
        self.step(block_s=1.0)  # blocks on the outbox when there is nothing: no idle wait after it
        return True

    def _wait_for_retry(self, stop: threading.Event, at_most_s: float) -> None:
        stop.wait(min(at_most_s, max(0.0, self._retry_at - self.clock())))

    def _shutdown(self) -> None:
        if self._own_session:
            self.session.close()
        logger.info("alert delivery %s stopped: %s", self.consumer, self.counters.snapshot())

    def report(self) -> None:
        """Counters (running totals) and the snapshot to Redis; the outbox depth to Prometheus."""
        self._outbox_pending = self.transport.outbox_pending()
        set_queue_depth("delivery", OUTBOX_QUEUE, self._outbox_pending)
        self.transport.report_totals("delivery", self.counters.writer, self.counters.snapshot())
        self.transport.put_snapshot(f"delivery:{self.consumer}", self.snapshot())

    def snapshot(self) -> dict[str, object]:
        return snapshot(
            self.latency, self.counters,
            backend=self.safe_url, outbox_pending=self._outbox_pending, backing_off=self.backing_off,
            consecutive_failures=self._failures,
        )


def _short_errors(exc: ValidationError) -> str:
    """The schema errors of an entry, short: field path and message (no input values: they can be huge)."""
    parts = [f"{'.'.join(str(x) for x in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()[:5]]
    return "; ".join(parts)[:500]


def _says_duplicate(response: requests.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("duplicate") is True
