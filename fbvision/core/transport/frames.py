"""The frame queue (``batch_frames``): the camera managers push, the inference workers pop.

Retried writes are idempotent. redis-py retries a command whose reply was lost (a connection killed, a server
frozen past the socket timeout), and the stages retry whole writes after :class:`TransportUnavailable`; the first
attempt may well have been executed. So a frame push carries one *once key* per message (camera, sequence, capture
time) and the writer's attempt token: a message whose key exists is not written again, and the script
(``scripts/push_bounded.lua``) says whether the key came from this writer's own earlier attempt (the message is in
Redis once: count it as written) or from another write (a genuine duplicate).

A restart of a split-off frames Redis loses only the frames it held: the next push finds ``once:frames_epoch``
gone, and the pusher counts ``lost:frames_redis_reset`` (the queue length it last saw: an upper bound of what was
lost) and ``frames_redis_resets`` in the durable ``stats:queue``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from fbvision.core.transport.client import Connection, new_token
from fbvision.core.transport.errors import guard

logger = logging.getLogger("fbvision.core.transport")

SHORT_WAIT_S = 0.2  # frame pops shorter than this poll instead of blocking in Redis (see pop_frames)
POLL_INTERVAL_S = 0.001
#: How long a once key lives, from the write's first execution. A repeat comes within seconds of it: redis-py's
#: retries are bounded (~1 min in all), and commands a frozen server received all run when it wakes. Cost:
#: ~170 bytes per key, two keys per frame (push, publish): 100 cameras at 10 fps hold ~40 MB.
ONCE_TTL_MS = 2 * 60 * 1000


def message_id(camera_id: str, seq: int, capture_ts: float) -> str:
    """What makes a frame (and its result) unique, even across camera manager restarts that reuse a ``seq``."""
    return f"{camera_id}\x1f{seq}\x1f{capture_ts!r}"


@dataclass(frozen=True)
class PushResult:
    dropped_by_cap: int  # oldest frames the queue cap trimmed away (any camera manager's)
    retried: int  # skipped: already pushed by an earlier attempt with the same token (in the queue once)
    duplicates: int  # skipped: pushed before by another write


class FrameQueue(Connection):
    """Push, pop and measure the frame queue (on ``frames_client``)."""

    def __init__(self, *args, **kwargs):
        # Split roles: the frames Redis's lifetime marker (see the module doc) and what this pusher last saw of it.
        self._frames_epoch_seen = False
        self._frames_depth_seen = 0
        #: Split roles: frames Redis restarts this transport noticed, and the frames it counted lost with them.
        self.frames_resets = 0
        self.frames_lost = 0
        self._frames_unreported: Counter[str] = Counter()  # counts for the durable stats:queue not written yet
        super().__init__(*args, **kwargs)
    @guard
    def push_frames(
        self, messages: Sequence[bytes], once: Sequence[str] | None = None, token: str = ""
    ) -> PushResult:
        """Append frames to ``batch_frames``, honouring the cap (the oldest are dropped and counted).

        ``once``: one id per message (:func:`message_id`); a message whose id was written before is skipped.
        ``token`` names the attempt: reuse it when retrying the same frames, and the skipped ones this token
        already wrote come back as ``retried`` (they are in the queue once), not as ``duplicates``.
        """
        if not messages:
            return PushResult(0, 0, 0)
        if once is not None and len(once) != len(messages):
            raise ValueError(f"push_frames: {len(messages)} messages but {len(once)} once ids")
        once_keys = [self.keys.once("frame", i) for i in once] if once is not None else []
        split = self.split_roles
        dropped, own, dup, fresh, depth = self._script("push_bounded", frames=True)(
            keys=[self.keys.frames, self.keys.stats("queue"), self.keys.frames_epoch, *once_keys],
            args=[self.frame_queue_cap, "" if split else "dropped:queue_full", token or new_token(), ONCE_TTL_MS,
                  "1" if split else "", *messages],
        )
        dropped = int(dropped)
        if split:
            self._count_frames_side(dropped, bool(int(fresh)))
            self._frames_depth_seen = int(depth)
        return PushResult(dropped, int(own), int(dup))

    def _count_frames_side(self, dropped: int, fresh: bool) -> None:
        """Split roles: what the push script cannot count in the other Redis - the cap's drops, and frames lost
        with a restart of the frames Redis (its lifetime marker was gone although this pusher had seen it) - into
        the durable ``stats:queue``. (Plain HINCRBYs: should a reply be lost and redis-py retry one, a drop could
        count twice - never a result.)"""
        reset = fresh and self._frames_epoch_seen
        self._frames_epoch_seen = True  # created now, or there already (another pusher made it)
        lost = self._frames_depth_seen if reset else 0
        if reset:
            self.frames_resets += 1
            self.frames_lost += lost
            logger.warning("frames redis %s restarted (lost its data): up to %d queued frames lost",
                           self.safe_frames_url, lost)
        if dropped:
            self._frames_unreported["dropped:queue_full"] += dropped
        if reset:
            self._frames_unreported["frames_redis_resets"] += 1
            self._frames_unreported["lost:frames_redis_reset"] += lost
        if not self._frames_unreported:
            return
        # The frames are pushed: a durable Redis that is away now must not fail the push (the camera manager would
        # push them again); the counts wait for the next push.
        try:
            pipe = self.client.pipeline(transaction=False)
            for field, n in self._frames_unreported.items():
                pipe.hincrby(self.keys.stats("queue"), field, n)
            pipe.execute()
        except (RedisConnectionError, RedisTimeoutError, OSError, ResponseError, RedisClusterException) as exc:
            logger.warning("frame queue counts not reported to %s yet (%s): %s", self.safe_url,
                           type(exc).__name__, dict(self._frames_unreported))
            return
        self._frames_unreported.clear()

    def push_frame(self, message: bytes) -> int:
        """One frame, no once id (tests and tools); returns how many old frames the cap dropped."""
        return self.push_frames([message]).dropped_by_cap

    @guard
    def pop_frames(self, max_n: int, timeout_s: float) -> list[bytes]:
        """Up to ``max_n`` frames in FIFO order; blocks at most ``timeout_s`` for the first one."""
        if max_n < 1:
            return []
        if timeout_s < SHORT_WAIT_S:
            # Redis checks blocked clients' timeouts only `hz` times a second (10 by default), so a 5 ms BLPOP
            # can take 100 ms: short waits poll with non-blocking pops instead (each ~0.1 ms on loopback).
            deadline = time.monotonic() + timeout_s
            while True:
                frames = self.pop_frames_nowait(max_n)
                remaining = deadline - time.monotonic()
                if frames or remaining <= 0:
                    return frames
                time.sleep(min(POLL_INTERVAL_S, remaining))
        first = self.frames_client.blpop([self.keys.frames], timeout=self._block_s(timeout_s))
        if first is None:
            return []
        batch = [first[1]]
        if max_n > 1:
            rest = self.frames_client.lpop(self.keys.frames, max_n - 1)
            if rest:
                batch.extend(rest)
        return batch

    @guard
    def pop_frames_nowait(self, max_n: int) -> list[bytes]:
        if max_n < 1:
            return []
        return list(self.frames_client.lpop(self.keys.frames, max_n) or [])

    @guard
    def frame_queue_depth(self) -> int:
        return int(self.frames_client.llen(self.keys.frames))
