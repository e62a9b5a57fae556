"""The reference MemoryStore passes the whole suite; so must every store type."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rdzv_core import PrefixStore, Store
from rdzv_core.testing import BackendConformance, MemoryStore, StoreConformance


@pytest.fixture
def memory_factory() -> Callable[[], Store]:
    first = MemoryStore()
    return first.client


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def store_factory(self, memory_factory: Callable[[], Store]) -> Callable[[], Store]:
        return memory_factory


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
