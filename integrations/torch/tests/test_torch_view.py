"""The view as torch's C++ code uses it, on every store type: torch's own check of a
Python store (``_test_python_store``, which clones it), ``clone()`` from another thread,
every Store method with torch's semantics, queues (a blocking pop woken from another
process; the conformance suite proves exactly-once pops by six processes on every store
type), and a gloo process group with a new group over the view."""

from __future__ import annotations

import functools
import multiprocessing
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from rdzv_plugin_etcd import EtcdStore
from rdzv_plugin_etcd.testing import start_etcd
from rdzv_plugin_file import FileStore
from rdzv_plugin_redis import RedisStore
from rdzv_plugin_redis.testing import start_redis
from rdzv_plugin_tcp import TCPStore
from rdzv_torch import as_torch_store
from torch_helpers import free_port

from rdzv_core import PrefixStore, Store
from rdzv_core.testing import MemoryStore

Opener = Callable[[], Store]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Any]]:
    etcd, redis_server = start_etcd(), start_redis()
    tcp_port = free_port()
    tcp_host = TCPStore("127.0.0.1", tcp_port, is_master=True)
    yield {"etcd": etcd.port, "redis": redis_server.port, "tcp": tcp_port}
    tcp_host.close()
    etcd.stop()
    redis_server.stop()


def _tcp_client(port: int, space: str) -> Store:
    return PrefixStore(space, TCPStore("127.0.0.1", port, timeout=timedelta(seconds=30)))


def _opener(kind: str, servers: dict[str, Any], tmp: Path) -> Opener:
    """A picklable opener of new clients of one fresh store of ``kind``."""
    space = uuid.uuid4().hex[:8]
    seconds = timedelta(seconds=30)
    if kind == "tcp":
        return functools.partial(_tcp_client, servers["tcp"], space)
    if kind == "file":
        return functools.partial(FileStore, str(tmp / f"{space}.store"), timeout=seconds)
    if kind == "redis":
        return functools.partial(RedisStore, host="127.0.0.1", port=servers["redis"],
                                 prefix=f"{space}/", timeout=seconds)  # fmt: skip
    return functools.partial(EtcdStore, "127.0.0.1", servers["etcd"], prefix=f"/{space}/",
                             timeout=seconds)  # fmt: skip


KINDS = ["memory", "tcp", "file", "redis", "etcd"]


@pytest.fixture(params=KINDS)
def opener(request: pytest.FixtureRequest, servers: dict[str, Any], tmp_path: Path) -> Opener:
    if request.param == "memory":
        shared = MemoryStore(timeout=timedelta(seconds=30))
        return shared.client
    return _opener(request.param, servers, tmp_path)


@pytest.fixture
def view(opener: Opener) -> dist.Store:
    return as_torch_store(opener())


def test_torchs_own_check_of_a_python_store(view: dist.Store) -> None:
    dist._test_python_store(view)


def test_every_store_method_as_torch_documents_it(view: dist.Store) -> None:
    """torch 2.13's Store methods one by one, on each store type, through the view."""
    assert view.has_extended_api() is True
    view.set("k", "v")
    assert view.get("k") == b"v"
    assert view.add("n", 2) == 2 and view.add("n", -3) == -1 and view.get("n") == b"-1"
    assert view.compare_set("c", "", "1") == b"1", "expected '' on a missing key sets it"
    assert view.compare_set("c", "x", "2") == b"1", "a mismatch returns the current value"
    assert view.compare_set("gone", "x", "2") == b"x", "a missing key returns the expected"
    view.set_timeout(timedelta(milliseconds=300))
    assert view.timeout == timedelta(milliseconds=300)
    with pytest.raises(dist.DistStoreError):
        view.get("missing")
    with pytest.raises(dist.DistStoreError):
        view.wait(["missing"], timedelta(milliseconds=100))
    view.wait(["k", "n"])
    view.wait(["k"], timedelta(seconds=5))
    assert view.check(["k", "n"]) and not view.check(["k", "missing"]) and view.check([])
    view.multi_set(["a", "b"], ["1", b"2"])
    assert view.multi_get(["a", "b"]) == [b"1", b"2"]
    view.append("w", "po")
    view.append("w", b"tato")
    assert view.get("w") == b"potato"
    assert sorted(view.list_keys()) == ["a", "b", "c", "k", "n", "w"]
    assert view.num_keys() >= 6  # (tcp: a PrefixStore counts the whole store, as torch's)
    assert view.delete_key("a") is True and view.delete_key("a") is False
    assert not view.check(["a"])
    view.barrier("one", 1)
    clone = view.clone()
    other = threading.Thread(target=lambda: clone.barrier("two", 2, timedelta(seconds=20)))
    other.start()
    view.barrier("two", 2, timedelta(seconds=20))
    other.join(20)
    assert not other.is_alive(), "a barrier of two did not release both"


