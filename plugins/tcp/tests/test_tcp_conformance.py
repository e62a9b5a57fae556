"""The shared conformance suite, run against the tcp store type."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator

import pytest

from rdzv_core import Store
from rdzv_core.testing import (
    BackendConformance,
    RendezvousScenarios,
    StoreConformance,
    StoreTypeConformance,
)


class TestTCPStore(StoreConformance):
    store_type = "tcp"

    @pytest.fixture
    def store_factory(self, hosted_factory: Callable[[], Store]) -> Callable[[], Store]:
        return hosted_factory


class TestTCPStoreMixedClients(StoreConformance):
    store_type = "tcp"

    """Clients alternate between stores hosting the server in this process (which call it
    directly) and network clients, so every rule holds across both paths."""

    @pytest.fixture
    def store_factory(self, port: int) -> Iterator[Callable[[], Store]]:
        from rdzv_plugin_tcp import TCPStore

        anchor = TCPStore("127.0.0.1", port, is_master=True)
        opened = itertools.count()

        def make() -> Store:
            if next(opened) % 2 == 0:
                return TCPStore("127.0.0.1", port, is_master=True)
            return TCPStore("127.0.0.1", port)

        yield make
        anchor.close()

    @pytest.fixture
    def process_store_factory(self, port: int) -> Callable[[], Store]:
        from rdzv_plugin_tcp import TCPStore

        return functools.partial(TCPStore, "127.0.0.1", port)


class TestTCPBackend(BackendConformance):
    store_type = "tcp"

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
