"""Everything that touches Redis: key names, commands, retries. No other module knows a key name.

Keys (``K`` = the namespace prefix, empty by default; with a namespace every key is hash-tagged
``{ns}:...`` so a Redis Cluster keeps them in one slot):

=============================  ========  ====================================================================
key                            type      what
=============================  ========  ====================================================================
``K batch_frames``             list      encoded frame messages, FIFO (RPUSH / LPOP), capped: oldest dropped
``K batch_results:<p>``        stream    encoded result messages of the cameras hashed to partition ``p``;
                                         consumer group ``logic``; entry field ``r``
``K alerts:outbox``            stream    alert events (JSON), consumer group ``delivery``; field ``a``; capped
                                         (``MAXLEN ~ alerts.outbox_maxlen``), delivered entries deleted (XDEL)
``K cameras:status``           hash      camera id -> status JSON (state, since, last_frame_ts, detail)
``K stats:<stage>``            hash      counters of a stage (``frames_in``, ``dropped:stale`` ...), the sum of
                                         its writers' totals
``K stats:<stage>:w:<writer>`` hash      one writer's totals as last reported (expires a day after its last report)
``K once:<digest>``            string    a frame/result already written, and by which write (expires)
``K once:frames_epoch``        string    split roles only, in the frames Redis: set by the first push of its lifetime; a push
                                         that has to set it again knows the server lost its frames (counted)
``K dead_letter``              list      (capped) JSON records of messages that could not be decoded
``K logic:lease:<p>``          string    the lease token of result partition ``p``'s owner (expires):
                                         ``<worker id>@<process instance>.<n>``, checked by every owner write
``K logic:workers``            zset      live logic workers, scored by last heartbeat
``K logic:episodes``           hash      camera id -> open alert episodes (JSON), so a restart re-raises nothing
``K logic:baselines``          hash      camera id -> the horse's own normal (JSON, ``fbvision.logic.baseline``):
                                         bouts and lying minutes of its last N days, written when a day closes
``K logic:timebudgets``        hash      camera id -> its time budget (a horse's day, JSON: the 24 h bins and bouts,
                                         ``TimeBudget.to_dict``), written every ``persist_interval_s``
``K evidence:requests``         stream    evidence requests of raised/escalated alerts (JSON, field ``e``), read by
                                         the camera managers (plain XREAD, no group); capped (``MAXLEN ~``)
``K metrics:snapshots``          hash      process name -> its latest metrics snapshot (JSON: latency percentiles...)
=============================  ========  ====================================================================

Two Redis roles: with ``frames_url`` (``redis.frames_url``) the frame queue lives in a Redis of its own, an
*ephemeral* one (no persistence, sized for bandwidth): ``batch_frames``, the frames' once keys and
``once:frames_epoch`` go there - the frame ops (:meth:`Transport.push_frames`, :meth:`Transport.pop_frames`,
:meth:`Transport.pop_frames_nowait`, :meth:`Transport.frame_queue_depth`, the queue cap and its trim) use
``frames_client``; everything else (results, outbox, episodes, leases, statuses, counters - the cap's
``dropped:queue_full`` too -, dead letters, snapshots, the reference clock) stays on the *durable* one (``url``,
``client``: AOF in production). Without ``frames_url`` (the embedded default) both roles are one server and
``frames_client is client``. A restart of the frames Redis loses only the frames it held: the next push finds
``once:frames_epoch`` gone, and the pusher counts ``lost:frames_redis_reset`` (the queue length it last saw: an
upper bound of what was lost) and ``frames_redis_resets`` in the durable ``stats:queue``.

Redis Cluster: a URL with ``?cluster=1`` (or ``Transport(..., cluster=True)``) connects with
``redis.cluster.RedisCluster`` through any one node. Every command the pipeline sends that names several keys
(the bounded push script, ``XREADGROUP`` over the partitions, the fenced scripts that read, claim and commit results)
needs them in one hash slot, so in cluster mode the keys are always hash-tagged: with the configured
namespace, or ``{fbv}`` when none is set. TLS is the URL's business: ``rediss://`` plus redis-py's
``ssl_*`` query arguments (``?ssl_ca_certs=/etc/fbv/ca.pem``).

Retried writes are idempotent. redis-py retries a command whose reply was lost (a connection killed, a server
frozen past the socket timeout), and the stages retry whole writes after :class:`TransportUnavailable`; the
first attempt may well have been executed. So a frame push and a result publish carry one *once key* per
message (camera, sequence, capture time) and the writer's attempt token: a message whose key exists is not
written again, and the script says whether the key came from this writer's own earlier attempt (the message is
in Redis once: count it as written) or from another write (a genuine duplicate). Counters are reported as the
writer's running totals, which the script turns into increments of the shared hash, so a repeated report adds
nothing.

Blocking calls always use a timeout below the socket timeout. Connection errors are retried with
exponential back-off and jitter by redis-py; when the server stays away, :class:`TransportUnavailable`
is raised and the caller's loop backs off and tries again (no stage dies from an outage). Error replies that
mean "not now" rather than "wrong command" - OOM (maxmemory under noeviction), READONLY (a replica after a
failover), MISCONF (a failed snapshot), LOADING, MASTERDOWN, BUSY, NOGROUP (streams gone after a restart without
persistence: the groups are recreated on the next read) - are outages too: TransportUnavailable with a
``reason`` (:func:`outage_reason`), which the stage loop counts as ``redis_unavailable:<reason>``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from fbvision.core.redact import redact_url
from fbvision.core.wire import CAMERA_ID_RE

if TYPE_CHECKING:
    from fbvision.core.config import RedisConfig

logger = logging.getLogger(__name__)

RESULTS_GROUP = "logic"
OUTBOX_GROUP = "delivery"
CLUSTER_QUERY_FLAG = "cluster"
#: Hash tag of the keys in cluster mode when no namespace is configured.
CLUSTER_DEFAULT_NAMESPACE = "fbv"
_TRUE = {"1", "true", "yes", "on"}
#: The consumer name of a reader that names none (tools, tests). A logic worker reads under a name of its own per
#: process (:attr:`LogicWorker.instance`) and claims the previous owner's pending entries on taking a partition.
PARTITION_CONSUMER = "owner"
#: Between the worker id and the rest of a lease token (``logic-1@<instance>.<n>``): see :meth:`Transport.lease_owner`.
LEASE_TOKEN_SEP = "@"
DEAD_LETTER_CAP = 1000
SHORT_WAIT_S = 0.2  # frame pops shorter than this poll instead of blocking in Redis (see pop_frames)
POLL_INTERVAL_S = 0.001

#: How long a once key lives, from the write's first execution. A repeat comes within seconds of it: redis-py's
#: retries are bounded (~1 min in all), and commands a frozen server received all run when it wakes. Cost:
#: ~170 bytes per key, two keys per frame (push, publish): 100 cameras at 10 fps hold ~40 MB.
ONCE_TTL_MS = 2 * 60 * 1000
#: A logic worker's heartbeat score may be at most this far ahead of the reader's clock (hosts' clocks disagree by
#: far less); a member further ahead, or with a non-numeric or +inf score, is not a worker: skipped and removed.
HEARTBEAT_MAX_AHEAD_S = 300.0
#: How long a writer's reported totals are kept after its last report (then it is presumed gone for good).
WRITER_TOTALS_TTL_MS = 24 * 3600 * 1000

# Push frames, skipping those already pushed (once keys), trim the list to the cap and count what the trim
# dropped - atomically. KEYS: list, stats hash, frames epoch marker, then one once key per message (or none).
# ARGV: cap, counter field ('' = the caller counts: the stats hash lives in the other Redis), attempt token, once
# TTL, epoch mark ('' = none), then the messages. Returns {dropped by the cap, own retries, duplicates, 1 when the
# epoch marker had to be created (a fresh server), queue length after the push}.
_PUSH_BOUNDED = """
local n = redis.call('LLEN', KEYS[1])
local own, dup, fresh = 0, 0, 0
if ARGV[5] ~= '' and redis.call('SET', KEYS[3], ARGV[5], 'NX') then fresh = 1 end
local with_once = #KEYS > 3
for i = 6, #ARGV do
  local write = true
  if with_once then
    local key = KEYS[i - 2]
    if not redis.call('SET', key, ARGV[3], 'NX', 'PX', ARGV[4]) then
      write = false
      if redis.call('GET', key) == ARGV[3] then own = own + 1 else dup = dup + 1 end
    end
  end
  if write then n = redis.call('RPUSH', KEYS[1], ARGV[i]) end
