"""Typed records of what the transport stores as JSON, with one codec (:class:`JsonRecord`, pydantic).

Forward compatible: a field this version does not know is kept (a newer writer's field survives a read and
re-write by an older reader) and ignored by the code; a known field of the wrong type is a :class:`RecordError`
naming the record and the field. Stored as compact JSON objects.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError


class RecordError(ValueError):
    """A stored record that is not what its type says (not JSON, not an object, a field of the wrong type)."""


class JsonRecord(BaseModel):
    """The codec: ``to_dict`` / ``from_dict``, ``to_json`` / ``from_json``; unknown fields kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @classmethod
    def from_dict(cls, data: Any):
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise RecordError(f"{cls.__name__}: want a JSON object, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise RecordError(f"{cls.__name__}: {where}") from None

    @classmethod
    def from_json(cls, raw: bytes | str):
        try:
            data = json.loads(raw)
        except ValueError as exc:  # UnicodeDecodeError included
            raise RecordError(f"{cls.__name__}: not JSON ({exc})") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The fields that were set (a partial status stays partial), unknown ones included."""
        return self.model_dump(mode="json", exclude_unset=True)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


class CameraStatus(JsonRecord):
    """A camera's status (``cameras:status``), as the camera manager's sources report it
    (:meth:`fbvision.camera.source.FrameSource.status`)."""

    state: str
    since: float | None = None
    last_frame_ts: float | None = None
    frames: int | None = None
    detail: str | None = None
    source: str | None = None
    outages: int | None = None
    last_outage_s: float | None = None
    reconnects: int | None = None
    updated: float | None = None
    scene_t0: float | None = None
    #: True while the camera cannot be opened as configured (a config fix, not an outage).
    failed: bool | None = None
    problem: str | None = None
