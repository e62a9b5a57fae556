"""The error hierarchy shared by every layer of rdzv.

Rendezvous errors mirror torch's elastic API so launcher code can catch the same names.
Store errors are separate: a store knows nothing about rendezvous, and the backend turns
store failures into :class:`RendezvousConnectionError`.
"""

from __future__ import annotations

import sys

__all__ = [
    "PluginConflictError",
    "PluginLoadError",
    "QueueEmptyError",
    "RendezvousClosedError",
    "RendezvousConnectionError",
    "RendezvousError",
    "RendezvousExcludedError",
    "RendezvousGracefulExitError",
    "RendezvousRestartLimitError",
    "RendezvousStateError",
    "RendezvousTimeoutError",
    "StoreConnectionError",
    "StoreDataLostError",
    "StoreError",
    "StoreTimeoutError",
    "UnknownOptionWarning",
    "describe_error",
]

CONNECTION_FAILED = "The connection to the C10d store has failed. See inner exception for details."


class RendezvousError(Exception):
    """Base of every rendezvous failure."""


class RendezvousClosedError(RendezvousError):
    """The rendezvous has been closed; no new round can start."""


class RendezvousExcludedError(RendezvousError):
    """This node may not join: its health check failed, or it (its host, rack, ...) is
    excluded for a cool-down after failing before. The message says why and for how long."""


class RendezvousRestartLimitError(RendezvousClosedError):
    """The run was closed because failures caused more re-rendezvous than ``max_restarts``
    allows; every node of the run gets this error."""


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


class StoreDataLostError(StoreConnectionError):
    """The store's engine lost data it had acknowledged: a server restarted empty, a
    failover that dropped the latest writes, a wiped or restored database. Retrying cannot
    bring the data back; the run must start again."""


class QueueEmptyError(StoreError):
    """A non-blocking ``queue_pop`` found the queue empty."""


class UnknownOptionWarning(UserWarning):
    """A rendezvous config key that neither the rendezvous nor the store type reads."""


class PluginLoadError(ImportError):
    """A plugin that provides a requested store type failed to load; the cause is chained."""


class PluginConflictError(ValueError):
    """Two distributions declare the same store type name."""


def add_note(error: BaseException, note: str) -> None:
    """Attach ``note`` (a hint for a person) to ``error``: ``BaseException.add_note`` where
    Python has it (3.11+), else the same ``__notes__`` list it would fill, which
    :func:`describe_error` and the ``rdzv`` command read on every Python."""
    if sys.version_info >= (3, 11):
        error.add_note(note)
    else:
        notes = getattr(error, "__notes__", None)
        if not isinstance(notes, list):
            notes = []
            error.__notes__ = notes  # type: ignore[attr-defined]
        notes.append(note)


def describe_error(error: BaseException, max_causes: int = 3) -> str:
    """``error`` for a person: its type and message, then the chained causes that add
    something (``caused by: ...``, at most ``max_causes``), then any hints attached as
    notes (``hint: ...``)."""
    lines = [f"{type(error).__name__}: {error}"]
    notes = list(getattr(error, "__notes__", []))
    said = [str(error)]
    shown = 0
    cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    seen = {id(error)}
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        notes += getattr(cause, "__notes__", [])
        text = str(cause)
        if text and not any(text in earlier for earlier in said) and shown < max_causes:
            lines.append(f"  caused by: {type(cause).__name__}: {text}")
            said.append(text)
            shown += 1
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    lines += [f"  hint: {note}" for note in notes]
    return "\n".join(lines)
