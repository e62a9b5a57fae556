from __future__ import annotations

import functools
import socket
from collections.abc import Callable, Iterator

import pytest

from rdzv_core import Store


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def hosted_factory(port: int) -> Iterator[Callable[[], Store]]:
    """Clients of one store hosted in this process on a fresh port (the host node's case)."""
    from rdzv_plugin_tcp import TCPStore

    host = TCPStore("127.0.0.1", port, is_master=True, multi_tenant=False)
    yield functools.partial(TCPStore, "127.0.0.1", host.port)  # picklable: other processes
    host.close()
