"""What the camera managers share with the other stages: each camera's status (``cameras:status``) and the
evidence requests the logic workers send them (``evidence:requests``)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from fbvision.core.transport.client import Connection, valid_redis_id
from fbvision.core.transport.errors import guard
from fbvision.core.wire import CAMERA_ID_RE


class CameraBoard(Connection):
    """Camera statuses (set by the camera manager, read by logic and the runner) and evidence requests (added by
    logic, read by the camera managers)."""

    @guard
    def request_evidence(self, requests_json: Sequence[bytes], maxlen: int = 1000) -> list[str]:
        """Add evidence requests (JSON) to the capped request stream; the camera managers serve them."""
        if not requests_json:
            return []
        pipe = self.client.pipeline(transaction=False)
        for payload in requests_json:
            pipe.xadd(self.keys.evidence_requests, {"e": payload}, maxlen=maxlen, approximate=True)
        return [i.decode() if isinstance(i, bytes) else i for i in pipe.execute()]

    @guard
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
    @guard
    def set_camera_status(self, camera_id: str, status: dict) -> None:
        self.client.hset(self.keys.camera_status, camera_id, json.dumps(status, separators=(",", ":")))

    @guard
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

