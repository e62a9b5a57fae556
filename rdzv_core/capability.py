"""Capabilities: what a store type can do beyond the basic store contract."""

from __future__ import annotations

import enum

__all__ = ["Capability"]


class Capability(str, enum.Enum):
    """A declared ability of a store type; the conformance suite skips tests by it.

    A store type declares the set it honours on :class:`~rdzv_core.StoreType` and its
    ``Store`` class; the suite runs the tests that need a capability only when declared.
    """

    #: Clients in different processes on one host share the store.
    CROSS_PROCESS = "cross-process"
    #: Clients on different hosts share the store.
    CROSS_HOST = "cross-host"
    #: Data survives the restart of every client (and of any server).
    PERSISTENT = "persistent"
    #: ``delete_key`` removes keys (otherwise it may be unsupported).
    DELETE = "delete"
    #: Keys can expire with a lease/TTL when their owner goes away.
    LEASES = "leases"

    def __str__(self) -> str:
        return self.value
