"""How close to torch's C++ TCPStore a Python tcp store can get: the floor under ``add``.

One ``add`` round trip, server on one core and client on the other, measured four ways side
by side in one run (quiet, then with the cores busy):

- ``torch``: torch 2.13's C++ client and server;
- ``rdzv``: our ``TCPStore`` and ``StoreServer``;
- ``bare client / rdzv server``: the fewest Python steps a client can take (one ``send``, then
  ``recv`` with ``MSG_DONTWAIT`` until the reply is there) against our server: what our
  server costs;
- ``bare client / bare server``: the same client against the fewest Python steps a server
  can take (an epoll loop that parses an ``add``, counts and answers; no limits, handshake
  checks, parked reads or locks): what Python itself costs.

The last row is the floor for any pure-Python store on this machine: a server and a client
with every safeguard stripped. The gap between it and ``rdzv`` is what our code costs.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from collections.abc import Callable

from common import CLIENT_CPU, busy_cores, free_port, median, spawn, table, wait_port
from tcp_latency import OURS_SERVER, TORCH_SERVER, ours_client, torch_client

BARE_SERVER = """
import select, socket, struct, sys
from rdzv_plugin_tcp.protocol import hello_reply
U32, I64 = struct.Struct("!I"), struct.Struct("!q")
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
poller = select.epoll()
poller.register(listener.fileno(), select.EPOLLIN)
conns, greeted, counters = {}, set(), {}
while True:
    for fd, _ in poller.poll():
        if fd == listener.fileno():
            sock, _ = listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conns[sock.fileno()] = sock
            poller.register(sock.fileno(), select.EPOLLIN)
            continue
        sock = conns[fd]
        data = sock.recv(65536)
        if not data:
            poller.unregister(fd)
            del conns[fd]
            sock.close()
            continue
        out = []
        while data:
            size = U32.unpack_from(data)[0]
            payload, data = data[4 : 4 + size], data[4 + size :]
            if fd not in greeted:
                greeted.add(fd)
                reply = hello_reply(payload[4], bytes(16), 2**20, None)
            else:
                end = 5 + U32.unpack_from(payload, 1)[0]
                key = payload[5:end]
                total = int(counters.get(key, b"0")) + I64.unpack_from(payload, end)[0]
                counters[key] = str(total).encode()
                reply = b"\\0" + I64.pack(total)
            out.append(U32.pack(len(reply)) + reply)
        sock.send(b"".join(out))
"""

HELLO = b"\0\0\0\x05RDZV\x03"
ADD = b"\0\0\0\x0e\x03\0\0\0\x01k\0\0\0\0\0\0\0\x01"


def bare_client(port: int) -> Callable[[], bytes]:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.send(HELLO)
    sock.recv(1024)

    def add() -> bytes:
        sock.send(ADD)
        while True:
            try:
                return sock.recv(16384, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass

    return add


def measure(ops: dict[str, Callable[[], object]], rounds: int, count: int) -> dict[str, float]:
    """Median latency (µs) of each op, the ops interleaved round by round."""
    samples: dict[str, list[float]] = {name: [] for name in ops}
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for name, op in ops.items():
            for _ in range(100):
                op()
            for _ in range(count):
                start = clock()
                op()
                samples[name].append((clock() - start) / 1000)
    return {name: median(values) for name, values in samples.items()}


def main() -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--count", type=int, default=3000)
    args = parser.parse_args()
    ports = {"rdzv": free_port(), "torch": free_port(), "bare": free_port()}
    children = [
        spawn(OURS_SERVER, str(ports["rdzv"])),
        spawn(TORCH_SERVER, str(ports["torch"])),
        spawn(BARE_SERVER, str(ports["bare"])),
    ]
    try:
        for port in ports.values():
            wait_port(port)
        os.sched_setaffinity(0, CLIENT_CPU)
        torch_store = torch_client(ports["torch"])
        ours = ours_client(ports["rdzv"])
        ops: dict[str, Callable[[], object]] = {
            "torch": lambda: torch_store.add("k", 1),
            "rdzv": lambda: ours.add("k", 1),
            "bare client / rdzv server": bare_client(ports["rdzv"]),
            "bare client / bare server": bare_client(ports["bare"]),
        }
        quiet = measure(ops, args.rounds, args.count)
        with busy_cores():
            busy = measure(ops, args.rounds, args.count // 4)
    finally:
        for child in children:
            child.kill()
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    rows = [
        [
            name,
            f"{quiet[name]:.1f}",
            f"{quiet[name] / quiet['torch']:.2f}",
            f"{busy[name]:.1f}",
            f"{busy[name] / busy['torch']:.2f}",
        ]
        for name in ops
    ]
    header = ["add round trip", "quiet µs", "vs torch", "busy µs", "vs torch"]
    return "### tcp store: the floor under add (server on another core)\n\n" + table(header, rows)


if __name__ == "__main__":
    print(main())
