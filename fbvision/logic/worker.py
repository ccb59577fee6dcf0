"""Logic worker loop: owned result partitions -> per-camera logic -> alert outbox (see docs/alerts.md).

Scale-out and order. Results sit in ``P`` partition streams (a camera always in the same one). Each worker
heartbeats into ``logic:workers`` and holds expiring leases on at most ``ceil(P / live workers)``
partitions: it renews its leases, takes free ones up to that share (preferring ``p % n == its rank`` so
the split converges), and gives back extras - between batches, after acking what it read - so a joining
worker gets its share. A dead worker's leases expire and the others take them. On taking a partition the
worker first re-reads its pending entries (what the previous owner read but never acknowledged), then
new ones. One camera's results are therefore processed in stream order by one worker at a time.

Durability, per batch of one partition (``_process_batch``):

1. process each result in order (decode, ``CameraLogic.process``, latency, recorder);
2. save each touched camera's state (``CameraLogic.episodes()``) plus ``through`` (the last entry id it
   reflects) and ``unsent_alerts`` (this batch's alerts for that camera);
3. ``add_alerts_and_ack``: alerts into the outbox and the results acknowledged, in one MULTI;
4. for cameras that had alerts, save again without ``unsent_alerts``.

A crash before 2 replays the batch from the previous state. A crash between 2 and 3 leaves the results
pending: the next owner loads the saved state, puts its ``unsent_alerts`` into the outbox, and skips the
pending entries up to ``through`` (already reflected in that state) - nothing lost, nothing processed
twice. A crash between 3 and 4 puts the same alerts in the outbox a second time, with the same
idempotency keys, and the backend keeps one. Open episodes are part of the state, so a restart does not
raise an episode again.
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
from fbvision.core.loop import Backoff, StageLoop
from fbvision.core.metrics import Counters, LatencyStats, snapshot, stage_durations
from fbvision.core.transport import StreamEntry, Transport, TransportUnavailable
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
        clock=time.time,
        lease_ttl_s: float = 5.0,
        heartbeat_s: float = 1.0,
        worker_ttl_s: float | None = None,
        read_count: int = 64,
        tick_interval_s: float = 1.0,
        report_interval_s: float = 1.0,
    ):
        if lease_ttl_s <= heartbeat_s:
            raise ValueError("lease_ttl_s must be longer than heartbeat_s, or leases lapse between renewals")
        self.settings = settings
        self.transport = transport
        self.worker_id = worker_id
        self.recorder = recorder
        self.clock = clock  # the time given to CameraLogic.tick (capture times are wall-clock seconds)
        self.lease_ttl_s = lease_ttl_s
        self.heartbeat_s = heartbeat_s
        self.worker_ttl_s = worker_ttl_s if worker_ttl_s is not None else max(3 * heartbeat_s, lease_ttl_s)
        self.read_count = read_count
        self.tick_interval_s = tick_interval_s
        self.report_interval_s = report_interval_s
        self.partitions = transport.result_partitions
        self._class_names = dict(class_ids) if class_ids is not None else None
        self._class_id_list: list[int] | None = None
        self._overrides = {cam.id: cam.logic for cam in settings.cameras}
        self._configured = [cam.id for cam in settings.cameras if cam.enabled]
        self.counters = Counters(prometheus_stage=STATS_STAGE)
        self.counters.declare("results", "alerts", "redis_unavailable")
        self.latency = LatencyStats()
        self.held: set[int] = set()
        self._need_pending: set[int] = set()
        self._logics: dict[str, CameraLogic] = {}
        self._through: dict[str, tuple[int, str] | None] = {}
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
            shutdown=self._shutdown,
        )

    def step(self, stop: threading.Event | None = None) -> int:
        """One pass: heartbeat/leases, ticks and report when due, then one batch. Returns results handled."""
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.heartbeat_s
            self.rebalance()
        if now >= self._next_tick:
            self._next_tick = now + self.tick_interval_s
            self.tick_cameras()
        if now >= self._next_report:
            self._next_report = now + self.report_interval_s
            self.report()
        if self._need_pending:
            partition = min(self._need_pending)
            entries = self.transport.read_results([partition], pending=True, count=self.read_count)
            if not entries:
                self._need_pending.discard(partition)
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
        entries = self.transport.read_results(owned, pending=False, count=self.read_count, block_s=block_s)
        by_partition: dict[int, list[StreamEntry]] = {}
        for entry in entries:
            by_partition.setdefault(entry.stream_index, []).append(entry)
        # A full read means more is waiting: results lag behind the wall clock, so do not tick those
        # cameras (a tick would take the backlog for a camera without frames).
        self._backlogged = {p for p, batch in by_partition.items() if len(batch) >= self.read_count}
        return sum(self._process_batch(p, batch) for p, batch in sorted(by_partition.items()))

    # -- leases ------------------------------------------------------------------------------------
    def rebalance(self) -> None:
        """Heartbeat, renew held leases, give back extras, take free partitions up to the fair share."""
        live = self.transport.heartbeat_logic_worker(self.worker_id, self.worker_ttl_s)
        if self.worker_id not in live:
            live = sorted([*live, self.worker_id])
        self._live_workers = live
        n = len(live)
        share = math.ceil(self.partitions / n)
        rank = live.index(self.worker_id)
        preferred = [p for p in range(self.partitions) if p % n == rank]
        order = preferred + [p for p in range(self.partitions) if p % n != rank]

        for p in sorted(self.held):
            if not self.transport.try_lease(p, self.worker_id, self.lease_ttl_s):
                logger.warning("logic worker %s: lost the lease on partition %d", self.worker_id, p)
                self.counters.incr("leases:lost")
                self._drop_partition(p)
        # Give back the partitions we like least first, so that the split converges on p % n == rank.
        for p in reversed(order):
            if len(self.held) <= share:
                break
            if p in self.held:
                self.transport.release_lease(p, self.worker_id)
                self.counters.incr("leases:released")
                logger.info("logic worker %s: released partition %d (fair share %d of %d live)",
                            self.worker_id, p, share, n)
                self._drop_partition(p)
        for p in order:
            if len(self.held) >= share:
                break
            if p not in self.held and self.transport.try_lease(p, self.worker_id, self.lease_ttl_s):
                self.held.add(p)
                self._need_pending.add(p)
                self.counters.incr("leases:acquired")
                logger.info("logic worker %s: took partition %d", self.worker_id, p)

    def _drop_partition(self, partition: int) -> None:
        self.held.discard(partition)
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
    def _logic_for(self, camera_id: str) -> CameraLogic:
        logic = self._logics.get(camera_id)
        if logic is not None:
            return logic
        saved = self.transport.load_episodes(camera_id)
        through = saved.pop(THROUGH_KEY, None)
        unsent = saved.pop(UNSENT_KEY, None) or []
        if unsent:
            # A crash hit between saving this state and writing its alerts: write them now (if they did
            # reach the outbox, the backend deduplicates by idempotency key).
            self.transport.add_alerts([a.encode() if isinstance(a, str) else a for a in unsent])
            self.counters.incr("alerts:rewritten", len(unsent))
            logger.warning("camera %s: re-wrote %d alert(s) saved before a crash", camera_id, len(unsent))
            self.transport.save_episodes(camera_id, {**saved, THROUGH_KEY: through, UNSENT_KEY: []})
        try:
            logic = CameraLogic(
                camera_id, self.settings.logic, self._overrides.get(camera_id), self.class_id_list(),
                open_episodes=saved or None,
            )
        except (ValueError, KeyError, TypeError) as exc:
            logger.error("camera %s: saved episode state unusable (%s); starting fresh", camera_id, exc)
            self.counters.incr("episodes:unreadable")
            logic = CameraLogic(camera_id, self.settings.logic, self._overrides.get(camera_id), self.class_id_list())
        self._logics[camera_id] = logic
        if isinstance(through, dict) and "partition" in through and "entry_id" in through:
            self._through[camera_id] = (int(through["partition"]), str(through["entry_id"]))
        else:
            self._through[camera_id] = None
        return logic

    def _already_done(self, camera_id: str, partition: int, entry_id: str) -> bool:
        through = self._through.get(camera_id)
        return through is not None and through[0] == partition and _entry_order(entry_id) <= _entry_order(through[1])

    def _save(self, camera_id: str, unsent: list[AlertEvent]) -> None:
        state = self._logics[camera_id].episodes()
        through = self._through.get(camera_id)
        state[THROUGH_KEY] = None if through is None else {"partition": through[0], "entry_id": through[1]}
        state[UNSENT_KEY] = [a.to_json() for a in unsent]
        self.transport.save_episodes(camera_id, state)

    # -- processing --------------------------------------------------------------------------------
    def _process_batch(self, partition: int, entries: list[StreamEntry]) -> int:
        ids = [e.entry_id for e in entries]
        alerts: list[AlertEvent] = []
        alerts_by_cam: dict[str, list[AlertEvent]] = {}
        touched: list[str] = []
        queue = f"batch_results:{partition}"
        for entry in entries:
            if not entry.payload:
                # No payload: trimmed from the stream (maxlen) before it was processed, or published empty.
                self.counters.incr("dropped:trimmed")
                continue
            logic_start = time.time()
            try:
                msg = decode_result(entry.payload)
            except WireError as exc:
                self.counters.incr(f"dropped:wire_{exc.reason}")
                logger.warning("partition %d entry %s: undecodable result (%s), dead-lettered", partition, entry.entry_id, exc)
                self.transport.dead_letter(queue, f"wire_{exc.reason}", entry.payload)
                continue
            cam = msg.camera_id
            logic = self._logic_for(cam)
            if self._already_done(cam, partition, entry.entry_id):
                self.counters.incr("skipped:replayed")
                continue
            t = msg.timeline.captured or msg.timeline.published or time.time()
            out_of_order_before = logic.frames_out_of_order
            try:
                outcome = logic.process(
                    seq=msg.seq, t=t, candidates=Candidates(msg.boxes, msg.scores, msg.class_ids),
                    frame_size=(msg.src_w, msg.src_h),
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
            if logic.frames_out_of_order > out_of_order_before:
                # Two inference workers can publish one camera's frames slightly out of capture order; the
                # camera logic skips a frame older than the last one - counted here, not as a judged result.
                self.counters.incr("dropped:out_of_order")
                continue
            logic_end = time.time()
            self.latency.add_many(stage_durations(msg.timeline, logic_start, logic_end))
            self.counters.incr("results")
            if outcome.alerts:
                alerts.extend(outcome.alerts)
                alerts_by_cam.setdefault(cam, []).extend(outcome.alerts)
            if self.recorder is not None:
                self._record(cam, outcome)
        for cam in touched:
            self._save(cam, alerts_by_cam.get(cam, []))
        self.transport.add_alerts_and_ack([a.to_json().encode() for a in alerts], partition, ids)
        for cam in alerts_by_cam:
            self._save(cam, [])
        if alerts:
            self.counters.incr("alerts", len(alerts))
        return len(entries)

    def _record(self, camera_id: str, outcome: Any) -> None:
        try:
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
        cameras = set(self._logics) | set(self._configured) | set(statuses)
        behind = self._need_pending | self._backlogged
        for cam in sorted(cameras):
            partition = self.transport.partition_of(cam)
            state = (statuses.get(cam) or {}).get("state")
            online = None if state is None else state == "online"
            # Results still queued for the camera (a previous owner's, or a backlog) are older than `now`:
            # process them first, unless the camera manager itself says the camera is down.
            if partition not in self.held or (partition in behind and online is not False):
                continue
            logic = self._logic_for(cam)
            alerts = logic.tick(now, camera_online=online)
            if not alerts:
                continue
            self._save(cam, alerts)
            self.transport.add_alerts([a.to_json().encode() for a in alerts])
            self._save(cam, [])
            self.counters.incr("alerts", len(alerts))


    # -- reporting and shutdown --------------------------------------------------------------------
    def snapshot(self) -> dict[str, object]:
        return snapshot(
            self.latency, self.counters, worker_id=self.worker_id, partitions=sorted(self.held),
            cameras=sorted(self._logics), live_workers=len(self._live_workers),
        )

    def report(self) -> None:
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
                self.transport.release_lease(p, self.worker_id)
            self.transport.leave_logic_workers(self.worker_id)
            self.report()
        except TransportUnavailable as exc:
            logger.warning("logic worker %s: clean leave failed (%s); leases expire on their own", self.worker_id, exc)
        self.held.clear()
        self._need_pending.clear()
        logger.info("logic worker %s stopped: %s", self.worker_id, json.dumps(self.counters.snapshot()))
