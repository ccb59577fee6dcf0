"""Logic worker loop: owned result partitions -> per-camera logic -> alert outbox (see docs/alerts.md).

Scale-out and order. Results sit in ``P`` partition streams (a camera always in the same one). Each worker
heartbeats into ``logic:workers`` and holds expiring leases on at most ``ceil(P / live workers)``
partitions: it renews its leases, takes free ones up to that share (preferring ``p % n == its rank`` so
the split converges), and gives back extras - between batches, after acking what it read - so a joining
worker gets its share. A dead worker's leases expire and the others take them. On taking a partition the
worker moves the partition's pending entries (what the previous owner read but never acknowledged) to its
own consumer, re-reads them, then new ones. One camera's results are therefore processed in stream order by
one worker at a time.

Fencing. Each process reads under a consumer name of its own (``<id>@<random instance>``) and takes each
lease with a token new to that acquisition (``<id>@<instance>.<n>``): a second process started with the same
``--id``, or this one paused (SIGSTOP, GC, a VM migration) past its lease, is another owner. Every write made
for a partition - the read of new entries, the take-over of pending ones, and the commit below - is a Redis
script that first checks the token, so a worker that lost its lease cannot write: it counts
``fenced:refused``, logs, drops the partition's state, and carries on with the partitions it still holds.
Leases are renewed before each step and between the results of a batch once ``RENEW_FRACTION`` of the TTL
has passed, so a long batch does not outlive its lease.

Durability, per batch of one partition (``_process_batch``): process each result in order (decode,
``CameraLogic.process``, latency), then one fenced commit (``Transport.commit_results``) acks the
results, adds their alerts to the outbox and saves each touched camera's state (``CameraLogic.episodes()``
plus ``through``, the last entry id it reflects) - all or nothing - and only then counts the results and hands
them to the recorder. A crash before the commit replays the
batch from the previous state; after it, nothing is replayed; a refused commit leaves the batch to the new
owner, who judges it from the last committed state. So no alert is lost or written twice. Open episodes are
part of the state, so a restart does not raise an episode again. (A state saved by an older version may
still hold ``unsent_alerts``: they are written, fenced, when that state is loaded.) With ``logic.baseline``
on, a camera's horse baseline (``fbvision.logic.baseline``) is loaded with its state and saved in the same
commit whenever one of its days closed (it changes only then, so a stop has nothing left to save).
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fbvision.core.candidates import Candidates
from fbvision.core.clock import ReferenceClock
from fbvision.core.evidence import EvidenceRequest, evidence_name, with_evidence_urls
from fbvision.core.loop import Backoff, LogThrottle, StageLoop
from fbvision.core.metrics import Counters, LatencyStats, set_time_budget, snapshot, stage_durations
from fbvision.core.transport import (
    LEASE_TOKEN_SEP,
    REDIS_ID_RE,
    StreamEntry,
    Transport,
    TransportUnavailable,
    new_token,
    results_queue,
    valid_redis_id,
)
from fbvision.core.wire import WireError, decode_result
from fbvision.logic.camera_logic import CameraLogic

if TYPE_CHECKING:
    from fbvision.core.config import Settings
    from fbvision.core.events import AlertEvent

logger = logging.getLogger(__name__)

#: Keys this worker adds to the saved CameraLogic state (CameraLogic ignores unknown keys on restore).
THROUGH_KEY = "through"
UNSENT_KEY = "unsent_alerts"
STATS_STAGE = "logic"
#: A camera status not refreshed for this many status intervals (at least STATUS_MIN_AGE_S) is unknown.
STATUS_MAX_INTERVALS = 5
STATUS_MIN_AGE_S = 5.0
#: Leases are renewed when this fraction of their TTL has passed since the last renewal: before each step and
#: between the results of a batch, so a long batch cannot outlive its lease unnoticed.
RENEW_FRACTION = 1 / 3


class LeaseLost(Exception):
    """A fenced write was refused: another worker holds the partition now. Its batch is abandoned (the new owner
    claims the unacknowledged results) and the partition's state dropped."""

    def __init__(self, partition: int):
        super().__init__(f"lease on partition {partition} lost")
        self.partition = partition