end
local cap = tonumber(ARGV[1])
local dropped = 0
if n > cap then
  dropped = n - cap
  n = cap
  redis.call('LTRIM', KEYS[1], -cap, -1)
  if ARGV[2] ~= '' then redis.call('HINCRBY', KEYS[2], ARGV[2], dropped) end
end
return {dropped, own, dup, fresh, n}
"""

# XADD results, each unless its once key exists. KEYS: once keys (n), then the stream of each result (n).
# ARGV: attempt token, once TTL, maxlen, then the payloads. Returns per result: the entry id, "=" (written by
# this token's earlier attempt) or "!" (written by another write: a duplicate).
_PUBLISH_ONCE = """
local n = #ARGV - 3
local out = {}
for i = 1, n do
  if redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[2]) then
    out[i] = redis.call('XADD', KEYS[n + i], 'MAXLEN', '~', ARGV[3], '*', 'r', ARGV[3 + i])
  elseif redis.call('GET', KEYS[i]) == ARGV[1] then
    out[i] = '='
  else
    out[i] = '!'
  end
end
return out
"""

# Add a writer's running totals to a stage's counters: the hash gets (new total - last reported total) of each
# field, so a report repeated after a lost reply adds nothing. KEYS: stage hash, writer hash. ARGV: writer TTL,
# then (field, total, "i" | "f") triples.
_REPORT_TOTALS = """
for i = 2, #ARGV, 3 do
  local field, total = ARGV[i], ARGV[i + 1]
  -- "or 0" and pcall: a value someone overwrote with garbage must not fail every report of every stage
  -- (a script error crash-loops them); the writer's last total is then taken as 0, the field restarts from it.
  local delta = tonumber(total) - (tonumber(redis.call('HGET', KEYS[2], field) or '0') or 0)
  if delta ~= 0 then
    local ok
    if ARGV[i + 2] == 'i' then
      ok = redis.pcall('HINCRBY', KEYS[1], field, string.format('%d', delta))
    else
      ok = redis.pcall('HINCRBYFLOAT', KEYS[1], field, string.format('%.17g', delta))
    end
    if type(ok) == 'table' and ok.err then
      redis.call('HSET', KEYS[1], field, total)
      redis.call('HINCRBY', KEYS[1], 'invalid:stats_value', 1)
    end
    redis.call('HSET', KEYS[2], field, total)
  end
end
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
"""

# Renew a lease only when we still hold it.
_RENEW_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# Fenced leases (see docs/alerts.md "Fenced leases"). A lease's value is its holder's token: worker id, process
# instance and acquisition number, so a zombie (paused, partitioned, or a second process started with the same
# --id) never passes for the current holder, even after re-taking the partition. Every write a partition owner
# makes on the partition's behalf runs as one script that first checks the token.

# Commit one batch of a partition: ack its results, add its alerts to the outbox and save the touched cameras'
# state - only while ARGV[1] still holds the lease, and all or nothing. KEYS: lease, result stream, outbox,
# episodes hash, baselines hash, time budgets hash. ARGV: token, outbox maxlen, group, n ids, ids..., n alerts,
# alerts..., n states, (camera, state) pairs..., n baselines, (camera, baseline) pairs..., then (camera, time
# budget) pairs. XACK goes first: it is the only command that can fail on its input (a malformed id), and a script that
# fails before its first write writes nothing (a full Redis refuses that first write too). Returns 1, or 0 when
# the lease is not ours (nothing written).
_COMMIT_FENCED = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local i = 4
local n_ids = tonumber(ARGV[i])
if n_ids > 0 then redis.call('XACK', KEYS[2], ARGV[3], unpack(ARGV, i + 1, i + n_ids)) end
i = i + n_ids + 1
local n_alerts = tonumber(ARGV[i])
for j = i + 1, i + n_alerts do
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'a', ARGV[j])
end
i = i + n_alerts + 1
local n_states = tonumber(ARGV[i])
for j = i + 1, i + 2 * n_states, 2 do redis.call('HSET', KEYS[4], ARGV[j], ARGV[j + 1]) end
i = i + 2 * n_states + 1
local n_baselines = tonumber(ARGV[i])
for j = i + 1, i + 2 * n_baselines, 2 do redis.call('HSET', KEYS[5], ARGV[j], ARGV[j + 1]) end
for j = i + 2 * n_baselines + 1, #ARGV, 2 do redis.call('HSET', KEYS[6], ARGV[j], ARGV[j + 1]) end
return 1
"""

