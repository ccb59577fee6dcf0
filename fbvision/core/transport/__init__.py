"""Everything that touches Redis: key names, commands, retries. No other module knows a key name or imports redis
(the import contract and ``tests/unit/test_transport_keys.py`` check both).

============================  =====================================================================================
module                        what
============================  =====================================================================================
``keys``                      every key and consumer group name (the key table), :class:`Keys` under a namespace
``scripts/*.lua``             the Lua scripts (package data), registered once per client
``errors``                    :class:`TransportUnavailable` (an outage: back off, retry; ``reason``), permission
                              errors (NOPERM, naming the role's user and the key), the classification of replies
``client``                    :class:`Connection`: clients (split roles, Cluster, TLS), retries, groups, the clock
``frames``                    :class:`FrameQueue`: push (bounded, once keys), pop, depth
``results``                   :class:`ResultStreams`: publish, read, claim and the fenced commit
``leases``                    :class:`Leases`: logic workers' heartbeats, partition leases
``outbox``                    :class:`Outbox`: alerts, a consumer group per sink, settle and trim
``state``                     :class:`StateStore`: episodes, baselines, time budgets
``cameras``                   :class:`CameraBoard`: camera statuses, evidence requests
``stats``                     :class:`Stats`: counters, dead letters, metrics snapshots
``gauges``                    :class:`Gauges`: result backlog, outbox length and pending
``acl``                       each role's Redis ACL rule, generated from ``keys``
``records``                   typed records stored as JSON (:class:`CameraStatus`), one codec
============================  =====================================================================================

Each stage holds the facade of its role (:class:`CameraTransport`, :class:`InferenceTransport`,
:class:`LogicTransport`, :class:`DeliveryTransport`, :class:`RunnerTransport`): only the parts it uses.
:class:`Transport` composes them all (tools, tests, the embedded runner).
"""

from __future__ import annotations

from fbvision.core.transport import keys
from fbvision.core.transport.cameras import CameraBoard
from fbvision.core.transport.client import (
    CLUSTER_QUERY_FLAG,
    REDIS_ID_RE,
    Connection,
    new_token,
    split_cluster_flag,
    valid_redis_id,
)
from fbvision.core.transport.errors import (
    OUTAGE_REASONS,
    TransportError,
    TransportPermissionError,
    TransportUnavailable,
    outage_reason,
)
from fbvision.core.transport.frames import ONCE_TTL_MS, FrameQueue, PushResult, message_id
from fbvision.core.transport.gauges import Gauges
from fbvision.core.transport.keys import (
    CLUSTER_DEFAULT_NAMESPACE,
    OUTBOX_GROUP,
    PARTITION_CONSUMER,
    RESULTS_GROUP,
    Keys,
    results_queue,
)
from fbvision.core.transport.leases import HEARTBEAT_MAX_AHEAD_S, LEASE_TOKEN_SEP, Leases
from fbvision.core.transport.outbox import Outbox
from fbvision.core.transport.records import CameraStatus, JsonRecord, RecordError
from fbvision.core.transport.results import ResultStreams, StreamEntry
from fbvision.core.transport.state import StateStore
from fbvision.core.transport.stats import DEAD_LETTER_CAP, WRITER_TOTALS_TTL_MS, Stats

#: The queues' names without the namespace, as dead-letter records and queue gauges label them.
FRAMES_QUEUE = keys.FRAMES
OUTBOX_QUEUE = keys.OUTBOX


class CameraTransport(FrameQueue, CameraBoard, Stats, Gauges):
    """The camera manager's: push frames, set its cameras' statuses, read evidence requests, counters, backlog."""


class InferenceTransport(FrameQueue, ResultStreams, Stats):
    """The inference worker's: pop frames, publish results, counters and dead letters."""


class LogicTransport(ResultStreams, Leases, StateStore, CameraBoard, Stats):
    """The logic worker's: read and commit results under leases, its state, camera statuses, evidence requests."""


class DeliveryTransport(Outbox, Stats, Gauges):
    """An outbox sink's (the backend delivery, a notifier): read, claim and settle alerts of its group."""


class RunnerTransport(CameraBoard, Stats, Gauges, FrameQueue):
    """The dashboard's and the run report's (read-only in practice): statuses, counters, snapshots, depths."""


class Transport(FrameQueue, ResultStreams, Leases, StateStore, Outbox, CameraBoard, Stats, Gauges):
    """The pipeline's whole view of Redis: every facade in one (tools, tests, the embedded runner)."""


#: The facade each stage role (``fbv-<role>`` client names, the ACL users of :mod:`fbvision.core.transport.acl`)
#: gets from :func:`fbvision.run.stages` set-up.
ROLE_TRANSPORTS: dict[str, type[Connection]] = {
    "camera": CameraTransport,
    "inference": InferenceTransport,
    "logic": LogicTransport,
    "delivery": DeliveryTransport,
    "runner": RunnerTransport,
}

__all__ = [
    "CLUSTER_DEFAULT_NAMESPACE", "CLUSTER_QUERY_FLAG", "FRAMES_QUEUE", "OUTBOX_QUEUE", "results_queue", "DEAD_LETTER_CAP", "HEARTBEAT_MAX_AHEAD_S", "LEASE_TOKEN_SEP",
    "ONCE_TTL_MS", "OUTAGE_REASONS", "OUTBOX_GROUP", "PARTITION_CONSUMER", "REDIS_ID_RE", "RESULTS_GROUP",
    "ROLE_TRANSPORTS", "WRITER_TOTALS_TTL_MS", "CameraBoard", "CameraStatus", "JsonRecord", "RecordError", "CameraTransport", "Connection", "DeliveryTransport",
    "FrameQueue", "Gauges", "InferenceTransport", "Keys", "Leases", "LogicTransport", "Outbox", "PushResult",
    "ResultStreams", "RunnerTransport", "StateStore", "Stats", "StreamEntry", "Transport", "TransportError",
    "TransportPermissionError", "TransportUnavailable", "message_id", "new_token", "outage_reason",
    "split_cluster_flag", "valid_redis_id",
]
