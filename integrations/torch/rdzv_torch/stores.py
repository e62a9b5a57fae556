"""Adapters between rdzv stores and torch stores, in both directions.

- :func:`as_torch_store`: an rdzv ``Store`` seen by torch, a real ``torch.distributed.Store``
  that torch's C++ code (``PrefixStore``, ProcessGroupGloo, store barriers) can call.
- :func:`from_torch_store`: a torch store seen by rdzv, a ``rdzv_core.Store`` that passes
  the conformance suite.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import torch.distributed as dist

from rdzv_core import (
    Capability,
    Store,
    StoreConnectionError,
    StoreError,
    StoreTimeoutError,
)
from rdzv_core import errors as rdzv_errors
from rdzv_core.storekit import (
    Value,
    add_to_value,
    as_timeout,
    check_key,
    check_keys,
    check_multi_set,
    queue_empty_error,
    queue_timeout_error,
    timeout_error,
    to_bytes,
    wrap_int64,
)

__all__ = ["TorchBackedStore", "TorchStoreView", "as_torch_store", "from_torch_store"]

_ABSENT = "\x00rdzv-absent"  # compare_set(key, _ABSENT, _ABSENT) reads without blocking
# torch's FileStore times out with plain RuntimeErrors that start with these words.
_FILE_STORE_TIMEOUTS = ("Wait timeout", "Timeout waiting for key")


def _raw(value: Any) -> bytes:
    """A value torch handed over (str, bytes, or a list of ints) as bytes."""
    return value.encode() if isinstance(value, str) else bytes(value)


class TorchStoreView(dist.Store):  # type: ignore[misc]
    """An rdzv :class:`~rdzv_core.Store` as a ``torch.distributed.Store``.

    Blocking reads honour this view's own torch timeout (``set_timeout``, as store barriers
    call it), never the rdzv store's, which other threads (heartbeats) may share; a read
    that runs out raises ``torch.distributed.DistStoreError``, as torch's stores do. C++
    callers reach ``deleteKey`` and ``getNumKeys`` by those names.

    Queues work on every store type, built on the store contract: ``queue_push`` counts
    the item at the tail (``add``) and writes it; ``queue_pop`` claims the head with a
    ``compare_set`` whose value names the popper, so each item is popped exactly once, in
    push order, across any number of processes. A pop from an empty queue waits up to this
    view's timeout (``DistStoreError``), or with ``block=False`` raises
    ``torch.distributed.QueueEmptyError``. A queue's keys live beside ``key``
    (``<key>\x00queue/...``); a popped item is deleted where the store can delete. torch
    2.13's own C++ stores cannot reach a Python store's queues (its ``PrefixStore`` over
    the view raises ``NotImplementedError``): call them on the view. ``append`` and
    ``list_keys`` are not served (``has_extended_api()`` is False).
    """

    def __init__(self, store: Store) -> None:
        super().__init__()  # mandatory for a Python subclass of a pybind11 class
        self._store = store
        self._clones: list[TorchStoreView] = []
        self.set_timeout(store.timeout)

    @property
    def rdzv_store(self) -> Store:
        return self._store

    def _wait(self, keys: list[str], timeout: timedelta | None = None) -> None:
        limit = self.timeout if timeout is None else timeout
        try:
            self._store.wait(keys, limit)
        except StoreTimeoutError as e:
            raise dist.DistStoreError(f"Wait timeout after {limit}: {e}") from e

    def set(self, key: str, value: Any) -> None:
        self._store.set(key, _raw(value))

    def get(self, key: str) -> bytes:
        if self.timeout == self._store.timeout:  # one round trip when the timeouts agree
            try:
                return self._store.get(key)
            except StoreTimeoutError as e:
                raise dist.DistStoreError(f"Wait timeout after {self.timeout}: {e}") from e
        self._wait([key])
        return self._store.get(key)

    def add(self, key: str, amount: int) -> int:
        return self._store.add(key, amount)

    def compare_set(self, key: str, expected: Any, desired: Any) -> bytes:
        return self._store.compare_set(key, _raw(expected), _raw(desired))

    def wait(self, keys: list[str], timeout: timedelta | None = None) -> None:
        self._wait(list(keys), timeout)

    def check(self, keys: list[str]) -> bool:
        return self._store.check(list(keys))

    def deleteKey(self, key: str) -> bool:
        return self._store.delete_key(key)

    def getNumKeys(self) -> int:
        return self._store.num_keys()

    delete_key = deleteKey
    num_keys = getNumKeys

    def multi_get(self, keys: list[str]) -> list[bytes]:
        self._wait(list(keys))
        return self._store.multi_get(list(keys))

    def multi_set(self, keys: list[str], values: list[Any]) -> None:
        self._store.multi_set(list(keys), [_raw(v) for v in values])

    def clone(self) -> TorchStoreView:
        """A view of its own over the same rdzv store, with its own timeout (torch clones a
        store to use it from another thread). Every rdzv store serves concurrent threads; a
        TCPStore gives each concurrent call its own connection."""
        view = TorchStoreView(self._store)
        view.set_timeout(self.timeout)
        # C++ keeps only the C++ half of a Python store it gets back: this reference keeps
        # the Python half (its methods) alive as long as the view it was cloned from.
        self._clones.append(view)
        return view

    def append(self, key: str, value: Any) -> None:
        self._store.append(key, _raw(value))

    def list_keys(self) -> list[str]:
        return self._store.list_keys()

    def has_extended_api(self) -> bool:
        return True

    def queue_push(self, key: str, value: Any) -> None:
        self._store.queue_push(key, _raw(value))

    def queue_pop(self, key: str, block: bool = True) -> bytes:
        try:
            return self._store.queue_pop(key, block, self.timeout)
        except rdzv_errors.QueueEmptyError as e:
            raise dist.QueueEmptyError(str(e)) from e
        except StoreTimeoutError as e:
            raise dist.DistStoreError(f"Wait timeout after {self.timeout}: {e}") from e

    def queue_len(self, key: str) -> int:
        return self._store.queue_len(key)


def as_torch_store(store: Store) -> TorchStoreView:
    """``store`` as a ``torch.distributed.Store`` (see :class:`TorchStoreView`)."""
    return TorchStoreView(store)


def _capabilities_of(store: Any) -> frozenset[Capability]:
    """What a torch store can do, by its kind: a TCPStore (queues with the libuv server
    only), a FileStore (no queues; its key listing shows an internal key), others."""
    found = {Capability.DELETE, Capability.APPEND, Capability.LIST_KEYS, Capability.QUEUES}
    if isinstance(store, dist.TCPStore):
        found |= {Capability.CROSS_PROCESS, Capability.CROSS_HOST}
        if not store.libuvBackend:
            found.discard(Capability.QUEUES)
    elif isinstance(store, dist.FileStore):
        found = {Capability.DELETE, Capability.APPEND, Capability.CROSS_PROCESS}
    return frozenset(found)


def _applied(write: str) -> Callable[..., None]:
    """A TCPStore ``write`` (set, append, multi_set, queue_push) that returns once the
    server applied it: torch's client sends these without waiting for a reply, so another
    connection could read before them; a round trip on the same connection orders them."""

    def call(client: Any, key: str | list[str], *args: Any) -> None:
        getattr(client, write)(key, *args)
        if isinstance(client, dist.TCPStore):
            client.check(key if isinstance(key, list) else [key])

    return call


def _pop_within(client: Any, key: str, block: bool, limit: timedelta) -> Any:
    """``client.queue_pop`` waiting ``limit`` (torch's pop waits the store's timeout)."""
    before = client.timeout
    client.set_timeout(limit)
    try:
        return client.queue_pop(key, block)
    finally:
        client.set_timeout(before)


class TorchBackedStore(Store):
    """A ``torch.distributed.Store`` as an rdzv :class:`~rdzv_core.Store`.

    A torch TCPStore client does one operation at a time, so concurrent operations each
    take their own ``clone()`` (its own connection) when the store can clone. ``add`` on a
    value that is not a number is refused here, before torch's server would drop the
    connection. Capabilities follow the torch store's kind.
    """

    def __init__(
        self, torch_store: Any, timeout: timedelta | None = None, *, hosting: bool = False
    ) -> None:
        super().__init__(timeout if timeout is not None else torch_store.timeout)
        self._torch = torch_store
        self._hosting = hosting
        self.host: str | None = getattr(torch_store, "host", None)
        self.port: int | None = getattr(torch_store, "port", None)
        self._idle: list[Any] = [torch_store]
        self._lock = threading.Lock()
        self._can_clone = hasattr(torch_store, "clone") and isinstance(torch_store, dist.TCPStore)
        self._closed = False
        self.capabilities = _capabilities_of(torch_store)  # type: ignore[misc]

    @property
    def torch_store(self) -> Any:
        return self._torch

    @property
    def is_host(self) -> bool:
        """True when the torch store's server runs in this process (``is_master``)."""
        return self._hosting

    def _call(self, method: str | Callable[..., Any], *args: Any) -> Any:
        """``method`` (a name, or a function of the client) called on an idle client."""
        if self._closed:
            raise StoreError("This TorchBackedStore is closed.")
        with self._lock:
            client = self._idle.pop() if self._idle else None
        if client is None:
            client = self._torch.clone() if self._can_clone else self._torch
        try:
            if callable(method):
                return method(client, *args)
            return getattr(client, method)(*args)
        except dist.QueueEmptyError as e:
            raise rdzv_errors.QueueEmptyError(str(e)) from e
        except dist.DistStoreError as e:
            raise StoreTimeoutError(str(e)) from e
        except dist.DistError as e:
            client = None  # a broken connection is not pooled again
            raise StoreConnectionError(f"The torch store failed: {e}") from e
        except RuntimeError as e:
            if str(e).startswith(_FILE_STORE_TIMEOUTS):  # torch's FileStore: no DistStoreError
                raise StoreTimeoutError(str(e)) from e
            raise StoreError(f"The torch store failed: {e}") from e
        finally:
            if client is not None:
                with self._lock:
                    self._idle.append(client)

    def set(self, key: str, value: Value) -> None:
        self._call(_applied("set"), check_key(key), to_bytes(value))

    def get(self, key: str) -> bytes:
        self.wait([key])
        return bytes(self._call("get", key))

    def add(self, key: str, amount: int) -> int:
        current = self._peek(check_key(key))
        add_to_value(key, current, amount)  # a non-number is a ValueError, here
        return int(self._call("add", key, wrap_int64(amount)))

    def _peek(self, key: str) -> bytes | None:
        value = bytes(self._call("compare_set", key, _ABSENT, _ABSENT))
        return None if value == _ABSENT.encode() else value

    def compare_set(self, key: str, expected: Value, desired: Value) -> bytes:
        return bytes(
            self._call("compare_set", check_key(key), to_bytes(expected), to_bytes(desired))
        )

    def wait(self, keys: Sequence[str], timeout: timedelta | float | None = None) -> None:
        names = check_keys(keys)
        limit = as_timeout(timeout, self.timeout)
        if not names:
            return
        try:
            self._call("wait", names, limit)
        except StoreTimeoutError as e:
            raise timeout_error(names, limit) from e

    def check(self, keys: Sequence[str]) -> bool:
        return bool(self._call("check", check_keys(keys)))

    def delete_key(self, key: str) -> bool:
        return bool(self._call("delete_key", check_key(key)))

    def num_keys(self) -> int:
        return int(self._call("num_keys"))

    def multi_get(self, keys: Sequence[str]) -> list[bytes]:
        names = check_keys(keys)
        if not names:
            return []
        self.wait(names)
        return [bytes(v) for v in self._call("multi_get", names)]

    def multi_set(self, keys: Sequence[str], values: Sequence[Value]) -> None:
        names, raws = check_multi_set(keys, values)
        if names:
            self._call(_applied("multi_set"), names, raws)

    def append(self, key: str, value: Value) -> None:
        if Capability.APPEND not in self.capabilities:
            return super().append(key, value)
        self._call(_applied("append"), check_key(key), to_bytes(value))

    def list_keys(self) -> list[str]:
        if Capability.LIST_KEYS not in self.capabilities:
            return super().list_keys()
        return [str(k) for k in self._call("list_keys")]

    def queue_push(self, key: str, value: Value) -> None:
        if Capability.QUEUES not in self.capabilities:
            return super().queue_push(key, value)
        self._call(_applied("queue_push"), check_key(key), to_bytes(value))

    def queue_len(self, key: str) -> int:
        if Capability.QUEUES not in self.capabilities:
            return super().queue_len(key)
        return int(self._call("queue_len", check_key(key)))

    def queue_pop(
        self, key: str, block: bool = True, timeout: timedelta | float | None = None
    ) -> bytes:
        if Capability.QUEUES not in self.capabilities:
            return super().queue_pop(key, block, timeout)
        limit = as_timeout(timeout, self.timeout)
        waits = block and limit > timedelta(0)  # torch's pop waiting 0 ms fails a full queue
        try:
            return bytes(self._call(_pop_within, check_key(key), waits, limit))
        except rdzv_errors.QueueEmptyError as e:
            if block:
                raise queue_timeout_error(key, limit) from e
            raise
        except StoreTimeoutError as e:
            raise (queue_timeout_error(key, limit) if block else queue_empty_error(key)) from e

    def close(self) -> None:
        self._closed = True
        with self._lock:
            self._idle.clear()


def from_torch_store(
    torch_store: Any, timeout: timedelta | None = None, *, hosting: bool = False
) -> TorchBackedStore:
    """``torch_store`` as an rdzv Store (see :class:`TorchBackedStore`); ``hosting`` says
    that its server runs in this process."""
    return TorchBackedStore(torch_store, timeout, hosting=hosting)
