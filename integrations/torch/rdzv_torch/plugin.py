"""Store type ``torch-tcp``: torch's own C++ TCPStore (libuv server) as an rdzv store.

``is_host`` works as for store type ``tcp``: ``true`` hosts here (a busy port is an
error), ``false`` only connects, and when absent a process hosts if the endpoint names this
machine, falling back to a client if the port is taken. Importing this module is cheap:
torch loads inside ``create_store``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rdzv_core import (
    Capability,
    RendezvousParameters,
    StoreType,
    hookimpl,
    is_local_host,
    parse_endpoint,
)
from rdzv_core.storekit import read_timeout

if TYPE_CHECKING:
    from .stores import TorchBackedStore

log = logging.getLogger(__name__)

DEFAULT_PORT = 29400
CAPABILITIES = frozenset({Capability.CROSS_PROCESS, Capability.CROSS_HOST, Capability.DELETE})


def create_store(params: RendezvousParameters) -> TorchBackedStore:
    """torch's TCPStore for ``params``, hosted here or joined as a client."""
    import torch.distributed as dist

    from .stores import from_torch_store

    host, port = parse_endpoint(params.endpoint, DEFAULT_PORT)
    timeout = read_timeout(params)
    explicit = params.get_as_bool("is_host")
    is_host = explicit if explicit is not None else is_local_host(host)

    def open_(master: bool) -> TorchBackedStore:
        torch_store = dist.TCPStore(
            host,
            port,
            is_master=master,
            timeout=timeout,
            wait_for_workers=False,
            multi_tenant=True,
            use_libuv=True,
        )
        return from_torch_store(torch_store, timeout, hosting=master)

    try:
        return open_(is_host)
    except (RuntimeError, OSError) as e:
        if not is_host or explicit is not None:
            raise
        log.info("Could not host torch's TCPStore on port %d (%s); joining it.", port, e)
        return open_(False)


@hookimpl
def rdzv_store_type() -> StoreType:
    return StoreType(
        name="torch-tcp",
        description="torch's C++ TCPStore (libuv), hosted by one node, with the is_host rules of tcp.",
        create_store=create_store,
        default_read_timeout=60,
        capabilities=CAPABILITIES,
    )
