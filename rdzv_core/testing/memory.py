"""MemoryStore: the in-process reference implementation of the store contract."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from datetime import timedelta

from ..capability import Capability
from ..errors import StoreError
from ..store import Store
from ..storekit import (
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
)

__all__ = ["MemoryStore"]


class _Data:
    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.queues: dict[str, deque[bytes]] = {}
        self.changed = threading.Condition()


class MemoryStore(Store):
    """A thread-safe store held in this process; not a registered store type.

    ``client()`` returns another client of the same data, so the conformance suite can
    treat it like a networked store. Blocking reads sleep on a condition that every write
    notifies: no polling.
    """

    capabilities = frozenset(
        {Capability.DELETE, Capability.APPEND, Capability.LIST_KEYS, Capability.QUEUES}
    )

    def __init__(self, timeout: timedelta = timedelta(seconds=300), *, _data: _Data | None = None):
        super().__init__(timeout)
        self._data = _data or _Data()
        self._closed = False

    def client(self) -> MemoryStore:
        """A new client of the same underlying data, with this client's timeout."""
        return MemoryStore(self.timeout, _data=self._data)

    def _open(self) -> _Data:
        if self._closed:
            raise StoreError("This MemoryStore client is closed.")
        return self._data

    def set(self, key: str, value: Value) -> None:
        key, raw = check_key(key), to_bytes(value)
        data = self._open()
        with data.changed:
            data.values[key] = raw
            data.changed.notify_all()

    def get(self, key: str) -> bytes:
        key = check_key(key)
        data = self._open()
        with data.changed:
            self._wait_locked(data, [key], self.timeout)
            return data.values[key]

    def add(self, key: str, amount: int) -> int:
        key = check_key(key)
        data = self._open()
        with data.changed:
            result = add_to_value(key, data.values.get(key), amount)
            data.values[key] = str(result).encode()
            data.changed.notify_all()
            return result

    def compare_set(self, key: str, expected: Value, desired: Value) -> bytes:
        key, want, new = check_key(key), to_bytes(expected), to_bytes(desired)
        data = self._open()
        with data.changed:
            current = data.values.get(key)
            if current is None and want:
                return want
            if current is None or current == want:
                data.values[key] = new
                data.changed.notify_all()
                return new
            return current

    def wait(self, keys: Sequence[str], timeout: timedelta | float | None = None) -> None:
        keys = check_keys(keys)
        limit = as_timeout(timeout, self.timeout)
        data = self._open()
        with data.changed:
            self._wait_locked(data, keys, limit)

    def _wait_locked(self, data: _Data, keys: list[str], timeout: timedelta) -> None:
        deadline = time.monotonic() + timeout.total_seconds()
        while not all(k in data.values for k in keys):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise timeout_error(keys, timeout)
            data.changed.wait(remaining)

    def check(self, keys: Sequence[str]) -> bool:
        keys = check_keys(keys)
        data = self._open()
        with data.changed:
            return all(k in data.values for k in keys)

    def delete_key(self, key: str) -> bool:
        key = check_key(key)
        data = self._open()
        with data.changed:
            return data.values.pop(key, None) is not None

    def num_keys(self) -> int:
        data = self._open()
        with data.changed:
            return len(data.values)

    def multi_get(self, keys: Sequence[str]) -> list[bytes]:
        keys = check_keys(keys)
        data = self._open()
        with data.changed:
            self._wait_locked(data, keys, self.timeout)
            return [data.values[k] for k in keys]

    def multi_set(self, keys: Sequence[str], values: Sequence[Value]) -> None:
        keys, raws = check_multi_set(keys, values)
        data = self._open()
        with data.changed:
            data.values.update(zip(keys, raws))
            data.changed.notify_all()

    def append(self, key: str, value: Value) -> None:
        key, raw = check_key(key), to_bytes(value)
        data = self._open()
        with data.changed:
            data.values[key] = data.values.get(key, b"") + raw
            data.changed.notify_all()

    def list_keys(self) -> list[str]:
        data = self._open()
        with data.changed:
            return list(data.values)

    def queue_push(self, key: str, value: Value) -> None:
        key, raw = check_key(key), to_bytes(value)
        data = self._open()
        with data.changed:
            data.queues.setdefault(key, deque()).append(raw)
            data.changed.notify_all()

    def queue_pop(
        self, key: str, block: bool = True, timeout: timedelta | float | None = None
    ) -> bytes:
        key = check_key(key)
        limit = as_timeout(timeout, self.timeout)
        deadline = time.monotonic() + limit.total_seconds()
        data = self._open()
        with data.changed:
            while not data.queues.get(key):
                if not block:
                    raise queue_empty_error(key)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise queue_timeout_error(key, limit)
                data.changed.wait(remaining)
            queue = data.queues[key]
            value = queue.popleft()
            if not queue:
                del data.queues[key]
            return value

    def queue_len(self, key: str) -> int:
        key = check_key(key)
        data = self._open()
        with data.changed:
            return len(data.queues.get(key, ()))

    def close(self) -> None:
        self._closed = True
