"""The shared conformance suite, run against the tcp store type."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rdzv_core import Store
from rdzv_core.testing import (
    BackendConformance,
    RendezvousScenarios,
    StoreConformance,
    StoreTypeConformance,
)


class TestTCPStore(StoreConformance):
    @pytest.fixture
    def store_factory(self, hosted_factory: Callable[[], Store]) -> Callable[[], Store]:
        return hosted_factory


class TestTCPBackend(BackendConformance):
    @pytest.fixture
    def store_factory(self, hosted_factory: Callable[[], Store]) -> Callable[[], Store]:
        return hosted_factory


class TestTCPStoreType(StoreTypeConformance):
    store_type = "tcp"

    @pytest.fixture
    def endpoint(self, port: int) -> str:
        return f"127.0.0.1:{port}"

    @pytest.fixture
    def unreachable(self, port: int) -> dict[str, str]:
        return {"endpoint": f"127.0.0.1:{port}", "is_host": "false", "read_timeout": "1"}


class TestTCPRendezvous(RendezvousScenarios):
    store_type = "tcp"

    @pytest.fixture
    def endpoint(self, port: int) -> str:
        return f"127.0.0.1:{port}"
