"""The shared conformance suite, run against a real Redis."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis_helpers import RedisServer, factory

from rdzv_core import Store
from rdzv_core.testing import (
    BackendConformance,
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
