"""The shared suites over torch's stores: from_torch_store and store type torch-tcp."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch.distributed as dist
from torch_helpers import torch_tcp_client

from rdzv_core import Store
from rdzv_core.testing import (
    BackendConformance,
    RendezvousScenarios,
    StoreConformance,
    StoreTypeConformance,
)


@pytest.fixture
def factory(torch_server: dist.TCPStore) -> Callable[[], Store]:
    """Clients of one torch TCPStore server, new for each test."""
    return functools.partial(torch_tcp_client, torch_server.port)


class TestFromTorchTCPStore(StoreConformance):
    @pytest.fixture
    def store_factory(self, factory: Callable[[], Store]) -> Callable[[], Store]:
        return factory


class TestFromTorchTCPBackend(BackendConformance):
    @pytest.fixture
    def store_factory(self, factory: Callable[[], Store]) -> Callable[[], Store]:
        return factory


class TestTorchTCPStoreType(StoreTypeConformance):
    store_type = "torch-tcp"

    @pytest.fixture
    def endpoint(self, port: int) -> str:
        return f"127.0.0.1:{port}"

    @pytest.fixture
    def unreachable(self, port: int) -> dict[str, str]:
        return {"endpoint": f"127.0.0.1:{port}", "is_host": "false", "read_timeout": "1"}


class TestTorchTCPRendezvous(RendezvousScenarios):
    store_type = "torch-tcp"

    @pytest.fixture
    def endpoint(self, port: int) -> str:
        return f"127.0.0.1:{port}"
