"""The evidence contract between the logic stage (which asks), the camera manager (which writes) and the alert
backend (which serves): file names, URLs and the request message. See docs/evidence-and-review.md.

Every raised and every escalated alert gets evidence named after its episode: ``<episode key>`` for the raised
event, ``<episode key>-<severity>`` for an escalation, as ``<name>.jpg`` (snapshot) and ``<name>.mp4`` (clip).
The names - hence the URLs the alert carries - are known when the alert is made, so the alert never waits for
its evidence: the backend answers 404 until the camera manager has written the file.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

SNAPSHOT_EXT = ".jpg"
CLIP_EXT = ".mp4"
#: A valid evidence file name (what the backend agrees to serve): the episode key, an optional severity, the kind.
FILE_RE = re.compile(r"^[0-9a-f]{32}(-(info|warning|critical))?\.(jpg|mp4)$")


def evidence_name(episode_key: str, state: str, severity: str) -> str:
    """``<episode key>`` for the raised event, ``<episode key>-<severity>`` for an escalation (ongoing)."""
    return episode_key if state == "raised" else f"{episode_key}-{severity}"


def evidence_urls(name: str, url_prefix: str = "/evidence/") -> tuple[str, str]:
    """(snapshot URL, clip URL) of evidence ``name``."""
    prefix = url_prefix if url_prefix.endswith("/") else url_prefix + "/"
    return f"{prefix}{name}{SNAPSHOT_EXT}", f"{prefix}{name}{CLIP_EXT}"


def with_evidence_urls(alerts: list[Any], url_prefix: str = "/evidence/") -> list[Any]:
    """Raised and escalated alerts (``AlertEvent``) with their evidence URLs, known before the evidence exists
    (named after the episode): the alert goes out at once, the backend serves the files once the camera manager
    wrote them. Resolved alerts are returned as they are. The logic worker and the replays
    (:mod:`fbvision.logic.playback`) both use this, so a replay gives the live run's alerts field for field."""
    from fbvision.core.events import AlertState

    out = []
    for a in alerts:
        if a.state is AlertState.resolved:
            out.append(a)
            continue
        snap, clip = evidence_urls(evidence_name(a.episode_key, a.state.value, a.severity.value), url_prefix)
        out.append(a.model_copy(update={"evidence": a.evidence.model_copy(update={"snapshot": snap, "clip": clip})}))
    return out


@dataclass(frozen=True)
class EvidenceRequest:
    """What the camera manager needs to write one alert's evidence. Times are capture times on the reference
    clock (the frame the alert was decided on), ``requested_at`` the reference time the request was made."""

    camera_id: str
    name: str
    episode_key: str
    rule: str
    severity: str
    state: str
    decided_at: float
    requested_at: float
    track_id: int | None = None
    box: tuple[float, float, float, float] | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> EvidenceRequest:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("an evidence request is a JSON object")
        box = data.get("box")
        name = str(data["name"])
        if not FILE_RE.match(name + SNAPSHOT_EXT):
            raise ValueError(f"bad evidence name {name!r}")
        return cls(
            camera_id=str(data["camera_id"]), name=name, episode_key=str(data["episode_key"]),
            rule=str(data["rule"]), severity=str(data["severity"]), state=str(data["state"]),
            decided_at=float(data["decided_at"]), requested_at=float(data["requested_at"]),
            track_id=None if data.get("track_id") is None else int(data["track_id"]),
            box=None if box is None else tuple(float(v) for v in box)[:4],  # type: ignore[arg-type]
            extra=dict(data.get("extra") or {}),
        )