# Read new results of the partitions whose lease ARGV still holds (a lease lost since the last renewal is not
# read from, so a zombie cannot take entries the new owner would never see). KEYS: leases (n), then their
# streams (n). ARGV: group, consumer, count, then the n tokens. Returns {XREADGROUP reply or false, lost lease
# indexes (1-based), last entry id of each stream read} - the ids to block on (XREAD) when nothing was new.
_READ_FENCED = """
local n = #KEYS / 2
local streams, ids, lost, last = {}, {}, {}, {}
for i = 1, n do
  if redis.call('GET', KEYS[i]) == ARGV[3 + i] then
    streams[#streams + 1] = KEYS[n + i]
    ids[#ids + 1] = '>'
    local top = redis.call('XREVRANGE', KEYS[n + i], '+', '-', 'COUNT', 1)
    last[#last + 1] = top[1] and top[1][1] or '0-0'
  else
    lost[#lost + 1] = i
  end
end
if #streams == 0 then return {false, lost, last} end
local args = {'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS'}
for _, s in ipairs(streams) do args[#args + 1] = s end
for _, s in ipairs(ids) do args[#args + 1] = s end
return {redis.call('XREADGROUP', unpack(args)), lost, last}
"""

# Take over a partition's unfinished work on acquiring its lease: move every pending entry of the partition's
# stream (read, never acked, by whichever consumer) to the new owner's consumer, then delete the consumers left
# with nothing pending (each owner process reads under a name of its own). KEYS: lease, stream. ARGV: token,
# group, consumer. Returns {claimed, trimmed (pending but no longer in the stream), consumers deleted}, or false
# when the lease is not ours.
_CLAIM_FENCED = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local cursor, claimed, trimmed = '0-0', 0, 0
repeat
  local r = redis.call('XAUTOCLAIM', KEYS[2], ARGV[2], ARGV[3], 0, cursor, 'COUNT', 1000, 'JUSTID')
  cursor = r[1]
  claimed = claimed + #r[2]
  if r[3] then trimmed = trimmed + #r[3] end
until cursor == '0-0'
local deleted = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[2], ARGV[2])) do
  local name, pending
  for k = 1, #c, 2 do
    if c[k] == 'name' then name = c[k + 1] elseif c[k] == 'pending' then pending = c[k + 1] end
  end
  if name ~= ARGV[3] and pending == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[2], ARGV[2], name)
    deleted = deleted + 1
  end
end
return {claimed, trimmed, deleted}
"""

# Renew several leases in one round trip. KEYS: leases. ARGV: ttl ms, then one token per lease. Returns 1/0 each.
_RENEW_LEASES = """
local out = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then
    out[i] = redis.call('PEXPIRE', KEYS[i], ARGV[1])
  else
    out[i] = 0
  end
end
return out
"""


class _OutageRetry(Retry):
    """redis-py's Retry, except for a wrong password: AuthenticationError subclasses ConnectionError, but it is
    a configuration error, and retrying it would only delay the message by the whole back-off."""

    def call_with_retry(self, do, fail, is_retryable=None, with_failure_count=False):
        def retryable(error: Exception) -> bool:
            if isinstance(error, AuthenticationError):
                return False
            return is_retryable(error) if is_retryable else True

        return super().call_with_retry(do, fail, retryable, with_failure_count)


class TransportUnavailable(RuntimeError):
    """Redis could not be reached after the retries, or refused the command for a passing reason (out of memory,
    a read-only replica after a failover...); the caller should back off and try again.

    ``reason`` says which (one of :data:`OUTAGE_REASONS`), so stages count outages per reason.
    """

    def __init__(self, message: str, reason: str = "unreachable"):
        super().__init__(message)
        self.reason = reason


#: Why Redis is "unavailable": not reached (``unreachable``, ``timeout``), or an error reply that means "not now"
#: rather than "wrong command": the stage backs off and retries, exactly as for a lost connection.
OUTAGE_REASONS = ("unreachable", "timeout", "loading", "oom", "readonly", "misconf", "masterdown", "busy",
                  "clusterdown", "tryagain", "noreplicas", "nogroup")

# Reply codes as they arrive (first word of the reply; redis-py keeps unknown codes in the message, and a
# pipeline prefixes the reply with "Command # n (...) of pipeline caused error: ").
_REPLY_CODE = re.compile(r"(?:^|caused error: )([A-Z]{4,})\b")
_OUTAGE_REPLY_CODES = {
    "OOM": "oom",  # maxmemory reached under noeviction: frees up as consumers catch up and streams are trimmed
    "READONLY": "readonly",  # we talk to a replica (failover in progress, or DNS still pointing at the old master)
    "MISCONF": "misconf",  # stop-writes-on-bgsave-error after a failed snapshot, until a save succeeds
    "LOADING": "loading",  # the dataset is being loaded after a restart
    "MASTERDOWN": "masterdown",  # a replica with replica-serve-stale-data no, link to its master down
    "BUSY": "busy",  # a script runs past lua-time-limit
    "CLUSTERDOWN": "clusterdown",
    "TRYAGAIN": "tryagain",
    "NOREPLICAS": "noreplicas",  # min-replicas-to-write not met
    "NOGROUP": "nogroup",  # the stream or its group vanished (a restart without persistence): recreated next read
    "UNBLOCKED": "nogroup",  # a blocked XREADGROUP whose stream was deleted under it (or CLIENT UNBLOCK ERROR)
}


def outage_reason(exc: BaseException) -> str | None:
    """The outage reason of an error reply, or None for an error that retrying cannot cure (a bug, bad data)."""
    if isinstance(exc, OutOfMemoryError):
        return "oom"
    if isinstance(exc, ReadOnlyError):
        return "readonly"
    if isinstance(exc, BusyLoadingError):
        return "loading"
    if isinstance(exc, MasterDownError):
        return "masterdown"
    if isinstance(exc, ClusterDownError):
        return "clusterdown"
    if isinstance(exc, TryAgainError):
        return "tryagain"
    if isinstance(exc, ResponseError):
        match = _REPLY_CODE.search(str(exc))
        if match:
            return _OUTAGE_REPLY_CODES.get(match.group(1))
    return None


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


@dataclass(frozen=True)
class Keys:
    namespace: str = ""

    def _k(self, name: str) -> str:
        return f"{{{self.namespace}}}:{name}" if self.namespace else name

    @property
    def frames(self) -> str:
        return self._k("batch_frames")

    def results(self, partition: int) -> str:
        return self._k(f"batch_results:{partition}")

    @property
    def outbox(self) -> str:
        return self._k("alerts:outbox")

    @property
    def camera_status(self) -> str:
        return self._k("cameras:status")

    @property
    def evidence_requests(self) -> str:
        return self._k("evidence:requests")

    def stats(self, stage: str) -> str:
        return self._k(f"stats:{stage}")

    def stats_writer(self, stage: str, writer: str) -> str:
        return self._k(f"stats:{stage}:w:{writer}")

    def once(self, kind: str, message_id: str) -> str:
        digest = hashlib.blake2b(f"{kind}\x1f{message_id}".encode(), digest_size=12).hexdigest()
        return self._k(f"once:{digest}")

    @property
    def frames_epoch(self) -> str:
        """Marker of the frames Redis's lifetime (split roles only): gone = the server lost its frames."""
        return self._k("once:frames_epoch")

    @property
    def dead_letter(self) -> str:
        return self._k("dead_letter")

    def lease(self, partition: int) -> str:
        return self._k(f"logic:lease:{partition}")

    @property
    def logic_workers(self) -> str:
        return self._k("logic:workers")

    @property
    def episodes(self) -> str:
        return self._k("logic:episodes")

    @property
    def baselines(self) -> str:
        return self._k("logic:baselines")

    @property
    def time_budgets(self) -> str:
        return self._k("logic:timebudgets")

    @property
    def snapshots(self) -> str:
        return self._k("metrics:snapshots")


