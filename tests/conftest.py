"""Shared fixtures: a real redis-server started by the project on a free port (never a fake)."""

from __future__ import annotations

import logging
import os

import pytest

from fbvision.core.transport import Transport
from fbvision.run.redis_server import EmbeddedRedis

logging.getLogger("fbvision").setLevel(logging.DEBUG)


@pytest.fixture(scope="session")
def redis_server():
    """One private redis-server for the whole session; tests flush it between uses."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server):
    """A clean database on the session's server."""
    import redis

    if not redis_server.running:  # a fault test may have stopped it
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def transport(redis_url):
    t = Transport(redis_url, frame_queue_cap=50, result_partitions=4, retries=3, retry_max_s=0.5)
    yield t
    t.close()


@pytest.fixture
def private_redis():
    """A server of the test's own, for tests that stop/restart/kill it."""
    with EmbeddedRedis() as server:
        yield server


def pytest_report_header(config):
    return f"fbvision tests; CPU count {os.cpu_count()}"
