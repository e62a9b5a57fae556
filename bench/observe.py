"""What watching costs: the status page and the metrics must not slow the store.

1. A 4,096-node rendezvous (``scale.py``'s layout) with ``rdzv serve`` serving its status
   page, read every second meanwhile as a browser would, against the same without the page;
   interleaved, median of ``--repeat``.
2. tcp latency (get / add / compare_set / set, client in this process, server in its own)
   against ``rdzv serve`` with ``--metrics-port`` and ``--dashboard-port`` on (and both read
   every second), and against a plain ``rdzv serve``, with a second plain one as the control
   (the noise floor); fresh servers each round, started and used in a random order; quiet
   and with the cores busy (2 CPU-bound processes per core). Also each server's CPU time per
   request: the metrics' own cost, which the latency's noise hides.

``--latency-only`` skips part 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import subprocess
import sys
import threading
import urllib.request

from common import busy_cores, cpu_seconds, median, table, time_op, variant_rows
from scale import run
from tcp_latency import OPS, operations, ours_client


def serve(*extra: str) -> tuple[subprocess.Popen[str], int, list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rdzv_core", "serve", "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    port = int(proc.stdout.readline().rsplit(":", 1)[1])
    urls = [proc.stdout.readline().split(" on ", 1)[1].strip() for _ in range(len(extra) // 2)]
    return proc, port, urls


def reader(urls: list[str], stop: threading.Event) -> None:
    while not stop.wait(1.0):
        for url in urls:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url, timeout=10).read()


SERVERS = {
    "plain": (),
    "control": (),
    "watched": ("--metrics-port", "0", "--dashboard-port", "0"),
}


def latency(rounds: int, count: int) -> tuple[dict[tuple[str, str], float], dict[str, float]]:
    """Median latencies (µs) by (server, op), and each server's CPU µs per request:
    ``plain``, ``control`` (a second plain server: how far two identical servers differ
    here, the noise floor) and ``watched``. Every round starts three fresh servers in a
    random order and runs each op on them in a random order, so neither a process's luck
    (its core, its caches) nor its place in the sequence favours one kind."""
    samples: dict[tuple[str, str], list[float]] = {}
    spent = dict.fromkeys(SERVERS, 0.0)
    for _ in range(rounds):
        names = random.sample(list(SERVERS), len(SERVERS))
        servers = {name: serve(*SERVERS[name]) for name in names}
        stop = threading.Event()
        urls = servers["watched"][2]
        threading.Thread(
            target=reader, args=([urls[0], urls[1] + "api/runs"], stop), daemon=True
        ).start()
        stores = {name: ours_client(port) for name, (_, port, _) in servers.items()}
        try:
            ops = {name: operations(store) for name, store in stores.items()}
            before = {name: cpu_seconds(proc.pid) for name, (proc, _, _) in servers.items()}
            for op in OPS:
                for name in random.sample(names, len(names)):
                    samples.setdefault((name, op), []).extend(time_op(ops[name][op], count))
            for name, (proc, _, _) in servers.items():
                spent[name] += cpu_seconds(proc.pid) - before[name]
        finally:
            stop.set()
            for store in stores.values():
                store.close()
            for proc, _, _ in servers.values():
                proc.kill()
                proc.wait()
    per_request = {name: t * 1e6 / (rounds * count * len(OPS)) for name, t in spent.items()}
    return {key: median(values) for key, values in samples.items()}, per_request


def rendezvous(nodes: int, repeat: int) -> str:
    """Part 1: the rendezvous with and without the page read every second."""
    times: dict[str, list[float]] = {"without the page": [], "page read every second": []}
    cpu: dict[str, list[float]] = {name: [] for name in times}
    server_cpu: dict[str, list[float]] = {name: [] for name in times}
    for attempt in range(repeat):
        for name in times:
            result = run(nodes, 128, 0, 0.05, poll_page=name != "without the page")
            times[name].append(result["seconds"])
            cpu[name].append(result["cpu"])
            server_cpu[name].append(result["server_cpu"])
            print(f"{name} run {attempt + 1}: {result['seconds']:.2f} s, "
                  f"{result['cpu']:.1f} CPU s, server {result['server_cpu']:.2f}",
                  file=sys.stderr)  # fmt: skip
    rows = [
        [*row, f"{median(server_cpu[row[0]]):.2f}"]
        for row in variant_rows(times, cpu, "without the page")
    ]
    header = ["variant", "seconds", "each run", "ratio", "CPU s", "CPU ratio", "server CPU s"]
    return (
        f"### A {nodes:,}-node rendezvous with the status page read every second, median "
        f"of {repeat}; CPU: the server's and the nodes' during the rendezvous (the page "
        "runs in the server's process)\n\n" + table(header, rows)
    )


def main() -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--latency-only", action="store_true")
    args, _ = parser.parse_known_args()
    text = "" if args.latency_only else rendezvous(args.nodes, args.repeat) + "\n\n"
    quiet, quiet_cpu = latency(args.rounds, args.count)
    with busy_cores():
        busy, busy_cpu = latency(args.rounds, args.count)
    rows = [
        [
            op,
            f"{quiet['plain', op]:.1f} / {quiet['watched', op]:.1f}",
            f"{quiet['watched', op] / quiet['plain', op]:.2f}",
            f"{quiet['control', op] / quiet['plain', op]:.2f}",
            f"{busy['plain', op]:.1f} / {busy['watched', op]:.1f}",
            f"{busy['watched', op] / busy['plain', op]:.2f}",
            f"{busy['control', op] / busy['plain', op]:.2f}",
        ]
        for op in OPS
    ]
    rows.append(
        [
            "server CPU µs a request",
            f"{quiet_cpu['plain']:.1f} / {quiet_cpu['watched']:.1f}",
            f"{quiet_cpu['watched'] / quiet_cpu['plain']:.2f}",
            f"{quiet_cpu['control'] / quiet_cpu['plain']:.2f}",
            f"{busy_cpu['plain']:.1f} / {busy_cpu['watched']:.1f}",
            f"{busy_cpu['watched'] / busy_cpu['plain']:.2f}",
            f"{busy_cpu['control'] / busy_cpu['plain']:.2f}",
        ]
    )
    text += (
        "### tcp latency (µs, median of every round; fresh servers each round): "
        "`rdzv serve` plain / with metrics and the status page on and read every second; "
        "control: a second plain server against the first\n\n"
        + table(["op", "quiet", "ratio", "control", "busy", "ratio", "control"], rows)
    )
    print(text)
    return text


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
