"""tcp store latency and throughput, side by side with torch's C++ TCPStore (and Redis).

Servers run in their own process pinned to one core, the client on the other; the stores
are interleaved op by op over several rounds and medians are quoted. Every latency is
measured twice: on quiet cores, and with the cores busy (two CPU-bound processes pinned to
each core, as a training node's data loaders keep them), and the client's CPU time per
operation is quoted next to torch's client's. The "hosted" rows put the server in the
client's own process (is_master=True), the host node's case.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from common import (
    CLIENT_CPU,
    busy_cores,
    free_port,
    median,
    spawn,
    table,
    time_op,
    wait_port,
)

OURS_SERVER = """
import os, sys, time
from rdzv_plugin_tcp import StoreServer
StoreServer("127.0.0.1", int(sys.argv[1])).serve_forever()
"""
TORCH_SERVER = """
import sys, time
from datetime import timedelta
import torch.distributed as dist
store = dist.TCPStore("127.0.0.1", int(sys.argv[1]), is_master=True, wait_for_workers=False,
                      timeout=timedelta(seconds=60))
while True:
    time.sleep(3600)
"""

OPS = ("get", "add", "compare_set", "set")


def ours_client(port: int) -> Any:
    from rdzv_plugin_tcp import TCPStore

    return TCPStore("127.0.0.1", port, timeout=timedelta(seconds=60))


def torch_client(port: int, master: bool = False) -> Any:
    import torch.distributed as dist

    return dist.TCPStore(
        "127.0.0.1", port, is_master=master, wait_for_workers=False, timeout=timedelta(seconds=60)
    )


class RedisAdapter:
    """The same four operations on Redis through redis-py (compare_set as a Lua script)."""

    CAS = """local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return ARGV[2] end
return v"""

    def __init__(self, port: int) -> None:
        import redis

        self.r = redis.Redis(host="127.0.0.1", port=port)
        self.cas = self.r.register_script(self.CAS)

    def set(self, k: str, v: bytes) -> None:
        self.r.set(k, v)

    def get(self, k: str) -> bytes:
        return self.r.get(k)  # type: ignore[return-value]

    def add(self, k: str, n: int) -> int:
        return int(self.r.incrby(k, n))

    def compare_set(self, k: str, e: bytes, d: bytes) -> bytes:
        return self.cas(keys=[k], args=[e, d])  # type: ignore[no-any-return]


def operations(store: Any) -> dict[str, Callable[[], object]]:
    store.set("bench/value", b"x" * 64)
    store.set("bench/cas", b"same")
    return {
        "get": lambda: store.get("bench/value"),
        "add": lambda: store.add("bench/counter", 1),
        "compare_set": lambda: store.compare_set("bench/cas", b"same", b"same"),
        "set": lambda: store.set("bench/value", b"x" * 64),
    }


def latency(stores: dict[str, Any], rounds: int, count: int) -> dict[tuple[str, str], float]:
    return measure(stores, rounds, count)[0]


def measure(
    stores: dict[str, Any], rounds: int, count: int
) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], float]]:
    """Median latency (µs) and this process's CPU time per operation (µs), by (store, op)."""
    ops = {name: operations(store) for name, store in stores.items()}
    samples: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for op in OPS:
            for name in stores:  # interleave: every store runs each op in every round
                began = time.process_time()
                samples.setdefault((name, op), []).extend(time_op(ops[name][op], count))
                spent = (time.process_time() - began) * 1e6 / count
                cpu[(name, op)] = cpu.get((name, op), 0.0) + spent / rounds
    return {key: median(values) for key, values in samples.items()}, cpu


def add_throughput(make_client: Callable[[], Any], threads: int, per_thread: int) -> float:
    clients = [make_client() for _ in range(threads)]
    start = threading.Barrier(threads + 1)

    def work(client: Any) -> None:
        start.wait()
        for _ in range(per_thread):
            client.add("bench/tput", 1)

    workers = [threading.Thread(target=work, args=(c,)) for c in clients]
    for w in workers:
        w.start()
    start.wait()
    began = time.perf_counter()
    for w in workers:
        w.join()
    return threads * per_thread / (time.perf_counter() - began)


def start_redis() -> tuple[subprocess.Popen[bytes], int, str] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    try:
        import redis  # noqa: F401
    except ImportError:
        return None
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
    )
    os.sched_setaffinity(proc.pid, {sorted(os.sched_getaffinity(0))[0]})
    wait_port(port)
    return proc, port, workdir


