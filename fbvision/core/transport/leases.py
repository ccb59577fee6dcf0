"""Logic partition leases (``logic:lease:<p>``) and the live-worker set (``logic:workers``).

A lease's value is its holder's token: worker id, process instance and acquisition number
(``logic-1@<instance>.<n>``), so a zombie never passes for the current holder, even after re-taking the partition.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from fbvision.core.transport.client import Connection, valid_redis_id
from fbvision.core.transport.errors import guard

#: Between the worker id and the rest of a lease token (``logic-1@<instance>.<n>``): see :meth:`Leases.lease_owner`.
LEASE_TOKEN_SEP = "@"
#: A logic worker's heartbeat score may be at most this far ahead of the reader's clock (hosts' clocks disagree by
#: far less); a member further ahead, or with a non-numeric or +inf score, is not a worker: skipped and removed.
HEARTBEAT_MAX_AHEAD_S = 300.0


class Leases(Connection):
    """Heartbeats of the logic workers, and the partitions' leases: take, renew, release, look up."""

    @guard
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

    @guard
    def leave_logic_workers(self, worker_id: str) -> None:
        self.client.zrem(self.keys.logic_workers, worker_id)

    @guard
    def try_lease(self, partition: int, worker_id: str, ttl_s: float) -> bool:
        """Take partition ``partition`` if free, or renew it if already ours."""
        key = self.keys.lease(partition)
        ttl_ms = int(ttl_s * 1000)
        if self.client.set(key, worker_id, nx=True, px=ttl_ms):
            return True
        return bool(self._script("renew_lease")(keys=[key], args=[worker_id, ttl_ms]))

    @guard
    def release_lease(self, partition: int, worker_id: str) -> None:
        self._script("release_lease")(keys=[self.keys.lease(partition)], args=[worker_id])

    @guard
    def lease_owner(self, partition: int) -> str | None:
        """The worker id holding the partition (its lease token up to the last ``@``), or None."""
        holder = self.lease_holder(partition)
        return holder.rpartition(LEASE_TOKEN_SEP)[0] or holder if holder else None

    @guard
    def lease_holder(self, partition: int) -> str | None:
        """The partition's lease token as stored (``logic-1@<instance>.<n>``), or None."""
        owner = self.client.get(self.keys.lease(partition))
        return owner.decode() if owner else None


    @guard
    def renew_leases(self, leases: Mapping[int, str], ttl_s: float) -> set[int]:
        """Extend the leases (partition -> token) still held by their tokens, in one round trip; returns the
        partitions whose lease is lost."""
        if not leases:
            return set()
        parts = sorted(leases)
        reply = self._script("renew_leases")(keys=[self.keys.lease(p) for p in parts],
                                 args=[int(ttl_s * 1000), *(leases[p] for p in parts)])
        return {p for p, ok in zip(parts, reply, strict=True) if not int(ok)}

