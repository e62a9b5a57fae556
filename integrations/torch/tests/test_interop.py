"""rdzv and torch stores and backends working together."""

from __future__ import annotations

import multiprocessing
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from rdzv_plugin_tcp import TCPStore
from rdzv_torch import as_torch_store, from_torch_store
from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import C10dRendezvousBackend

from rdzv_core import (
    Capability,
    PrefixStore,
    QueueEmptyError,
    StoreBackend,
    StoreTimeoutError,
)


def _gloo_worker(port: int, rank: int, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = TCPStore("127.0.0.1", port, timeout=timedelta(seconds=30))
    view = as_torch_store(PrefixStore("pg", store))
    dist.init_process_group("gloo", store=view, rank=rank, world_size=2)
    tensor = torch.tensor([rank + 1.0])
    dist.all_reduce(tensor)
    dist.barrier()
    results.put((rank, tensor.item()))
    dist.destroy_process_group()
    store.close()


def test_as_torch_store_under_init_process_group_gloo(port: int) -> None:
    host = TCPStore("127.0.0.1", port, is_master=True)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_gloo_worker, args=(port, r, results)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0, "a gloo worker over as_torch_store failed"
    assert sorted(results.get(timeout=5) for _ in procs) == [(0, 3.0), (1, 3.0)]
    host.close()


def test_as_torch_store_blocking_reads_use_the_views_timeout(port: int) -> None:
    rdzv_store = TCPStore("127.0.0.1", port, is_master=True, timeout=timedelta(seconds=60))
    view = as_torch_store(rdzv_store)
    view.set_timeout(timedelta(milliseconds=300))
    prefixed = dist.PrefixStore("p", view)  # C++ calls into the Python store
    for read in (lambda: view.get("missing"), lambda: prefixed.get("missing"),
                 lambda: view.wait(["missing"])):  # fmt: skip
        start = time.monotonic()
        with pytest.raises(dist.DistStoreError):
            read()
        assert time.monotonic() - start < 5, "the view's timeout was not honoured"
    assert rdzv_store.timeout == timedelta(seconds=60), "set_timeout leaked into the rdzv store"
    prefixed.set("k", "v")
    assert prefixed.get("k") == b"v" and rdzv_store.get("p/k") == b"v"
    assert prefixed.add("n", 2) == 2 and prefixed.compare_set("k", "v", "w") == b"w"
    assert prefixed.num_keys() == rdzv_store.num_keys() and prefixed.delete_key("k")
    prefixed.multi_set(["a", "b"], ["1", "2"])
    assert prefixed.multi_get(["a", "b"]) == [b"1", b"2"] and prefixed.check(["a", "b"])
    rdzv_store.close()


def test_torch_and_rdzv_backends_read_each_others_state(torch_server: dist.TCPStore) -> None:
    ours = StoreBackend(from_torch_store(torch_server), "job")
    theirs = C10dRendezvousBackend(torch_server, "job")
    written = ours.set_state(b"from rdzv")
    assert written is not None
    state, token = theirs.get_state()
    assert state == b"from rdzv", "torch's backend did not read rdzv's state"
    result = theirs.set_state(b"from torch", token)
    assert result is not None and result[2], "torch's backend refused rdzv's token"
    state2, token2 = ours.get_state()  # type: ignore[misc]
    assert state2 == b"from torch", "rdzv's backend did not read torch's state"
    result2 = ours.set_state(b"rdzv again", token2)
    assert result2 is not None and result2[2], "rdzv's backend refused torch's token"
    stale = theirs.set_state(b"stale", token)
    assert stale is not None and not stale[2] and stale[0] == b"rdzv again"


def test_from_torch_store_writes_are_applied_when_they_return(
    torch_server: dist.TCPStore,
) -> None:
    """torch's client sends set, append, multi_set and queue_push without waiting for the
    server; through from_torch_store another connection sees each one once it returns."""

    def client() -> dist.TCPStore:
        return dist.TCPStore("127.0.0.1", torch_server.port, is_master=False, use_libuv=True)

    writer, reader = from_torch_store(client()), from_torch_store(client())
    for i in range(300):
        writer.set(f"s{i}", "v")
        writer.multi_set([f"m{i}"], ["v"])
        writer.append("word", "a")
        reader.append("word", "b")
        writer.queue_push("q", str(i))
        assert reader.check([f"s{i}", f"m{i}"]), f"write {i} was not applied on return"
        assert reader.queue_len("q") == i + 1
    assert reader.get("word") == b"ab" * 300, "appends from two clients interleaved"


def test_from_torch_store_maps_the_extended_api_by_store_kind(
    torch_server: dist.TCPStore, tmp_path: Path
) -> None:
    """TCPStore (libuv) and HashStore have native queues, append and list_keys; FileStore
    has append, and rdzv's generic queue stands in for the queues it lacks."""
    tcp = from_torch_store(
        dist.TCPStore("127.0.0.1", torch_server.port, is_master=False, use_libuv=True)
    )
    hashed = from_torch_store(dist.HashStore())
    filed = from_torch_store(dist.FileStore(str(tmp_path / "torch.file"), -1))
    extended = {Capability.APPEND, Capability.LIST_KEYS, Capability.QUEUES}
    assert extended <= tcp.capabilities and extended <= hashed.capabilities
    assert Capability.APPEND in filed.capabilities
    assert Capability.QUEUES not in filed.capabilities
    for store in (tcp, hashed, filed):
        store.append("word", "po")
        store.append("word", "tato")
        assert store.get("word") == b"potato"
        store.queue_push("jobs", "a")
        store.queue_push("jobs", "b")
        assert store.queue_len("jobs") == 2
        assert store.queue_pop("jobs") == b"a" and store.queue_pop("jobs", block=False) == b"b"
        with pytest.raises(QueueEmptyError):
            store.queue_pop("jobs", block=False)
        with pytest.raises(StoreTimeoutError):
            store.queue_pop("jobs", timeout=0.2)
    assert "word" in tcp.list_keys() and hashed.list_keys() == ["word"]
    with pytest.raises(NotImplementedError, match="list-keys"):
        filed.list_keys()
