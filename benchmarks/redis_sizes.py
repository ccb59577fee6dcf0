"""What a result and an alert cost in Redis: bytes per stream entry, measured on a real redis-server.

    .venv/bin/python -m benchmarks.redis_sizes

docs/deploy.md (Redis ``maxmemory``) sizes the result streams and the alert outbox with these figures.
"""

from __future__ import annotations

import time

import numpy as np
import redis

from fbvision.core import wire
from fbvision.core.events import AlertEvent, AlertState, Evidence, Severity
from fbvision.run.redis_server import EmbeddedRedis

ENTRIES = 20_000


def result_message(n_boxes: int, camera_id: str = "stall-cam-017") -> bytes:
    now = time.time()
    rng = np.random.default_rng(0)
    return wire.encode_result(wire.ResultMessage(
        camera_id, 12345, 1920, 1080, wire.Timeline(now, now, now, now, now, now), 4,
        (rng.random((n_boxes, 4)) * 900).astype(np.float32), rng.random(n_boxes).astype(np.float32),
        np.zeros(n_boxes, np.int32)))


def alert_message() -> bytes:
    """A typical escalation event: a track, a box, three features, a message."""
    return AlertEvent.create(
        camera_id="stall-cam-017", rule="horse_down", track_id=3, state=AlertState.ongoing,
        severity=Severity.critical, started_at=1.7e9, updated_at=1.7e9 + 900.0,
        evidence=Evidence(seq=123456, box=(100.5, 200.25, 640.0, 480.0),
                          features={"rel_height": 0.41, "down_s": 900.2, "aspect": 1.9}),
        message="horse down for 900 s (critical)").to_json().encode()


def main() -> None:
    cases = [("result, 0 boxes", result_message(0), "r"), ("result, 2 boxes", result_message(2), "r"),
             ("result, 10 boxes", result_message(10), "r"), ("alert event (outbox)", alert_message(), "a")]
    with EmbeddedRedis() as server:
        client = redis.Redis.from_url(server.url)
        for label, payload, field in cases:
            client.delete("sizes")
            pipe = client.pipeline(transaction=False)
            for _ in range(ENTRIES):
                pipe.xadd("sizes", {field: payload})
            pipe.execute()
            per_entry = client.memory_usage("sizes", samples=0) / ENTRIES
            print(f"{label:22s} message {len(payload):4d} B   in a stream {per_entry:5.0f} B/entry")
        client.close()


if __name__ == "__main__":
    main()
