"""StoreConformance: every rule of the store contract, run against any store.

Opt in with one subclass and one fixture::

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def store_factory(self, tmp_path):
            ...  # return a callable: () -> a NEW client of ONE shared, empty store

Test names are API: they do not change lightly. A test that needs a capability the store
does not declare is skipped with a reason naming it.

The cross-process tests open their clients in new processes, so they need a picklable
factory (``functools.partial(MyStore, path)``). Each process imports the store's module
itself, as a spawned one does: it is forked from multiprocessing's fork server, which has
imported only rdzv-core, never from the test process, because forking a process that runs
threads (a hosted server, a client library's I/O thread) can deadlock the child on a lock
held at the fork, and Python 3.12 warns about exactly that. A factory that is not
picklable, such as suite 1's ``lambda: MyStore(path)``, does not fail the run: those tests
are skipped with a reason that says how to fix it, listed in the summary at the end, and
every other test runs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from ..capability import Capability
from ..errors import QueueEmptyError, StoreTimeoutError
from ..store import Store
from ._support import StoreFactory, SuiteBase, requires, run_in_processes

__all__ = ["StoreConformance"]

SHORT = 0.3  # seconds: a timeout short enough to wait for in a test
SLACK = 5.0  # seconds: generous bound for "returned promptly" on a loaded machine


def _in_thread(fn: Callable[[], Any], delay: float = 0.0) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        fn()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _add_200(client: Store, index: int) -> list[int]:
    return [client.add("counter", 1) for _ in range(200)]


def _count_by_compare_set(client: Store, index: int) -> int:
    return _counter_by_compare_set(client, "cas", f"p{index}", 50)


def _announce_then_read(client: Store, index: int) -> bytes:
    time.sleep(0.2)
    client.set("from-child", f"pid {os.getpid()}")
    return client.get("from-parent")


def _open_and_add(client: Store, index: int) -> int:
    return client.add("opened", 1)


def _pop_until_empty(client: Store, index: int) -> list[int]:
    popped = []
    while True:
        try:
            popped.append(int(client.queue_pop("jobs", block=False)))
        except QueueEmptyError:
            return popped


def _announce_then_pop(client: Store, index: int) -> bytes:
    client.set("popping", "1")
    return client.queue_pop("inbox", timeout=60)


def _counter_by_compare_set(store: Store, key: str, owner: str, increments: int) -> int:
    """Increment the counter in ``key`` (text ``count:owner:seq``) using only compare_set.

    Every desired value is unique, so the returned value equals it only if this call set it.
    Returns how many attempts lost the race.
    """
    losses, done = 0, 0
    current = store.compare_set(key, "", f"0:{owner}:init")
    while done < increments:
        count = int(current.split(b":")[0])
        desired = f"{count + 1}:{owner}:{done}".encode()
        current = store.compare_set(key, current, desired)
        if current == desired:
            done += 1
        else:
            losses += 1
    return losses


class StoreConformance(SuiteBase):
    """The store contract (``rdzv_core.Store``'s docstrings), rule by rule."""

    # -- fixture contract ------------------------------------------------------------------

    def test_store_starts_empty(self, store: Store) -> None:
        """Troubleshooting: ``store_factory`` must give a fresh, empty store per test."""
        assert store.num_keys() == 0, "a new store must be empty (num_keys 0)"
        assert store.check(["key"]) is False, "a new store must not hold any key"

    def test_factory_returns_new_clients(self, new_client: StoreFactory) -> None:
        a, b = new_client(), new_client()
        assert a is not b, "store_factory must return a new client each call"

    # -- set / get -------------------------------------------------------------------------

    def test_set_then_get_returns_bytes(self, store: Store) -> None:
        store.set("key", b"value")
        assert store.get("key") == b"value", "get must return the value set, as bytes"

    def test_str_value_is_stored_as_utf8(self, store: Store) -> None:
        store.set("key", "héllo ✓")
        assert store.get("key") == "héllo ✓".encode(), "a str value must be stored as UTF-8"

    def test_set_overwrites(self, store: Store) -> None:
        store.set("key", "one")
        store.set("key", "two")
        assert store.get("key") == b"two", "set must replace the previous value"

    def test_empty_value_and_empty_key(self, store: Store) -> None:
        store.set("empty", b"")
        store.set("", b"empty key")
        assert store.get("empty") == b"", "an empty value must round-trip"
        assert store.get("") == b"empty key", "the empty string is a valid key"
        assert store.check(["empty", ""])

    def test_binary_value_round_trips(self, store: Store) -> None:
        value = bytes(range(256)) * 4
        store.set("binary", value)
        assert store.get("binary") == value, "a binary value must round-trip byte for byte"

    def test_unicode_key(self, store: Store) -> None:
        store.set("ключ/キー", b"v")
        assert store.get("ключ/キー") == b"v", "non-ASCII keys must work"

    def test_large_value_seen_by_another_client(self, new_client: StoreFactory) -> None:
        writer, reader = new_client(), new_client()
        value = os.urandom(1024 * 1024)
        writer.set("large", value)
        assert reader.get("large") == value, "a large value must reach another client intact"

    def test_write_visible_to_other_client(self, new_client: StoreFactory) -> None:
        a, b = new_client(), new_client()
        a.set("key", "from a")
        assert b.get("key") == b"from a", "a write must be visible to another client"
        assert b.check(["key"]), "check must see another client's write"

    def test_bad_key_or_value_type_is_type_error(self, store: Store) -> None:
        with pytest.raises(TypeError):
            store.set("key", 5)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            store.set(5, "value")  # type: ignore[arg-type]
        store.set("key", "still works")
        assert store.get("key") == b"still works", (
            "a TypeError for a bad argument must leave the store usable"
        )

    # -- blocking reads and timeouts -------------------------------------------------------

    def test_get_blocks_until_another_client_sets(self, new_client: StoreFactory) -> None:
        waiter, writer = new_client(), new_client()
        waiter.timeout = timedelta(seconds=30)
        thread = _in_thread(lambda: writer.set("late", "here"), delay=0.2)
        start = time.monotonic()
        assert waiter.get("late") == b"here", (
            "a blocked get must return the value another client set"
        )
        elapsed = time.monotonic() - start
        thread.join()
        assert 0.15 <= elapsed < SLACK, (
            "get must block until the key is set, and wake promptly after"
        )

    def test_get_times_out_with_store_timeout_error(self, store: Store) -> None:
        store.timeout = timedelta(seconds=SHORT)
        start = time.monotonic()
        with pytest.raises(StoreTimeoutError) as info:
            store.get("missing")
        elapsed = time.monotonic() - start
        assert isinstance(info.value, TimeoutError), "StoreTimeoutError must also be a TimeoutError"
        assert "missing" in str(info.value), "the timeout message must name the missing key"
        assert SHORT * 0.9 <= elapsed < SHORT + SLACK, (
            "get must wait about its timeout, then fail promptly"
        )

    def test_store_usable_after_timeout(self, store: Store) -> None:
        store.timeout = timedelta(seconds=0.1)
        with pytest.raises(StoreTimeoutError):
            store.get("missing")
        store.set("after", "ok")
        assert store.get("after") == b"ok", "the store must stay usable after a timeout"

    def test_timeout_is_a_timedelta_and_settable(self, store: Store) -> None:
        assert isinstance(store.timeout, timedelta), "Store.timeout must be a timedelta"
        store.timeout = timedelta(seconds=12)
        assert store.timeout == timedelta(seconds=12), "setting Store.timeout must take effect"
        store.set_timeout(timedelta(seconds=3))
        assert store.timeout == timedelta(seconds=3), (
            "set_timeout (torch's spelling) must take effect"
        )

    def test_wait_returns_once_all_keys_exist(self, new_client: StoreFactory) -> None:
        waiter, writer = new_client(), new_client()
        writer.set("a", "1")
        thread = _in_thread(lambda: writer.set("b", "2"), delay=0.2)
        waiter.wait(["a", "b"], timedelta(seconds=30))
        thread.join()
        assert waiter.check(["a", "b"])

    def test_wait_on_no_keys_returns_at_once(self, store: Store) -> None:
        store.wait([], timedelta(seconds=0.01))

    def test_wait_times_out(self, store: Store) -> None:
        store.set("present", "x")
        start = time.monotonic()
        with pytest.raises(StoreTimeoutError):
            store.wait(["present", "absent"], timedelta(seconds=SHORT))
        assert SHORT * 0.9 <= time.monotonic() - start < SHORT + SLACK, (
            "wait must wait about its timeout, then fail promptly"
        )

    def test_wait_timeout_overrides_store_timeout(self, new_client: StoreFactory) -> None:
        waiter, writer = new_client(), new_client()
        waiter.timeout = timedelta(seconds=0.05)
        thread = _in_thread(lambda: writer.set("slow", "1"), delay=0.3)
        waiter.wait(["slow"], timedelta(seconds=30))
        thread.join()
        waiter.timeout = timedelta(seconds=60)
        start = time.monotonic()
        with pytest.raises(StoreTimeoutError):
            waiter.wait(["never"], timedelta(seconds=SHORT))
        assert time.monotonic() - start < SHORT + SLACK, (
            "wait's own timeout must override the store's"
        )

    def test_wait_accepts_seconds(self, store: Store) -> None:
        store.set("k", "v")
        store.wait(["k"], 1.5)

    def test_blocked_get_does_not_block_other_clients(self, new_client: StoreFactory) -> None:
        waiter, other = new_client(), new_client()
        waiter.timeout = timedelta(seconds=30)
        results: list[bytes] = []
        thread = _in_thread(lambda: results.append(waiter.get("release")))
        time.sleep(0.1)
        other.set("unrelated", "x")
        assert other.get("unrelated") == b"x", "another client must not be held up by a blocked get"
        assert other.add("counter", 1) == 1, "another client must not be held up by a blocked get"
        other.set("release", "go")
        thread.join(SLACK)
        assert results == [b"go"], "the blocked get must return the value once set"

    def test_blocked_get_does_not_stall_the_same_client(self, new_client: StoreFactory) -> None:
        """One client object is shared by threads (a handler's heartbeat thread, say): a
        blocking get in one thread must not hold up another thread's operations."""
        shared, writer = new_client(), new_client()
        shared.timeout = timedelta(seconds=30)
        results: list[bytes] = []
        thread = _in_thread(lambda: results.append(shared.get("release")))
        time.sleep(0.1)
        start = time.monotonic()
        shared.set("other", "x")
        assert shared.get("other") == b"x", (
            "a blocked get must not stall other calls on the same client"
        )
        assert time.monotonic() - start < SLACK, (
            "a call beside a blocked get on the same client must return promptly"
        )
        writer.set("release", "go")
        thread.join(SLACK)
        assert results == [b"go"], "the blocked get must return the value once set"

    # -- check -----------------------------------------------------------------------------

    def test_check(self, store: Store) -> None:
        assert store.check([]) is True, "check([]) must be True"
        assert store.check(["a"]) is False, "check must be False for a missing key"
        store.set("a", "1")
        assert store.check(["a"]) is True, "check must be True once the key exists"
        assert store.check(["a", "b"]) is False
        store.set("b", "")
        assert store.check(["a", "b"]) is True

    # -- add -------------------------------------------------------------------------------

    def test_add_counts_from_zero(self, store: Store) -> None:
        assert store.add("n", 5) == 5, "add on a missing key must count from 0"
        assert store.add("n", -12) == -7, "add must accept negative amounts"
        assert store.add("n", 0) == -7, "add 0 must return the current value"
        assert store.get("n") == b"-7", "a counter must be stored as ASCII decimal"

    def test_add_to_a_decimal_value_set_as_text(self, store: Store) -> None:
        store.set("n", "41")
        assert store.add("n", 1) == 42, "add must count from a decimal value set as text"

    def test_add_wraps_at_int64(self, store: Store) -> None:
        store.add("n", 2**62)
        assert store.add("n", 2**62) == -(2**63), "add must wrap at signed 64 bits"

    def test_add_to_non_integer_is_value_error_and_harmless(self, new_client: StoreFactory) -> None:
        store, other = new_client(), new_client()
        store.set("word", "value")
        with pytest.raises(ValueError, match="word"):
            store.add("word", 1)
        assert store.get("word") == b"value", "a failed add must leave the value unchanged"
        assert store.add("n", 1) == 1, "the client must stay usable after a failed add"
        assert other.get("word") == b"value", (
            "a failed add must leave the value unchanged for other clients"
        )

    # -- compare_set -----------------------------------------------------------------------

    def test_compare_set_on_missing_key_with_empty_expected_sets(self, store: Store) -> None:
        assert store.compare_set("k", "", "D1") == b"D1"
        assert store.get("k") == b"D1", (
            "compare_set on a missing key with empty expected must set desired"
        )

    def test_compare_set_on_missing_key_with_expected_returns_expected(self, store: Store) -> None:
        assert store.compare_set("k", "X", "D1") == b"X"
        assert store.check(["k"]) is False, (
            "compare_set on a missing key with non-empty expected must set nothing"
        )

    def test_compare_set_match_sets_desired(self, store: Store) -> None:
        store.set("k", "D1")
        assert store.compare_set("k", "D1", "D2") == b"D2"
        assert store.get("k") == b"D2", "compare_set with the matching expected must set desired"

    def test_compare_set_mismatch_returns_current(self, store: Store) -> None:
        store.set("k", "D1")
        assert store.compare_set("k", "zzz", "D2") == b"D1"
        assert store.compare_set("k", "", "D2") == b"D1"
        assert store.get("k") == b"D1", "a mismatched compare_set must leave the value unchanged"

    def test_compare_set_on_empty_value_with_empty_expected_sets(self, store: Store) -> None:
        store.set("k", "")
        assert store.compare_set("k", "", "D1") == b"D1"

    def test_compare_set_creates_empty_value(self, store: Store) -> None:
        assert store.compare_set("k", "", "") == b""
        assert store.check(["k"]) is True, "compare_set to an empty value must create the key"

    def test_compare_set_accepts_bytes_and_str(self, store: Store) -> None:
        store.set("k", b"\x00\xff")
        assert store.compare_set("k", b"\x00\xff", "é") == "é".encode()

    def test_compare_set_wakes_a_blocked_get(self, new_client: StoreFactory) -> None:
        waiter, writer = new_client(), new_client()
        waiter.timeout = timedelta(seconds=30)
        thread = _in_thread(lambda: writer.compare_set("k", "", "set"), delay=0.1)
        assert waiter.get("k") == b"set", "a compare_set must wake a blocked get"
        thread.join()

    # -- delete_key / num_keys -------------------------------------------------------------

    @requires(Capability.DELETE)
    def test_delete_key(self, new_client: StoreFactory) -> None:
        store, other = new_client(), new_client()
        store.set("k", "v")
        assert store.delete_key("k") is True, "delete_key must return True for a key that existed"
        assert store.delete_key("k") is False, "delete_key must return False for a missing key"
        assert other.check(["k"]) is False, "a deleted key must be gone for other clients"
        assert store.num_keys() == 0, "num_keys must not count deleted keys"
        store.set("k", "again")
        assert other.get("k") == b"again", "a deleted key can be set again"

    def test_num_keys_counts_every_key(self, store: Store) -> None:
        for i in range(10):
            store.set(f"k{i}", "v")
        store.set("k0", "overwritten")
        store.add("counter", 1)
        assert store.num_keys() == 11, "num_keys must count every key set"

    # -- multi_get / multi_set -------------------------------------------------------------

    def test_multi_set_then_multi_get(self, new_client: StoreFactory) -> None:
        a, b = new_client(), new_client()
        a.multi_set(["x", "y", "z"], ["1", b"2", ""])
        assert b.multi_get(["z", "x", "y"]) == [b"", b"1", b"2"]
        assert a.multi_get([]) == [], "multi_get([]) must return []"
        a.multi_set([], [])

    def test_multi_set_length_mismatch_is_value_error(self, store: Store) -> None:
        with pytest.raises(ValueError):
            store.multi_set(["a", "b"], ["1"])
        assert store.check(["a"]) is False, "a failed multi_set must set nothing"

    def test_multi_get_blocks_for_all_keys(self, new_client: StoreFactory) -> None:
        waiter, writer = new_client(), new_client()
        waiter.timeout = timedelta(seconds=30)
        writer.set("a", "1")
        thread = _in_thread(lambda: writer.set("b", "2"), delay=0.2)
        assert waiter.multi_get(["a", "b"]) == [b"1", b"2"]
        thread.join()

    def test_multi_get_times_out(self, store: Store) -> None:
        store.timeout = timedelta(seconds=SHORT)
        store.set("a", "1")
        with pytest.raises(StoreTimeoutError):
            store.multi_get(["a", "missing"])

    def test_many_keys(self, new_client: StoreFactory) -> None:
        a, b = new_client(), new_client()
        keys = [f"key/{i:05d}" for i in range(2000)]
        a.multi_set(keys, [str(i) for i in range(2000)])
        assert b.num_keys() == 2000, "num_keys must count 2,000 keys set by multi_set"
        assert b.multi_get(keys) == [str(i).encode() for i in range(2000)], (
            "multi_get must return 2,000 values in order"
        )
        assert b.check(keys), "check must see every key of a large multi_set"

    # -- lifecycle -------------------------------------------------------------------------

    def test_close_is_idempotent_and_context_manager_closes(self, new_client: StoreFactory) -> None:
        client = new_client()
        with client as entered:
            assert entered is client, "a store used as a context manager must return itself"
            client.set("k", "v")
        client.close()
        assert new_client().get("k") == b"v", (
            "data written before close must remain for other clients"
        )

    # -- concurrency -----------------------------------------------------------------------

    def test_concurrent_add_from_threads(self, new_client: StoreFactory) -> None:
        clients = [new_client() for _ in range(8)]
        results: list[list[int]] = [[] for _ in clients]
        start = threading.Barrier(len(clients))

        def work(i: int) -> None:
            start.wait()
            for _ in range(200):
                results[i].append(clients[i].add("counter", 1))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seen = [v for r in results for v in r]
        assert sorted(seen) == list(range(1, 1601)), "an add was lost or applied twice"
        assert clients[0].get("counter") == b"1600", "the final count must equal the adds made"

    def test_concurrent_add_on_one_shared_client(self, store: Store) -> None:
        results: list[int] = []
        lock = threading.Lock()

        def work() -> None:
            for _ in range(100):
                value = store.add("counter", 1)
                with lock:
                    results.append(value)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == list(range(1, 801)), (
            "an add on a client shared by threads was lost or applied twice"
        )

    def test_concurrent_compare_set_from_threads(self, new_client: StoreFactory) -> None:
        clients = [new_client() for _ in range(8)]
        start = threading.Barrier(len(clients))

        def work(i: int) -> None:
            start.wait()
            _counter_by_compare_set(clients[i], "cas", f"t{i}", 50)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert int(clients[0].get("cas").split(b":")[0]) == 400, "a compare_set update was lost"

    @requires(Capability.CROSS_PROCESS)
    def test_concurrent_add_from_processes(
        self, process_store_factory: StoreFactory, store: Store
    ) -> None:
        results = run_in_processes(process_store_factory, _add_200, 4)
        seen = sorted(v for r in results for v in r)
        assert seen == list(range(1, 801)), "an add was lost or applied twice across processes"
        assert store.get("counter") == b"800", "the final count differs from the adds made"

    @requires(Capability.CROSS_PROCESS)
    def test_concurrent_compare_set_from_processes(
        self, process_store_factory: StoreFactory, store: Store
    ) -> None:
        run_in_processes(process_store_factory, _count_by_compare_set, 4)
        assert int(store.get("cas").split(b":")[0]) == 200, "an update was lost across processes"

    @requires(Capability.CROSS_PROCESS)
    def test_get_woken_by_set_from_another_process(
        self, process_store_factory: StoreFactory, store: Store
    ) -> None:
        store.timeout = timedelta(seconds=30)
        thread = _in_thread(lambda: store.set("from-parent", "hello"), delay=0.1)
        results: list[list[bytes]] = []
        runner = _in_thread(
            lambda: results.append(run_in_processes(process_store_factory, _announce_then_read, 1))
        )
        assert store.get("from-child").startswith(b"pid "), "the child's write never arrived"
        runner.join(60)
        thread.join()
        assert results == [[b"hello"]], "the child did not read the parent's write"

    # -- append and list_keys --------------------------------------------------------------

    @requires(Capability.APPEND)
    def test_append_creates_then_concatenates(self, new_client: StoreFactory) -> None:
        store, other = new_client(), new_client()
        store.append("word", "po")
        other.append("word", b"tato")
        assert store.get("word") == b"potato", "append must create a missing key, then extend it"
        store.append("word", "")
        assert other.get("word") == b"potato", "appending nothing must change nothing"

    @requires(Capability.APPEND)
    def test_append_wakes_a_blocked_get(self, new_client: StoreFactory) -> None:
        store, other = new_client(), new_client()
        store.timeout = timedelta(seconds=30)
        writer = _in_thread(lambda: other.append("late", "x"), delay=0.1)
        assert store.get("late") == b"x", "an append that creates a key must wake its readers"
        writer.join(SLACK)

    @requires(Capability.APPEND)
    def test_concurrent_identical_appends_are_all_kept(self, new_client: StoreFactory) -> None:
        """Equal appends racing on one value: a compare_set loop would lose some."""
        clients = [new_client() for _ in range(4)]
        threads = [
            threading.Thread(target=lambda c=c: [c.append("log", "x") for _ in range(50)])
            for c in clients
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert clients[0].get("log") == b"x" * 200, "an append was lost or applied twice"

    @requires(Capability.LIST_KEYS)
    def test_list_keys(self, new_client: StoreFactory) -> None:
        store, other = new_client(), new_client()
        assert store.list_keys() == [], "a new store lists no keys"
        store.set("a", "1")
        other.add("b", 1)
        store.compare_set("c", "", "3")
        assert sorted(other.list_keys()) == ["a", "b", "c"], "list_keys must list every key"
        if Capability.DELETE in self.declared_capabilities(store):
            store.delete_key("a")
            assert sorted(other.list_keys()) == ["b", "c"], "a deleted key must not be listed"

    # -- queues ----------------------------------------------------------------------------

    def test_queue_is_fifo_and_len_counts(self, new_client: StoreFactory) -> None:
        store, other = new_client(), new_client()
        assert store.queue_len("q") == 0, "a queue never pushed to has length 0"
        for item in ("a", b"b", "c"):
            store.queue_push("q", item)
        assert other.queue_len("q") == 3, "queue_len must count the items pushed"
        popped = [other.queue_pop("q"), store.queue_pop("q", block=False), other.queue_pop("q")]
        assert popped == [b"a", b"b", b"c"], "a queue must pop in push order"
        assert store.queue_len("q") == 0, "a queue popped empty has length 0"

    def test_queues_are_independent(self, store: Store) -> None:
        store.queue_push("left", "L")
        store.queue_push("right", "R")
        assert store.queue_pop("right") == b"R", "a pop must come from the queue it names"
        assert store.queue_len("left") == 1, "a pop from another queue must not touch this one"

    def test_empty_queue_pop_without_block_raises_queue_empty(self, store: Store) -> None:
        with pytest.raises(QueueEmptyError):
            store.queue_pop("none", block=False)
        store.queue_push("none", "x")
        store.queue_pop("none")
        with pytest.raises(QueueEmptyError):
            store.queue_pop("none", block=False)

    def test_queue_pop_times_out_with_store_timeout_error(self, store: Store) -> None:
        store.timeout = timedelta(seconds=SHORT)
        start = time.monotonic()
        with pytest.raises(StoreTimeoutError):
            store.queue_pop("never")
        waited = time.monotonic() - start
        assert SHORT * 0.9 <= waited < SHORT + SLACK, f"waited {waited:.2f}s for a {SHORT}s timeout"
        store.queue_push("never", "now")
        assert store.queue_pop("never", timeout=0) == b"now", "the queue must work after a timeout"

    def test_queue_pop_woken_by_push_from_another_client(self, new_client: StoreFactory) -> None:
        store, other = new_client(), new_client()
        store.timeout = timedelta(seconds=30)
        pusher = _in_thread(lambda: other.queue_push("wake", "up"), delay=0.2)
        start = time.monotonic()
        assert store.queue_pop("wake") == b"up", "a blocked pop must get the item pushed"
        assert time.monotonic() - start < SLACK, "a blocked pop must wake promptly on a push"
        pusher.join(SLACK)  # its reply may still be on the way when the pop returns

    @requires(Capability.QUEUES)
    def test_native_queues_are_not_keys(self, store: Store) -> None:
        store.queue_push("q", "item")
        assert store.num_keys() == 0, "a native queue must not count as a key"
        if Capability.LIST_KEYS in self.declared_capabilities(store):
            assert store.list_keys() == [], "a native queue must not be listed as a key"
        store.set("q", "value")
        assert store.queue_pop("q") == b"item", "a key of the same name must not touch the queue"
        assert store.get("q") == b"value", "a queue of the same name must not touch the key"

    @requires(Capability.CROSS_PROCESS)
    def test_queue_pop_exactly_once_across_processes(
        self, process_store_factory: StoreFactory, store: Store
    ) -> None:
        for i in range(120):
            store.queue_push("jobs", str(i))
        results = run_in_processes(process_store_factory, _pop_until_empty, 6)
        for popped in results:
            assert popped == sorted(popped), "one popper must see items in push order"
        seen = sorted(i for popped in results for i in popped)
        assert seen == list(range(120)), "an item was lost or popped twice across processes"
        assert store.queue_len("jobs") == 0, "the queue must be empty once every item is popped"

    @requires(Capability.CROSS_PROCESS)
    def test_queue_pop_woken_by_push_from_another_process(
        self, process_store_factory: StoreFactory, store: Store
    ) -> None:
        store.timeout = timedelta(seconds=60)
        results: list[list[bytes]] = []
        runner = _in_thread(
            lambda: results.append(run_in_processes(process_store_factory, _announce_then_pop, 1))
        )
        store.get("popping")
        time.sleep(0.3)  # the child is blocked in queue_pop by now
        store.queue_push("inbox", "from the parent")
        runner.join(90)
        assert results == [[b"from the parent"]], "the child's blocked pop did not get the push"

    # -- many first opens ------------------------------------------------------------------

    def test_many_clients_open_a_fresh_store_at_once(self, new_client: StoreFactory) -> None:
        """Sixteen threads open the store's first clients at the same moment."""
        start = threading.Barrier(16)
        errors: list[BaseException] = []
        counts: list[int] = []

        def open_and_add() -> None:
            try:
                start.wait()
                counts.append(new_client().add("opened", 1))
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=open_and_add) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, f"a concurrent first open failed: {errors[0]!r}"
        assert sorted(counts) == list(range(1, 17)), "an add was lost during the first opens"

    @requires(Capability.CROSS_PROCESS)
    def test_many_processes_open_the_store_at_once(
        self, process_store_factory: StoreFactory, store: Store
    ) -> None:
        counts = run_in_processes(process_store_factory, _open_and_add, 8)
        assert sorted(counts) == list(range(1, 9)), "an add was lost while processes opened"
        assert store.get("opened") == b"8", "the count differs from the processes that added"

    # -- persistence and leases ------------------------------------------------------------

    @requires(Capability.PERSISTENT)
    def test_data_survives_every_client_closing(
        self, store: Store, new_client: StoreFactory
    ) -> None:
        other = new_client()
        store.set("kept", "value")
        other.add("count", 3)
        store.close()
        other.close()
        reopened = new_client()
        assert reopened.get("kept") == b"value", "a persistent store lost data on close"
        assert reopened.add("count", 1) == 4, "a persistent store lost a counter on close"

    #: For a store that declares ``leases``: seconds after its last client closes within
    #: which its keys are gone (the suite waits this plus a few seconds).
    lease_seconds: float = 0.0

    @requires(Capability.LEASES)
    def test_keys_expire_after_the_last_client_leaves(
        self, store: Store, new_client: StoreFactory
    ) -> None:
        assert self.lease_seconds > 0, (
            "A store with the leases capability must set lease_seconds on its "
            "StoreConformance subclass (how soon keys vanish after the last client)."
        )
        store.set("leased", "value")
        store.close()
        time.sleep(self.lease_seconds + 3)
        assert not new_client().check(["leased"]), (
            f"keys outlived their last client by more than {self.lease_seconds} + 3 s"
        )
