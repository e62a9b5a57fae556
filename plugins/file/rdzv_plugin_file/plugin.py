"""The rdzv plugin object of the ``file`` store type (entry point ``rdzv: file``)."""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING

from rdzv_core import (
    Capability,
    RendezvousError,
    RendezvousParameters,
    StoreType,
    hookimpl,
)
from rdzv_core.storekit import read_timeout

if TYPE_CHECKING:
    from .store import FileStore

DEFAULT_READ_TIMEOUT = 300
CAPABILITIES = frozenset(
    {
        Capability.CROSS_PROCESS,
        Capability.PERSISTENT,
        Capability.DELETE,
        Capability.APPEND,
        Capability.LIST_KEYS,
        Capability.QUEUES,
    }
)


def create_store(params: RendezvousParameters) -> FileStore:
    """The file store at ``params.endpoint`` (a path, taken verbatim); an empty endpoint
    gets a fresh owner-only temporary file."""
    from .store import FileStore

    timeout = read_timeout(params)
    path = params.endpoint
    if "\x00" in path:
        raise ValueError(f"The file store path {path!r} must not contain a NUL character.")
    if not path or not path.strip():
        try:
            fd, path = tempfile.mkstemp(prefix="rdzv-", suffix=".store")
            os.close(fd)
        except OSError as e:
            raise RendezvousError(
                "The file creation for C10d store has failed. See inner exception for details."
            ) from e
    return FileStore(path, timeout=timeout)


@hookimpl
def rdzv_store_type() -> StoreType:
    return StoreType(
        name="file",
        description="A crash-safe store in one file shared by processes on a host or shared filesystem.",
        create_store=create_store,
        default_read_timeout=DEFAULT_READ_TIMEOUT,
        capabilities=CAPABILITIES,
    )
