"""The public test helpers: throwaway etcd members and clusters."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from rdzv_plugin_etcd import testing


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another process's listener holds."""
    with socket.create_server(("127.0.0.1", 0)) as holder:
        yield holder.getsockname()[1]


def first_port_taken(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    """The next free_port() the helpers ask for returns ``port`` (taken meanwhile, as by a
    process that bound it between the choice and etcd's bind); the later ones are free."""
    handed = iter([port])
    real = testing.free_port
    monkeypatch.setattr(testing, "free_port", lambda: next(handed, 0) or real())


def test_a_port_taken_before_etcd_binds_it_is_retried_on_fresh_ones(
    monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    first_port_taken(monkeypatch, taken_port)
    etcd = testing.start_etcd()
    try:
        assert etcd.port != taken_port and etcd.healthy()
    finally:
        etcd.stop()
    assert not os.path.exists(etcd.data) and not os.path.exists(etcd.data + ".log")


def test_a_cluster_whose_port_was_taken_starts_on_fresh_ones(
    monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    first_port_taken(monkeypatch, taken_port)
    cluster = testing.start_etcd_cluster(3)
    try:
        assert all(m.alive() and m.port != taken_port for m in cluster.members)
        cluster.leader()
    finally:
        cluster.stop()


def test_an_etcd_that_cannot_start_is_reported_with_what_it_logged(
    monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    monkeypatch.setattr(testing, "_START_ATTEMPTS", 1)
    first_port_taken(monkeypatch, taken_port)
    with pytest.raises(RuntimeError, match="(?s)exited with status 1: .*address already in use"):
        testing.start_etcd()
