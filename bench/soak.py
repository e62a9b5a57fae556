"""Soak: well-behaved tcp clients measured while hostile clients attack the same server.

`rdzv serve` runs in its own process pinned to one core. Two well-behaved clients (threads
in a second process) do set/get/add in a loop for a quiet phase, then for the attack phase
while a third process attacks: unfinished frames (slowloris), parked reads on large keys
abandoned at once, multi_get amplification, oversized frames, clients that never read a
large value they ask for again and again, garbage handshakes and connection churn. The
server's resident memory is sampled throughout. Targets: p99 under attack <= 5x the quiet
p99; peak RSS <= 100 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

from common import CLIENT_CPU, SERVER_CPU, rss_kib, table

GOOD = """
import json, sys, threading, time
from datetime import timedelta
from rdzv_plugin_tcp import TCPStore
port, seconds = int(sys.argv[1]), float(sys.argv[2])
samples = []
def work(n):
    store = TCPStore("127.0.0.1", port, timeout=timedelta(seconds=30))
    mine = []
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        for op in (lambda: store.set(f"g{n}/{i % 100}", "v" * 100),
                   lambda: store.get(f"g{n}/{i % 100}"),
                   lambda: store.add(f"g{n}/count", 1)):
            t = time.perf_counter()
            op()
            mine.append((time.perf_counter() - t) * 1e6)
        i += 1
        time.sleep(0.001)
    samples.extend(mine)
threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(samples))
"""

MIB = 1024 * 1024


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def _field(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _hello(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(_frame(b"RDZV\x02"))
    sock.recv(64)
    return sock


def attack(port: int, seconds: float) -> dict[str, int]:
    """Run every attack in a loop until ``seconds`` have passed; returns counts."""
    from rdzv_plugin_tcp import TCPStore

    counts = {"slowloris": 0, "abandoned parks": 0, "amplification": 0, "oversized": 0,
              "never-read": 0, "garbage": 0}  # fmt: skip
    end = time.monotonic() + seconds
    setter = TCPStore("127.0.0.1", port)
    setter.set("big", os.urandom(4 * MIB))
    stop = threading.Event()

    def slowloris() -> None:
        held: list[socket.socket] = []
        while not stop.is_set():
            try:
                sock = _hello(port)
                sock.sendall(struct.pack(">I", 32 * MIB) + b"\x01" + b"x" * 60000)
                held.append(sock)
                counts["slowloris"] += 1
            except OSError:
                pass
            for sock in held[-50:]:
                try:
                    sock.send(b"x")
                except OSError:
                    pass
            held = held[-200:]
            time.sleep(0.05)

    def never_read() -> None:
        while not stop.is_set():
            try:
                sock = _hello(port)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                get = b"\x02" + _field(b"big") + struct.pack(">Q", 0)
                sock.sendall(_frame(get) * 3)
                counts["never-read"] += 1
                time.sleep(0.5)
                sock.close()
            except OSError:
                pass

    workers = [threading.Thread(target=f, daemon=True) for f in (slowloris, never_read)]
    for w in workers:
        w.start()
    while time.monotonic() < end:
        try:
            for i in range(2):  # parks on 1 MiB keys, abandoned at once
                sock = _hello(port)
                key = str(i).encode() * MIB
                sock.sendall(_frame(b"\x02" + _field(key) + struct.pack(">Q", 2**64 - 1)))
                sock.close()
                counts["abandoned parks"] += 1
            sock = _hello(port)
            amplify = b"\x09" + struct.pack(">I", 400) + _field(b"big") * 400
            sock.sendall(_frame(amplify + struct.pack(">Q", 1000)))
            sock.recv(256)
            counts["amplification"] += 1
            sock.sendall(struct.pack(">I", 100 * MIB) + b"\x01" + _field(b"huge"))
            sock.close()
            counts["oversized"] += 1
            junk = socket.create_connection(("127.0.0.1", port), timeout=5)
            junk.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            junk.close()
            counts["garbage"] += 1
        except OSError:
            pass
        time.sleep(0.05)
    stop.set()
    return counts


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def good_clients(port: int, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", GOOD, str(port), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    os.sched_setaffinity(proc.pid, CLIENT_CPU)
    return proc


def main() -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quiet-seconds", type=float, default=15)
    parser.add_argument("--attack-seconds", type=float, default=60)
    args, _ = parser.parse_known_args()
    server = subprocess.Popen(
        [sys.executable, "-m", "rdzv_core", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    os.sched_setaffinity(server.pid, SERVER_CPU)
    assert server.stdout is not None
    port = int(server.stdout.readline().rsplit(":", 1)[1])
    peak = {"quiet": 0.0, "attack": 0.0}
    phase = ["quiet"]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak[phase[0]] = max(peak[phase[0]], rss_kib(server.pid) / 1024)
            time.sleep(0.1)

    threading.Thread(target=sample, daemon=True).start()
    results: dict[str, Any] = {}
    try:
        quiet = good_clients(port, args.quiet_seconds)
        results["quiet"] = json.loads(quiet.communicate()[0])
        phase[0] = "attack"
        attacked = good_clients(port, args.attack_seconds)
        os.sched_setaffinity(0, CLIENT_CPU)  # the attacker shares the clients' core
        counts = attack(port, args.attack_seconds)
        results["attack"] = json.loads(attacked.communicate()[0])
        alive = server.poll() is None
    finally:
        sampling.set()
        server.kill()
        server.wait()
    rows = []
    for name in ("quiet", "attack"):
        s = results[name]
        p50, p99 = percentile(s, 0.5), percentile(s, 0.99)
        rows.append(
            [name, len(s), f"{p50:.0f}", f"{p99:.0f}", f"{max(s) / 1000:.1f}", f"{peak[name]:.0f}"]
        )
    ratio = percentile(results["attack"], 0.99) / percentile(results["quiet"], 0.99)
    text = (
        f"### Soak: well-behaved tcp clients under attack ({args.attack_seconds:.0f} s)\n\n"
        + table(["phase", "ops", "p50 µs", "p99 µs", "max ms", "server peak RSS MiB"], rows)
        + f"\n\np99 under attack / quiet p99: **{ratio:.2f}x** (target ≤ 5x); peak RSS "
        f"**{peak['attack']:.0f} MiB** (target ≤ 100 MiB); server alive at the end: {alive}.\n"
        f"Attacks made: {', '.join(f'{k} {v}' for k, v in counts.items())} "
        f"(about {counts['abandoned parks'] / args.attack_seconds:.0f} MiB/s of keys parked "
        "and abandoned)."
    )
    print(text)
    return text


if __name__ == "__main__":
    main()