def new_token() -> str:
    """A random id for a write attempt or a counter writer."""
    return secrets.token_hex(8)


def message_id(camera_id: str, seq: int, capture_ts: float) -> str:
    """What makes a frame (and its result) unique, even across camera manager restarts that reuse a ``seq``."""
    return f"{camera_id}\x1f{seq}\x1f{capture_ts!r}"


#: What an id read back from Redis (a logic worker, a consumer, a counter writer, a snapshot's process name, a
#: counter name) must look like: what the stages write (``logic@host:pid``, ``frames_pushed:barn-a``). Anyone
#: with write access can put anything there; one undecodable ``logic:workers`` member used to crash-loop every
#: logic worker. Readers skip what does not match and count it in :attr:`Transport.invalid_ids`.
REDIS_ID_RE = re.compile(r"^[A-Za-z0-9_.:@\-]{1,200}$")


def valid_redis_id(raw: bytes | str, pattern: re.Pattern = REDIS_ID_RE) -> str | None:
    """``raw`` as text when it is a well-formed id (ASCII, matching ``pattern``), else None."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError:
            return None
    return raw if isinstance(raw, str) and pattern.match(raw) else None


@dataclass(frozen=True)
class PushResult:
    dropped_by_cap: int  # oldest frames the queue cap trimmed away (any camera manager's)
    retried: int  # skipped: already pushed by an earlier attempt with the same token (in the queue once)
    duplicates: int  # skipped: pushed before by another write


@dataclass(frozen=True)
class StreamEntry:
    stream_index: int  # partition number (results) or 0 (outbox)
    entry_id: str
    payload: bytes


def _guard(fn):
    """Turn connection failures that survived redis-py's retries into TransportUnavailable."""

    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except AuthenticationError:
            raise  # a wrong password is a configuration error, not an outage: no point in waiting
        except ResponseError as exc:
            reason = outage_reason(exc)
            if reason is None:
                raise  # a genuine error (wrong type, bad argument): retrying would fail the same way
            if reason == "nogroup":
                # The stream or its consumer group is gone (Redis restarted without persistence, or someone
                # deleted it): forget that the groups exist, so the next read creates them again.
                self._groups_ready.clear()
            raise TransportUnavailable(f"redis at {self.safe_urls} refused: {exc}", reason) from exc
        except (RedisConnectionError, RedisTimeoutError, OSError, RedisClusterException) as exc:
            # RedisClusterException: no node of the cluster answered (all down, slots uncovered).
            reason = "loading" if isinstance(exc, BusyLoadingError) else (
                "timeout" if isinstance(exc, RedisTimeoutError) else "unreachable")
            raise TransportUnavailable(f"redis at {self.safe_urls} unavailable: {exc}", reason) from exc

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


