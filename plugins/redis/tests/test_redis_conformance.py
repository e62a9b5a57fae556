"""The shared conformance suite, run against a real Redis."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable

import pytest
from rdzv_plugin_redis import RedisStore
from rdzv_plugin_redis.testing import RedisCluster, SentinelGroup
from redis_helpers import RedisServer, factory, sentinel_factory

from rdzv_core import Store
from rdzv_core.testing import (
    BackendConformance,
    FailoverScenarios,
    RendezvousScenarios,
    StoreConformance,
    StoreTypeConformance,
)


class TestRedisStore(StoreConformance):
    store_type = "redis"

    @pytest.fixture
    def store_factory(self, redis_server: RedisServer) -> Callable[[], Store]:
        return factory(redis_server)


class TestRedisBackend(BackendConformance):
    store_type = "redis"

    @pytest.fixture
    def store_factory(self, redis_server: RedisServer) -> Callable[[], Store]:
        return factory(redis_server)


class TestRedisStoreType(StoreTypeConformance):
    store_type = "redis"

    @pytest.fixture
    def endpoint(self, redis_server: RedisServer) -> str:
        return redis_server.endpoint

    @pytest.fixture
    def unreachable(self) -> dict[str, str]:
        from redis_helpers import free_port

        return {"endpoint": f"127.0.0.1:{free_port()}", "read_timeout": "1"}


class TestRedisRendezvous(RendezvousScenarios):
    store_type = "redis"

    @pytest.fixture
    def endpoint(self, redis_server: RedisServer) -> str:
        return redis_server.endpoint


def cluster_factory(cluster: RedisCluster) -> functools.partial[RedisStore]:
    return functools.partial(
        RedisStore,
        prefix=f"c/{uuid.uuid4().hex[:10]}/",
        cluster_nodes=[("127.0.0.1", n.port) for n in cluster.nodes],
    )


class TestRedisSentinelStore(StoreConformance):
    """The contract on the master that three Sentinels name."""

    store_type = "redis"

    @pytest.fixture
    def store_factory(self, sentinel_group: SentinelGroup) -> Callable[[], Store]:
        return sentinel_factory(sentinel_group)


class TestRedisSentinelFailover(FailoverScenarios):
    """The master killed mid-work; writes wait for the replica (sync_replicas=1), so the
    promoted replica holds every acknowledged write."""

    store_type = "redis"

    @pytest.fixture
    def store_factory(self, sentinel_group: SentinelGroup) -> Callable[[], Store]:
        return sentinel_factory(sentinel_group, sync_replicas=1)

    @pytest.fixture
    def endpoint(self, sentinel_group: SentinelGroup) -> str:
        return sentinel_group.endpoint

    @pytest.fixture
    def rendezvous_config(self) -> str:
        return "sync_replicas=1"


class TestRedisClusterStore(StoreConformance):
    """The contract on a Redis Cluster of three masters (all of a run's keys in one slot)."""

    store_type = "redis"

    @pytest.fixture
    def store_factory(self, redis_cluster: RedisCluster) -> Callable[[], Store]:
        return cluster_factory(redis_cluster)


class TestRedisClusterBackend(BackendConformance):
    store_type = "redis"

    @pytest.fixture
    def store_factory(self, redis_cluster: RedisCluster) -> Callable[[], Store]:
        return cluster_factory(redis_cluster)


class TestRedisClusterRendezvous(RendezvousScenarios):
    store_type = "redis"

    @pytest.fixture
    def endpoint(self, redis_cluster: RedisCluster) -> str:
        return redis_cluster.endpoint
