"""Every Redis key name and consumer group name of the pipeline, in one place (no other module spells one).

``K`` below is the namespace prefix, empty by default; with a namespace every key is hash-tagged ``{ns}:...`` so a
Redis Cluster keeps them in one slot (in cluster mode a namespace is always set: :data:`CLUSTER_DEFAULT_NAMESPACE`).

=============================  ========  ====================================================================
key                            type      what
=============================  ========  ====================================================================
``K batch_frames``             list      encoded frame messages, FIFO (RPUSH / LPOP), capped: oldest dropped
``K batch_results:<p>``        stream    encoded result messages of the cameras hashed to partition ``p``;
                                         consumer group ``logic``; entry field ``r``
``K alerts:outbox``            stream    alert events (JSON), one consumer group per sink (``delivery`` by
                                         default); field ``a``; capped (``MAXLEN ~ alerts.outbox_maxlen``),
                                         trimmed (XTRIM MINID) below the oldest entry a group still needs
``K cameras:status``           hash      camera id -> status JSON (state, since, last_frame_ts, detail)
``K stats:<stage>``            hash      counters of a stage (``frames_in``, ``dropped:stale`` ...), the sum of
                                         its writers' totals
``K stats:<stage>:w:<writer>`` hash      one writer's totals as last reported (expires a day after its last report)
``K once:<digest>``            string    a frame/result already written, and by which write (expires)
``K once:frames_epoch``        string    split roles only, in the frames Redis: set by the first push of its
                                         lifetime; a push that has to set it again knows the server lost its frames
``K dead_letter``              list      (capped) JSON records of messages that could not be decoded
``K logic:lease:<p>``          string    the lease token of result partition ``p``'s owner (expires):
                                         ``<worker id>@<process instance>.<n>``, checked by every owner write
``K logic:workers``            zset      live logic workers, scored by last heartbeat
``K logic:episodes``           hash      camera id -> open alert episodes (JSON), so a restart re-raises nothing
``K logic:baselines``          hash      camera id -> the horse's own normal (JSON, ``fbvision.logic.baseline``)
``K logic:timebudgets``        hash      camera id -> its time budget (a horse's day, JSON, ``TimeBudget.to_dict``)
``K evidence:requests``        stream    evidence requests of raised/escalated alerts (JSON, field ``e``), read by
                                         the camera managers (plain XREAD, no group); capped (``MAXLEN ~``)
``K metrics:snapshots``        hash      process name -> its latest metrics snapshot (JSON: latency percentiles...)
=============================  ========  ====================================================================
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# -- the names, unprefixed (``Keys`` adds the namespace) ------------------------------------------------------------
FRAMES = "batch_frames"
RESULTS_PREFIX = "batch_results:"
OUTBOX = "alerts:outbox"
CAMERA_STATUS = "cameras:status"
EVIDENCE_REQUESTS = "evidence:requests"
STATS_PREFIX = "stats:"
STATS_WRITER_INFIX = ":w:"
ONCE_PREFIX = "once:"
FRAMES_EPOCH = "once:frames_epoch"
DEAD_LETTER = "dead_letter"
LEASE_PREFIX = "logic:lease:"
LOGIC_WORKERS = "logic:workers"
EPISODES = "logic:episodes"
BASELINES = "logic:baselines"
TIME_BUDGETS = "logic:timebudgets"
SNAPSHOTS = "metrics:snapshots"

#: Keys with a fixed name, and the prefixes of the keys named per partition / stage / message (for the test that
#: finds no key name outside this package, and for the ACL rules of :mod:`fbvision.core.transport.acl`).
FIXED_KEYS = (FRAMES, OUTBOX, CAMERA_STATUS, EVIDENCE_REQUESTS, FRAMES_EPOCH, DEAD_LETTER, LOGIC_WORKERS, EPISODES,
              BASELINES, TIME_BUDGETS, SNAPSHOTS)
KEY_PREFIXES = (RESULTS_PREFIX, STATS_PREFIX, ONCE_PREFIX, LEASE_PREFIX)

# -- consumer groups ------------------------------------------------------------------------------------------------
#: The logic workers' group on every result partition.
RESULTS_GROUP = "logic"
#: The outbox's default group: the backend delivery. Another sink (a notifier) reads under a group of its own.
OUTBOX_GROUP = "delivery"
#: The consumer name of a reader that names none (tools, tests). A logic worker reads under a name of its own per
#: process (:attr:`LogicWorker.instance`) and claims the previous owner's pending entries on taking a partition.
PARTITION_CONSUMER = "owner"
#: Hash tag of the keys in cluster mode when no namespace is configured.
CLUSTER_DEFAULT_NAMESPACE = "fbv"


def results_queue(partition: int) -> str:
    """The unprefixed name of a result partition's stream: what dead-letter records and queue gauges call it."""
    return f"{RESULTS_PREFIX}{partition}"


