"""The TCP store's keyspace: what the store means, apart from how it is served.

Values by key, decimal counters, compare-and-set, appends, FIFO queues (apart from the
keys), and parked reads: a read that waits for keys is parked on the first one missing,
woken (through the ``wake`` callback) when a write sets the last of them, and handed back
by :meth:`Keyspace.expire` once its deadline passes. A pop from an empty queue parks the
same way; a push hands its item straight to the longest-waiting pop. No sockets, threads or locks: the server calls it from one thread at a time (under
its lock), and tests drive it directly.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterator

from rdzv_core.storekit import add_to_value, compare_set_outcome

__all__ = ["Keyspace", "Waiter"]


class Waiter:
    """A parked read: ``owner`` (whoever must be answered) waits for every key in
    ``keys``; ``op`` says which read it was. A pop waits on the queue ``keys[0]`` and is
    handed its ``item``. Once ``done`` (woken, expired or cancelled) it holds nothing."""

    __slots__ = ("done", "item", "keys", "on", "op", "owner", "pops")

    def __init__(self, owner: object, op: int, keys: list[bytes]) -> None:
        self.owner: object | None = owner
        self.op = op
        self.keys = keys
        self.done = False
        self.on: bytes | None = None  # the key (or queue) it is parked on
        self.pops = False  # waits for a queue item, not for keys
        self.item: bytes | None = None  # the item a woken pop was handed


class Keyspace:
    """Every key of one store, and the reads waiting for keys.

    ``wake(waiter)`` is called, from inside the write that completed its keys, for each
    parked read that can now be answered; the waiter still holds its keys then, and holds
    nothing afterwards.
    """

    def __init__(self, wake: Callable[[Waiter], None]) -> None:
        self._wake = wake
        self._data: dict[bytes, bytes] = {}
        self._parked: dict[bytes, dict[Waiter, None]] = {}
        self._queues: dict[bytes, deque[bytes]] = {}
        self._poppers: dict[bytes, dict[Waiter, None]] = {}  # in arrival order
        # Deadlines of parked reads: (when, sequence, waiter). A waiter that is done leaves
        # its entry behind as a tombstone, dropped when it comes due or by tidy().
        self._timers: list[tuple[float, int, Waiter]] = []
        self._tombstones = 0
        self._seq = itertools.count()

    # -- values ----------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def set(self, key: bytes, value: bytes) -> None:
        self._data[key] = value
        self._written(key)

    def add(self, key: bytes, amount: int) -> int:
        """The counter at ``key`` plus ``amount`` (absent counts 0), stored and returned.
        A value that is not a decimal integer is a ValueError, and nothing changes."""
        result = add_to_value(key, self._data.get(key), amount)
        self._data[key] = str(result).encode()
        self._written(key)
        return result

    def compare_set(self, key: bytes, expected: bytes, desired: bytes) -> bytes:
        """The compare-and-set table of the store contract; returns the value it says."""
        write, returned = compare_set_outcome(self._data.get(key), expected, desired)
        if write is not None:
            self._data[key] = write
            self._written(key)
        return returned

    def append(self, key: bytes, value: bytes, limit: int) -> None:
        """``value`` appended to the value at ``key`` (absent = empty). A result longer
        than ``limit`` bytes is a ValueError, and nothing changes."""
        current = self._data.get(key, b"")
        if len(current) + len(value) > limit:
            raise ValueError(
                f"Appending {len(value)} bytes to key {key.decode('utf-8', 'replace')!r} "
                f"would make its value {len(current) + len(value)} bytes, over the TCP store "
                f"server's limit of {limit} bytes for one value (max_frame_size)."
            )
        self._data[key] = current + value
        self._written(key)

    def keys(self) -> list[bytes]:
        return list(self._data)

    def multi_set(self, keys: list[bytes], values: list[bytes]) -> None:
        self._data.update(zip(keys, values))
        for key in keys:
            self._written(key)

    def has_all(self, keys: list[bytes]) -> bool:
        data = self._data
        return all(k in data for k in keys)

    def values(self, keys: list[bytes]) -> list[bytes]:
        """The values of ``keys``, which must all be present."""
        data = self._data
        return [data[k] for k in keys]

    def delete(self, key: bytes) -> bool:
        """Whether ``key`` existed (it does not now). A parked read keeps waiting for it."""
        return self._data.pop(key, None) is not None

    def sizes(self) -> tuple[int, int, int]:
        """(keys, bytes of keys and values, parked reads and pops)."""
        stored = sum(len(k) + len(v) for k, v in self._data.items())
        return len(self._data), stored, sum(1 for _ in self.waiting())

    def __len__(self) -> int:
        return len(self._data)

    # -- queues ----------------------------------------------------------------------------

    def push(self, queue: bytes, item: bytes) -> None:
        """Hand ``item`` to the longest-waiting pop of ``queue``, or keep it at the tail."""
        poppers = self._poppers.get(queue)
        while poppers:
            waiter = next(iter(poppers))
            del poppers[waiter]
            if not poppers:
                del self._poppers[queue]
            if waiter.done:
                continue
            waiter.done = True
            self._tombstones += 1
            waiter.item = item
            self._wake(waiter)
            waiter.keys, waiter.owner, waiter.on, waiter.item = [], None, None, None
            return
        self._queues.setdefault(queue, deque()).append(item)

    def pop(self, queue: bytes) -> bytes | None:
        """The oldest item of ``queue``, removed; None when it is empty."""
        items = self._queues.get(queue)
        if not items:
            return None
        item = items.popleft()
        if not items:
            del self._queues[queue]
        return item

    def queue_len(self, queue: bytes) -> int:
        return len(self._queues.get(queue, ()))

    def park_pop(self, owner: object, op: int, queue: bytes, deadline: float | None) -> Waiter:
        """Park a pop of the empty ``queue`` until a push or the ``deadline``."""
        waiter = Waiter(owner, op, [queue])
        waiter.pops, waiter.on = True, queue
        self._poppers.setdefault(queue, {})[waiter] = None
        if deadline is not None:
            heapq.heappush(self._timers, (deadline, next(self._seq), waiter))
        return waiter

    # -- parked reads ----------------------------------------------------------------------

    def park(self, owner: object, op: int, keys: list[bytes], deadline: float | None) -> Waiter:
        """Park a read of ``keys`` (some missing) until they are all set or, with a
        ``deadline`` (any clock the caller uses for :meth:`expire`), until it passes."""
        waiter = Waiter(owner, op, keys)
        self._watch(waiter)
        if deadline is not None:
            heapq.heappush(self._timers, (deadline, next(self._seq), waiter))
        return waiter

    def cancel(self, waiter: Waiter) -> None:
        """Forget ``waiter`` now (its owner went away, or gave up by itself)."""
        if not waiter.done:
            waiter.done = True
            self._tombstones += 1
        if waiter.on is not None:
            table = self._poppers if waiter.pops else self._parked
            parked = table.get(waiter.on)
            if parked is not None:
                parked.pop(waiter, None)
                if not parked:
                    del table[waiter.on]
        waiter.keys, waiter.owner, waiter.on = [], None, None

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has something to do, if ever."""
        return self._timers[0][0] if self._timers else None

    def expire(self, now: float) -> list[tuple[object, Waiter]]:
        """The parked reads whose deadline is ``now`` or earlier, with their owners: each
        is cancelled, and its owner must be told it timed out."""
        expired = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            waiter = heapq.heappop(timers)[2]
            if waiter.done:
                self._tombstones = max(0, self._tombstones - 1)
                continue
            owner = waiter.owner
            self.cancel(waiter)
            self._tombstones = max(0, self._tombstones - 1)
            expired.append((owner, waiter))
        return expired

    def tidy(self) -> None:
        """Drop the tombstones of finished reads once they outnumber the live deadlines
        (many reads answered long before their deadline)."""
        if self._tombstones > 1024 and self._tombstones * 2 > len(self._timers):
            self._timers = [t for t in self._timers if not t[2].done]
            heapq.heapify(self._timers)
            self._tombstones = 0

    def waiting(self) -> Iterator[Waiter]:
        """Every parked read and pop not yet done."""
        for table in (self._parked, self._poppers):
            for parked in table.values():
                for waiter in parked:
                    if not waiter.done:
                        yield waiter

    def _watch(self, waiter: Waiter) -> bool:
        """Park ``waiter`` on its first missing key; False if none is missing."""
        data = self._data
        for key in waiter.keys:
            if key not in data:
                waiter.on = key
                self._parked.setdefault(key, {})[waiter] = None
                return True
        return False

    def _written(self, key: bytes) -> None:
        parked = self._parked.pop(key, None)
        if not parked:
            return
        for waiter in parked:
            if waiter.done or (len(waiter.keys) > 1 and self._watch(waiter)):
                continue  # (a read of several keys moves on to its next missing one)
            waiter.done = True
            self._tombstones += 1
            self._wake(waiter)
            waiter.keys, waiter.owner, waiter.on = [], None, None
