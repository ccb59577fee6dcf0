"""The connection to Redis: clients (one server, or split roles with an ephemeral frames server; Redis Cluster),
retries, the Lua scripts (loaded from ``scripts/*.lua`` and registered once per client), consumer groups.

Two Redis roles: with ``frames_url`` (``redis.frames_url``) the frame queue lives in a Redis of its own, an
*ephemeral* one (no persistence, sized for bandwidth): ``batch_frames``, the frames' once keys and
``once:frames_epoch`` go there - the frame ops (:mod:`fbvision.core.transport.frames`) use ``frames_client``;
everything else (results, outbox, episodes, leases, statuses, counters - the cap's ``dropped:queue_full`` too -,
dead letters, snapshots, the reference clock) stays on the *durable* one (``url``, ``client``: AOF in production).
Without ``frames_url`` (the embedded default) both roles are one server and ``frames_client is client``.

Redis Cluster: a URL with ``?cluster=1`` (or ``cluster=True``) connects with ``redis.cluster.RedisCluster`` through
any one node. Every command the pipeline sends that names several keys (the bounded push script, ``XREADGROUP``
over the partitions, the fenced scripts that read, claim and commit results) needs them in one hash slot, so in
cluster mode the keys are always hash-tagged: with the configured namespace, or ``{fbv}`` when none is set. TLS is
the URL's business: ``rediss://`` plus redis-py's ``ssl_*`` query arguments (``?ssl_ca_certs=/etc/fbv/ca.pem``).
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from fbvision.core.redact import redact_url
from fbvision.core.transport.errors import TransportUnavailable, guard
from fbvision.core.transport.keys import CLUSTER_DEFAULT_NAMESPACE, OUTBOX_GROUP, RESULTS_GROUP, Keys

if TYPE_CHECKING:
    from fbvision.core.config import RedisConfig

logger = logging.getLogger("fbvision.core.transport")

CLUSTER_QUERY_FLAG = "cluster"
_TRUE = {"1", "true", "yes", "on"}

#: What an id read back from Redis (a logic worker, a consumer, a counter writer, a snapshot's process name, a
#: counter name) must look like: what the stages write (``logic@host:pid``, ``frames_pushed:barn-a``). Anyone
#: with write access can put anything there; one undecodable ``logic:workers`` member used to crash-loop every
#: logic worker. Readers skip what does not match and count it in :attr:`Connection.invalid_ids`.
REDIS_ID_RE = re.compile(r"^[A-Za-z0-9_.:@\-]{1,200}$")


def valid_redis_id(raw: bytes | str, pattern: re.Pattern = REDIS_ID_RE) -> str | None:
    """``raw`` as text when it is a well-formed id (ASCII, matching ``pattern``), else None."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError:
            return None
    return raw if isinstance(raw, str) and pattern.match(raw) else None


def new_token() -> str:
    """A random id for a write attempt or a counter writer."""
    return secrets.token_hex(8)


