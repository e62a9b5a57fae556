"""The store author's toolkit: what every Store implementation needs, in one public module.

The first-party store types are built on it. Everything here is stable API:

- values and keys: :data:`Value`, :func:`to_bytes`, :func:`check_key`, :func:`check_keys`,
  :func:`check_multi_set` (the exact ``TypeError``/``ValueError`` messages the conformance
  suite expects for bad arguments);
- counters: :func:`add_to_value` (ASCII decimal, 64-bit wrap-around, ``ValueError`` naming the
  key for a non-number), :func:`wrap_int64`;
- compare-and-set: :func:`compare_set_outcome` (the contract's table, in one function);
- hosting: :func:`host_or_join` (the ``is_host`` rules of a store type whose store one
  node hosts), :func:`split_url` (a URL endpoint, its host and port checked, with errors
  naming it), :func:`check_host` (a host checked as :func:`~rdzv_core.parse_endpoint` checks
  that of a ``host:port`` endpoint), :func:`resolver_host` (a host name as ``socket`` calls
  should get it);
- time: :func:`as_timeout`, :func:`timeout_error` (the ``StoreTimeoutError`` a blocking read
  raises), :func:`read_timeout` (the store type's resolved ``read_timeout``);
- options: :func:`readable_file` (a file option, e.g. a TLS certificate, checked up front);
- retries: :func:`backoff_delays` (how long to sleep between the attempts of an operation
  retried through a failover).

Errors to raise live in :mod:`rdzv_core`: ``StoreError`` for a failed operation,
``StoreConnectionError`` for a lost or unreachable medium, ``StoreDataLostError`` when the
engine lost acknowledged data, ``StoreTimeoutError`` (from :func:`timeout_error`) for a wait
that ran out.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import TypeAlias, TypeVar

from .endpoint import check_host, is_local_host, resolver_host, split_url
from .errors import QueueEmptyError, StoreTimeoutError
from .params import RendezvousParameters

S = TypeVar("S")
_log = logging.getLogger(__name__)

__all__ = [
    "Value",
    "add_to_value",
    "as_timeout",
    "backoff_delays",
    "check_host",
    "check_key",
    "check_keys",
    "check_multi_set",
    "compare_set_outcome",
    "host_or_join",
    "queue_empty_error",
    "queue_timeout_error",
    "read_timeout",
    "readable_file",
    "resolver_host",
    "split_url",
    "timeout_error",
    "to_bytes",
    "wrap_int64",
]

Value: TypeAlias = str | bytes | bytearray | memoryview

_INT64_MIN, _INT64_END = -(2**63), 2**63
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


def backoff_delays(first: float = 0.05, cap: float = 1.0) -> Iterator[float]:
    """Seconds to sleep before each retry: ``first``, doubling up to ``cap``, each drawn
    from the upper half of its step so clients that failed together do not retry together.
    Endless: the caller's deadline ends the retries."""
    step = first
    while True:
        yield random.uniform(step / 2, step)
        step = min(step * 2, cap)


def timeout_error(keys: Sequence[str], timeout: timedelta) -> StoreTimeoutError:
    """The error a blocking read raises after waiting ``timeout`` for ``keys``."""
    millis = round(timeout.total_seconds() * 1000)
    return StoreTimeoutError(f"Timed out after {millis} ms waiting for keys: {', '.join(keys)}")


def queue_timeout_error(key: str, timeout: timedelta) -> StoreTimeoutError:
    """The error a blocking ``queue_pop`` raises after the queue ``key`` stayed empty for
    ``timeout``."""
    millis = round(timeout.total_seconds() * 1000)
    return StoreTimeoutError(f"Timed out after {millis} ms waiting for an item in queue {key!r}")


def queue_empty_error(key: str) -> QueueEmptyError:
    """The error a non-blocking ``queue_pop`` raises on an empty queue."""
    return QueueEmptyError(f"The queue {key!r} is empty.")


def add_to_value(key: str | bytes, current: bytes | None, amount: int) -> int:
    """The counter value after adding ``amount`` to ``current`` (absent counts as 0).

    Values are ASCII decimal; the sum wraps at signed 64 bits like torch's stores. A value
    that is not a decimal integer is a ValueError naming the key (``key`` may be its UTF-8
    bytes: a server need not decode it unless there is an error to report).
    """
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(f"The amount to add must be an int, not {type(amount).__name__}.")
    if current is None:
        base = 0
    elif current.isdigit() or _DECIMAL.fullmatch(current):  # isdigit: the cheap common case
        base = int(current)
    else:
        shown = current[:40] + (b"..." if len(current) > 40 else b"")
        name = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        raise ValueError(
            f"Cannot add to key {name!r}: its value {shown!r} is not a decimal integer."
        )
    total = base + amount
    return total if _INT64_MIN <= total < _INT64_END else wrap_int64(total)


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


def wrap_int64(value: int) -> int:
    """``value`` wrapped into a signed 64-bit integer, as counters wrap."""
    return (value - _INT64_MIN) % 2**64 + _INT64_MIN


def compare_set_outcome(
    current: bytes | None, expected: bytes, desired: bytes
) -> tuple[bytes | None, bytes]:
    """``(value to write or None, value to return)`` for a compare_set on ``current``.

    Absent key: with ``expected == b""`` write and return ``desired``; otherwise write
    nothing and return ``expected``. Present key: on a match write and return
    ``desired``, else write nothing and return ``current``.
    """
    if current is None:
        return (desired, desired) if expected == b"" else (None, expected)
    if current == expected:
        return desired, desired
    return None, current


def readable_file(params: RendezvousParameters, option: str, what: str) -> str | None:
    """The path in option ``option`` of ``params`` (None when absent), once it was opened for
    reading: a missing or unreadable file is bad configuration, a ValueError naming ``what``,
    the option and the path, not a connection failure later."""
    path = params.get(option)
    if not path:
        return None
    try:
        with open(str(path), "rb"):
            pass
    except OSError as e:
        raise ValueError(f"Cannot read the {what} ({option}) {str(path)!r}: {e.strerror}.") from e
    return str(path)


def read_timeout(params: RendezvousParameters) -> timedelta:
    """The resolved ``read_timeout`` of ``params`` as handed to ``StoreType.create_store``.

    The registry validates the option and fills in the store type's
    ``default_read_timeout`` when it is absent, so a plugin never repeats its default.
    """
    seconds = params.get_as_int("read_timeout")
    if seconds is None or seconds <= 0:
        raise ValueError(
            "The read timeout must be a positive integer (create_store was called without "
            "the registry's resolved read_timeout)."
        )
    return timedelta(seconds=seconds)


def host_or_join(
    params: RendezvousParameters,
    host: str,
    open_store: Callable[[bool], S],
    busy: tuple[type[BaseException], ...],
) -> S:
    """Open a store that one node hosts, by the ``is_host`` rules of store type ``tcp``.

    ``open_store(hosting)`` opens it, hosting the server when ``hosting`` is true. An
    explicit ``is_host`` is obeyed (a host that cannot serve raises). Without it, this
    process hosts when ``host`` names this machine, and becomes a client when hosting
    fails with one of ``busy`` (another local process was first).
    """
    explicit = params.get_as_bool("is_host")
    hosting = explicit if explicit is not None else is_local_host(host)
    try:
        return open_store(hosting)
    except busy as e:
        if not hosting or explicit is not None:
            raise
        _log.info("Could not host the store (%s); joining it as a client.", e)
        return open_store(False)
