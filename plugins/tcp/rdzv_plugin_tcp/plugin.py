"""The rdzv plugin object of the ``tcp`` store type (entry point ``rdzv: tcp``).

Kept cheap to import: the client and server load inside ``create_store`` and ``serve``.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING, Any

import rdzv_plugin_tcp
from rdzv_core import (
    Capability,
    EventKind,
    RendezvousEvent,
    RendezvousParameters,
    StoreError,
    StoreType,
    hookimpl,
    parse_endpoint,
)
from rdzv_core.events import emit
from rdzv_core.storekit import host_or_join, read_timeout

if TYPE_CHECKING:
    from .client import TCPStore
    from .limits import ServerLimits

log = logging.getLogger(__name__)

DEFAULT_READ_TIMEOUT = 60
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
OPTIONS = {
    "bind_host": "address the hosted server listens on (default: every interface)",
    "auth_token": "shared secret (better: auth_token_file or $RDZV_TCP_AUTH_TOKEN)",
    "auth_token_file": "file holding the shared secret",
    "max_frame_size": "largest request or reply a hosted server accepts, in bytes (64 MiB)",
    "max_connections": "clients a hosted server serves at once (16384)",
}


def create_store(params: RendezvousParameters) -> TCPStore:
    """The tcp store for ``params``: hosts it when ``is_host`` says so (or, when absent,
    when the endpoint names this machine, falling back to a client if hosting fails)."""
    from .auth import token_from_params
    from .client import TCPStore

    host, port = parse_endpoint(params.endpoint, rdzv_plugin_tcp.DEFAULT_PORT)
    timeout = read_timeout(params)
    options: dict[str, Any] = {
        "timeout": timeout,
        "multi_tenant": True,
        "auth_token": token_from_params(params),
        "bind_host": params.get("bind_host") or None,
    }
    limits = _limits(params)
    if limits is not None:
        options["limits"] = limits
    store = host_or_join(
        params,
        host,
        lambda hosting: TCPStore(host, port, is_master=hosting, **options),
        (StoreError,),
    )
    if store.server is not None:
        log.info("Process %d hosts the TCP store for the C10d rendezvous backend.", os.getpid())
        emit(
            RendezvousEvent(
                EventKind.STORE_HOSTED,
                "tcp",
                params.run_id,
                {"host": host, "port": store.port, "pid": os.getpid()},
            )
        )
    return store


def _limits(params: RendezvousParameters) -> ServerLimits | None:
    """The hosted server's limits from config ``max_frame_size`` and ``max_connections``."""
    from .limits import ServerLimits

    chosen = {}
    for key in ("max_frame_size", "max_connections"):
        value = params.get_as_int(key)
        if value is not None:
            chosen[key] = value
    if not chosen:
        return None
    frame = chosen.get("max_frame_size", ServerLimits.max_frame_size)
    buffered = max(ServerLimits.max_buffered_bytes, frame)
    return ServerLimits(**chosen, max_buffered_bytes=buffered)


@hookimpl
def rdzv_store_type() -> StoreType:
    return StoreType(
        name="tcp",
        description="A TCP key-value store, hosted by one node or run standalone with rdzv serve.",
        create_store=create_store,
        default_read_timeout=DEFAULT_READ_TIMEOUT,
        capabilities=CAPABILITIES,
        options=OPTIONS,
    )


@hookimpl
def rdzv_cli_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    from .serve import add_serve_command

    add_serve_command(subparsers)
