from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis_helpers import RedisServer, start_redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own (to kill)."""
    server = start_redis()
    yield server
    server.stop()
