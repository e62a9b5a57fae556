"""What watching costs: the status page and the metrics must not slow the store.

1. A 4,096-node rendezvous (``scale.py``'s layout) with ``rdzv serve`` serving its status
   page, read every second meanwhile as a browser would, against the same without the page;
   interleaved, median of ``--repeat``.
2. tcp latency (get / add / compare_set / set, client in this process, server in its own)
   against ``rdzv serve`` with ``--metrics-port`` and ``--dashboard-port`` on (and both read
   every second), and against a plain ``rdzv serve``, with a second plain one as the control
   (the noise floor); interleaved, quiet and with the cores busy (2 CPU-bound processes per
   core).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import urllib.request
from typing import Any

from common import busy_cores, median, table, variant_rows
from scale import run
from tcp_latency import OPS, measure, ours_client


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


def latency(rounds: int, count: int) -> tuple[dict[tuple[str, str], float], ...]:
    """Median latencies by (server, op): ``plain``, ``control`` (a second plain server:
    how far two identical servers differ here, the noise floor) and ``watched``."""
    plain, plain_port, _ = serve()
    control, control_port, _ = serve()
    watched, watched_port, urls = serve("--metrics-port", "0", "--dashboard-port", "0")
    stop = threading.Event()
    threading.Thread(
        target=reader, args=([urls[0], urls[1] + "api/runs"], stop), daemon=True
    ).start()
    stores: dict[str, Any] = {
        "plain": ours_client(plain_port),
        "control": ours_client(control_port),
        "watched": ours_client(watched_port),
    }
    try:
        quiet = measure(stores, rounds, count)[0]
        with busy_cores():
            busy = measure(stores, rounds, count // 4)[0]
    finally:
        stop.set()
        for store in stores.values():
            store.close()
        for proc in (plain, control, watched):
            proc.kill()
    return quiet, busy


def main() -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--count", type=int, default=2000)
    args, _ = parser.parse_known_args()
    times: dict[str, list[float]] = {"without the page": [], "page read every second": []}
    cpu: dict[str, list[float]] = {name: [] for name in times}
    server_cpu: dict[str, list[float]] = {name: [] for name in times}
    for attempt in range(args.repeat):
        for name in times:
            result = run(args.nodes, 128, 0, 0.05, poll_page=name != "without the page")
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
    text = (
        f"### A {args.nodes:,}-node rendezvous with the status page read every second, median "
        f"of {args.repeat}; CPU: the server's and the nodes' during the rendezvous (the page "
        "runs in the server's process)\n\n" + table(header, rows)
    )
    quiet, busy = latency(args.rounds, args.count)
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
    text += (
        "\n\n### tcp latency (µs, median): `rdzv serve` plain / with metrics and the status "
        "page on and read every second; control: a second plain server against the first\n\n"
        + table(["op", "quiet", "ratio", "control", "busy", "ratio", "control"], rows)
    )
    print(text)
    return text


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
