"""Rendezvous completion time for N nodes (threads in one process, one tcp store,
min = max = N), side by side with torch's DynamicRendezvousHandler over its C++ TCPStore;
plus the steady-state heartbeat load per node."""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from common import free_port, table

from rdzv_core import Store, StoreBackend
from rdzv_core.rendezvous import HandlerSettings, RendezvousHandler
from rdzv_core.store import PrefixStore

TORCH_STATE_BYTES: dict[int, int] = {}  # N -> size of torch's stored state after a round


def run_threads(handlers: Sequence[Any]) -> float:
    """Seconds until every handler's next_rendezvous returned (all started together)."""
    start = threading.Barrier(len(handlers) + 1)
    errors: list[BaseException] = []

    def join(handler: Any) -> None:
        start.wait()
        try:
            handler.next_rendezvous()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=join, args=(h,), daemon=True) for h in handlers]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - began


def ours(n: int) -> float:
    from rdzv_plugin_tcp import TCPStore

    port = free_port()
    host = TCPStore("127.0.0.1", port, is_master=True, multi_tenant=False)
    run_id = f"bench-{uuid.uuid4().hex[:6]}"
    settings = HandlerSettings(join_timeout=timedelta(seconds=600))
    clients = [TCPStore("127.0.0.1", port, timeout=timedelta(seconds=600)) for _ in range(n)]
    handlers = [
        RendezvousHandler(run_id, c, StoreBackend(c, run_id), n, n, "127.0.0.1", settings)
        for c in clients
    ]
    try:
        return run_threads(handlers)
    finally:
        for h in handlers:
            h.close()
        for c in clients:
            c.close()
        host.close()


def torch_(n: int) -> float:
    import torch.distributed as dist
    from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import (
        C10dRendezvousBackend,
    )
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import (
        DynamicRendezvousHandler,
        RendezvousTimeout,
    )

    port = free_port()
    host = dist.TCPStore(
        "127.0.0.1", port, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=600)
    )
    run_id = f"bench-{uuid.uuid4().hex[:6]}"
    handlers = []
    for _ in range(n):
        client = dist.TCPStore(
            "127.0.0.1", port, wait_for_workers=False, timeout=timedelta(seconds=600)
        )
        backend = C10dRendezvousBackend(client, run_id)
        handlers.append(
            DynamicRendezvousHandler.from_backend(
                run_id,
                client,
                backend,
                n,
                n,
                "127.0.0.1",
                timeout=RendezvousTimeout(join=timedelta(seconds=600)),
            )
        )
    try:
        elapsed = run_threads(handlers)
        TORCH_STATE_BYTES[n] = len(host.get("torch.rendezvous." + run_id))
        return elapsed
    finally:
        for h in handlers:
            h._stop_heartbeats()
        del host


class CountingStore(PrefixStore):
    """Counts the operations and the key/value bytes that pass through it."""

    def __init__(self, store: Store) -> None:
        super().__init__("", store)
        self.ops = 0
        self.bytes = 0

    def _k(self, key: str) -> str:
        return key

    def _count(self, *parts: Any) -> None:
        self.ops += 1
        self.bytes += sum(len(p) for p in parts if isinstance(p, (str, bytes)))

    def add(self, key: str, amount: int) -> int:
        self._count(key, b"12345678")
        return super().add(key, amount)

    def get(self, key: str) -> bytes:
        value = super().get(key)
        self._count(key, value)
        return value

    def compare_set(self, key: str, expected: Any, desired: Any) -> bytes:
        value = super().compare_set(key, expected, desired)
        self._count(key, expected, desired, value)
        return value

    def set(self, key: str, value: Any) -> None:
        self._count(key, value)
        super().set(key, value)


def heartbeat_load(n: int, seconds: float) -> tuple[float, float]:
    """Our idle load per node (ops/s, payload bytes/s), keep_alive_interval 1 s, scaled
    to the default 5 s interval."""
    from rdzv_core.testing import MemoryStore

    base = MemoryStore()
    run_id = "load"
    settings = HandlerSettings(keep_alive_interval=timedelta(seconds=1))
    counters = [CountingStore(base.client()) for _ in range(n)]
    handlers = [
        RendezvousHandler(run_id, c, StoreBackend(c, run_id), n, n, settings=settings)
        for c in counters
    ]
    run_threads(handlers)
    before = [(c.ops, c.bytes) for c in counters]
    time.sleep(seconds)
    ops = sum(c.ops - b[0] for c, b in zip(counters, before)) / n / seconds / 5
    size = sum(c.bytes - b[1] for c, b in zip(counters, before)) / n / seconds / 5
    for h in handlers:
        h.close()
    return ops, size


def measure(label: str, fn: Callable[[int], float], sizes: Sequence[int]) -> dict[int, float]:
    results = {}
    for n in sizes:
        results[n] = fn(n)
        print(f"  {label} N={n}: {results[n]:.2f} s", flush=True)
    return results


def main() -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="8,64,128,256,1024")
    parser.add_argument("--torch-sizes", default="8,32,64")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    torch_sizes = [int(s) for s in args.torch_sizes.split(",") if s]
    sizes = sorted(set(sizes) | set(torch_sizes))  # every torch row has its rdzv anchor
    ours_t = measure("rdzv", ours, sizes)
    torch_t = measure("torch", torch_, torch_sizes)
    rows = []
    for n in sizes:
        t = torch_t.get(n)
        rows.append(
            [
                n,
                f"{ours_t[n]:.2f}",
                f"{1000 * ours_t[n] / n:.1f}",
                f"{t:.2f}" if t else "—",
                f"{t / ours_t[n]:.0f}x" if t else "—",
            ]
        )
    text = "### Rendezvous completion, N threads, one tcp store, min = max = N\n\n" + table(
        ["N", "rdzv s", "rdzv ms per node", "torch s", "torch / rdzv"], rows
    )
    ops, size = heartbeat_load(8, 3.0)
    lines = [["rdzv (any N)", f"{ops:.2f}", f"{size:.0f}"]]
    for n, state in sorted(TORCH_STATE_BYTES.items()):
        # torch: one get and one compare_set of the whole state per node every 5 s; the
        # state crosses the wire four times (get reply, CAS expected + desired + reply).
        lines.append([f"torch, N={n}", "0.40", f"{4 * state / 5:.0f}"])
    text += "\n\n### Idle heartbeat load per node (default 5 s interval)\n\n" + table(
        ["", "store ops/s", "key+value bytes/s"], lines
    )
    print(text)
    return text


if __name__ == "__main__":
    main()
