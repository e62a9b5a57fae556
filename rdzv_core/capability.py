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
    #: ``append`` is one native operation of the engine (the generic one is a
    #: ``compare_set`` loop: atomic too, but it retries under contention).
    APPEND = "append"
    #: ``list_keys`` lists the store's keys (no generic version is possible).
    LIST_KEYS = "list-keys"
    #: The queue operations are native: a push is one atomic step, queues are not keys,
    #: and a blocked pop is woken by the push (see :meth:`Store.queue_pop`).
    QUEUES = "queues"

    def __str__(self) -> str:
        return self.value