class Transport:
    """The pipeline's view of Redis. Thread-safe (redis-py pools connections)."""

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
        # Split roles: the frames Redis's lifetime marker (see the module doc) and what this pusher last saw of it.
        self._frames_epoch_seen = False
        self._frames_depth_seen = 0
        #: Split roles: frames Redis restarts this transport noticed, and the frames it counted lost with them.
        self.frames_resets = 0
        self.frames_lost = 0
        self._frames_unreported: Counter[str] = Counter()  # counts for the durable stats:queue not written yet
        self._push = self.frames_client.register_script(_PUSH_BOUNDED)
        self._publish = self.client.register_script(_PUBLISH_ONCE)
        self._report = self.client.register_script(_REPORT_TOTALS)
        self._renew = self.client.register_script(_RENEW_LEASE)
        self._release = self.client.register_script(_RELEASE_LEASE)
        self._commit_fenced = self.client.register_script(_COMMIT_FENCED)
        self._read_fenced = self.client.register_script(_READ_FENCED)
        self._claim_fenced = self.client.register_script(_CLAIM_FENCED)
        self._renew_many = self.client.register_script(_RENEW_LEASES)
        self._groups_ready: set[str] = set()
        #: Malformed ids and values read back from Redis and skipped, by kind (``logic_worker``, ``camera_status``,
        #: ``stats_field``, ``snapshot`` ...): running totals, which the stages fold into their counters.
        self.invalid_ids: Counter[str] = Counter()

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
    def from_config(cls, cfg: RedisConfig, url: str | None = None, **kwargs) -> Transport:
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

    @_guard
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

    # -- frames ------------------------------------------------------------------------------------
    @_guard
    def push_frames(
        self, messages: Sequence[bytes], once: Sequence[str] | None = None, token: str = ""
    ) -> PushResult:
        """Append frames to ``batch_frames``, honouring the cap (the oldest are dropped and counted).

        ``once``: one id per message (:func:`message_id`); a message whose id was written before is skipped.
        ``token`` names the attempt: reuse it when retrying the same frames, and the skipped ones this token
        already wrote come back as ``retried`` (they are in the queue once), not as ``duplicates``.
        """
        if not messages:
            return PushResult(0, 0, 0)
        if once is not None and len(once) != len(messages):
            raise ValueError(f"push_frames: {len(messages)} messages but {len(once)} once ids")
        once_keys = [self.keys.once("frame", i) for i in once] if once is not None else []
        split = self.split_roles
        dropped, own, dup, fresh, depth = self._push(
            keys=[self.keys.frames, self.keys.stats("queue"), self.keys.frames_epoch, *once_keys],
            args=[self.frame_queue_cap, "" if split else "dropped:queue_full", token or new_token(), ONCE_TTL_MS,
                  "1" if split else "", *messages],
        )
        dropped = int(dropped)
        if split:
            self._count_frames_side(dropped, bool(int(fresh)))
            self._frames_depth_seen = int(depth)
        return PushResult(dropped, int(own), int(dup))

    def _count_frames_side(self, dropped: int, fresh: bool) -> None:
        """Split roles: what the push script cannot count in the other Redis - the cap's drops, and frames lost
        with a restart of the frames Redis (its lifetime marker was gone although this pusher had seen it) - into
        the durable ``stats:queue``. (Plain HINCRBYs: should a reply be lost and redis-py retry one, a drop could
        count twice - never a result.)"""
        reset = fresh and self._frames_epoch_seen
        self._frames_epoch_seen = True  # created now, or there already (another pusher made it)
        lost = self._frames_depth_seen if reset else 0
        if reset:
            self.frames_resets += 1
            self.frames_lost += lost
            logger.warning("frames redis %s restarted (lost its data): up to %d queued frames lost",
                           self.safe_frames_url, lost)
        if dropped:
            self._frames_unreported["dropped:queue_full"] += dropped
        if reset:
            self._frames_unreported["frames_redis_resets"] += 1
            self._frames_unreported["lost:frames_redis_reset"] += lost
        if not self._frames_unreported:
            return
        # The frames are pushed: a durable Redis that is away now must not fail the push (the camera manager would
        # push them again); the counts wait for the next push.
        try:
            pipe = self.client.pipeline(transaction=False)
            for field, n in self._frames_unreported.items():
                pipe.hincrby(self.keys.stats("queue"), field, n)
            pipe.execute()
        except (RedisConnectionError, RedisTimeoutError, OSError, ResponseError, RedisClusterException) as exc:
            logger.warning("frame queue counts not reported to %s yet (%s): %s", self.safe_url,
                           type(exc).__name__, dict(self._frames_unreported))
            return
        self._frames_unreported.clear()

    def push_frame(self, message: bytes) -> int:
        """One frame, no once id (tests and tools); returns how many old frames the cap dropped."""
        return self.push_frames([message]).dropped_by_cap

    @_guard
    def pop_frames(self, max_n: int, timeout_s: float) -> list[bytes]:
        """Up to ``max_n`` frames in FIFO order; blocks at most ``timeout_s`` for the first one."""
        if max_n < 1:
            return []
        if timeout_s < SHORT_WAIT_S:
            # Redis checks blocked clients' timeouts only `hz` times a second (10 by default), so a 5 ms BLPOP
            # can take 100 ms: short waits poll with non-blocking pops instead (each ~0.1 ms on loopback).
            deadline = time.monotonic() + timeout_s
            while True:
                frames = self.pop_frames_nowait(max_n)
                remaining = deadline - time.monotonic()
                if frames or remaining <= 0:
                    return frames
                time.sleep(min(POLL_INTERVAL_S, remaining))
        first = self.frames_client.blpop([self.keys.frames], timeout=self._block_s(timeout_s))
        if first is None:
            return []
        batch = [first[1]]
        if max_n > 1:
            rest = self.frames_client.lpop(self.keys.frames, max_n - 1)
            if rest:
                batch.extend(rest)
        return batch

    @_guard
    def pop_frames_nowait(self, max_n: int) -> list[bytes]:
        if max_n < 1:
            return []
        return list(self.frames_client.lpop(self.keys.frames, max_n) or [])

    @_guard
    def frame_queue_depth(self) -> int:
        return int(self.frames_client.llen(self.keys.frames))

    # -- results -----------------------------------------------------------------------------------
    def partition_of(self, camera_id: str) -> int:
        """Stable camera -> partition map (crc32, the same in every process and language)."""
        return zlib.crc32(camera_id.encode()) % self.result_partitions

    @_guard
    def publish_results(
        self, results: Iterable[tuple[str, bytes]], once: Sequence[str] | None = None, token: str = ""
    ) -> list[str]:
        """XADD each (camera_id, encoded result) to its camera's partition stream, in one round trip.

        Returns the entry ids. With ``once`` (one :func:`message_id` per result) a result already published is
        not written again; its place in the returned list holds ``"="`` when this ``token``'s earlier attempt
        wrote it (a retry whose first reply was lost) or ``"!"`` when another write did (a frame inferred twice).
        """
        results = list(results)
        if not results:
            return []
        if once is None:
            pipe = self.client.pipeline(transaction=False)
            for camera_id, payload in results:
                pipe.xadd(
                    self.keys.results(self.partition_of(camera_id)), {"r": payload},
                    maxlen=self.result_stream_maxlen, approximate=True,
                )
            return [i.decode() if isinstance(i, bytes) else i for i in pipe.execute()]
        if len(once) != len(results):
            raise ValueError(f"publish_results: {len(results)} results but {len(once)} once ids")
        keys = [self.keys.once("result", i) for i in once]
        keys += [self.keys.results(self.partition_of(cam)) for cam, _ in results]
        reply = self._publish(
            keys=keys,
            args=[token or new_token(), ONCE_TTL_MS, self.result_stream_maxlen, *(p for _, p in results)],
        )
        return [i.decode() if isinstance(i, bytes) else i for i in reply]

    @_guard
    def ensure_groups(self, only: str | None = None) -> None:
        """Create the consumer groups (idempotent): all, or only ``RESULTS_GROUP``'s or ``OUTBOX_GROUP``'s - a stage
        creates just the group it reads, so its Redis ACL user needs no rights on the other stage's streams."""
        streams = [(self.keys.results(p), RESULTS_GROUP) for p in range(self.result_partitions)]
        streams.append((self.keys.outbox, OUTBOX_GROUP))
        for key, group in streams:
            if only is not None and group != only:
                continue
            if key in self._groups_ready:
                continue
            try:
                self.client.xgroup_create(key, group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._groups_ready.add(key)

    def _read_group(self, group: str, consumer: str, streams: dict[str, str], count: int, block_ms: int | None):
        reply = self.client.xreadgroup(group, consumer, streams, count=count, block=block_ms)
        return reply or []

    @_guard
    def read_results(self, partitions: Sequence[int], *, pending: bool, count: int, block_s: float = 0.0,
                     consumer: str = PARTITION_CONSUMER) -> list[StreamEntry]:
        """Results of the owned partitions. ``pending=True`` re-reads what was delivered to ``consumer`` but not
        acked (in order); otherwise new entries, blocking up to ``block_s``. A partition owner reads new entries
        with :meth:`read_results_fenced` instead."""
        if not partitions:
            return []
        self.ensure_groups(RESULTS_GROUP)
        by_key = {self.keys.results(p): p for p in partitions}
        streams = {k: ("0" if pending else ">") for k in by_key}
        block_ms = None if pending or block_s <= 0 else int(self._block_s(block_s) * 1000)
        out: list[StreamEntry] = []
        for key, entries in self._read_group(RESULTS_GROUP, consumer, streams, count, block_ms):
            key = key.decode() if isinstance(key, bytes) else key
            for entry_id, fields in entries:
                entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                # A pending entry whose data was trimmed away comes back with no fields: nothing to do but ack it.
                out.append(StreamEntry(by_key[key], entry_id, (fields or {}).get(b"r", b"")))
        return out

    @_guard
    def read_results_fenced(
        self, leases: Mapping[int, str], consumer: str, *, count: int, block_s: float = 0.0
    ) -> tuple[list[StreamEntry], set[int]]:
        """New results of the partitions in ``leases`` (partition -> lease token) that the tokens still hold, as
        ``consumer``; returns (entries, partitions whose lease was found lost: nothing read from those).

        The lease check and the read are one script, so a worker that was paused past its lease cannot move
        entries into its own pending list behind the new owner's back. Scripts cannot block: when nothing is
        new, this waits (XREAD BLOCK, up to ``block_s``) for an entry after the last one, then reads again."""
        if not leases:
            return [], set()
        self.ensure_groups(RESULTS_GROUP)
        parts = sorted(leases)
        keys = [self.keys.lease(p) for p in parts] + [self.keys.results(p) for p in parts]
        by_key = {self.keys.results(p): p for p in parts}
        args = [RESULTS_GROUP, consumer, int(count), *(leases[p] for p in parts)]
        reply, lost, last = self._read_fenced(keys=keys, args=args)
        lost_parts = {parts[int(i) - 1] for i in lost or []}
        if not reply and block_s > 0 and last:
            held = [p for p in parts if p not in lost_parts]
            self.client.xread({self.keys.results(p): i for p, i in zip(held, last, strict=True)},
                              block=max(1, int(self._block_s(block_s) * 1000)))
            reply, lost, last = self._read_fenced(keys=keys, args=args)
            lost_parts |= {parts[int(i) - 1] for i in lost or []}
        out: list[StreamEntry] = []
        for key, entries in reply or []:
            key = key.decode() if isinstance(key, bytes) else key
            for entry_id, flat in entries:
                entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                fields = dict(zip(flat[::2], flat[1::2], strict=True)) if flat else {}
                out.append(StreamEntry(by_key[key], entry_id, fields.get(b"r", b"")))
        return out, lost_parts

    @_guard
    def claim_partition(self, partition: int, token: str, consumer: str) -> tuple[int, int] | None:
        """On taking partition ``partition`` (lease ``token``): move all its pending entries (a previous owner's
        unfinished work, whatever its consumer name) to ``consumer`` and delete the consumers left empty.
        Returns (entries claimed, pending entries no longer in the stream - trimmed, dropped from the pending
        list), or None when the lease is not (any more) ``token``'s."""
        self.ensure_groups(RESULTS_GROUP)
        reply = self._claim_fenced(
            keys=[self.keys.lease(partition), self.keys.results(partition)], args=[token, RESULTS_GROUP, consumer]
        )
        if not reply:
            return None
        return int(reply[0]), int(reply[1])

    @_guard
    def commit_results(
        self, partition: int, token: str, *, entry_ids: Sequence[str] = (), alerts_json: Sequence[bytes] = (),
        states: Mapping[str, dict] | None = None, baselines: Mapping[str, dict] | None = None,
        time_budgets: Mapping[str, dict] | None = None,
    ) -> bool:
        """Fenced, atomic commit of a partition owner's work: ack ``entry_ids`` of the partition's stream, add
        ``alerts_json`` to the outbox and save ``states`` (camera id -> episode state) and ``baselines`` (camera
        id -> horse baseline) and ``time_budgets`` (camera id -> ``TimeBudget.to_dict``), all or nothing, and only
        while ``token`` holds the partition's lease. Returns False (nothing written) when it does not."""
        states, baselines, time_budgets = states or {}, baselines or {}, time_budgets or {}
        args: list[object] = [token, self.outbox_maxlen, RESULTS_GROUP, len(entry_ids), *entry_ids,
                              len(alerts_json), *alerts_json, len(states)]
        for camera_id, state in states.items():
            args += [camera_id, json.dumps(state, separators=(",", ":"))]
        args.append(len(baselines))
        for camera_id, baseline in baselines.items():
            args += [camera_id, json.dumps(baseline, separators=(",", ":"))]
        for camera_id, budget in time_budgets.items():
            args += [camera_id, json.dumps(budget, separators=(",", ":"))]
        keys = [self.keys.lease(partition), self.keys.results(partition), self.keys.outbox, self.keys.episodes,
                self.keys.baselines, self.keys.time_budgets]
        return bool(self._commit_fenced(keys=keys, args=args))

    @_guard
    def renew_leases(self, leases: Mapping[int, str], ttl_s: float) -> set[int]:
        """Extend the leases (partition -> token) still held by their tokens, in one round trip; returns the
        partitions whose lease is lost."""
        if not leases:
            return set()
        parts = sorted(leases)
        reply = self._renew_many(keys=[self.keys.lease(p) for p in parts],
                                 args=[int(ttl_s * 1000), *(leases[p] for p in parts)])
        return {p for p, ok in zip(parts, reply, strict=True) if not int(ok)}

    @_guard
    def ack_results(self, partition: int, entry_ids: Sequence[str]) -> int:
        if not entry_ids:
            return 0
        return int(self.client.xack(self.keys.results(partition), RESULTS_GROUP, *entry_ids))

    @_guard
    def result_backlog(self) -> int:
        """Entries not yet read by the logic group, summed over partitions (lag), or stream lengths."""
        total = 0
        for p in range(self.result_partitions):
            try:
                groups = self.client.xinfo_groups(self.keys.results(p))
            except ResponseError:
                continue
            for g in groups:
                name = g.get("name")
                if name in (RESULTS_GROUP, RESULTS_GROUP.encode()):
                    lag = g.get("lag")
                    total += int(lag or 0) + int(g.get("pending") or 0)
        return total

    # -- the reference clock -----------------------------------------------------------------------
    @_guard
    def server_time(self) -> float:
        """The Redis server's clock (``TIME``) in unix seconds: the one clock all hosts share."""
        reply = self.client.time()
        if isinstance(reply, dict):  # a cluster answers per node: any one node's clock will do
            reply = next(iter(reply.values()))
        seconds, micros = reply
        return int(seconds) + int(micros) / 1e6

    # -- logic partition leases --------------------------------------------------------------------
    @_guard
    def heartbeat_logic_worker(self, worker_id: str, ttl_s: float, now: float | None = None) -> list[str]:
        """Record this worker as alive and return the ids of all live workers (sorted).

        ``now``: the caller's reference-clock time (:class:`fbvision.core.clock.ReferenceClock`), so workers on
        hosts whose clocks disagree score each other on one clock; the local wall clock when not given."""
        now = time.time() if now is None else now
        pipe = self.client.pipeline()
        pipe.zadd(self.keys.logic_workers, {worker_id: now})
        pipe.zremrangebyscore(self.keys.logic_workers, "-inf", now - ttl_s)
        pipe.zrange(self.keys.logic_workers, 0, -1, withscores=True)
        members = pipe.execute()[-1]
        live, bad = [], []
        for raw, score in members:
            member = valid_redis_id(raw)
            # A heartbeat from the future (score +inf, or far ahead of any plausible clock skew) would count as a
            # live worker forever, take a share of the partitions and never process them.
            if member is None or not score <= now + HEARTBEAT_MAX_AHEAD_S:
                bad.append(raw)
            else:
                live.append(member)
        if bad:
            # Not a worker of ours (an injected "\xff", a typo'd tool): skip, count, and remove it so that it
            # neither skews the fair share nor stays forever.
            self._skipped_invalid("logic_worker", bad)
            self.client.zrem(self.keys.logic_workers, *bad)
        return sorted(live)

    @_guard
    def leave_logic_workers(self, worker_id: str) -> None:
        self.client.zrem(self.keys.logic_workers, worker_id)

    @_guard
    def try_lease(self, partition: int, worker_id: str, ttl_s: float) -> bool:
        """Take partition ``partition`` if free, or renew it if already ours."""
        key = self.keys.lease(partition)
        ttl_ms = int(ttl_s * 1000)
        if self.client.set(key, worker_id, nx=True, px=ttl_ms):
            return True
        return bool(self._renew(keys=[key], args=[worker_id, ttl_ms]))

    @_guard
    def release_lease(self, partition: int, worker_id: str) -> None:
        self._release(keys=[self.keys.lease(partition)], args=[worker_id])

    @_guard
    def lease_owner(self, partition: int) -> str | None:
        """The worker id holding the partition (its lease token up to the last ``@``), or None."""
        holder = self.lease_holder(partition)
        return holder.rpartition(LEASE_TOKEN_SEP)[0] or holder if holder else None

    @_guard
    def lease_holder(self, partition: int) -> str | None:
        """The partition's lease token as stored (``logic-1@<instance>.<n>``), or None."""
        owner = self.client.get(self.keys.lease(partition))
        return owner.decode() if owner else None

    # -- open alert episodes (logic state that must survive a restart) ------------------------------
    @_guard
    def save_episodes(self, camera_id: str, state: dict) -> None:
        self.client.hset(self.keys.episodes, camera_id, json.dumps(state, separators=(",", ":")))

    @_guard
    def load_episodes(self, camera_id: str) -> dict:
        raw = self.client.hget(self.keys.episodes, camera_id)
        if not raw:
            return {}
        try:
            state = json.loads(raw)
        except ValueError:
            logger.warning("camera %s: unreadable saved episode state, starting fresh", camera_id)
            return {}
        return state if isinstance(state, dict) else {}

    @_guard
    def load_baseline(self, camera_id: str) -> dict:
        """The camera's saved horse baseline ({} when none or unreadable)."""
        return self._load_json_field(self.keys.baselines, camera_id, "baseline")

    @_guard
    def load_time_budget(self, camera_id: str) -> dict:
        """The camera's saved time budget ({} when none or unreadable)."""
        return self._load_json_field(self.keys.time_budgets, camera_id, "time budget")

    def _load_json_field(self, key: str, camera_id: str, what: str) -> dict:
        raw = self.client.hget(key, camera_id)
        if not raw:
            return {}
        try:
            state = json.loads(raw)
        except ValueError:
            logger.warning("camera %s: unreadable saved %s, starting afresh", camera_id, what)
            return {}
        return state if isinstance(state, dict) else {}

    # -- alert outbox ------------------------------------------------------------------------------
    @_guard
    def add_alerts(self, alerts_json: Sequence[bytes]) -> list[str]:
        if not alerts_json:
            return []
        pipe = self.client.pipeline(transaction=True)
        for payload in alerts_json:
            pipe.xadd(self.keys.outbox, {"a": payload}, maxlen=self.outbox_maxlen, approximate=True)
        return [i.decode() if isinstance(i, bytes) else i for i in pipe.execute()]

    @_guard
    def add_alerts_and_ack(self, alerts_json: Sequence[bytes], partition: int, entry_ids: Sequence[str]) -> None:
        """Write alerts to the outbox and ack the results that produced them in one MULTI/EXEC,
        so a crash can never leave a result acked without its alerts written."""
        pipe = self.client.pipeline(transaction=True)
        for payload in alerts_json:
            pipe.xadd(self.keys.outbox, {"a": payload}, maxlen=self.outbox_maxlen, approximate=True)
        if entry_ids:
            pipe.xack(self.keys.results(partition), RESULTS_GROUP, *entry_ids)
        pipe.execute()

    @_guard
    def read_alerts(self, consumer: str, *, pending: bool, count: int, block_s: float = 0.0) -> list[StreamEntry]:
        self.ensure_groups(OUTBOX_GROUP)
        block_ms = None if pending or block_s <= 0 else int(self._block_s(block_s) * 1000)
        reply = self._read_group(OUTBOX_GROUP, consumer, {self.keys.outbox: "0" if pending else ">"}, count, block_ms)
        out = []
        for _key, entries in reply:
            for entry_id, fields in entries:
                entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                out.append(StreamEntry(0, entry_id, (fields or {}).get(b"a", b"")))
        return out

    @_guard
    def claim_stale_alerts(self, consumer: str, min_idle_s: float, count: int = 100) -> list[StreamEntry]:
        """Take over outbox entries a dead delivery consumer left pending for ``min_idle_s``."""
        self.ensure_groups(OUTBOX_GROUP)
        reply = self.client.xautoclaim(self.keys.outbox, OUTBOX_GROUP, consumer, int(min_idle_s * 1000), "0-0", count=count)
        entries = reply[1] if len(reply) > 1 else []
        out = []
        for entry_id, fields in entries:
            entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            out.append(StreamEntry(0, entry_id, (fields or {}).get(b"a", b"")))
        return out

    @_guard
    def ack_alerts(self, entry_ids: Sequence[str]) -> int:
        """Acknowledge settled outbox entries and delete them (XACK + XDEL in one MULTI), so the outbox holds only
        what is not delivered yet and never grows with delivered alerts. ``delivery`` is the stream's only
        consumer group: nobody else still needs an entry that group has settled."""
        if not entry_ids:
            return 0
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.keys.outbox, OUTBOX_GROUP, *entry_ids)
        pipe.xdel(self.keys.outbox, *entry_ids)
        acked, _deleted = pipe.execute()
        return int(acked)

    @_guard
    def outbox_length(self) -> int:
        """Entries in the outbox stream (undelivered: new or pending)."""
        return int(self.client.xlen(self.keys.outbox))

    @_guard
    def outbox_pending(self) -> int:
        try:
            info = self.client.xpending(self.keys.outbox, OUTBOX_GROUP)
        except ResponseError:
            return 0
        return int(info.get("pending", 0))

    # -- evidence requests -------------------------------------------------------------------------
    @_guard
    def request_evidence(self, requests_json: Sequence[bytes], maxlen: int = 1000) -> list[str]:
        """Add evidence requests (JSON) to the capped request stream; the camera managers serve them."""
        if not requests_json:
            return []
        pipe = self.client.pipeline(transaction=False)
        for payload in requests_json:
            pipe.xadd(self.keys.evidence_requests, {"e": payload}, maxlen=maxlen, approximate=True)
        return [i.decode() if isinstance(i, bytes) else i for i in pipe.execute()]

    @_guard
    def read_evidence_requests(self, after_id: str, count: int = 100) -> list[tuple[str, bytes]]:
        """Requests added after ``after_id`` (a stream id, e.g. ``<ms>-0``), oldest first; never blocks."""
        reply = self.client.xread({self.keys.evidence_requests: after_id}, count=count)
        out = []
        for _key, entries in reply or []:
            for entry_id, fields in entries:
                entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                out.append((entry_id, (fields or {}).get(b"e", b"")))
        return out

    # -- camera status -----------------------------------------------------------------------------
    @_guard
    def set_camera_status(self, camera_id: str, status: dict) -> None:
        self.client.hset(self.keys.camera_status, camera_id, json.dumps(status, separators=(",", ":")))

    @_guard
    def camera_statuses(self) -> dict[str, dict]:
        out, bad = {}, []
        for raw_cam, raw in self.client.hgetall(self.keys.camera_status).items():
            cam = valid_redis_id(raw_cam, CAMERA_ID_RE)
            try:
                status = json.loads(raw) if cam is not None else None
            except ValueError:  # UnicodeDecodeError included
                status = None
            if isinstance(status, dict):
                out[cam] = status
            else:  # a malformed id, or a status that is not a JSON object: readers expect status["state"]
                bad.append(raw_cam)
        if bad:
            self._skipped_invalid("camera_status", bad)
        return out

    # -- counters and dead letters -----------------------------------------------------------------
    @_guard
    def report_totals(self, stage: str, writer: str, totals: Mapping[str, int | float]) -> None:
        """Bring a stage's counters up to date with one writer's running totals (since the writer started).

        Idempotent: the stage hash gets only what grew since this writer's last report, so a report repeated
        after a lost reply, or a later report after a failed one, counts everything exactly once. ``writer``
        must be unique per process lifetime (:func:`new_token`); float totals (time sums) use HINCRBYFLOAT.
        """
        args: list[object] = [WRITER_TOTALS_TTL_MS]
        for name, value in totals.items():
            if value:
                args += [name, repr(float(value)) if isinstance(value, float) else int(value),
                         "f" if isinstance(value, float) else "i"]
        if len(args) == 1:
            return
        self._report(keys=[self.keys.stats(stage), self.keys.stats_writer(stage, writer)], args=args)

    @_guard
    def stats(self, stage: str) -> dict[str, float]:
        out, bad = {}, []
        for k, v in self.client.hgetall(self.keys.stats(stage)).items():
            name = valid_redis_id(k)
            try:
                v = v.decode("ascii")
                value = float(v) if "." in v or "e" in v else int(v)
            except ValueError:  # UnicodeDecodeError included; "inf"/"nan" fail int() too
                name = None
            if name is None:
                bad.append(k)
            else:
                out[name] = value
        if bad:
            self._skipped_invalid("stats_field", bad)
        return out

    @_guard
    def dead_letter(self, queue: str, reason: str, payload: bytes, *, detail: str = "", full: bool = False) -> None:
        """Keep a bounded sample of undecodable messages (first 512 bytes, hex) for inspection.

        ``full=True`` (alerts: small, and someone must be able to re-send them) keeps the whole payload as well:
        ``payload`` (text) when it is UTF-8, else ``payload_b64``. ``detail`` says what exactly was wrong."""
        fields: dict[str, object] = {
            "queue": queue, "reason": reason, "at": time.time(), "size": len(payload), "head": payload[:512].hex()
        }
        if detail:
            fields["detail"] = detail[:1000]
        if full:
            try:
                fields["payload"] = payload.decode("utf-8")
            except UnicodeDecodeError:
                fields["payload_b64"] = base64.b64encode(payload).decode("ascii")
        record = json.dumps(fields)
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(self.keys.dead_letter, record)
        pipe.ltrim(self.keys.dead_letter, 0, DEAD_LETTER_CAP - 1)
        pipe.execute()

    @_guard
    def dead_letters(self, n: int = 100) -> list[dict]:
        return [json.loads(x) for x in self.client.lrange(self.keys.dead_letter, 0, n - 1)]

    # -- metrics snapshots (for the dashboard and the run report) ----------------------------------
    @_guard
    def put_snapshot(self, name: str, snapshot: dict) -> None:
        self.client.hset(self.keys.snapshots, name, json.dumps(snapshot, separators=(",", ":")))

    @_guard
    def snapshots(self) -> dict[str, dict]:
        out, bad = {}, []
        for raw_name, raw in self.client.hgetall(self.keys.snapshots).items():
            name = valid_redis_id(raw_name)
            try:
                snap = json.loads(raw) if name is not None else None
            except ValueError:  # UnicodeDecodeError included
                snap = None
            if isinstance(snap, dict):  # readers do snap.get(...)
                out[name] = snap
            else:
                bad.append(raw_name)
        if bad:
            self._skipped_invalid("snapshot", bad)
        return out
