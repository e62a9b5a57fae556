"""A real etcd for the tests, started as a child process on free loopback ports."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from rdzv_plugin_etcd.testing import Etcd, start_etcd


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
