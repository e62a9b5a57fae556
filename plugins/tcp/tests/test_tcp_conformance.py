"""The shared conformance suite, run against the tcp store type."""

from __future__ import annotations

import itertools
import os
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
    @pytest.fixture
    def store_factory(self, hosted_factory: Callable[[], Store]) -> Callable[[], Store]:
        return hosted_factory


class TestTCPStoreMixedClients(StoreConformance):
    """Clients alternate between stores hosting the server in this process (which call it
    directly) and network clients, so every rule holds across both paths."""

    @pytest.fixture
    def store_factory(self, port: int) -> Iterator[Callable[[], Store]]:
        from rdzv_plugin_tcp import TCPStore

        anchor = TCPStore("127.0.0.1", port, is_master=True)
        opened = itertools.count()
        parent = os.getpid()

        def make() -> Store:
            # A forked child (the cross-process tests) cannot share this process's server.
            if next(opened) % 2 == 0 and os.getpid() == parent:
                return TCPStore("127.0.0.1", port, is_master=True)
            return TCPStore("127.0.0.1", port)

        yield make
        anchor.close()


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
