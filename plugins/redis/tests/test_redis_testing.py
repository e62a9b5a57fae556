"""The public test helpers: throwaway redis-server processes."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from rdzv_plugin_redis import testing


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another process's listener holds."""
    with socket.create_server(("127.0.0.1", 0)) as holder:
        yield holder.getsockname()[1]


def first_port_taken(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    """The next free_port() the helpers ask for returns ``port`` (taken meanwhile, as by a
    process that bound it between the choice and redis-server's bind); later ones are free."""
    handed = iter([port])
    real = testing.free_port
    monkeypatch.setattr(testing, "free_port", lambda: next(handed, 0) or real())


@pytest.mark.parametrize("tls", [False, True])
def test_a_port_taken_before_redis_binds_it_is_retried_on_a_fresh_one(
    monkeypatch: pytest.MonkeyPatch, taken_port: int, tls: bool
) -> None:
    first_port_taken(monkeypatch, taken_port)
    server = testing.start_redis(tls=tls)
    try:
        assert server.port != taken_port
        assert server.redis().ping()
    finally:
        server.stop()
    assert not os.path.exists(server.data) and not os.path.exists(server.data + ".log")


def test_a_sentinel_group_whose_port_was_taken_starts_on_fresh_ones(
    monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    first_port_taken(monkeypatch, taken_port)
    group = testing.start_sentinel_group()
    try:
        assert all(s.alive() and s.port != taken_port for s in [*group.servers, *group.sentinels])
        assert group.master().port == group.servers[0].port
    finally:
        group.stop()


def test_a_redis_that_cannot_start_is_reported_with_what_it_logged(
    monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    monkeypatch.setattr(testing, "_START_ATTEMPTS", 1)
    first_port_taken(monkeypatch, taken_port)
    with pytest.raises(RuntimeError, match="(?s)exited: .*Address already in use"):
        testing.start_redis()
