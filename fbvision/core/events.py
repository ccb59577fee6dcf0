"""Alert schema and lifecycle (raised -> ongoing -> resolved).

An *episode* is one continuous occurrence of a rule's condition for one camera (and track, for horse
rules). It produces exactly one ``raised`` event, an ``ongoing`` event each time its severity escalates,
and one ``resolved`` event. Every time is a frame's capture time (seconds since the epoch), never the
wall clock, so replaying the same results yields the same events and the same idempotency keys.

The durable outbox and HTTP delivery build on this schema elsewhere.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1


class Severity(str, Enum):
    info = "info"
    warning = "warning"
    critical = "critical"

    @property
    def rank(self) -> int:
        """0 for info, 1 for warning, 2 for critical: compare severities with this."""
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.info: 0, Severity.warning: 1, Severity.critical: 2}


class AlertState(str, Enum):
    raised = "raised"
    ongoing = "ongoing"
    resolved = "resolved"


# Which state may follow which within one episode (None: no event yet).
ALLOWED_NEXT: dict[AlertState | None, frozenset[AlertState]] = {
    None: frozenset({AlertState.raised}),
    AlertState.raised: frozenset({AlertState.ongoing, AlertState.resolved}),
    AlertState.ongoing: frozenset({AlertState.ongoing, AlertState.resolved}),
    AlertState.resolved: frozenset(),
}


def episode_key(camera_id: str, rule: str, started_at: float, track_id: int | None) -> str:
    """Deterministic id of one episode: same camera, rule, track and start capture time (ms) -> same key."""
    track = "-" if track_id is None else str(int(track_id))
    raw = f"{camera_id}\x1f{rule}\x1f{track}\x1f{round(started_at * 1000)}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def idempotency_key(
    camera_id: str,
    rule: str,
    started_at: float,
    track_id: int | None,
    state: AlertState,
    severity: Severity,
) -> str:
    """Deterministic key of one event of an episode, so a replay after a crash is deduplicated downstream."""
    raw = (
        f"{episode_key(camera_id, rule, started_at, track_id)}\x1f"
        f"{AlertState(state).value}\x1f{Severity(severity).value}"
    )
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


class Evidence(BaseModel):
    """What the logic saw when it emitted the event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int = Field(description="Frame sequence number of the camera's frame that triggered the event.")
    box: tuple[float, float, float, float] | None = Field(
        default=None, description="Track box (x1, y1, x2, y2) in source pixels, when the rule has a track."
    )
    features: dict[str, float] = Field(
        default_factory=dict, description="Feature and signal values at that frame (e.g. rel_height, down_s)."
    )
    snapshot_ref: str | None = Field(
        default=None, description="Where a snapshot of the frame was stored, when one was."
    )
    snapshot: str | None = Field(
        default=None, max_length=2048,
        description="URL of the annotated snapshot (JPEG) of the decision frame; served once written (404 before).",
    )
    clip: str | None = Field(
        default=None, max_length=2048,
        description="URL of the annotated H.264 MP4 clip around the decision; served once written (404 before).",
    )


class AlertEvent(BaseModel):
    """One lifecycle event of an alert episode; serialised with :meth:`to_json` (JSON, no pickle)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="Version of this schema (only 1 exists).")
    id: str = Field(default_factory=lambda: str(uuid.uuid4()), description="Unique id of this event (uuid4).")
    idempotency_key: str = Field(
        description="Deterministic key: same episode, state and severity -> same key."
    )
    episode_key: str = Field(
        default="",
        description="Deterministic key shared by all events of one episode (computed when omitted).",
    )
    camera_id: str = Field(min_length=1, description="Camera the episode belongs to.")
    # Bounded to a signed 64-bit integer: what SQLite (and most backends' integer columns) can store.
    track_id: int | None = Field(
        default=None, ge=-(2**63), le=2**63 - 1,
        description="Horse track id for horse rules; None for camera rules.",
    )
    rule: str = Field(min_length=1, description="Rule name, e.g. horse_down, rolling, camera_offline.")
    severity: Severity = Field(description="Severity at this event.")
    state: AlertState = Field(description="raised, ongoing (severity escalated) or resolved.")
    started_at: float = Field(description="Capture time the condition began (episode start), seconds.")
    updated_at: float = Field(description="Capture time of the frame (or tick) that produced this event.")
    resolved_at: float | None = Field(
        default=None, description="Capture time the condition ended; set only on resolved events."
    )
    evidence: Evidence = Field(description="What was seen.")
    message: str = Field(default="", description="Human-readable summary.")

    @model_validator(mode="before")
    @classmethod
    def _fill_episode_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("episode_key"):
            try:
                key = episode_key(
                    data["camera_id"], data["rule"], float(data["started_at"]), data.get("track_id")
                )
            except (KeyError, TypeError, ValueError):
                return data  # field validation reports what is missing or malformed
            data = {**data, "episode_key": key}
        return data

    @model_validator(mode="after")
    def _check_times(self) -> AlertEvent:
        if self.updated_at < self.started_at:
            raise ValueError("updated_at is before started_at")
        if (self.state is AlertState.resolved) != (self.resolved_at is not None):
            raise ValueError("resolved_at is set exactly on resolved events")
        return self

    @classmethod
    def create(
        cls,
        *,
        camera_id: str,
        rule: str,
        track_id: int | None,
        state: AlertState,
        severity: Severity,
        started_at: float,
        updated_at: float,
        evidence: Evidence,
        resolved_at: float | None = None,
        message: str = "",
    ) -> AlertEvent:
        """Build an event with its deterministic keys filled in."""
        return cls(
            idempotency_key=idempotency_key(camera_id, rule, started_at, track_id, state, severity),
            episode_key=episode_key(camera_id, rule, started_at, track_id),
            camera_id=camera_id,
            rule=rule,
            track_id=track_id,
            state=state,
            severity=severity,
            started_at=started_at,
            updated_at=updated_at,
            resolved_at=resolved_at,
            evidence=evidence,
            message=message,
        )

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> AlertEvent:
        """Read an event from the wire, tolerant of what a newer writer added.

        Strict when written, tolerant when read: building an event in code refuses an unknown field (a typo), but
        a reader - delivery, a backend - ignores fields it does not know (in the event and in its evidence), so
        a newer logic worker's alerts still pass an older delivery and backend during a rolling upgrade
        (docs/alerts.md). A breaking change bumps ``schema_version``, which a reader still refuses. The text is
        parsed once: not-JSON is a :class:`~pydantic.ValidationError` whose first error has the type
        ``json_invalid`` (:func:`is_not_json`).
        """
        return cls.model_validate_json(text, extra="ignore")


def is_not_json(exc: ValidationError) -> bool:
    """Whether validating a text failed because it is not JSON at all (rather than not a valid event)."""
    errors = exc.errors(include_url=False)
    return bool(errors) and errors[0]["type"] == "json_invalid"


def escalation_ladder(
    escalation: Iterable[tuple[float, Severity | str]],
) -> tuple[tuple[float, Severity], ...]:
    steps = tuple((float(after), Severity(sev)) for after, sev in escalation)
    if not steps:
        raise ValueError("an escalation ladder needs at least one step")
    for (a0, s0), (a1, s1) in zip(steps, steps[1:], strict=False):
        if a1 <= a0 or s1.rank <= s0.rank:
            raise ValueError(f"escalation steps must rise in time and severity: {steps}")
    return steps
