"""Store type ``torch-tcp``: torch's own C++ TCPStore (libuv server) as an rdzv store.

``is_host`` works as for store type ``tcp``: ``true`` hosts here (a busy port is an
error), ``false`` only connects, and when absent a process hosts if the endpoint names this
machine, falling back to a client if the port is taken. Importing this module is cheap:
torch loads inside ``create_store``.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

from rdzv_core import (
    Capability,
    RendezvousParameters,
    StoreConnectionError,
    StoreType,
    hookimpl,
    parse_endpoint,
)
from rdzv_core.storekit import host_or_join, read_timeout, resolver_host

if TYPE_CHECKING:
    from .stores import TorchBackedStore

log = logging.getLogger(__name__)

DEFAULT_PORT = 29400
CAPABILITIES = frozenset(
    {
        Capability.CROSS_PROCESS,
        Capability.CROSS_HOST,
        Capability.DELETE,
        Capability.APPEND,
        Capability.LIST_KEYS,
        Capability.QUEUES,
    }
)


def create_store(params: RendezvousParameters) -> TorchBackedStore:
    """torch's TCPStore for ``params``, hosted here or joined as a client."""
    import torch.distributed as dist

    from .stores import from_torch_store

    host, port = parse_endpoint(params.endpoint, DEFAULT_PORT)
    timeout = read_timeout(params)
    _resolve(host)

    def open_(hosting: bool) -> TorchBackedStore:
        torch_store = dist.TCPStore(
            host,
            port,
            is_master=hosting,
            timeout=timeout,
            wait_for_workers=False,
            multi_tenant=True,
            use_libuv=True,
        )
        return from_torch_store(torch_store, timeout, hosting=hosting)

    return host_or_join(params, host, open_, (RuntimeError, OSError))


def _resolve(host: str) -> None:
    """Fail at once for a name the resolver does not know: torch's TCPStore would retry it
    until the timeout. (A temporary resolver failure is left to torch's retries.)"""
    try:
        socket.getaddrinfo(resolver_host(host), None, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        if e.errno == socket.EAI_NONAME:
            raise StoreConnectionError(
                f"Cannot resolve the torch-tcp store host {host!r}: {e.strerror}."
            ) from e


@hookimpl
def rdzv_store_type() -> StoreType:
    return StoreType(
        name="torch-tcp",
        description="torch's C++ TCPStore (libuv), hosted by one node, with the is_host rules of tcp.",
        create_store=create_store,
        default_read_timeout=60,
        capabilities=CAPABILITIES,
    )
