import sqlite3
import threading
import time
from datetime import timedelta

from rdzv_core import Capability, Store, StoreError
from rdzv_core.store import (
    Value,
    add_to_value,
    as_timeout,
    check_key,
    check_keys,
    check_multi_set,
    timeout_error,
    to_bytes,
)


class MyStore(Store):
    """Every client opens one SQLite file; each operation is a transaction."""

    capabilities = frozenset({Capability.CROSS_PROCESS, Capability.DELETE})

    def __init__(self, path, timeout=timedelta(seconds=60)):
        super().__init__(timeout)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                str(path), timeout=60, isolation_level=None, check_same_thread=False
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB)")
        except sqlite3.Error as e:
            raise StoreError(f"Cannot open {path}: {e}") from e

    def _tx(self, work):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = work(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result

    def _read(self, db, key):
        row = db.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def _write(self, db, key, value):
        db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))

    def set(self, key, value: Value):
        key, value = check_key(key), to_bytes(value)
        self._tx(lambda db: self._write(db, key, value))

    def get(self, key):
        self.wait([key])
        return self._tx(lambda db: self._read(db, key))

    def add(self, key, amount):
        check_key(key)

        def work(db):
            result = add_to_value(key, self._read(db, key), amount)
            self._write(db, key, str(result).encode())
            return result

        return self._tx(work)

    def compare_set(self, key, expected, desired):
        key, expected, desired = check_key(key), to_bytes(expected), to_bytes(desired)

        def work(db):
            current = self._read(db, key)
            if current is None and expected == b"":
                self._write(db, key, desired)
                return desired
            if current is None:
                return expected
            if current == expected:
                self._write(db, key, desired)
                return desired
            return current

        return self._tx(work)

    def wait(self, keys, timeout=None):
        keys, limit = check_keys(keys), as_timeout(timeout, self.timeout)
        deadline = time.monotonic() + limit.total_seconds()
        while not self.check(keys):
            if time.monotonic() >= deadline:
                raise timeout_error(keys, limit)
            time.sleep(0.002)

    def check(self, keys):
        keys = check_keys(keys)
        return self._tx(lambda db: all(self._read(db, k) is not None for k in keys))

    def delete_key(self, key):
        key = check_key(key)
        return self._tx(lambda db: db.execute("DELETE FROM kv WHERE k = ?", (key,)).rowcount > 0)

    def num_keys(self):
        return self._tx(lambda db: db.execute("SELECT COUNT(*) FROM kv").fetchone()[0])

    def multi_set(self, keys, values):
        keys, values = check_multi_set(keys, values)
        for k, v in zip(keys, values):
            self.set(k, v)

    def close(self):
        self._db.close()