def main() -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=2000)
    args = parser.parse_args()
    out: list[str] = []

    ours_port, torch_port = free_port(), free_port()
    children = [spawn(OURS_SERVER, str(ours_port)), spawn(TORCH_SERVER, str(torch_port))]
    redis = start_redis()
    try:
        wait_port(ours_port)
        wait_port(torch_port)
        os.sched_setaffinity(0, CLIENT_CPU)
        stores: dict[str, Any] = {"rdzv": ours_client(ours_port), "torch": torch_client(torch_port)}
        if redis is not None:
            stores["redis"] = RedisAdapter(redis[1])
        remote, remote_cpu = measure(stores, args.rounds, args.count)
        pair = {name: stores[name] for name in ("rdzv", "torch")}
        with busy_cores():
            busy, busy_cpu = measure(pair, args.rounds, args.count // 4)
        makers = {
            "rdzv": lambda: ours_client(ours_port),
            "torch": lambda: torch_client(torch_port),
        }
        for make in makers.values():  # warm-up round, not measured
            add_throughput(make, 8, 1000)
        rounds: dict[str, list[float]] = {name: [] for name in makers}
        for _ in range(args.rounds):  # interleaved
            for name, make in makers.items():
                rounds[name].append(add_throughput(make, 8, 2000))
        tput = {name: median(values) for name, values in rounds.items()}
    finally:
        for child in children:
            child.kill()
        if redis is not None:
            redis[0].kill()
            shutil.rmtree(redis[2], ignore_errors=True)
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))

    from rdzv_plugin_tcp import TCPStore

    hosted_ours = TCPStore("127.0.0.1", free_port(), is_master=True, multi_tenant=False)
    hosted_torch = torch_client(free_port(), master=True)
    hosted = latency({"rdzv": hosted_ours, "torch": hosted_torch}, args.rounds, args.count)
    hosted_ours.close()

    names = list(stores)
    rows = []
    for op in OPS:
        row: list[object] = [op] + [f"{remote[(n, op)]:.0f}" for n in names]
        row.append(f"{remote[('rdzv', op)] / remote[('torch', op)]:.2f}")
        row += [
            f"{hosted[('rdzv', op)]:.0f}",
            f"{hosted[('torch', op)]:.0f}",
            f"{hosted[('rdzv', op)] / hosted[('torch', op)]:.2f}",
        ]
        rows.append(row)
    header = (
        ["op"]
        + [f"{n} µs" for n in names]
        + ["rdzv/torch", "hosted rdzv µs", "hosted torch µs", "hosted rdzv/torch"]
    )
    out.append("### tcp store: median latency per operation (server on another core)\n")
    out.append(table(header, rows))
    load_rows = []
    for op in OPS:
        load_rows.append(
            [
                op,
                f"{remote[('rdzv', op)]:.0f} / {remote[('torch', op)]:.0f}",
                f"{remote[('rdzv', op)] / remote[('torch', op)]:.2f}",
                f"{busy[('rdzv', op)]:.0f} / {busy[('torch', op)]:.0f}",
                f"{busy[('rdzv', op)] / busy[('torch', op)]:.2f}",
                f"{remote_cpu[('rdzv', op)]:.0f} / {remote_cpu[('torch', op)]:.0f}",
                f"{busy_cpu[('rdzv', op)]:.0f} / {busy_cpu[('torch', op)]:.0f}",
            ]
        )
    out.append(
        "\n### tcp store: quiet and busy cores (2 CPU-bound processes per core), rdzv / torch\n"
    )
    out.append(
        table(
            [
                "op",
                "quiet µs",
                "quiet ratio",
                "busy µs",
                "busy ratio",
                "client CPU µs/op quiet",
                "client CPU µs/op busy",
            ],
            load_rows,
        )
    )
    out.append(
        "\n### tcp store: add throughput, 8 client threads (one client each), median of rounds\n"
    )
    out.append(
        table(
            ["store", "adds/s", "vs torch"],
            [
                ["rdzv", f"{tput['rdzv']:.0f}", f"{tput['rdzv'] / tput['torch']:.2f}"],
                ["torch", f"{tput['torch']:.0f}", "1.00"],
            ],
        )
    )
    text = "\n".join(out)
    print(text)
    return text


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    main()