@dataclass(frozen=True)
class Keys:
    """The pipeline's key names under one namespace."""

    namespace: str = ""

    def _k(self, name: str) -> str:
        return f"{{{self.namespace}}}:{name}" if self.namespace else name

    @property
    def frames(self) -> str:
        return self._k(FRAMES)

    def results(self, partition: int) -> str:
        return self._k(results_queue(partition))

    @property
    def outbox(self) -> str:
        return self._k(OUTBOX)

    @property
    def camera_status(self) -> str:
        return self._k(CAMERA_STATUS)

    @property
    def evidence_requests(self) -> str:
        return self._k(EVIDENCE_REQUESTS)

    def stats(self, stage: str) -> str:
        return self._k(f"{STATS_PREFIX}{stage}")

    def stats_writer(self, stage: str, writer: str) -> str:
        return self._k(f"{STATS_PREFIX}{stage}{STATS_WRITER_INFIX}{writer}")

    def once(self, kind: str, message_id: str) -> str:
        digest = hashlib.blake2b(f"{kind}\x1f{message_id}".encode(), digest_size=12).hexdigest()
        return self._k(f"{ONCE_PREFIX}{digest}")

    @property
    def frames_epoch(self) -> str:
        """Marker of the frames Redis's lifetime (split roles only): gone = the server lost its frames."""
        return self._k(FRAMES_EPOCH)

    @property
    def dead_letter(self) -> str:
        return self._k(DEAD_LETTER)

    def lease(self, partition: int) -> str:
        return self._k(f"{LEASE_PREFIX}{partition}")

    @property
    def logic_workers(self) -> str:
        return self._k(LOGIC_WORKERS)

    @property
    def episodes(self) -> str:
        return self._k(EPISODES)

    @property
    def baselines(self) -> str:
        return self._k(BASELINES)

    @property
    def time_budgets(self) -> str:
        return self._k(TIME_BUDGETS)

    @property
    def snapshots(self) -> str:
        return self._k(SNAPSHOTS)

    def pattern(self, name: str) -> str:
        """An ACL key pattern for ``name`` (a fixed key, or a prefix followed by ``*``) under this namespace."""
        return self._k(name)


#: The keys each transport operation touches (a name ending ``*``: one of those keys): what a permission error names
#: when Redis's NOPERM reply does not (Redis 7.0 says only "one of the keys").
OPERATION_KEYS: dict[str, tuple[str, ...]] = {
    "push_frames": (FRAMES, f"{ONCE_PREFIX}*", f"{STATS_PREFIX}queue"),
    "pop_frames": (FRAMES,), "pop_frames_nowait": (FRAMES,), "frame_queue_depth": (FRAMES,),
    "publish_results": (f"{RESULTS_PREFIX}*", f"{ONCE_PREFIX}*"),
    "read_results": (f"{RESULTS_PREFIX}*",), "read_results_fenced": (f"{LEASE_PREFIX}*", f"{RESULTS_PREFIX}*"),
    "claim_partition": (f"{LEASE_PREFIX}*", f"{RESULTS_PREFIX}*"), "ack_results": (f"{RESULTS_PREFIX}*",),
    "commit_results": (f"{LEASE_PREFIX}*", f"{RESULTS_PREFIX}*", OUTBOX, EPISODES, BASELINES, TIME_BUDGETS),
    "result_backlog": (f"{RESULTS_PREFIX}*",),
    "ensure_groups": (f"{RESULTS_PREFIX}*", OUTBOX),
    "heartbeat_logic_worker": (LOGIC_WORKERS,), "leave_logic_workers": (LOGIC_WORKERS,),
    "try_lease": (f"{LEASE_PREFIX}*",), "release_lease": (f"{LEASE_PREFIX}*",), "renew_leases": (f"{LEASE_PREFIX}*",),
    "lease_owner": (f"{LEASE_PREFIX}*",), "lease_holder": (f"{LEASE_PREFIX}*",),
    "save_episodes": (EPISODES,), "load_episodes": (EPISODES,), "load_baseline": (BASELINES,),
    "load_time_budget": (TIME_BUDGETS,),
    "outbox_groups": (OUTBOX,), "add_alerts": (OUTBOX,), "add_alerts_and_ack": (OUTBOX, f"{RESULTS_PREFIX}*"),
    "read_alerts": (OUTBOX,), "claim_stale_alerts": (OUTBOX,), "ack_alerts": (OUTBOX,), "outbox_length": (OUTBOX,),
    "outbox_pending": (OUTBOX,),
    "request_evidence": (EVIDENCE_REQUESTS,), "read_evidence_requests": (EVIDENCE_REQUESTS,),
    "set_camera_status": (CAMERA_STATUS,), "camera_statuses": (CAMERA_STATUS,),
    "report_totals": (f"{STATS_PREFIX}*",), "stats": (f"{STATS_PREFIX}*",), "dead_letter": (DEAD_LETTER,),
    "dead_letters": (DEAD_LETTER,), "put_snapshot": (SNAPSHOTS,), "snapshots": (SNAPSHOTS,),
}
