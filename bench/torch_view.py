"""rdzv's tcp store through ``as_torch_store`` against torch's own TCPStore, side by side.

What torch code pays when it is handed the view instead of a TCPStore: get / add /
compare_set through the view (rdzv client, rdzv server in another process) against torch's
client and torch's server (libuv) in another process, interleaved op by op; and a queue
round trip between two processes (push to a queue the other process pops, which pushes the
answer back), through the views against torch's TCPStore queues. Each measured on quiet
cores and with the cores busy (two CPU-bound processes per core).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import timedelta
from typing import Any

from common import CLIENT_CPU, SERVER_CPU, busy_cores, free_port, median, spawn, table, wait_port

OURS_SERVER = """
import sys
from rdzv_plugin_tcp import StoreServer
StoreServer("127.0.0.1", int(sys.argv[1])).serve_forever()
"""
TORCH_SERVER = """
import sys, time
from datetime import timedelta
import torch.distributed as dist
store = dist.TCPStore("127.0.0.1", int(sys.argv[1]), is_master=True, wait_for_workers=False,
                      timeout=timedelta(seconds=60), use_libuv=True)
while True:
    time.sleep(3600)
"""
# The echo side of the queue round trip: pop "ping", push it back on "pong", forever.
ECHO = """
import sys
from datetime import timedelta
kind, port = sys.argv[1], int(sys.argv[2])
if kind == "rdzv":
    from rdzv_plugin_tcp import TCPStore
    from rdzv_torch import as_torch_store
    store = as_torch_store(TCPStore("127.0.0.1", port, timeout=timedelta(seconds=120)))
else:
    import torch.distributed as dist
    store = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=timedelta(seconds=120),
                          use_libuv=True)
store.set("echo-ready", "1")
while True:
    item = store.queue_pop("ping")
    if item == b"stop":
        break
    store.queue_push("pong", item)
"""
OPS = ("get", "add", "compare_set")


def clients(ours_port: int, torch_port: int) -> dict[str, Any]:
    import torch.distributed as dist
    from rdzv_plugin_tcp import TCPStore
    from rdzv_torch import as_torch_store

    timeout = timedelta(seconds=60)
    return {
        "rdzv view": as_torch_store(TCPStore("127.0.0.1", ours_port, timeout=timeout)),
        "torch": dist.TCPStore(
            "127.0.0.1", torch_port, is_master=False, timeout=timeout, use_libuv=True
        ),
    }


def op_latency(stores: dict[str, Any], rounds: int, count: int) -> dict[tuple[str, str], float]:
    """Median µs per operation by (store, op), the stores interleaved round by round."""
    samples: dict[tuple[str, str], list[float]] = {}
    for store in stores.values():
        store.set("bench/value", b"x" * 64)
        store.set("bench/cas", b"same")
    calls = {
        "get": lambda s: s.get("bench/value"),
        "add": lambda s: s.add("bench/counter", 1),
        "compare_set": lambda s: s.compare_set("bench/cas", b"same", b"same"),
    }
    for _ in range(rounds):
        for op in OPS:
            for name, store in stores.items():
                call = calls[op]
                times = []
                for _ in range(count):
                    began = time.perf_counter()
                    call(store)
                    times.append((time.perf_counter() - began) * 1e6)
                samples.setdefault((name, op), []).extend(times)
    return {key: median(values) for key, values in samples.items()}


def round_trips(stores: dict[str, Any], count: int) -> dict[str, float]:
    """Median µs of push("ping") + pop("pong") answered by the echo process of each store."""
    out: dict[str, float] = {}
    for name, store in stores.items():
        store.wait(["echo-ready"], timedelta(seconds=60))
        times = []
        for i in range(count):
            began = time.perf_counter()
            store.queue_push("ping", str(i))
            store.queue_pop("pong")
            times.append((time.perf_counter() - began) * 1e6)
        out[name] = median(times)
    return out


def main() -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=1000)
    args, _ = parser.parse_known_args()
    ours_port, torch_port = free_port(), free_port()
    servers = [spawn(OURS_SERVER, str(ours_port)), spawn(TORCH_SERVER, str(torch_port))]
    echoes = []
    try:
        wait_port(ours_port)
        wait_port(torch_port)
        echoes = [
            spawn(ECHO, "rdzv", str(ours_port), cpus=SERVER_CPU),
            spawn(ECHO, "torch", str(torch_port), cpus=SERVER_CPU),
        ]
        os.sched_setaffinity(0, CLIENT_CPU)
        stores = clients(ours_port, torch_port)
        quiet = op_latency(stores, args.rounds, args.count)
        quiet_rt = round_trips(stores, args.count)
        with busy_cores():
            busy = op_latency(stores, args.rounds, args.count // 4)
            busy_rt = round_trips(stores, args.count // 4)
        for store in stores.values():
            store.queue_push("ping", "stop")
    finally:
        for child in echoes:
            child.wait(30) if child.poll() is None else None
        for child in [*servers, *echoes]:
            child.kill()
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    rows = []
    for op in OPS:
        rows.append([
            op,
            f"{quiet[('rdzv view', op)]:.0f} / {quiet[('torch', op)]:.0f}",
            f"{quiet[('rdzv view', op)] / quiet[('torch', op)]:.2f}",
            f"{busy[('rdzv view', op)]:.0f} / {busy[('torch', op)]:.0f}",
            f"{busy[('rdzv view', op)] / busy[('torch', op)]:.2f}",
        ])  # fmt: skip
    rows.append([
        "queue push + pop round trip (2 processes)",
        f"{quiet_rt['rdzv view']:.0f} / {quiet_rt['torch']:.0f}",
        f"{quiet_rt['rdzv view'] / quiet_rt['torch']:.2f}",
        f"{busy_rt['rdzv view']:.0f} / {busy_rt['torch']:.0f}",
        f"{busy_rt['rdzv view'] / busy_rt['torch']:.2f}",
    ])  # fmt: skip
    header = ["op", "quiet µs view / torch", "ratio", "busy µs view / torch", "ratio"]
    return (
        "### as_torch_store(tcp) against torch's TCPStore (median µs, server in another "
        "process)\n\n" + table(header, rows)
    )


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    print(main())