def decode_id(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def split_cluster_flag(url: str) -> tuple[str, bool]:
    """``redis://host:port/0?cluster=1`` -> (``redis://host:port/0``, True). The flag is ours, not redis-py's,
    so it is taken out of the URL before redis-py parses it; every other query argument stays."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    flags = [v for k, v in query if k == CLUSTER_QUERY_FLAG]
    if not flags:
        return url, False
    rest = urlencode([(k, v) for k, v in query if k != CLUSTER_QUERY_FLAG])
    return urlunsplit(parts._replace(query=rest)), flags[-1].strip().lower() in _TRUE


def url_user(url: str) -> str | None:
    """The ACL user a URL logs in as (``redis://fbv-camera:pw@host``), None for the default user."""
    parts = urlsplit(url)
    return unquote(parts.username) if parts.username else None


_SCRIPT_TEXT: dict[str, str] = {}


def script_text(name: str) -> str:
    """The Lua source of ``scripts/<name>.lua`` (package data, read once)."""
    text = _SCRIPT_TEXT.get(name)
    if text is None:
        text = resources.files("fbvision.core.transport").joinpath("scripts", f"{name}.lua").read_text("utf-8")
        _SCRIPT_TEXT[name] = text
    return text


class _OutageRetry(Retry):
    """redis-py's Retry, except for a wrong password: AuthenticationError subclasses ConnectionError, but it is
    a configuration error, and retrying it would only delay the message by the whole back-off."""

    def call_with_retry(self, do, fail, is_retryable=None, with_failure_count=False):
        def retryable(error: Exception) -> bool:
            if isinstance(error, AuthenticationError):
                return False
            return is_retryable(error) if is_retryable else True

        return super().call_with_retry(do, fail, retryable, with_failure_count)


class Connection:
    """The clients, the keys and the settings every facade shares. Thread-safe (redis-py pools connections)."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "",
        frame_queue_cap: int = 256,
        result_partitions: int = 8,
        result_stream_maxlen: int = 100_000,
        outbox_maxlen: int = 1_000_000,
        socket_timeout_s: float = 5.0,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
        retries: int = 6,
        client_name: str | None = None,
        cluster: bool | None = None,
        frames_url: str | None = None,
    ):
        self.url = url
        self.safe_url = redact_url(url)
        #: The ACL user of the durable Redis (None: the default user), named in permission errors.
        self.acl_user = url_user(url)
        #: The ephemeral frames Redis's URL, None when frames share the durable server.
        self.frames_url = frames_url if frames_url and frames_url != url else None
        self.safe_frames_url = redact_url(self.frames_url) if self.frames_url else None
        self.safe_urls = self.safe_url + (f" (frames: {self.safe_frames_url})" if self.safe_frames_url else "")
        client_url, url_says_cluster = split_cluster_flag(url)
        self.cluster = url_says_cluster if cluster is None else cluster
        if self.cluster and not namespace:
            namespace = CLUSTER_DEFAULT_NAMESPACE  # multi-key commands need one slot: hash-tag every key
        self.keys = Keys(namespace)
        self.frame_queue_cap = frame_queue_cap
        self.result_partitions = result_partitions
        self.result_stream_maxlen = result_stream_maxlen
        self.outbox_maxlen = outbox_maxlen
        self.socket_timeout_s = socket_timeout_s
        self.retry_max_s = retry_max_s
        options = dict(
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=min(socket_timeout_s, 2.0),
            retry=_OutageRetry(ExponentialWithJitterBackoff(cap=retry_max_s, base=retry_initial_s), retries),
            retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError],
            health_check_interval=10,
            client_name=client_name,
        )
        if self.cluster:
            # Any one node's URL; the client learns the others (and follows MOVED/ASK) by itself.
            self.client = RedisCluster.from_url(client_url, **options)
        else:
            self.client = redis.Redis.from_url(client_url, **options)
        self.frames_client = self.client
        if self.frames_url:
            frames_client_url, frames_cluster = split_cluster_flag(self.frames_url)
            if frames_cluster:
                self.frames_client = RedisCluster.from_url(frames_client_url, **options)
            else:
                self.frames_client = redis.Redis.from_url(frames_client_url, **options)
        self._scripts: dict[tuple[str, bool], object] = {}
        self._scripts_lock = threading.Lock()
        self._groups_ready: set[str] = set()
        #: Malformed ids and values read back from Redis and skipped, by kind (``logic_worker``, ``camera_status``,
        #: ``stats_field``, ``snapshot`` ...): running totals, which the stages fold into their counters.
        self.invalid_ids: Counter[str] = Counter()


    def _script(self, name: str, frames: bool = False):
        """The registered script ``scripts/<name>.lua`` on the durable client (or the frames client): registered
        once per transport (redis-py then runs it by EVALSHA, loading it again after a server restart)."""
        key = (name, frames)
        script = self._scripts.get(key)
        if script is None:
            with self._scripts_lock:
                script = self._scripts.get(key)
                if script is None:
                    client = self.frames_client if frames else self.client
                    script = self._scripts[key] = client.register_script(script_text(name))
        return script

    def _skipped_invalid(self, kind: str, raws: Sequence[object]) -> None:
        """Count malformed ids/values read back from Redis; log the 1st, 2nd, 4th, 8th ... of a kind (bounded
        logging under a flood), with the value's repr cut short."""
        before = self.invalid_ids[kind]
        self.invalid_ids[kind] += len(raws)
        after = self.invalid_ids[kind]
        if after.bit_length() > before.bit_length():
            logger.warning("skipped %d malformed %s value(s) read from Redis (%d so far), e.g. %.80r",
                           len(raws), kind, after, raws[0])

    @classmethod
    def from_config(cls, cfg: RedisConfig, url: str | None = None, **kwargs):
        url = url or cfg.url
        if not url:
            raise ValueError("no Redis URL: set redis.url / REDIS_URL, or start the embedded server")
        return cls(
            url,
            namespace=cfg.namespace,
            frame_queue_cap=cfg.frame_queue_cap,
            result_partitions=cfg.result_partitions,
            result_stream_maxlen=cfg.result_stream_maxlen,
            socket_timeout_s=cfg.socket_timeout_s,
            retry_initial_s=cfg.retry_initial_s,
            retry_max_s=cfg.retry_max_s,
            frames_url=kwargs.pop("frames_url", cfg.frames_url),
            **kwargs,  # cluster mode: the URL says (?cluster=1), or cluster=True here
        )

    def _block_s(self, timeout_s: float) -> float:
        """Blocking timeouts stay below the socket timeout, or the socket would time out first."""
        return max(0.001, min(timeout_s, self.socket_timeout_s * 0.8))

    @property
    def split_roles(self) -> bool:
        """True when frames go to a Redis of their own (``frames_url``)."""
        return self.frames_client is not self.client

    def close(self) -> None:
        self.client.close()
        if self.split_roles:
            self.frames_client.close()

    @guard
    def ping(self) -> bool:
        ok = bool(self.client.ping())
        if self.split_roles:
            ok = bool(self.frames_client.ping()) and ok
        return ok

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.ping()
                return
            except TransportUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # -- the reference clock -----------------------------------------------------------------------
    @guard
    def server_time(self) -> float:
        """The Redis server's clock (``TIME``) in unix seconds: the one clock all hosts share."""
        reply = self.client.time()
        if isinstance(reply, dict):  # a cluster answers per node: any one node's clock will do
            reply = next(iter(reply.values()))
        seconds, micros = reply
        return int(seconds) + int(micros) / 1e6

    # -- consumer groups ---------------------------------------------------------------------------
    def _group_streams(self) -> list[tuple[str, str]]:
        streams = [(self.keys.results(p), RESULTS_GROUP) for p in range(self.result_partitions)]
        streams.append((self.keys.outbox, OUTBOX_GROUP))
        return streams

    @guard
    def ensure_groups(self, only: str | None = None) -> None:
        """Create the consumer groups (idempotent): all, or only ``RESULTS_GROUP``'s or ``OUTBOX_GROUP``'s - a stage
        creates just the group it reads, so its Redis ACL user needs no rights on the other stage's streams."""
        for key, group in self._group_streams():
            if only is not None and group != only:
                continue
            self._ensure_group(key, group)

    def _ensure_group(self, key: str, group: str) -> None:
        ready = f"{group}\x1f{key}"
        if ready in self._groups_ready:
            return
        try:
            self.client.xgroup_create(key, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups_ready.add(ready)

    def _read_group(self, group: str, consumer: str, streams: dict[str, str], count: int, block_ms: int | None):
        reply = self.client.xreadgroup(group, consumer, streams, count=count, block=block_ms)
        return reply or []


def admin_client(url: str, **kwargs) -> redis.Redis:
    """A plain redis-py client of ``url``, outside the pipeline's key table: for a server's readiness check, tools
    and tests (the embedded server's :meth:`fbvision.run.redis_server.EmbeddedRedis.client`)."""
    return redis.Redis.from_url(url, **kwargs)


def answers_ping(client: redis.Redis) -> bool:
    """True when the server answers PING now; False on any Redis error (not started yet, loading...)."""
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
