"""The logic workers' state that must survive a restart or a lease move: open alert episodes
(``logic:episodes``), horse baselines (``logic:baselines``) and time budgets (``logic:timebudgets``), one JSON per
camera. Written in the fenced commit (:meth:`ResultStreams.commit_results`), read by the next owner.
"""

from __future__ import annotations

import json
import logging

from fbvision.core.transport.client import Connection
from fbvision.core.transport.errors import guard

logger = logging.getLogger("fbvision.core.transport")


class StateStore(Connection):
    """Load (and, outside the fenced commit, save) a camera's logic state."""

    @guard
    def save_episodes(self, camera_id: str, state: dict) -> None:
        self.client.hset(self.keys.episodes, camera_id, json.dumps(state, separators=(",", ":")))

    @guard
    def load_episodes(self, camera_id: str) -> dict:
        raw = self.client.hget(self.keys.episodes, camera_id)
        if not raw:
            return {}
        try:
            state = json.loads(raw)
        except ValueError:
            logger.warning("camera %s: unreadable saved episode state, starting fresh", camera_id)
            return {}
        return state if isinstance(state, dict) else {}

    @guard
    def load_baseline(self, camera_id: str) -> dict:
        """The camera's saved horse baseline ({} when none or unreadable)."""
        return self._load_json_field(self.keys.baselines, camera_id, "baseline")

    @guard
    def load_time_budget(self, camera_id: str) -> dict:
        """The camera's saved time budget ({} when none or unreadable)."""
        return self._load_json_field(self.keys.time_budgets, camera_id, "time budget")

    def _load_json_field(self, key: str, camera_id: str, what: str) -> dict:
        raw = self.client.hget(key, camera_id)
        if not raw:
            return {}
        try:
            state = json.loads(raw)
        except ValueError:
            logger.warning("camera %s: unreadable saved %s, starting afresh", camera_id, what)
            return {}
        return state if isinstance(state, dict) else {}

