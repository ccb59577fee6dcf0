"""The alert outbox (``alerts:outbox``): the logic workers add alerts (in their fenced commit, or
:meth:`Outbox.add_alerts`), each sink reads them under a consumer group of its own.

One group per sink: the backend delivery reads under ``delivery`` (:data:`OUTBOX_GROUP`, every method's default),
another sink (a notifier) under its own name (:meth:`Outbox.outbox_groups`). A group is created from id 0, so a new
sink's group sees every alert still in the stream and loses none. :meth:`Outbox.ack_alerts` settles entries for one
group and then drops what no group needs any more (``scripts/ack_outbox.lua``, atomic): an entry stays while any
group has it pending or has not been delivered it yet, so a slow sink keeps the alerts it has still to send, and the
outbox holds only what some sink has still to settle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from fbvision.core.transport.client import REDIS_ID_RE, Connection, decode_id
from fbvision.core.transport.errors import guard
from fbvision.core.transport.keys import OUTBOX_GROUP, RESULTS_GROUP
from fbvision.core.transport.results import StreamEntry


def _check_group(group: str) -> str:
    if not isinstance(group, str) or not REDIS_ID_RE.match(group):
        raise ValueError(f"outbox group name {group!r}: want 1-200 characters of A-Z a-z 0-9 _ . : @ -")
    return group


def _entries(entries) -> list[StreamEntry]:
    return [StreamEntry(0, decode_id(entry_id), (fields or {}).get(b"a", b"")) for entry_id, fields in entries]


class Outbox(Connection):
    """Add alerts, and read / claim / settle them as one sink's consumer group."""

    @guard
    def outbox_groups(self, names: Iterable[str]) -> list[str]:
        """Make sure each sink in ``names`` has its consumer group on the outbox (idempotent; a new group starts at
        id 0: it is delivered every entry still in the stream). Returns the names."""
        names = [_check_group(n) for n in names]
        for name in names:
            self._ensure_group(self.keys.outbox, name)
        return names

    @guard
    def add_alerts(self, alerts_json: Sequence[bytes]) -> list[str]:
        if not alerts_json:
            return []
        pipe = self.client.pipeline(transaction=True)
        for payload in alerts_json:
            pipe.xadd(self.keys.outbox, {"a": payload}, maxlen=self.outbox_maxlen, approximate=True)
        return [decode_id(i) for i in pipe.execute()]

    @guard
    def add_alerts_and_ack(self, alerts_json: Sequence[bytes], partition: int, entry_ids: Sequence[str]) -> None:
        """Write alerts to the outbox and ack the results that produced them in one MULTI/EXEC,
        so a crash can never leave a result acked without its alerts written."""
        pipe = self.client.pipeline(transaction=True)
        for payload in alerts_json:
            pipe.xadd(self.keys.outbox, {"a": payload}, maxlen=self.outbox_maxlen, approximate=True)
        if entry_ids:
            pipe.xack(self.keys.results(partition), RESULTS_GROUP, *entry_ids)
        pipe.execute()

    @guard
    def read_alerts(self, consumer: str, *, pending: bool, count: int, block_s: float = 0.0,
                    group: str = OUTBOX_GROUP) -> list[StreamEntry]:
        """New entries for ``group`` (blocking up to ``block_s``), or with ``pending=True`` those delivered to
        ``consumer`` and not settled yet."""
        self._ensure_group(self.keys.outbox, _check_group(group))
        block_ms = None if pending or block_s <= 0 else int(self._block_s(block_s) * 1000)
        reply = self._read_group(group, consumer, {self.keys.outbox: "0" if pending else ">"}, count, block_ms)
        out: list[StreamEntry] = []
        for _key, entries in reply:
            out += _entries(entries)
        return out

    @guard
    def claim_stale_alerts(self, consumer: str, min_idle_s: float, count: int = 100,
                           group: str = OUTBOX_GROUP) -> list[StreamEntry]:
        """Take over entries a dead consumer of ``group`` left pending for ``min_idle_s``."""
        self._ensure_group(self.keys.outbox, _check_group(group))
        reply = self.client.xautoclaim(self.keys.outbox, group, consumer, int(min_idle_s * 1000), "0-0", count=count)
        return _entries(reply[1] if len(reply) > 1 else [])

    @guard
    def ack_alerts(self, entry_ids: Sequence[str], group: str = OUTBOX_GROUP) -> int:
        """Settle ``group``'s outbox entries (XACK), delete those no group needs any more (none pending them, all
        delivered past them) and trim the stream (XTRIM MINID) below the oldest entry a group still needs - one
        script. Returns how many were acknowledged."""
        if not entry_ids:
            return 0
        acked, _deleted, _trimmed = self._script("ack_outbox")(
            keys=[self.keys.outbox], args=[_check_group(group), *entry_ids])
        return int(acked)
