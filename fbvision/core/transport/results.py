"""The result streams (``batch_results:<p>``): the inference workers publish, the logic workers (the partition
owners) read, claim and commit them, fenced by their lease (``docs/alerts.md`` "Fenced leases").

A result publish carries one *once key* per message, like a frame push (:mod:`fbvision.core.transport.frames`):
a retry whose first reply was lost writes nothing twice. Every write a partition owner makes on the partition's
behalf runs as one script that first checks the owner's lease token (``scripts/*_fenced.lua``), so a zombie (paused,
partitioned, or a second process started with the same ``--id``) never passes for the current holder.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from fbvision.core.transport.client import Connection, new_token
from fbvision.core.transport.errors import guard
from fbvision.core.transport.frames import ONCE_TTL_MS
from fbvision.core.transport.keys import PARTITION_CONSUMER, RESULTS_GROUP


@dataclass(frozen=True)
class StreamEntry:
    stream_index: int  # partition number (results) or 0 (outbox)
    entry_id: str
    payload: bytes


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


class ResultStreams(Connection):
    """Publish results (inference); read, claim, ack and commit them (logic); their backlog (everyone's gauge)."""

    def partition_of(self, camera_id: str) -> int:
        """Stable camera -> partition map (crc32, the same in every process and language)."""
        return zlib.crc32(camera_id.encode()) % self.result_partitions

    @guard
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
        reply = self._script("publish_once")(
            keys=keys,
            args=[token or new_token(), ONCE_TTL_MS, self.result_stream_maxlen, *(p for _, p in results)],
        )
        return [i.decode() if isinstance(i, bytes) else i for i in reply]

    @guard
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

    @guard
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
        reply, lost, last = self._script("read_fenced")(keys=keys, args=args)
        lost_parts = {parts[int(i) - 1] for i in lost or []}
        if not reply and block_s > 0 and last:
            held = [p for p in parts if p not in lost_parts]
            self.client.xread({self.keys.results(p): i for p, i in zip(held, last, strict=True)},
                              block=max(1, int(self._block_s(block_s) * 1000)))
            reply, lost, last = self._script("read_fenced")(keys=keys, args=args)
            lost_parts |= {parts[int(i) - 1] for i in lost or []}
        out: list[StreamEntry] = []
        for key, entries in reply or []:
            key = key.decode() if isinstance(key, bytes) else key
            for entry_id, flat in entries:
                entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                fields = dict(zip(flat[::2], flat[1::2], strict=True)) if flat else {}
                out.append(StreamEntry(by_key[key], entry_id, fields.get(b"r", b"")))
        return out, lost_parts

    @guard
    def claim_partition(self, partition: int, token: str, consumer: str) -> tuple[int, int] | None:
        """On taking partition ``partition`` (lease ``token``): move all its pending entries (a previous owner's
        unfinished work, whatever its consumer name) to ``consumer`` and delete the consumers left empty.
        Returns (entries claimed, pending entries no longer in the stream - trimmed, dropped from the pending
        list), or None when the lease is not (any more) ``token``'s."""
        self.ensure_groups(RESULTS_GROUP)
        reply = self._script("claim_fenced")(
            keys=[self.keys.lease(partition), self.keys.results(partition)], args=[token, RESULTS_GROUP, consumer]
        )
        if not reply:
            return None
        return int(reply[0]), int(reply[1])

    @guard
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
            args += [camera_id, _json(state)]
        args.append(len(baselines))
        for camera_id, baseline in baselines.items():
            args += [camera_id, _json(baseline)]
        for camera_id, budget in time_budgets.items():
            args += [camera_id, _json(budget)]
        keys = [self.keys.lease(partition), self.keys.results(partition), self.keys.outbox, self.keys.episodes,
                self.keys.baselines, self.keys.time_budgets]
        return bool(self._script("commit_fenced")(keys=keys, args=args))

    @guard
    def ack_results(self, partition: int, entry_ids: Sequence[str]) -> int:
        if not entry_ids:
            return 0
        return int(self.client.xack(self.keys.results(partition), RESULTS_GROUP, *entry_ids))

