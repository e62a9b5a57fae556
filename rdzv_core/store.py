"""The store contract every store type implements, plus helpers shared by implementations."""

from __future__ import annotations

import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import timedelta
from types import TracebackType
from typing import ClassVar

from . import storekit
from .capability import Capability
from .deprecation import moved_names
from .errors import StoreError, StoreTimeoutError

__all__ = ["PrefixStore", "Store"]

_PEEK = "\x00rdzv-peek"  # compare_set(key, _PEEK, _PEEK) reads a key without waiting
_QUEUE_RECHECK = 1.0  # seconds: how often a generic pop waiting on an empty queue looks again

# The store author's helpers lived here until 0.2.0 (rdzv_core.storekit since).
__getattr__, __deprecated__ = moved_names(
    __name__,
    "rdzv_core.storekit",
    [
        "Value",
        "add_to_value",
        "as_timeout",
        "check_key",
        "check_keys",
        "check_multi_set",
        "timeout_error",
        "to_bytes",
    ],
    "rdzv-core",
    since="0.2.0",
    removal="0.4.0",
)


class Store(ABC):
    """A key-value store shared by every client that opens the same underlying store.

    Keys are ``str``; values are given as ``str`` (UTF-8) or bytes and always read back as
    ``bytes``. Every operation is atomic with respect to every other, across all clients.
    Blocking reads wait up to :attr:`timeout` and then raise
    :class:`~rdzv_core.errors.StoreTimeoutError`. A store that cannot reach its medium raises
    :class:`~rdzv_core.errors.StoreError` (``StoreConnectionError`` when the link is lost).
    Stores are context managers; ``close()`` is idempotent.

    Optional operations: ``append`` and ``list_keys`` need the engine's help (a store type
    declares :attr:`Capability.APPEND` / :attr:`Capability.LIST_KEYS` and overrides them;
    without, they raise ``NotImplementedError``). The queue operations work on every store:
    the versions here are built on ``add`` and ``compare_set``, and store types with
    :attr:`Capability.QUEUES` override them with native ones.
    """

    #: What this store can do beyond the basic contract (see :class:`Capability`).
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __init__(self, timeout: timedelta) -> None:
        self._timeout = storekit.as_timeout(timeout, timeout)

    @property
    def timeout(self) -> timedelta:
        """How long blocking operations wait by default."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: timedelta | float) -> None:
        self._timeout = storekit.as_timeout(value, self._timeout)

    def set_timeout(self, timeout: timedelta | float) -> None:
        """Change :attr:`timeout` (torch's spelling)."""
        self.timeout = timeout

    @property
    def is_host(self) -> bool:
        """True when this client also serves the store to the other clients, so closing
        it ends the store for everyone. The rendezvous handler then keeps it open until
        every node has read what it needs (bounded by ``close_timeout``)."""
        return False

    @abstractmethod
    def set(self, key: str, value: storekit.Value) -> None:
        """Store ``value`` under ``key``, replacing any previous value."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The value of ``key``, waiting up to :attr:`timeout` for it to be set."""

    @abstractmethod
    def add(self, key: str, amount: int) -> int:
        """Add ``amount`` to the decimal counter at ``key`` (absent = 0); return the new value."""

    @abstractmethod
    def compare_set(self, key: str, expected: storekit.Value, desired: storekit.Value) -> bytes:
        """Set ``key`` to ``desired`` if its value is ``expected``; return the value now there.

        Absent key: with ``expected == ""`` sets ``desired`` and returns it; otherwise sets
        nothing and returns ``expected``. Present key: on a match sets and returns
        ``desired``, else returns the current value unchanged.
        """

    @abstractmethod
    def wait(self, keys: Sequence[str], timeout: timedelta | float | None = None) -> None:
        """Return once every key in ``keys`` exists; ``timeout`` overrides :attr:`timeout`."""

    @abstractmethod
    def check(self, keys: Sequence[str]) -> bool:
        """Whether every key in ``keys`` exists, without waiting (``[]`` is True)."""

    @abstractmethod
    def delete_key(self, key: str) -> bool:
        """Delete ``key``; True if it existed."""

    @abstractmethod
    def num_keys(self) -> int:
        """How many keys the store holds."""

    def multi_get(self, keys: Sequence[str]) -> list[bytes]:
        """The values of ``keys`` in order, waiting up to :attr:`timeout` for all of them."""
        keys = storekit.check_keys(keys)
        if keys:
            self.wait(keys)
        return [self.get(k) for k in keys]

    def multi_set(self, keys: Sequence[str], values: Sequence[storekit.Value]) -> None:
        """Set every key to its value; the lists must have the same length."""
        keys, values = storekit.check_multi_set(keys, values)
        for k, v in zip(keys, values):
            self.set(k, v)

    def append(self, key: str, value: storekit.Value) -> None:
        """Append ``value`` to the value of ``key``, creating it when absent; atomic.

        Needs :attr:`Capability.APPEND`: a ``compare_set`` loop cannot do it correctly
        (its reply cannot tell this append from an identical one by another client).
        """
        raise NotImplementedError(
            f"{type(self).__name__} cannot append: its store type does not declare the "
            f"'{Capability.APPEND}' capability."
        )

    def list_keys(self) -> list[str]:
        """Every key the store holds, in no particular order (queues are not keys).

        Needs :attr:`Capability.LIST_KEYS`.
        """
        raise NotImplementedError(
            f"{type(self).__name__} cannot list keys: its store type does not declare the "
            f"'{Capability.LIST_KEYS}' capability."
        )

    # -- queues ----------------------------------------------------------------------------
    #
    # The generic queue below lives in ordinary keys beside ``key`` (``<key>\x00queue/...``,
    # counted by num_keys): ``tail`` counts the items pushed, ``item/<n>`` holds each, and
    # ``head`` (``<n>:<claim token>``) names the last item popped. A pop claims the next
    # index with a compare_set whose value is unique to it, so each item goes to exactly
    # one popper, in push order. A push is two steps (count, then write): a pusher that dies
    # between them leaves a hole; the pop that claims it fails after ``timeout`` and the
    # next pop moves past it.

    def _queue_key(self, key: str, part: str) -> str:
        return f"{storekit.check_key(key)}\x00queue/{part}"

    def _queue_head(self, key: str) -> tuple[bytes, int]:
        raw = self.compare_set(self._queue_key(key, "head"), _PEEK, _PEEK)
        if raw == _PEEK.encode():
            return b"", 0
        return raw, int(raw.split(b":", 1)[0])

    def queue_push(self, key: str, value: storekit.Value) -> None:
        """Append ``value`` to the queue ``key`` and wake one blocked ``queue_pop``."""
        raw = storekit.to_bytes(value)
        index = self.add(self._queue_key(key, "tail"), 1)
        self.set(self._queue_key(key, f"item/{index}"), raw)

    def queue_len(self, key: str) -> int:
        """How many items the queue ``key`` holds (0 for a queue never pushed to)."""
        _, head = self._queue_head(key)
        return max(0, self.add(self._queue_key(key, "tail"), 0) - head)

    def queue_pop(
        self, key: str, block: bool = True, timeout: timedelta | float | None = None
    ) -> bytes:
        """Remove and return the oldest item of the queue ``key``; each item is popped once.

        An empty queue: with ``block`` wait up to ``timeout`` (default :attr:`timeout`) for
        a push, then raise :class:`~rdzv_core.errors.StoreTimeoutError`; without, raise
        :class:`~rdzv_core.errors.QueueEmptyError` at once.
        """
        limit = storekit.as_timeout(timeout, self.timeout)
        deadline = time.monotonic() + limit.total_seconds()
        while True:
            raw, head = self._queue_head(key)
            item = self._queue_key(key, f"item/{head + 1}")
            if head >= self.add(self._queue_key(key, "tail"), 0):
                if not block:
                    raise storekit.queue_empty_error(key)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise storekit.queue_timeout_error(key, limit)
                # In slices: another pop may take (and delete) the item this one waits for.
                try:
                    self.wait([item], timedelta(seconds=min(remaining, _QUEUE_RECHECK)))
                except StoreTimeoutError:
                    pass
                continue
            claim = f"{head + 1}:{secrets.token_hex(8)}".encode()
            if self.compare_set(self._queue_key(key, "head"), raw, claim) != claim:
                continue  # another pop took it
            try:
                self.wait([item], max(self.timeout, limit))
            except StoreTimeoutError as e:
                raise StoreError(
                    f"Item {head + 1} of the queue {key!r} was counted but never written "
                    "(did its pusher die?); the next pop moves past it."
                ) from e
            value = self.get(item)
            if Capability.DELETE in self.capabilities:
                self.delete_key(item)
            return value

    def close(self) -> None:  # noqa: B027 - stores without resources need nothing here
        """Release the store's resources; later operations may fail. Idempotent."""

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PrefixStore(Store):
    """A view of ``store`` in which every key is stored as ``"{prefix}/{key}"``.

    It shares the underlying store's timeout and capabilities; ``num_keys`` counts the
    whole underlying store, ``list_keys`` only this prefix's keys (without the prefix), and
    ``close`` leaves the underlying store open.
    """

    def __init__(self, prefix: str, store: Store) -> None:
        self.prefix = prefix
        self.underlying_store = store

    @property
    def capabilities(self) -> frozenset[Capability]:  # type: ignore[override]
        return self.underlying_store.capabilities

    @property
    def timeout(self) -> timedelta:
        return self.underlying_store.timeout

    @timeout.setter
    def timeout(self, value: timedelta | float) -> None:
        self.underlying_store.timeout = value

    @property
    def is_host(self) -> bool:
        return self.underlying_store.is_host

    def _k(self, key: str) -> str:
        return f"{self.prefix}/{storekit.check_key(key)}"

    def _ks(self, keys: Sequence[str]) -> list[str]:
        return [self._k(k) for k in storekit.check_keys(keys)]

    def set(self, key: str, value: storekit.Value) -> None:
        self.underlying_store.set(self._k(key), value)

    def get(self, key: str) -> bytes:
        return self.underlying_store.get(self._k(key))

    def add(self, key: str, amount: int) -> int:
        return self.underlying_store.add(self._k(key), amount)

    def compare_set(self, key: str, expected: storekit.Value, desired: storekit.Value) -> bytes:
        return self.underlying_store.compare_set(self._k(key), expected, desired)

    def wait(self, keys: Sequence[str], timeout: timedelta | float | None = None) -> None:
        self.underlying_store.wait(self._ks(keys), timeout)

    def check(self, keys: Sequence[str]) -> bool:
        return self.underlying_store.check(self._ks(keys))

    def delete_key(self, key: str) -> bool:
        return self.underlying_store.delete_key(self._k(key))

    def num_keys(self) -> int:
        return self.underlying_store.num_keys()

    def multi_get(self, keys: Sequence[str]) -> list[bytes]:
        return self.underlying_store.multi_get(self._ks(keys))

    def multi_set(self, keys: Sequence[str], values: Sequence[storekit.Value]) -> None:
        self.underlying_store.multi_set(self._ks(keys), values)

    def append(self, key: str, value: storekit.Value) -> None:
        self.underlying_store.append(self._k(key), value)

    def list_keys(self) -> list[str]:
        start = f"{self.prefix}/"
        return [k[len(start) :] for k in self.underlying_store.list_keys() if k.startswith(start)]

    def queue_push(self, key: str, value: storekit.Value) -> None:
        self.underlying_store.queue_push(self._k(key), value)

    def queue_pop(
        self, key: str, block: bool = True, timeout: timedelta | float | None = None
    ) -> bytes:
        return self.underlying_store.queue_pop(self._k(key), block, timeout)

    def queue_len(self, key: str) -> int:
        return self.underlying_store.queue_len(self._k(key))
