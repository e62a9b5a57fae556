"""The error hierarchy shared by every layer of rdzv.

Rendezvous errors mirror torch's elastic API so launcher code can catch the same names.
Store errors are separate: a store knows nothing about rendezvous, and the backend turns
store failures into :class:`RendezvousConnectionError`.
"""

from __future__ import annotations

__all__ = [
    "PluginConflictError",
    "PluginLoadError",
    "RendezvousClosedError",
    "RendezvousConnectionError",
    "RendezvousError",
    "RendezvousGracefulExitError",
    "RendezvousStateError",
    "RendezvousTimeoutError",
    "StoreConnectionError",
    "StoreError",
    "StoreTimeoutError",
]

CONNECTION_FAILED = "The connection to the C10d store has failed. See inner exception for details."


class RendezvousError(Exception):
    """Base of every rendezvous failure."""


class RendezvousClosedError(RendezvousError):
    """The rendezvous has been closed; no new round can start."""


class RendezvousTimeoutError(RendezvousError):
    """A rendezvous step (join, close, keep-alive) did not finish before its deadline."""


class RendezvousConnectionError(RendezvousError):
    """The backend could not reach its store; the store's exception is the ``__cause__``."""


class RendezvousStateError(RendezvousError):
    """The stored rendezvous state is corrupt."""


class RendezvousGracefulExitError(RendezvousError):
    """This node is surplus and the rendezvous closed: exit quietly, this is not a failure."""


class StoreError(Exception):
    """A store operation failed."""


class StoreTimeoutError(StoreError, TimeoutError):
    """A blocking store operation (``get``, ``wait``, ``multi_get``) ran out of time."""


class StoreConnectionError(StoreError, ConnectionError):
    """The store's server or medium could not be reached, or the connection was lost."""


class PluginLoadError(ImportError):
    """A plugin that provides a requested store type failed to load; the cause is chained."""


class PluginConflictError(ValueError):
    """Two distributions declare the same store type name."""
