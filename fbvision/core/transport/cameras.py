"""What the camera managers share with the other stages: each camera's status (``cameras:status``) and the
evidence requests the logic workers send them (``evidence:requests``)."""

from __future__ import annotations

from collections.abc import Sequence

from fbvision.core.transport.client import Connection, valid_redis_id
from fbvision.core.transport.errors import guard
from fbvision.core.transport.records import CameraStatus, RecordError
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
    def set_camera_status(self, camera_id: str, status: dict | CameraStatus) -> None:
        """Write a camera's status (a :class:`CameraStatus` or its dict; a field of the wrong type is a
        :class:`RecordError`, unknown fields are kept)."""
        self.client.hset(self.keys.camera_status, camera_id, CameraStatus.from_dict(status).to_json())

    @guard
    def camera_statuses(self) -> dict[str, dict]:
        """Every camera's status as a dict (:meth:`CameraStatus.to_dict`: the fields written, unknown ones too)."""
        return {cam: status.to_dict() for cam, status in self.camera_status_records().items()}

    @guard
    def camera_status_records(self) -> dict[str, CameraStatus]:
        """Every camera's status, typed. A malformed camera id or status (not a JSON object, a field of the wrong
        type) is skipped and counted (``invalid_ids["camera_status"]``): readers expect ``status.state``."""
        out, bad = {}, []
        for raw_cam, raw in self.client.hgetall(self.keys.camera_status).items():
            cam = valid_redis_id(raw_cam, CAMERA_ID_RE)
            try:
                status = CameraStatus.from_json(raw) if cam is not None else None
            except RecordError:
                status = None
            if status is None:
                bad.append(raw_cam)
            else:
                out[cam] = status
        if bad:
            self._skipped_invalid("camera_status", bad)
        return out
