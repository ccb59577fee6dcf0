"""Read-only depths of the durable queues, for back-pressure (the camera manager) and dashboards."""

from __future__ import annotations

from redis.exceptions import ResponseError

from fbvision.core.transport.client import Connection
from fbvision.core.transport.errors import guard
from fbvision.core.transport.keys import OUTBOX_GROUP, RESULTS_GROUP


class Gauges(Connection):
    """How much the logic workers and the outbox's sinks have still to do."""

    @guard
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

    @guard
    def outbox_length(self) -> int:
        """Entries in the outbox stream (undelivered: new or pending)."""
        return int(self.client.xlen(self.keys.outbox))

    @guard
    def outbox_pending(self, group: str = OUTBOX_GROUP) -> int:
        """Outbox entries delivered to ``group``'s consumers and not settled yet."""
        try:
            info = self.client.xpending(self.keys.outbox, group)
        except ResponseError:
            return 0
        return int(info.get("pending", 0))

