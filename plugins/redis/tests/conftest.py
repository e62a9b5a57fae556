from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from rdzv_plugin_redis.testing import (
    RedisCluster,
    RedisServer,
    SentinelGroup,
    start_redis,
    start_redis_cluster,
    start_sentinel_group,
)
from redis_helpers import rejoin


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


@pytest.fixture(scope="session")
def sentinel_group() -> Iterator[SentinelGroup]:
    """A master, a replica and three Sentinels; a test that kills the master restores a
    replica (see ``failover``)."""
    group = start_sentinel_group()
    yield group
    group.stop()


@pytest.fixture
def failover(sentinel_group: SentinelGroup) -> Iterator[Callable[[], None]]:
    """Kill the master (SIGKILL) and return once the Sentinels promoted the replica; the
    killed server then comes back, empty, as a replica of the new master (``rejoin``)."""
    sentinel_group.wait_replicated()

    def kill_the_master() -> None:
        master = sentinel_group.master()
        master.kill()
        rejoin(sentinel_group, master)

    yield kill_the_master
    sentinel_group.wait_replicated(60)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    cluster = start_redis_cluster(3)
    yield cluster
    cluster.stop()
