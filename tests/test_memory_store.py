"""The reference MemoryStore passes the whole suite; so must every store type."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from rdzv_core import Capability, PrefixStore, Store, StoreError
from rdzv_core.testing import BackendConformance, MemoryStore, StoreConformance


@pytest.fixture
def memory_factory() -> Callable[[], Store]:
    first = MemoryStore()
    return first.client


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def store_factory(self, memory_factory: Callable[[], Store]) -> Callable[[], Store]:
        return memory_factory


class BasicMemoryStore(MemoryStore):
    """A MemoryStore with the basic contract only: the generic queues of ``Store`` run on
    it, and append / list_keys are refused."""

    capabilities = frozenset({Capability.DELETE})
    append = Store.append
    list_keys = Store.list_keys
    queue_push = Store.queue_push
    queue_pop = Store.queue_pop
    queue_len = Store.queue_len

    def client(self) -> BasicMemoryStore:
        return BasicMemoryStore(self.timeout, _data=self._data)


class TestGenericQueues(StoreConformance):
    """The generic queues, built on add and compare_set, pass the queue tests."""

    @pytest.fixture
    def store_factory(self) -> Callable[[], Store]:
        return BasicMemoryStore().client


def test_append_and_list_keys_need_their_capability() -> None:
    store = BasicMemoryStore()
    with pytest.raises(NotImplementedError, match="does not declare the 'append' capability"):
        store.append("k", "v")
    with pytest.raises(NotImplementedError, match="'list-keys' capability"):
        store.list_keys()


def test_a_generic_queue_moves_past_an_item_its_pusher_never_wrote() -> None:
    store = BasicMemoryStore(timeout=timedelta(seconds=0.2))
    store.add("q\x00queue/tail", 1)  # a pusher counted item 1, then died
    store.queue_push("q", "second")
    with pytest.raises(StoreError, match="counted but never written"):
        store.queue_pop("q")
    assert store.queue_pop("q") == b"second"
    assert store.queue_len("q") == 0


def test_prefix_store_lists_and_queues_its_own_keys() -> None:
    base = MemoryStore()
    view = PrefixStore("run.0", base)
    base.set("other", "x")
    view.set("k", "v")
    view.append("k", "w")
    assert view.list_keys() == ["k"] and base.get("run.0/k") == b"vw"
    view.queue_push("q", "item")
    assert base.queue_len("run.0/q") == 1 and view.queue_len("q") == 1
    assert view.queue_pop("q", block=False) == b"item"
    assert view.capabilities == base.capabilities


class TestMemoryBackend(BackendConformance):
    @pytest.fixture
    def store_factory(self, memory_factory: Callable[[], Store]) -> Callable[[], Store]:
        return memory_factory


def test_prefix_store_namespaces_keys() -> None:
    base = MemoryStore()
    view = PrefixStore("run.0", base)
    view.set("k", "v")
    assert base.get("run.0/k") == b"v"
    assert view.get("k") == b"v"
    assert view.compare_set("k", "v", "w") == b"w"
    assert view.add("n", 2) == 2
    view.multi_set(["a", "b"], ["1", "2"])
    assert base.multi_get(["run.0/a", "run.0/b"]) == [b"1", b"2"]
    assert view.check(["a", "b"]) and not view.check(["c"])
    assert view.delete_key("a") and not base.check(["run.0/a"])
    view.timeout = 5
    assert base.timeout.total_seconds() == 5
    view.close()
    assert base.get("run.0/k") == b"w"
