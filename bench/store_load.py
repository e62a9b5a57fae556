"""The TCP store on a busy machine: many client processes on 2 cores, rdzv against torch 2.13's
C++ TCPStore, side by side in one run.

A training node's cores are never quiet: 8 ranks, their data loaders and the agent share
them. Here ``--processes`` client processes (8 per core by default) share the 2 cores with
the server; each opens its clients one after another (connect, then ``add("arrived", 1)``),
and once all its clients are open reads ``go`` with each of them (a blocking ``get`` for the
first, until the client that makes ``arrived`` reach N sets ``go``). One thread per process,
one request at a time: no benchmark-only layout of hundreds of threads.

Reported: the time from the start to the last process done (median of ``--repeat`` runs,
the sides interleaved), the connect + add and the get phases apart, and the CPU time of all
the client processes per client.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from common import cpu_seconds, median, table
from store_scale import build_shim, start_server

CLIENTS = """
import json, resource, sys, time
from datetime import timedelta
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
kind, port, count, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if kind == "torch":
    from torch.distributed import TCPStore
    def connect():
        return TCPStore("127.0.0.1", port, is_master=False, wait_for_workers=False,
                        timeout=timedelta(seconds=600))
else:
    from rdzv_plugin_tcp import TCPStore
    def connect():
        return TCPStore("127.0.0.1", port, timeout=timedelta(seconds=600))
print("started", flush=True)
sys.stdin.readline()
stores = []
for _ in range(count):
    store = connect()
    if store.add("arrived", 1) == total:
        store.set("go", "1")
    stores.append(store)
opened = time.time()
for store in stores:
    assert store.get("go") == b"1"
print(json.dumps({"opened": opened, "done": time.time()}), flush=True)
sys.stdin.readline()
"""


def run(kind: str, n: int, processes: int, env: dict[str, str]) -> dict[str, float]:
    server, port = start_server(kind, env)
    counts = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENTS, kind, str(port), str(count), str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for count in counts
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        time.sleep(0.5)
        cpu_before = cpu_seconds(*(p.pid for p in procs))
        server_before = cpu_seconds(server.pid)
        start = time.time()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("\n")
            proc.stdin.flush()
        reports = []
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"a {kind} client process failed")
            reports.append(json.loads(line))
        client_cpu = cpu_seconds(*(p.pid for p in procs)) - cpu_before
        server_cpu = cpu_seconds(server.pid) - server_before
    finally:
        for proc in [*procs, server]:
            proc.kill()
        for proc in [*procs, server]:
            proc.wait()
    opened = max(r["opened"] for r in reports) - start
    total = max(r["done"] for r in reports) - start
    return {
        "total": total,
        "open": opened,
        "get": total - opened,
        "client_cpu_us": client_cpu / n * 1e6,
        "server_cpu_us": server_cpu / n * 1e6,
    }


def main() -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="2000,8000")
    parser.add_argument("--processes", type=int, default=8 * (os.cpu_count() or 2))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "LD_PRELOAD": build_shim(scratch)}
        rows = []
        for n in (int(s) for s in args.sizes.split(",")):
            runs: dict[str, list[dict[str, float]]] = {"rdzv": [], "torch": []}
            for _ in range(args.repeat):
                for kind in runs:  # interleaved
                    runs[kind].append(run(kind, n, args.processes, env))
            med = {
                kind: {key: median([r[key] for r in rs]) for key in rs[0]}
                for kind, rs in runs.items()
            }
            ours, torch = med["rdzv"], med["torch"]
            rows.append(
                [
                    f"{n:,}",
                    f"{ours['total']:.2f} / {torch['total']:.2f}",
                    f"**{ours['total'] / torch['total']:.2f}**",
                    f"{ours['open']:.2f} / {torch['open']:.2f}",
                    f"{ours['get']:.2f} / {torch['get']:.2f}",
                    f"{ours['client_cpu_us']:.0f} / {torch['client_cpu_us']:.0f}",
                    f"{ours['server_cpu_us']:.0f} / {torch['server_cpu_us']:.0f}",
                ]
            )
            print(rows[-1], flush=True)
    header = [
        "clients",
        "total s rdzv / torch",
        "ratio",
        "connect + add s",
        "get s",
        "client CPU µs per client",
        "server CPU µs per client",
    ]
    return (
        f"### tcp store on busy cores: {args.processes} client processes, each opening its "
        f"clients in sequence (median of {args.repeat})\n\n" + table(header, rows)
    )


if __name__ == "__main__":
    print(main())
