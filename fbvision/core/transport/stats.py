"""Counters (``stats:<stage>``, one writer's totals in ``stats:<stage>:w:<writer>``), dead letters (``dead_letter``)
and the processes' metrics snapshots (``metrics:snapshots``).

Counters are reported as the writer's running totals, which ``scripts/report_totals.lua`` turns into increments of
the shared hash, so a repeated report adds nothing.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping

from fbvision.core.transport.client import Connection, valid_redis_id
from fbvision.core.transport.errors import guard

DEAD_LETTER_CAP = 1000
#: How long a writer's reported totals are kept after its last report (then it is presumed gone for good).
WRITER_TOTALS_TTL_MS = 24 * 3600 * 1000


class Stats(Connection):
    """Report and read counters; keep and list dead letters; put and read metrics snapshots."""

    @guard
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
        self._script("report_totals")(keys=[self.keys.stats(stage), self.keys.stats_writer(stage, writer)], args=args)

    @guard
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

    @guard
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

    @guard
    def dead_letters(self, n: int = 100) -> list[dict]:
        return [json.loads(x) for x in self.client.lrange(self.keys.dead_letter, 0, n - 1)]

    # -- metrics snapshots (for the dashboard and the run report) ----------------------------------
    @guard
    def put_snapshot(self, name: str, snapshot: dict) -> None:
        self.client.hset(self.keys.snapshots, name, json.dumps(snapshot, separators=(",", ":")))

    @guard
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
