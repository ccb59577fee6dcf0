"""Two Redis roles (redis.frames_url): an ephemeral frames Redis (no persistence) beside the durable one (AOF).

Frames (batch_frames, their once keys, the epoch marker) land in the frames server only; results, counters,
statuses, leases, outbox and episodes in the durable one. A restart of the frames server loses only the frames
it held - counted in the durable stats:queue - and nothing durable."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from fbvision.core.config import InferenceConfig, RedisConfig, Settings
from fbvision.core.letterbox import Letterbox
from fbvision.core.redact import redact_url
from fbvision.core.transport import Transport, message_id
from fbvision.core.wire import FrameMessage, encode_frame
from fbvision.inference.engines.sim import null_engine
from fbvision.inference.worker import InferenceWorker
from fbvision.run.redis_server import EmbeddedRedis

pytestmark = pytest.mark.timeout(120)

SIZE = 64


@pytest.fixture
def servers():
    durable = EmbeddedRedis(extra_args=["--appendonly", "yes", "--appendfsync", "everysec"])
    frames = EmbeddedRedis()  # no persistence: the embedded default
    with durable, frames:
        yield durable, frames


def frame(camera_id: str, seq: int) -> tuple[bytes, str]:
    image = np.full((SIZE, SIZE, 3), (seq * 17) % 255, np.uint8)
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
    now = time.time()
    msg = FrameMessage(camera_id, seq, now, now, Letterbox(SIZE, SIZE, SIZE, SIZE, 1.0, 0.0, 0.0), jpeg)
    return encode_frame(msg), message_id(camera_id, seq, now)


def push(transport: Transport, camera_id: str, seqs) -> None:
    pairs = [frame(camera_id, s) for s in seqs]
    transport.push_frames([p for p, _ in pairs], once=[i for _, i in pairs])


def keys(server: EmbeddedRedis) -> set[str]:
    client = server.client()
    try:
        return {k.decode() for k in client.keys("*")}
    finally:
        client.close()


def worker_for(transport: Transport) -> InferenceWorker:
    config = InferenceConfig(max_batch=8, max_wait_ms=1.0, max_age_ms=60_000.0, autotune=False, decode_threads=1,
                             pipeline=False)
    return InferenceWorker(config, transport, engine=null_engine(input_size=(SIZE, SIZE)), first_wait_s=0.2,
                           flush_interval_s=0.2)


def drain(worker: InferenceWorker) -> int:
    n = 0
    while True:
        batch = worker.batcher.next(first_wait_s=0.3)
        if not batch.frames:
            return n
        n += len(worker.process(batch))


def test_frames_land_in_the_frames_server_and_durable_keys_in_the_other(servers):
    durable, frames_server = servers
    settings = Settings(redis=RedisConfig(url=durable.url, frames_url=frames_server.url, frame_queue_cap=20,
                                          result_partitions=2))
    transport = Transport.from_config(settings.redis)
    assert transport.split_roles and transport.frames_url == frames_server.url
    try:
        push(transport, "cam-a", range(5))
        assert transport.frame_queue_depth() == 5
        fkeys = keys(frames_server)
        assert "batch_frames" in fkeys and "once:frames_epoch" in fkeys
        assert all(k == "batch_frames" or k.startswith("once:") for k in fkeys), fkeys
        assert "batch_frames" not in keys(durable)

        worker = worker_for(transport)
        assert drain(worker) == 5
        worker._flush_stats()
        transport.set_camera_status("cam-a", {"state": "online"})
        transport.save_episodes("cam-a", {"open": []})
        assert transport.try_lease(0, "logic-1@x.1", 30)
        transport.add_alerts([b'{"a": 1}'])

        dkeys = keys(durable)
        assert {"batch_results:0", "batch_results:1"} & dkeys
        assert {"stats:inference", "cameras:status", "logic:episodes", "logic:lease:0", "alerts:outbox"} <= dkeys
        assert not any(k.startswith("batch_results") or k.startswith("stats") or k.startswith("logic")
                       or k == "alerts:outbox" for k in keys(frames_server))
        assert transport.frame_queue_depth() == 0
        assert transport.stats("inference")["frames_out"] == 5

        # the cap's drops are counted in the durable stats:queue (the frames server has no counters)
        push(transport, "cam-a", range(100, 125))
        assert transport.frame_queue_depth() == 20
        assert transport.stats("queue")["dropped:queue_full"] == 5
        assert not any(k.startswith("stats") for k in keys(frames_server))
    finally:
        transport.close()


def test_a_restart_of_the_frames_server_loses_only_frames_counted(servers):
    durable, frames_server = servers
    transport = Transport(durable.url, frames_url=frames_server.url, frame_queue_cap=100, result_partitions=2,
                          retries=3, retry_max_s=0.3)
    try:
        push(transport, "cam-a", range(10))
        worker = worker_for(transport)
        assert drain(worker) == 10  # 10 results in the durable server
        transport.set_camera_status("cam-a", {"state": "online"})
        transport.save_episodes("cam-a", {"open": [{"rule": "cast"}]})
        push(transport, "cam-a", range(10, 17))  # 7 frames queued, not inferred yet
        assert transport.frame_queue_depth() == 7
        before = {k: v for k, v in ((k, _dump(durable, k)) for k in keys(durable)) if not k.startswith("once:")}

        frames_server.restart()  # no persistence: its 7 frames are gone

        assert transport.frame_queue_depth() == 0
        push(transport, "cam-a", [17])  # the next push notices (the epoch marker is gone) and counts
        queue = transport.stats("queue")
        assert queue["frames_redis_resets"] == 1 and queue["lost:frames_redis_reset"] == 7
        assert transport.frames_resets == 1 and transport.frames_lost == 7
        assert drain(worker) == 1  # the pipeline goes on: the new frame is inferred

        after = {k: _dump(durable, k) for k in keys(durable) if not k.startswith("once:")}
        for key, value in before.items():  # nothing durable lost: every key still there, streams only grew
            assert key in after, key
            if key.startswith("batch_results"):
                assert after[key][: len(value)] == value
            elif not key.startswith("stats") and key != "metrics:snapshots":
                assert after[key] == value, key
        results = sum(len(v) for k, v in after.items() if k.startswith("batch_results"))
        assert results == 11
    finally:
        transport.close()


def test_a_restart_of_the_durable_server_keeps_its_state_with_aof(servers):
    durable, frames_server = servers
    transport = Transport(durable.url, frames_url=frames_server.url, result_partitions=2, retries=3, retry_max_s=0.3)
    try:
        push(transport, "cam-a", range(3))
        assert drain(worker_for(transport)) == 3
        client = durable.client()
        client.bgrewriteaof()
        client.close()
        time.sleep(1.2)  # appendfsync everysec
        durable.restart()
        transport.wait_ready(10)
        assert sum(len(_dump(durable, k)) for k in keys(durable) if k.startswith("batch_results")) == 3
    finally:
        transport.close()


def test_frames_flow_while_the_durable_server_is_away_and_its_counts_follow(servers):
    durable, frames_server = servers
    transport = Transport(durable.url, frames_url=frames_server.url, frame_queue_cap=5, retries=1,
                          retry_max_s=0.1, socket_timeout_s=1.0)
    try:
        push(transport, "cam-a", range(5))
        durable.stop()
        push(transport, "cam-a", range(5, 8))  # the push itself succeeds: 3 dropped by the cap, counted later
        assert transport.frame_queue_depth() == 5
        durable.start()
        transport.wait_ready(10)
        push(transport, "cam-a", [8])
        assert transport.stats("queue")["dropped:queue_full"] == 4
    finally:
        transport.close()


def test_both_urls_are_masked():
    settings = Settings(redis=RedisConfig(url="redis://:durable-secret@db:6379/0",
                                          frames_url="redis://fbv:frames-secret@frames:6379/0"))
    text = redact_url(settings.model_dump_json())
    assert "durable-secret" not in text and "frames-secret" not in text
    transport = Transport(settings.redis.url, frames_url=settings.redis.frames_url, socket_timeout_s=1.0)
    try:
        assert "frames-secret" not in transport.safe_urls and "durable-secret" not in transport.safe_urls
        assert "frames:6379" in transport.safe_urls
    finally:
        transport.close()


def _dump(server: EmbeddedRedis, key: str):
    client = server.client()
    try:
        kind = client.type(key).decode()
        if kind == "stream":
            return [e[0] for e in client.xrange(key)]
        if kind == "hash":
            return client.hgetall(key)
        if kind == "list":
            return client.lrange(key, 0, -1)
        if kind == "zset":
            return client.zrange(key, 0, -1)
        return client.get(key)
    finally:
        client.close()