def test_clone_is_an_independent_view_usable_from_another_thread(view: dist.Store) -> None:
    clone = view.clone()
    assert isinstance(clone, dist.Store) and clone is not view
    clone.set_timeout(timedelta(milliseconds=200))
    assert view.timeout != clone.timeout, "the clone's timeout is its own"
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(clone.get("late")))
    reader.start()
    view.set("late", "v")
    reader.join(10)
    assert got == [b"v"]


def _gloo_worker(opener: Opener, rank: int, results: Any) -> None:
    view = as_torch_store(opener())
    dist.init_process_group("gloo", store=view, rank=rank, world_size=2)
    group = dist.new_group([0, 1])
    tensor = torch.tensor([rank + 1.0])
    dist.all_reduce(tensor, group=group)
    dist.barrier()
    # What shrink_group and split_group do with the store: a process group over a prefix of
    # the store's clone (gloo cannot shrink in torch 2.13, so the group is built directly).
    cloned = dist.ProcessGroupGloo(dist.PrefixStore("shrunk/", view.clone()), rank, 2)
    again = torch.tensor([rank + 1.0])
    cloned.allreduce([again]).wait()
    assert again.item() == 3.0
    results.put((rank, tensor.item()))
    dist.destroy_process_group()


def test_gloo_with_a_new_group_over_the_view(servers: dict[str, Any], tmp_path: Path) -> None:
    opener = _opener("tcp", servers, tmp_path)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_gloo_worker, args=(opener, r, results)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert sorted(results.get(timeout=5) for _ in procs) == [(0, 3.0), (1, 3.0)]


def test_a_queue_is_fifo_with_its_length(view: dist.Store) -> None:
    for item in ("a", b"b", "c"):
        view.queue_push("q", item)
    assert view.queue_len("q") == 3
    assert [view.queue_pop("q"), view.queue_pop("q", False)] == [b"a", b"b"]
    assert view.queue_len("q") == 1 and view.queue_pop("q") == b"c"
    assert view.queue_len("q") == 0


def test_torchs_cpp_stores_cannot_reach_a_python_stores_queues(view: dist.Store) -> None:
    """torch 2.13's trampoline for Python stores forwards no queue operation: its own
    PrefixStore over the view refuses them (the view's queues work when called on it)."""
    with pytest.raises(NotImplementedError, match="queue support is not implemented"):
        dist.PrefixStore("p", view).queue_push("q", "a")


def test_popping_an_empty_queue(view: dist.Store) -> None:
    with pytest.raises(dist.QueueEmptyError):
        view.queue_pop("empty", block=False)
    view.set_timeout(timedelta(milliseconds=300))
    started = time.monotonic()
    with pytest.raises(dist.DistStoreError) as info:
        view.queue_pop("empty")
    assert not isinstance(info.value, dist.QueueEmptyError), "a blocking pop times out"
    assert 0.25 < time.monotonic() - started < 5


def _pop_one(opener: Opener, results: Any) -> None:
    results.put(as_torch_store(opener()).queue_pop("later"))


@pytest.mark.parametrize("kind", ["tcp", "redis"])
def test_a_blocking_pop_wakes_on_a_push_from_another_process(
    kind: str, servers: dict[str, Any], tmp_path: Path
) -> None:
    opener = _opener(kind, servers, tmp_path)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_pop_one, args=(opener, results))
    proc.start()
    time.sleep(2)  # the popper is up and blocked
    assert results.empty()
    as_torch_store(opener()).queue_push("later", "hello")
    assert results.get(timeout=30) == b"hello"
    proc.join(30)
