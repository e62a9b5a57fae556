"""FileStore: a store shared by every process that opens the same file.

Every operation takes an exclusive ``flock`` on the file, catches up on records other
processes appended, and appends its own as one checksummed record, so operations are
atomic across threads and processes and survive the crash of any of them. When the file
grows well past its live data, the writer holding the lock rewrites it to a new file and
renames that over the old one; others notice the old inode was unlinked and reopen.

Queues live in the same records, under keys no user key can spell (they start with the
byte 0xFF, which UTF-8 never produces): per queue a head and a tail counter and one key per
item. A push or a pop is one record, so it is atomic and survives a crash like any write.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta

from rdzv_core import Store, StoreConnectionError, StoreError
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
)

from .log import DELETE, HEADER, SET, Entry, decode, encode

__all__ = ["FileStore"]

COMPACT_MIN_BYTES = 1024 * 1024  # never compact a file smaller than this
COMPACT_RATIO = 4  # compact when the file is this many times its live data
_ENTRY_OVERHEAD = 9
_POLL_FIRST = 0.0005
_POLL_MAX = 0.008  # a waiter notices a write within about this long
_HIDDEN = 0xFF  # the first byte of the queues' keys (never the first byte of UTF-8)


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class FileStore(Store):
    """A store in the file at ``path`` (created, owner-only, if missing).

    The file is rewritten with only its live data once it is larger than
    ``compact_threshold`` bytes and four times its live data.

    Blocking reads poll the file's size and inode (no lock, a few hundred ``fstat`` calls a
    second at most) and read it only when it changed, so a waiter wakes within ~10 ms of a
    write without spinning. A file that is not an rdzv file store raises StoreError.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: timedelta = timedelta(seconds=300),
        compact_threshold: int = COMPACT_MIN_BYTES,
    ):
        super().__init__(timeout)
        self.path = os.fspath(path)
        self._compact_threshold = compact_threshold
        self._lock = threading.RLock()
        self._closed = False
        self._values: dict[bytes, bytes] = {}
        self._hidden = 0  # how many of them are queue keys
        self._live = 0
        self._offset = 0  # end of the last good record read
        self._size = 0  # file size when last read (beyond _offset: a torn write)
        self._fd = self._open(create=True)
        with self._locked():
            self._remove_stale_compactions()

    def __repr__(self) -> str:
        return f"FileStore({self.path!r})"

    # -- the file --------------------------------------------------------------------------

    def _open(self, create: bool) -> int:
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as e:
            if not create and e.errno == 2:
                raise StoreConnectionError(
                    f"The file store {self.path!r} was deleted while in use."
                ) from e
            raise StoreConnectionError(
                f"Cannot open the file store {self.path!r}: {e.strerror}."
            ) from e
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StoreConnectionError(f"The file store {self.path!r} is not a regular file.")
        return fd

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the thread lock and the file lock, with the cache caught up on the file."""
        with self._lock:
            if self._closed:
                raise StoreError(f"This FileStore ({self.path}) is closed.")
            while True:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
                st = os.fstat(self._fd)
                if st.st_nlink > 0:
                    break
                # Compacted by another process: its new file holds everything; start over.
                os.close(self._fd)
                self._fd = self._open(create=False)
                self._values, self._hidden, self._live, self._offset = {}, 0, 0, 0
            try:
                self._catch_up(st.st_size)
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _catch_up(self, size: int) -> None:
        if self._offset == 0:
            self._check_header(size)
            if size == 0:
                os.pwrite(self._fd, HEADER, 0)
                size = len(HEADER)
            self._offset = len(HEADER)
        elif size < self._offset:
            raise StoreError(
                f"The file store {self.path!r} shrank from {self._offset} to {size} bytes: "
                "something other than rdzv truncated it."
            )
        if size > self._offset:
            data = os.pread(self._fd, size - self._offset, self._offset)
            entries, used = decode(data, self.path, self._offset)
            self._apply(entries)
            self._offset += used
        self._size = size

    def _check_header(self, size: int) -> None:
        if size == 0:
            return
        head = os.pread(self._fd, len(HEADER), 0)
        if head == HEADER:
            return
        if HEADER.startswith(head):
            raise StoreError(
                f"The file store {self.path!r} is truncated ({size} bytes, less than its header)."
            )
        raise StoreError(
            f"{self.path!r} is not an rdzv file store (it starts with {head!r}, not {HEADER!r}); "
            "use a new path, or delete the file if it is yours."
        )

    def _apply(self, entries: list[Entry]) -> None:
        values = self._values
        for kind, key, value in entries:
            old = values.pop(key, None)
            hidden = key[:1] == b"\xff"
            if old is not None:
                self._live -= len(key) + len(old) + _ENTRY_OVERHEAD
                self._hidden -= hidden
            if kind == SET:
                values[key] = value
                self._live += len(key) + len(value) + _ENTRY_OVERHEAD
                self._hidden += hidden

    def _append(self, entries: list[Entry]) -> None:
        """Write ``entries`` as one record (lock held, cache caught up)."""
        record = encode(entries)
        if self._size != self._offset:
            os.ftruncate(self._fd, self._offset)  # drop a torn write left by a crash
        try:
            view = memoryview(record)
            at = self._offset
            while view:
                written = os.pwrite(self._fd, view, at)
                view, at = view[written:], at + written
        except OSError as e:
            try:
                os.ftruncate(self._fd, self._offset)
            except OSError:
                pass
            raise StoreError(f"Writing to the file store {self.path!r} failed: {e}") from e
        self._offset += len(record)
        self._size = self._offset
        self._apply(entries)
        if self._offset > self._compact_threshold and self._offset > COMPACT_RATIO * (
            self._live + len(HEADER)
        ):
            self._compact()

    def _compact_prefix(self) -> tuple[str, str]:
        directory, name = os.path.split(self.path)
        return directory or ".", f".{name}.compact-"

    def _compact(self) -> None:
        """Rewrite the live data to a new file and rename it over this one (lock held).

        The new file is written completely and fsynced before the rename; if any of that
        fails (disk full, say), the new file is removed and the old one stays as it was.
        """
        directory, prefix = self._compact_prefix()
        temp = os.path.join(directory, f"{prefix}{os.getpid()}-{threading.get_ident()}")
        mode = stat.S_IMODE(os.fstat(self._fd).st_mode)
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        except OSError:
            return  # the directory is not writable: keep appending to the big file
        data = HEADER + encode((SET, k, v) for k, v in self._values.items())
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            os.replace(temp, self.path)
        except OSError:
            os.close(fd)
            try:
                os.unlink(temp)
            except OSError:
                pass
            return
        os.close(fd)
        _fsync_directory(directory)
        old = self._fd
        self._fd = self._open(create=False)
        # Closing the old descriptor releases its lock; waiters see it was unlinked and reopen.
        os.close(old)
        self._offset = self._size = len(data)

    def _remove_stale_compactions(self) -> None:
        """Delete compaction files left by a process killed mid-compaction (lock held).

        A compaction runs entirely under the lock of the live file, which this process
        holds now: any compaction file of this store that exists is nobody's.
        """
        directory, prefix = self._compact_prefix()
        try:
            names = [n for n in os.listdir(directory) if n.startswith(prefix)]
        except OSError:
            return
        for stale in names:
            try:
                os.unlink(os.path.join(directory, stale))
            except OSError:
                pass

    def _signature(self) -> tuple[int, int, int]:
        with self._lock:
            if self._closed:
                raise StoreError(f"This FileStore ({self.path}) is closed.")
            st = os.fstat(self._fd)
        return st.st_size, st.st_nlink, st.st_mtime_ns

    def _wait_for(self, keys: list[bytes], names: Sequence[str], timeout: timedelta) -> list[bytes]:
        deadline = time.monotonic() + timeout.total_seconds()
        while True:
            with self._locked():
                values = self._values
                if all(k in values for k in keys):
                    return [values[k] for k in keys]
                seen = self._signature()
            if not self._changed_since(seen, deadline):
                raise timeout_error(names, timeout)

    def _changed_since(self, seen: tuple[int, int, int], deadline: float) -> bool:
        """Whether the file changed from ``seen`` before ``deadline`` (polled, no lock)."""
        delay = _POLL_FIRST
        while self._signature() == seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, _POLL_MAX)
        return True

    # -- the store contract ----------------------------------------------------------------

    def set(self, key: str, value: Value) -> None:
        entry = (SET, check_key(key).encode(), to_bytes(value))
        with self._locked():
            self._append([entry])

    def get(self, key: str) -> bytes:
        return self._wait_for([check_key(key).encode()], [key], self.timeout)[0]

    def add(self, key: str, amount: int) -> int:
        raw = check_key(key).encode()
        with self._locked():
            result = add_to_value(key, self._values.get(raw), amount)
            self._append([(SET, raw, str(result).encode())])
        return result

    def compare_set(self, key: str, expected: Value, desired: Value) -> bytes:
        raw, want, new = check_key(key).encode(), to_bytes(expected), to_bytes(desired)
        with self._locked():
            current = self._values.get(raw)
            if current is None and want:
                return want
            if current is None or current == want:
                self._append([(SET, raw, new)])
                return new
            return current

    def wait(self, keys: Sequence[str], timeout: timedelta | float | None = None) -> None:
        names = check_keys(keys)
        self._wait_for([k.encode() for k in names], names, as_timeout(timeout, self.timeout))

    def check(self, keys: Sequence[str]) -> bool:
        raws = [k.encode() for k in check_keys(keys)]
        with self._locked():
            return all(k in self._values for k in raws)

    def delete_key(self, key: str) -> bool:
        raw = check_key(key).encode()
        with self._locked():
            if raw not in self._values:
                return False
            self._append([(DELETE, raw, b"")])
            return True

    def num_keys(self) -> int:
        with self._locked():
            return len(self._values) - self._hidden

    def multi_get(self, keys: Sequence[str]) -> list[bytes]:
        names = check_keys(keys)
        if not names:
            return []
        return self._wait_for([k.encode() for k in names], names, self.timeout)

    def multi_set(self, keys: Sequence[str], values: Sequence[Value]) -> None:
        names, raws = check_multi_set(keys, values)
        if names:
            with self._locked():
                self._append([(SET, k.encode(), v) for k, v in zip(names, raws)])

    def append(self, key: str, value: Value) -> None:
        raw, tail = check_key(key).encode(), to_bytes(value)
        with self._locked():
            self._append([(SET, raw, self._values.get(raw, b"") + tail)])

    def list_keys(self) -> list[str]:
        with self._locked():
            return [k.decode() for k in self._values if k[0] != _HIDDEN]

    # -- queues ----------------------------------------------------------------------------

    @staticmethod
    def _queue(key: str) -> bytes:
        name = check_key(key).encode()
        return b"\xffq" + str(len(name)).encode() + b":" + name + b"\x00"

    def _counters(self, queue: bytes) -> tuple[int, int]:
        """The queue's (head, tail): the last item popped and the last pushed (lock held)."""
        values = self._values
        return int(values.get(queue + b"head", b"0")), int(values.get(queue + b"tail", b"0"))

    def queue_push(self, key: str, value: Value) -> None:
        queue, item = self._queue(key), to_bytes(value)
        with self._locked():
            tail = self._counters(queue)[1] + 1
            self._append(
                [(SET, queue + b"tail", str(tail).encode()), (SET, queue + b"%d" % tail, item)]
            )

    def queue_len(self, key: str) -> int:
        queue = self._queue(key)
        with self._locked():
            head, tail = self._counters(queue)
            return tail - head

    def queue_pop(
        self, key: str, block: bool = True, timeout: timedelta | float | None = None
    ) -> bytes:
        queue = self._queue(key)
        limit = as_timeout(timeout, self.timeout)
        deadline = time.monotonic() + limit.total_seconds()
        while True:
            with self._locked():
                head, tail = self._counters(queue)
                if head < tail:
                    name = queue + b"%d" % (head + 1)
                    item = self._values[name]
                    if head + 1 == tail:  # the last item: the queue's keys all go
                        counters = [(DELETE, queue + b"head", b""), (DELETE, queue + b"tail", b"")]
                    else:
                        counters = [(SET, queue + b"head", str(head + 1).encode())]
                    self._append([(DELETE, name, b""), *counters])
                    return item
                seen = self._signature()
            if not block:
                raise queue_empty_error(key)
            if not self._changed_since(seen, deadline):
                raise queue_timeout_error(key, limit)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._fd)
