"""The store contract every store type implements, plus helpers shared by implementations."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import timedelta
from types import TracebackType
from typing import ClassVar, TypeAlias

from .capability import Capability
from .errors import StoreTimeoutError

__all__ = [
    "PrefixStore",
    "Store",
    "Value",
    "add_to_value",
    "as_timeout",
    "check_key",
    "check_keys",
    "check_multi_set",
    "timeout_error",
    "to_bytes",
]

Value: TypeAlias = str | bytes | bytearray | memoryview

_INT64_MIN = -(2**63)
_DECIMAL = re.compile(rb"\s*[+-]?[0-9]+\s*")


def to_bytes(value: Value) -> bytes:
    """``value`` as bytes: str is UTF-8 encoded; any other type is a TypeError."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"A store value must be str or bytes, not {type(value).__name__}.")


def check_key(key: object) -> str:
    """``key`` itself when it is a str; any other type is a TypeError."""
    if not isinstance(key, str):
        raise TypeError(f"A store key must be a str, not {type(key).__name__}.")
    return key


def check_keys(keys: Sequence[str]) -> list[str]:
    """``keys`` as a list of str; a bare str (a common slip for ``[key]``) is a TypeError."""
    if isinstance(keys, (str, bytes)):
        raise TypeError("Store keys must be a list of str, not a single key.")
    return [check_key(k) for k in keys]


def as_timeout(timeout: timedelta | float | None, default: timedelta) -> timedelta:
    """A timeout given as a timedelta or seconds (None means ``default``); must be >= 0."""
    if timeout is None:
        return default
    if isinstance(timeout, bool) or not isinstance(timeout, (timedelta, int, float)):
        raise TypeError(f"A timeout must be a timedelta or seconds, not {type(timeout).__name__}.")
    result = timeout if isinstance(timeout, timedelta) else timedelta(seconds=timeout)
    if result < timedelta(0):
        raise ValueError(f"A timeout must not be negative, got {result}.")
    return result


def timeout_error(keys: Sequence[str], timeout: timedelta) -> StoreTimeoutError:
    """The error a blocking read raises after waiting ``timeout`` for ``keys``."""
    millis = round(timeout.total_seconds() * 1000)
    return StoreTimeoutError(f"Timed out after {millis} ms waiting for keys: {', '.join(keys)}")


def add_to_value(key: str, current: bytes | None, amount: int) -> int:
    """The counter value after adding ``amount`` to ``current`` (absent counts as 0).

    Values are ASCII decimal; the sum wraps at signed 64 bits like torch's stores. A value
    that is not a decimal integer is a ValueError naming the key.
    """
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(f"The amount to add must be an int, not {type(amount).__name__}.")
    if current is None:
        base = 0
    elif _DECIMAL.fullmatch(current):
        base = int(current)
    else:
        shown = current[:40] + (b"..." if len(current) > 40 else b"")
        raise ValueError(
            f"Cannot add to key {key!r}: its value {shown!r} is not a decimal integer."
        )
    return (base + amount - _INT64_MIN) % 2**64 + _INT64_MIN


class Store(ABC):
    """A key-value store shared by every client that opens the same underlying store.

    Keys are ``str``; values are given as ``str`` (UTF-8) or bytes and always read back as
    ``bytes``. Every operation is atomic with respect to every other, across all clients.
    Blocking reads wait up to :attr:`timeout` and then raise
    :class:`~rdzv_core.errors.StoreTimeoutError`. A store that cannot reach its medium raises
    :class:`~rdzv_core.errors.StoreError` (``StoreConnectionError`` when the link is lost).
    Stores are context managers; ``close()`` is idempotent.
    """

    #: What this store can do beyond the basic contract (see :class:`Capability`).
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __init__(self, timeout: timedelta) -> None:
        self._timeout = as_timeout(timeout, timeout)

    @property
    def timeout(self) -> timedelta:
        """How long blocking operations wait by default."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: timedelta | float) -> None:
        self._timeout = as_timeout(value, self._timeout)

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
    def set(self, key: str, value: Value) -> None:
        """Store ``value`` under ``key``, replacing any previous value."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The value of ``key``, waiting up to :attr:`timeout` for it to be set."""

    @abstractmethod
    def add(self, key: str, amount: int) -> int:
        """Add ``amount`` to the decimal counter at ``key`` (absent = 0); return the new value."""

    @abstractmethod
    def compare_set(self, key: str, expected: Value, desired: Value) -> bytes:
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
        keys = check_keys(keys)
        if keys:
            self.wait(keys)
        return [self.get(k) for k in keys]

    def multi_set(self, keys: Sequence[str], values: Sequence[Value]) -> None:
        """Set every key to its value; the lists must have the same length."""
        keys, values = check_multi_set(keys, values)
        for k, v in zip(keys, values):
            self.set(k, v)

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


def check_multi_set(keys: Sequence[str], values: Sequence[Value]) -> tuple[list[str], list[bytes]]:
    """``keys`` and ``values`` checked and converted; unequal lengths are a ValueError."""
    keys = check_keys(keys)
    if isinstance(values, (str, bytes)):
        raise TypeError("multi_set values must be a list, not a single value.")
    converted = [to_bytes(v) for v in values]
    if len(keys) != len(converted):
        raise ValueError(
            f"multi_set needs as many values as keys, got {len(keys)} keys and "
            f"{len(converted)} values."
        )
    return keys, converted


class PrefixStore(Store):
    """A view of ``store`` in which every key is stored as ``"{prefix}/{key}"``.

    It shares the underlying store's timeout; ``num_keys`` counts the whole underlying
    store, and ``close`` leaves the underlying store open.
    """

    def __init__(self, prefix: str, store: Store) -> None:
        self.prefix = prefix
        self.underlying_store = store

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
        return f"{self.prefix}/{check_key(key)}"

    def _ks(self, keys: Sequence[str]) -> list[str]:
        return [self._k(k) for k in check_keys(keys)]

    def set(self, key: str, value: Value) -> None:
        self.underlying_store.set(self._k(key), value)

    def get(self, key: str) -> bytes:
        return self.underlying_store.get(self._k(key))

    def add(self, key: str, amount: int) -> int:
        return self.underlying_store.add(self._k(key), amount)

    def compare_set(self, key: str, expected: Value, desired: Value) -> bytes:
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

    def multi_set(self, keys: Sequence[str], values: Sequence[Value]) -> None:
        self.underlying_store.multi_set(self._ks(keys), values)
