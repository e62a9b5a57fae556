"""The shared conformance suite, run against a real etcd."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
from rdzv_plugin_etcd import EtcdStore
from rdzv_plugin_etcd.testing import Etcd, EtcdCluster

from rdzv_core import Store
from rdzv_core.testing import (
    BackendConformance,
    FailoverScenarios,
    RendezvousScenarios,
    StoreConformance,
    StoreTypeConformance,
)


@pytest.fixture
def etcd_factory(etcd: Etcd, prefix: str) -> Callable[[], Store]:
    return functools.partial(EtcdStore, "127.0.0.1", etcd.port, prefix=prefix)


class TestEtcdStore(StoreConformance):
    store_type = "etcd"

    @pytest.fixture
    def store_factory(self, etcd_factory: Callable[[], Store]) -> Callable[[], Store]:
        return etcd_factory


class TestEtcdStoreWithALease(StoreConformance):
    """With ``ttl``, keys live on a lease: the store declares leases instead of persistence."""

    store_type = "etcd"
    lease_seconds = 2.0

    @pytest.fixture
    def store_factory(self, etcd: Etcd, prefix: str) -> Callable[[], Store]:
        return functools.partial(EtcdStore, "127.0.0.1", etcd.port, prefix=prefix, ttl=2)


class TestEtcdBackend(BackendConformance):
    store_type = "etcd"

    @pytest.fixture
    def store_factory(self, etcd_factory: Callable[[], Store]) -> Callable[[], Store]:
        return etcd_factory


class TestEtcdStoreType(StoreTypeConformance):
    store_type = "etcd"

    @pytest.fixture
    def endpoint(self, etcd: Etcd) -> str:
        return etcd.endpoint

    @pytest.fixture
    def unreachable(self) -> dict[str, str]:
        from rdzv_plugin_etcd.testing import free_port

        return {"endpoint": f"127.0.0.1:{free_port()}", "read_timeout": "1"}


class TestEtcdRendezvous(RendezvousScenarios):
    store_type = "etcd"

    @pytest.fixture
    def endpoint(self, etcd: Etcd) -> str:
        return etcd.endpoint


class TestEtcdClusterFailover(FailoverScenarios):
    """A 3-member cluster whose leader is killed mid-work."""

    store_type = "etcd"

    @pytest.fixture
    def store_factory(self, etcd_cluster: EtcdCluster, prefix: str) -> Callable[[], Store]:
        (first, *others) = [("127.0.0.1", m.port) for m in etcd_cluster.members]
        return functools.partial(EtcdStore, *first, members=others, prefix=prefix)

    @pytest.fixture
    def endpoint(self, etcd_cluster: EtcdCluster) -> str:
        return etcd_cluster.endpoint
