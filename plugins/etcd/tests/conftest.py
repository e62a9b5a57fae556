"""A real etcd for the tests, started as a child process on free loopback ports."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from rdzv_plugin_etcd.testing import Etcd, EtcdCluster, start_etcd, start_etcd_cluster


@pytest.fixture(scope="session")
def etcd() -> Iterator[Etcd]:
    server = start_etcd()
    yield server
    server.stop()


@pytest.fixture
def own_etcd() -> Iterator[Etcd]:
    """An etcd of this test's own (to kill, or to turn authentication on)."""
    server = start_etcd()
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    """A fresh key prefix: every test sees an empty store."""
    return f"/test/{uuid.uuid4().hex[:10]}/"


@pytest.fixture(scope="session")
def etcd_cluster() -> Iterator[EtcdCluster]:
    """Three members; a test that kills one restores it (see ``failover``)."""
    cluster = start_etcd_cluster(3)
    yield cluster
    cluster.stop()


@pytest.fixture
def failover(etcd_cluster: EtcdCluster) -> Iterator[Callable[[], None]]:
    """Kill the leader (SIGKILL); the member comes back, with its data, after the test."""
    etcd_cluster.wait_healthy()
    killed: list[Etcd] = []

    def kill_the_leader() -> None:
        leader = etcd_cluster.leader()
        leader.kill()
        killed.append(leader)

    yield kill_the_leader
    for member in killed:
        member.restart()
    etcd_cluster.wait_healthy()