def _entry_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class LogicWorker:
    """``run(stop)``: lease partitions, process their results per camera, write alerts durably."""

    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        worker_id: str,
        *,
        class_ids: Mapping[str, int] | None = None,
        recorder: Any = None,
        clock=None,
        lease_ttl_s: float = 5.0,
        heartbeat_s: float = 1.0,
        worker_ttl_s: float | None = None,
        read_count: int = 64,
        tick_interval_s: float = 1.0,
        report_interval_s: float = 1.0,
    ):
        if lease_ttl_s <= heartbeat_s:
            raise ValueError("lease_ttl_s must be longer than heartbeat_s, or leases lapse between renewals")
        if valid_redis_id(worker_id) is None:  # the other workers would skip (and remove) it from the registry
            raise ValueError(f"logic worker id {worker_id!r} must match {REDIS_ID_RE.pattern}")
        self.settings = settings
        self.transport = transport
        self.worker_id = worker_id
        self.recorder = recorder
        # The reference clock (Redis TIME, see fbvision.core.clock): when results arrive, tick times, heartbeats.
        # ``clock`` injects another (tests); capture times come stamped on the same clock by the camera manager.
        self.ref_clock = ReferenceClock(transport.server_time)
        self.clock = clock if clock is not None else self.ref_clock.now
        self.lease_ttl_s = lease_ttl_s
        self.heartbeat_s = heartbeat_s
        self.worker_ttl_s = worker_ttl_s if worker_ttl_s is not None else max(3 * heartbeat_s, lease_ttl_s)
        self.read_count = read_count
        self.drain_s = 2.0  # warm stop: judge what is already there for up to this long
        self._last_read = 0
        self.tick_interval_s = tick_interval_s
        self.report_interval_s = report_interval_s
        self.partitions = transport.result_partitions
        self._class_names = dict(class_ids) if class_ids is not None else None
        self._class_id_list: list[int] | None = None
        self._overrides = {cam.id: cam.logic for cam in settings.cameras}
        self._configured = [cam.id for cam in settings.cameras if cam.enabled]
        self._max_cameras = settings.logic.max_cameras
        self._cap_log = LogThrottle(10.0)
        self._invalid_seen: dict[str, int] = {}  # transport.invalid_ids already folded into the counters
        self.counters = Counters(prometheus_stage=STATS_STAGE)
        self.counters.declare("results", "alerts", "redis_unavailable")
        self.latency = LatencyStats()
        self.held: set[int] = set()
        # Fencing: ``instance`` is this process's consumer name and the stem of its lease tokens, random per start,
        # so a second process started with the same --id (or this one, paused past its lease) is another owner.
        self.instance = f"{worker_id}{LEASE_TOKEN_SEP}{new_token()}"
        self._tokens: dict[int, str] = {}  # held partition -> its lease token (``instance.n``, n per acquisition)
        self._acquisitions = 0
        self._renewed_at = 0.0  # monotonic time of the last renewal of all held leases
        self._need_pending: set[int] = set()
        self._logics: dict[str, CameraLogic] = {}
        self._through: dict[str, tuple[int, str] | None] = {}
        self._budget_saved: dict[str, float] = {}  # camera -> monotonic time its time budget was last saved
        self._live_workers: list[str] = []
        self._backlogged: set[int] = set()
        self._next_heartbeat = 0.0
        self._next_tick = 0.0
        self._next_report = 0.0

    # -- class ids ---------------------------------------------------------------------------------
    def class_id_list(self) -> list[int]:
        """Ids of ``settings.logic.class_names`` in the model (looked up by name in its metadata)."""
        if self._class_id_list is None:
            if self._class_names is None:
                from fbvision.core.modelinfo import load_model_info

                info = load_model_info(self.settings.model.resolved_path())
                self._class_names = {name: i for i, name in enumerate(info.class_names)}
            wanted = self.settings.logic.class_names
            missing = [n for n in wanted if n not in self._class_names]
            if missing:
                raise ValueError(f"logic.class_names {missing} not among the model's classes {sorted(self._class_names)}")
            self._class_id_list = [self._class_names[n] for n in wanted]
        return self._class_id_list

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        logger.info("logic worker %s starting (%d partitions)", self.worker_id, self.partitions)
        self.class_id_list()  # a model without the configured classes is a config error: fail at start
        self.loop().run(stop)

    def loop(self) -> StageLoop:
        """The stage loop with the logic worker's policy: a bug on a batch is not caught (the results stay
        pending and a restart replays them), an outage invalidates what was read (``_after_outage``), and
        the counters go out from ``step`` itself (with the heartbeat), so there is no separate flush."""
        return StageLoop(
            f"logic worker {self.worker_id}", self.step, counters=self.counters, outage_counter="redis_unavailable",
            backoff=Backoff(0.1, 5.0, random.Random()), on_outage=self._after_outage, on_error="raise",
            drain=self._drain, shutdown=self._shutdown,
        )

    def step(self, stop: threading.Event | None = None) -> int:
        """One pass: heartbeat/leases, ticks and report when due, then one batch. Returns results handled."""
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.heartbeat_s
            self.rebalance()
        self._renew_if_due()
        if now >= self._next_tick:
            self._next_tick = now + self.tick_interval_s
            self.tick_cameras()
        if now >= self._next_report:
            self._next_report = now + self.report_interval_s
            self.report()
        if self._need_pending:
            partition = min(self._need_pending)
            entries = self.transport.read_results([partition], pending=True, count=self.read_count,
                                                  consumer=self.instance)
            if not entries:
                self._need_pending.discard(partition)
                # Not ticked until a read of new entries shows how far behind it is: results that arrived
                # while nobody read them are not an outage (camera_offline would raise, then resolve).
                self._backlogged.add(partition)
                return 0
            logger.info("logic worker %s: resuming %d unacknowledged result(s) of partition %d",
                        self.worker_id, len(entries), partition)
            return self._process_batch(partition, entries)
        owned = sorted(self.held)
        block_s = max(0.01, min(0.5, self._next_heartbeat - time.monotonic()))
        if not owned:
            if stop is not None:
                stop.wait(block_s)
            else:
                time.sleep(block_s)
            return 0
        return self._read_new(owned, block_s)

    def _read_new(self, owned: list[int], block_s: float) -> int:
        """Read and judge the new results of the ``owned`` partitions (blocking up to ``block_s``)."""
        entries, lost = self.transport.read_results_fenced(
            {p: self._tokens[p] for p in owned}, self.instance, count=self.read_count, block_s=block_s
        )
        for p in sorted(lost):
            self._lost(p, "found at a read")
        self._last_read = len(entries)
        by_partition: dict[int, list[StreamEntry]] = {}
        for entry in entries:
            by_partition.setdefault(entry.stream_index, []).append(entry)
        # A full read means more is waiting: results lag behind the wall clock, so do not tick those
        # cameras (a tick would take the backlog for a camera without frames).
        self._backlogged = {p for p, batch in by_partition.items() if len(batch) >= self.read_count}
        return sum(self._process_batch(p, batch) for p, batch in sorted(by_partition.items()))

    def _drain(self) -> None:
        """Warm stop: judge what is already in the held partitions (no waiting), for up to ``drain_s``.

        The inference stage stops first and publishes its last batch on its way out; without this the logic
        would leave those results for the next owner (they are not lost, but a stopped run would end with them
        unjudged)."""
        deadline = time.monotonic() + self.drain_s
        while self.held and time.monotonic() < deadline:
            self._read_new(sorted(self.held), 0.0)
            if self._last_read == 0:
                break
        self._save_time_budgets()

    def _save_time_budgets(self) -> None:
        """Warm stop: every held camera's time budget, whatever its last save - the next owner goes on from here."""
        if self.settings.logic.time_budget.persist_interval_s <= 0:
            return
        by_partition: dict[int, list[str]] = {}
        for cam, logic in self._logics.items():
            if logic.budget is not None:
                by_partition.setdefault(self.transport.partition_of(cam), []).append(cam)
        for partition, cams in sorted(by_partition.items()):
            if partition not in self.held:
                continue
            try:
                self._commit(partition, cameras=sorted(cams), force_budgets=True)
            except (LeaseLost, TransportUnavailable):  # counted and logged by _commit; the next owner starts afresh
                continue

    # -- leases ------------------------------------------------------------------------------------
    def rebalance(self) -> None:
        """Heartbeat, renew held leases, give back extras, take free partitions up to the fair share."""
        live = self.transport.heartbeat_logic_worker(self.worker_id, self.worker_ttl_s, now=self.clock())
        if self.worker_id not in live:
            live = sorted([*live, self.worker_id])
        self._live_workers = live
        n = len(live)
        share = math.ceil(self.partitions / n)
        rank = live.index(self.worker_id)
        preferred = [p for p in range(self.partitions) if p % n == rank]
        order = preferred + [p for p in range(self.partitions) if p % n != rank]

        self._renew_if_due(force=True)
        # Give back the partitions we like least first, so that the split converges on p % n == rank.
        for p in reversed(order):
            if len(self.held) <= share:
                break
            if p in self.held:
                self.transport.release_lease(p, self._tokens[p])
                self.counters.incr("leases:released")
                logger.info("logic worker %s: released partition %d (fair share %d of %d live)",
                            self.worker_id, p, share, n)
                self._drop_partition(p)
        for p in order:
            if len(self.held) >= share:
                break
            if p not in self.held:
                self._acquire(p)

    def _acquire(self, partition: int) -> None:
        """Take a free partition: a lease token new to this acquisition, then the previous owner's pending entries
        moved to our consumer (fenced: a pause in between cannot take them from a newer owner)."""
        self._acquisitions += 1
        token = f"{self.instance}.{self._acquisitions}"
        if not self.transport.try_lease(partition, token, self.lease_ttl_s):
            return
        claimed = self.transport.claim_partition(partition, token, self.instance)
        if claimed is None:
            self.counters.incr("leases:lost")
            logger.warning("logic worker %s: lost partition %d while taking it over", self.worker_id, partition)
            return
        n_claimed, n_trimmed = claimed
        self.held.add(partition)
        self._tokens[partition] = token
        self._need_pending.add(partition)
        self.counters.incr("leases:acquired")
        if n_claimed:
            self.counters.incr("leases:claimed_pending", n_claimed)
        if n_trimmed:  # read by the previous owner, never acked, and trimmed from the stream since
            self.counters.incr("dropped:trimmed", n_trimmed)
        logger.info("logic worker %s: took partition %d (%d unacknowledged result(s) taken over)",
                    self.worker_id, partition, n_claimed)

    def _renew_if_due(self, force: bool = False) -> None:
        """Renew every held lease when RENEW_FRACTION of the TTL has passed since the last renewal (or now)."""
        now = time.monotonic()
        if not self.held or (not force and now - self._renewed_at < self.lease_ttl_s * RENEW_FRACTION):
            return
        lost = self.transport.renew_leases({p: self._tokens[p] for p in self.held}, self.lease_ttl_s)
        self._renewed_at = now
        for p in sorted(lost):
            self._lost(p, "found at renewal")

    def _lost(self, partition: int, how: str) -> None:
        logger.warning("logic worker %s: lost the lease on partition %d (%s); dropping its state",
                       self.worker_id, partition, how)
        self.counters.incr("leases:lost")
        self._drop_partition(partition)

    def _drop_partition(self, partition: int) -> None:
        self.held.discard(partition)
        self._tokens.pop(partition, None)
        self._need_pending.discard(partition)
        self._backlogged.discard(partition)
        # Whoever owns it next moves the cameras' state on; reload it if the partition comes back.
        for cam in [c for c in self._logics if self.transport.partition_of(c) == partition]:
            self._forget_camera(cam)

    def _forget_camera(self, camera_id: str) -> None:
        self._logics.pop(camera_id, None)
        self._through.pop(camera_id, None)

    def _after_outage(self) -> None:
        """Redis failed mid-way: what was read may not be acked. Re-read pending and reload state."""
        self._need_pending = set(self.held)
        for cam in list(self._logics):
            self._forget_camera(cam)

    # -- per camera --------------------------------------------------------------------------------
    def _admit(self, camera_id: str) -> bool:
        """Whether this worker keeps state for ``camera_id``: one it has, a configured one, or a new one while it
        holds fewer than ``logic.max_cameras``. Anyone who can write to Redis can send results of made-up camera
        ids; without a cap each would add a CameraLogic (tracks, smoothing windows) and a saved state forever."""
        if camera_id in self._logics or camera_id in self._overrides or len(self._logics) < self._max_cameras:
            return True
        held = self._cap_log("camera_cap")
        if held is not None:
            logger.warning("logic worker %s: camera %.80r dropped, already %d cameras (logic.max_cameras); "
                           "%d more dropped since the last message", self.worker_id, camera_id, len(self._logics),
                           held)
        return False

    def _logic_for(self, camera_id: str) -> CameraLogic:
        logic = self._logics.get(camera_id)
        if logic is not None:
            return logic
        saved = self.transport.load_episodes(camera_id)
        through = saved.pop(THROUGH_KEY, None)
        unsent = saved.pop(UNSENT_KEY, None) or []
        if unsent:
            # State saved by a version that wrote alerts after the state (a crash in between left them here):
            # write them now (if they did reach the outbox, the backend deduplicates by idempotency key).
            self._commit(self.transport.partition_of(camera_id),
                         alerts_json=[a.encode() if isinstance(a, str) else a for a in unsent],
                         states={camera_id: {**saved, THROUGH_KEY: through, UNSENT_KEY: []}})
            self.counters.incr("alerts:rewritten", len(unsent))
            logger.warning("camera %s: re-wrote %d alert(s) saved before a crash", camera_id, len(unsent))
        baseline = self.transport.load_baseline(camera_id) if self.settings.logic.baseline.enabled else {}
        budget_cfg = self.settings.logic.time_budget
        budget_state = (self.transport.load_time_budget(camera_id)
                        if budget_cfg.enabled and budget_cfg.persist_interval_s > 0 else {})
        try:
            logic = CameraLogic(
                camera_id, self.settings.logic, self._overrides.get(camera_id), self.class_id_list(),
                open_episodes=saved or None,
            )
        except (ValueError, KeyError, TypeError) as exc:
            logger.error("camera %s: saved episode state unusable (%s); starting fresh", camera_id, exc)
            self.counters.incr("episodes:unreadable")
            logic = CameraLogic(camera_id, self.settings.logic, self._overrides.get(camera_id), self.class_id_list())
        if baseline and logic.baseline is not None:
            # The horse's own normal (fbvision.logic.baseline), saved when its last day closed.
            try:
                logic.baseline.load(baseline)
                self.counters.incr("baseline:loaded")
            except (ValueError, KeyError, TypeError) as exc:
                logger.error("camera %s: saved baseline unusable (%s); learning afresh", camera_id, exc)
                self.counters.incr("baseline:unreadable")
        if budget_state and logic.budget is not None:
            # A horse's day so far (fbvision.logic.timebudget), as its last owner saved it: the time since is
            # unknown time, a lying bout goes on if the horse is still lying (the gap policy).
            try:
                logic.budget.load(budget_state)
                self.counters.incr("time_budget:loaded")
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                logger.error("camera %s: saved time budget unusable (%s); the day starts afresh", camera_id, exc)
                self.counters.incr("time_budget:unreadable")
        self._budget_saved[camera_id] = time.monotonic()
        self._logics[camera_id] = logic
        if isinstance(through, dict) and "partition" in through and "entry_id" in through:
            self._through[camera_id] = (int(through["partition"]), str(through["entry_id"]))
        else:
            self._through[camera_id] = None
        return logic

    def _budgets_due(self, cameras: list[str], force: bool = False) -> dict[str, dict]:
        """The time budgets of ``cameras`` last saved ``persist_interval_s`` or more ago (all with ``force``),
        to be saved with this commit."""
        interval = self.settings.logic.time_budget.persist_interval_s
        if interval <= 0:
            return {}
        now, out = time.monotonic(), {}
        for cam in cameras:
            logic = self._logics.get(cam)
            if logic is None or logic.budget is None:
                continue
            if not force and now - self._budget_saved.get(cam, 0.0) < interval:
                continue
            out[cam] = logic.budget.to_dict()
        return out

    def _already_done(self, camera_id: str, partition: int, entry_id: str) -> bool:
        through = self._through.get(camera_id)
        return through is not None and through[0] == partition and _entry_order(entry_id) <= _entry_order(through[1])

    def _state(self, camera_id: str) -> dict:
        state = self._logics[camera_id].episodes()
        through = self._through.get(camera_id)
        state[THROUGH_KEY] = None if through is None else {"partition": through[0], "entry_id": through[1]}
        state[UNSENT_KEY] = []  # alerts are written with the state they belong to, in one fenced commit
        return state

    def _commit(self, partition: int, *, entry_ids: list[str] | None = None, alerts_json: list[bytes] | None = None,
                cameras: list[str] | None = None, states: dict[str, dict] | None = None,
                force_budgets: bool = False) -> None:
        """Ack ``entry_ids``, write the alerts and save the cameras' state: one fenced script, all or nothing.
        Raises LeaseLost (and drops the partition) when another worker holds the partition's lease now."""
        entry_ids, alerts_json = entry_ids or [], alerts_json or []
        token = self._tokens.get(partition)
        all_states = {cam: self._state(cam) for cam in cameras or []}
        all_states.update(states or {})
        # A baseline changes when one of its days closes: saved then, with the state of the same frames.
        changed = [self._logics[c].baseline for c in cameras or [] if c in self._logics]
        changed = [b for b in changed if b is not None and b.changed]
        baselines = {b.camera_id: b.to_dict() for b in changed}
        more: dict[str, dict] = {"baselines": baselines} if baselines else {}
        budgets = self._budgets_due(cameras or [], force=force_budgets)
        if budgets:
            more["time_budgets"] = budgets
        if token is not None and self.transport.commit_results(
            partition, token, entry_ids=entry_ids, alerts_json=alerts_json, states=all_states, **more
        ):
            for b in changed:
                b.changed = False
            if changed:
                self.counters.incr("baseline:saved", len(changed))
            if budgets:
                now = time.monotonic()
                self._budget_saved.update(dict.fromkeys(budgets, now))
                self.counters.incr("time_budget:saved", len(budgets))
            return
        # Paused (GC, SIGSTOP, a VM migration) or cut off past the lease: the new owner has claimed these results
        # and will judge them from the last committed state. Writing ours too would duplicate or reorder alerts.
        self.counters.incr("fenced:refused")
        self.counters.incr("fenced:results_refused", len(entry_ids))
        self.counters.incr("fenced:alerts_refused", len(alerts_json))
        logger.warning("logic worker %s: write to partition %d refused, the lease is not ours any more (%d result "
                       "ack(s), %d alert(s) left to the new owner)", self.worker_id, partition, len(entry_ids),
                       len(alerts_json))
        if partition in self.held:
            self._lost(partition, "write refused")
        raise LeaseLost(partition)

    # -- processing --------------------------------------------------------------------------------
    def _process_batch(self, partition: int, entries: list[StreamEntry]) -> int:
        try:
            return self._judge_batch(partition, entries)
        except LeaseLost:  # counted and logged; the new owner has this batch's results, and our state is dropped
            return 0

    def _judge_batch(self, partition: int, entries: list[StreamEntry]) -> int:
        ids = [e.entry_id for e in entries]
        alerts: list[AlertEvent] = []
        touched: list[str] = []
        judged = 0
        to_record: list[tuple[str, Any]] = []
        queue = results_queue(partition)
        for entry in entries:
            # A long batch must not outlive its lease: renew when due, and give up the batch if it is gone.
            self._renew_if_due()
            if partition not in self.held:
                self.counters.incr("fenced:batches_abandoned")
                raise LeaseLost(partition)
            if not entry.payload:
                # No payload: trimmed from the stream (maxlen) before it was processed, or published empty.
                self.counters.incr("dropped:trimmed")
                continue
            logic_start = self.clock()  # the timeline is on the reference clock too
            try:
                msg = decode_result(entry.payload)
            except WireError as exc:
                self.counters.incr(f"dropped:wire_{exc.reason}")
                logger.warning("partition %d entry %s: undecodable result (%s), dead-lettered", partition, entry.entry_id, exc)
                self.transport.dead_letter(queue, f"wire_{exc.reason}", entry.payload)
                continue
            cam = msg.camera_id
            if not self._admit(cam):
                self.counters.incr("dropped:camera_cap")
                continue
            logic = self._logic_for(cam)
            if self._already_done(cam, partition, entry.entry_id):
                self.counters.incr("skipped:replayed")
                continue
            arrived = self.clock()  # camera_offline is judged by when results arrive, not by capture times
            t = msg.timeline.captured or msg.timeline.published or arrived
            out_of_order_before = logic.frames_out_of_order
            clock_faults_before = (logic.frames_future, logic.clock_steps_back)
            try:
                outcome = logic.process(
                    seq=msg.seq, t=t, candidates=Candidates(msg.boxes, msg.scores, msg.class_ids),
                    frame_size=(msg.src_w, msg.src_h), arrived=arrived,
                )
            except Exception as exc:  # a bug on one result must not wedge the partition forever
                logger.exception("camera %s seq %d: logic failed, result dead-lettered", cam, msg.seq)
                self.counters.incr("dropped:logic_error")
                self.transport.dead_letter(queue, f"logic_error:{type(exc).__name__}", entry.payload)
                outcome = None
            # The camera's state now reflects this entry (even a failed one: it is acked with the batch).
            self._through[cam] = (partition, entry.entry_id)
            if cam not in touched:
                touched.append(cam)
            if outcome is None:
                continue
            if logic.frames_future > clock_faults_before[0]:
                # An impossible capture time (far ahead of its arrival): skipped, the camera judged on.
                self.counters.incr("dropped:future_ts")
                continue
            if logic.clock_steps_back > clock_faults_before[1]:
                self.counters.incr("clock:steps_back")  # judged all the same, on the camera's shifted time
            if logic.frames_out_of_order > out_of_order_before:
                # Two inference workers can publish one camera's frames slightly out of capture order; the
                # camera logic skips a frame older than the last one - counted here, not as a judged result.
                self.counters.incr("dropped:out_of_order")
                continue
            logic_end = self.clock()
            self.latency.add_many(stage_durations(msg.timeline, logic_start, logic_end))
            judged += 1
            if outcome.alerts:
                alerts.extend(outcome.alerts)
            if self.recorder is not None:
                # What the logic was given, for replays (fbvision.logic.playback): the same t, arrival and input.
                inputs = {"t": t, "arrived": arrived, "src_w": msg.src_w, "src_h": msg.src_h,
                          "candidates": (msg.boxes, msg.scores, msg.class_ids)}
                to_record.append((cam, outcome, inputs))
        alerts = self._with_evidence(alerts)
        self._commit(partition, entry_ids=ids, alerts_json=[a.to_json().encode() for a in alerts], cameras=touched)
        self._request_evidence(alerts)
        # Counted and recorded once committed: a refused batch is judged again (counted, recorded) by the new owner.
        if judged:
            self.counters.incr("results", judged)
        for cam, outcome, inputs in to_record:
            self._record(cam, outcome, inputs)
        if alerts:
            self.counters.incr("alerts", len(alerts))
        return len(entries)

    # -- evidence (docs/evidence-and-review.md) ----------------------------------------------------
    def _with_evidence(self, alerts: list[AlertEvent]) -> list[AlertEvent]:
        """Raised and escalated alerts with their evidence URLs (:func:`~fbvision.core.evidence.with_evidence_urls`)."""
        cfg = self.settings.evidence
        if not cfg.enabled or not alerts:
            return alerts
        return with_evidence_urls(alerts, cfg.url_prefix)

    def _request_evidence(self, alerts: list[AlertEvent]) -> None:
        """After the alerts are committed: ask the camera managers for their evidence. Best effort - a request
        that cannot be written costs the evidence (counted), never the alert."""
        cfg = self.settings.evidence
        wanted = [a for a in alerts if a.evidence.snapshot is not None]
        if not cfg.enabled or not wanted:
            return
        now = self.clock()
        requests = [EvidenceRequest(
            camera_id=a.camera_id, name=evidence_name(a.episode_key, a.state.value, a.severity.value),
            episode_key=a.episode_key, rule=a.rule, severity=a.severity.value, state=a.state.value,
            decided_at=a.updated_at, requested_at=now, track_id=a.track_id, box=a.evidence.box,
        ).to_json() for a in wanted]
        try:
            self.transport.request_evidence(requests, maxlen=cfg.requests_maxlen)
            self.counters.incr("evidence:requested", len(requests))
        except TransportUnavailable:
            self.counters.incr("evidence:request_failed", len(requests))
            logger.warning("%d evidence request(s) not written (redis unavailable): those alerts go without",
                           len(requests))

    def _record(self, camera_id: str, outcome: Any = None, inputs: dict | None = None, *,
                tick: tuple[float, bool | None, list] | None = None) -> None:
        """Hand a judged frame (or, with ``tick``, a tick: now, camera_online, alerts) to the recorder. The frame's
        inputs and the ticks go only to a recorder that takes them (``records_inputs``), for replays."""
        takes_inputs = getattr(self.recorder, "records_inputs", False)
        try:
            if tick is not None:
                if takes_inputs:
                    self.recorder.record_tick(camera_id, *tick)
            elif takes_inputs:
                self.recorder.record_outcome(camera_id, outcome, inputs=inputs)
            else:
                self.recorder.record_outcome(camera_id, outcome)
        except Exception:  # the recording is optional: a full disk must not stop the alerts
            if not self.counters.get("recorder_errors"):
                logger.exception("camera %s: recorder failed (further failures are only counted)", camera_id)
            self.counters.incr("recorder_errors")

    def tick_cameras(self) -> None:
        """Let time pass for every owned camera (camera_offline / horse_absent need no frame to fire)."""
        if not self.held:
            return
        statuses = self.transport.camera_statuses()
        now = self.clock()
        # Cameras removed from the config are forgotten: their leftover status (and results) raise nothing.
        cameras = set(self._configured) if self._configured else set(self._logics) | set(statuses)
        behind = self._need_pending | self._backlogged
        for cam in sorted(cameras):
            partition = self.transport.partition_of(cam)
            online = self._status_online(statuses.get(cam), now)
            # Results still queued for the camera (a previous owner's, or a backlog) are older than `now`:
            # process them first, unless the camera manager itself says the camera is down.
            if partition not in self.held or (partition in behind and online is not False):
                continue
            if not self._admit(cam):  # a flood of made-up ids in cameras:status: no state for them either
                continue
            try:
                logic = self._logic_for(cam)
                alerts = logic.tick_reference(now, camera_online=online)
                if alerts:
                    alerts = self._with_evidence(alerts)
                    self._commit(partition, alerts_json=[a.to_json().encode() for a in alerts], cameras=[cam])
                    self._request_evidence(alerts)
            except LeaseLost:  # counted, logged, the partition dropped: its cameras are skipped from here on
                continue
            if self.recorder is not None:  # every tick moves the logic's state: a replay needs them all
                self._record(cam, tick=(now, online, alerts))
            if alerts:
                self.counters.incr("alerts", len(alerts))


    def _status_online(self, status: dict | None, now: float) -> bool | None:
        """What the camera manager says (True/False), or None (unknown): no status, or one not refreshed for
        STATUS_MAX_INTERVALS status intervals - a host that died while its camera was "online" is not trusted
        (camera_offline then goes by arrivals alone)."""
        if not isinstance(status, dict) or status.get("state") is None:
            return None
        updated = status.get("updated")
        if isinstance(updated, (int, float)) and math.isfinite(updated):
            max_age = max(STATUS_MIN_AGE_S, STATUS_MAX_INTERVALS * self.settings.camera.status_interval_s)
            if now - updated > max_age:
                self.counters.incr("camera_status:stale")
                return None
        return status.get("state") == "online"

    # -- reporting and shutdown --------------------------------------------------------------------
    def time_budgets(self) -> dict[str, dict]:
        """Each owned camera's time budget (a horse's day, rolling 24 h) as JSON-able dicts; exported as
        Prometheus gauges on the way (``fbvision_horse_day``)."""
        out: dict[str, dict] = {}
        for cam, logic in sorted(self._logics.items()):
            summary = logic.time_budget()
            if summary is None:
                continue
            out[cam] = summary.to_dict()
            set_time_budget(cam, summary.gauges())
        return out

    def snapshot(self) -> dict[str, object]:
        return snapshot(
            self.latency, self.counters, worker_id=self.worker_id, partitions=sorted(self.held),
            cameras=sorted(self._logics), live_workers=len(self._live_workers), clock=self.ref_clock.report(),
            time_budget=self.time_budgets(),
        )

    def report(self) -> None:
        # Malformed ids the transport skipped (workers registry, camera statuses...), as this stage's counters.
        for kind, total in list(self.transport.invalid_ids.items()):
            self.counters.incr(f"skipped:invalid_{kind}", total - self._invalid_seen.get(kind, 0))
            self._invalid_seen[kind] = total
        self.transport.report_totals(STATS_STAGE, self.counters.writer, self.counters.snapshot())
        self.transport.put_snapshot(f"logic:{self.worker_id}", self.snapshot())

    def _shutdown(self) -> None:
        if self.recorder is not None:
            try:
                self.recorder.flush()
            except Exception:  # the recording is optional; never hide the real exit reason
                logger.exception("logic worker %s: recorder flush failed", self.worker_id)
        try:
            for p in sorted(self.held):
                self.transport.release_lease(p, self._tokens[p])
            self.transport.leave_logic_workers(self.worker_id)
            self.report()
        except TransportUnavailable as exc:
            logger.warning("logic worker %s: clean leave failed (%s); leases expire on their own", self.worker_id, exc)
        self.held.clear()
        self._tokens.clear()
        self._need_pending.clear()
        logger.info("logic worker %s stopped: %s", self.worker_id, json.dumps(self.counters.snapshot()))
