"""Store at scale: N concurrent clients of one TCP store server, rdzv against torch 2.13's
C++ TCPStore (libuv server), side by side in one run.

Each client is its own client object with its own connection; the clients live as threads
in processes of ``--per-process`` each (one process holds a few hundred descriptors, the
server one per client: everything stays under the 20,000-descriptor limit). The server runs
in its own process: ``rdzv serve`` for rdzv, a process hosting ``TCPStore(is_master=True)``
for torch. Phases, all clients at once:

- connect: every client object is created (connection and handshake);
- add + get: every client adds 1 to ``arrived``; the client that makes it N sets ``go``;
  every client then reads ``go`` (a blocked get for all but the last).

A client that has finished keeps its thread and connection until the run has been measured
(so the server's memory is read with every client connected, and no thread that finished
early takes CPU, tearing down, from those still at work); then all are released at once,
rdzv's clients closed, torch's freed, and the release is timed apart, not in the total.

The client processes of both sides use a 50 ms interpreter switch interval
(``--switch-interval``; CPython's default is 5 ms): with hundreds of client threads in one
interpreter, every thread waiting for the interpreter lock wakes 200 times a second by
default, and on a 2-core VM that futex storm can swamp the run — an artefact of packing
clients into threads that a real client, one per process, never meets. torch's client holds
the lock only around its C++ calls, ours runs Python between them, so the default interval
costs ours more: ``--switch-interval 0.005`` shows it.

Reported: the time of each phase, torch/rdzv ratios, and the server's RSS growth per
connection (VmRSS with every client connected, minus VmRSS before the first connected).
A third side (``--no-floor`` skips it) runs the least a Python client can do, plain socket
calls with no checks and no timeouts, against torch's own server: the floor for any
pure-Python client in this layout, where threads take turns on the interpreter lock.

torch's TCPStore looks up the peer's name (reverse DNS) for every connection it makes or
accepts; an address that /etc/hosts does not answer goes to the resolver, which stalls for
seconds now and then. So that no stall lands in torch's figures, every process of the run
(both sides alike) gets a tiny LD_PRELOAD shim that makes ``getnameinfo`` numeric. The shim
is compiled with the system's C compiler (``apt-get install gcc`` if there is none).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import subprocess
import sys
import tempfile
import time
from typing import Any

from common import busy_cores, cpu_seconds, rss_kib, table

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <sys/socket.h>
typedef int (*real_t)(const struct sockaddr *, socklen_t, char *, socklen_t, char *,
                      socklen_t, int);
int getnameinfo(const struct sockaddr *sa, socklen_t salen, char *host, socklen_t hostlen,
                char *serv, socklen_t servlen, int flags) {
    static real_t real;
    if (!real) real = (real_t)dlsym(RTLD_NEXT, "getnameinfo");
    flags = (flags | NI_NUMERICHOST | NI_NUMERICSERV) & ~NI_NAMEREQD;
    return real(sa, salen, host, hostlen, serv, servlen, flags);
}
"""

TORCH_SERVER = """
import sys, time
from datetime import timedelta
from torch.distributed import TCPStore
store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                 timeout=timedelta(seconds=600))
print(f"listening on 127.0.0.1:{store.port}", flush=True)
while True:
    time.sleep(3600)
"""

#: How long the clients' add + get may take before a run is given up.
RUN_DEADLINE = 600.0

CLIENTS = """
import json, resource, sys, threading, time
from datetime import timedelta
sys.setswitchinterval(float(sys.argv[5]))
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
kind, port, count, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if kind == "torch":
    from torch.distributed import TCPStore
    def connect():
        return TCPStore("127.0.0.1", port, is_master=False, wait_for_workers=False,
                        timeout=timedelta(seconds=600))
elif kind == "floor":
    import socket, struct
    class Minimal:
        # The least a Python client of torch's server can do: plain socket calls, no
        # checks, no timeouts (torch's wire format: op byte, u64 lengths, i64 counters).
        # Like torch's client, it connects again (10 ms, doubling to 1 s) when a connect
        # fails: thousands at once overflow the server's backlog.
        def __init__(self):
            delay, deadline = 0.01, time.monotonic() + 600
            while time.monotonic() < deadline:
                try:
                    self.sock = socket.create_connection(("127.0.0.1", port))
                    self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self.sock.sendall(bytes([0]) + struct.pack("<I", 0x3C85F7CE))  # validate
                    self.sock.sendall(bytes([13]) + struct.pack("<I", 1))  # ping, echoed
                    if self.sock.recv(4) == struct.pack("<I", 1):
                        return
                    self.sock.close()
                except OSError:
                    pass
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
            raise TimeoutError("could not connect within 600 s")
        def _key(self, op, key):
            name = ("/" + key).encode()
            return bytes([op]) + struct.pack("<Q", len(name)) + name
        def add(self, key, amount):
            self.sock.sendall(self._key(4, key) + struct.pack("<q", amount))
            return struct.unpack("<q", self.sock.recv(8))[0]
        def set(self, key, value):
            self.sock.sendall(self._key(1, key) + struct.pack("<Q", len(value)) + value.encode())
        def get(self, key):
            self.sock.sendall(bytes([6]) + struct.pack("<Q", 1) + self._key(6, key)[1:])
            assert self.sock.recv(1) == bytes([0])  # the key exists now
            self.sock.sendall(self._key(3, key))
            size = struct.unpack("<Q", self.sock.recv(8))[0]
            return self.sock.recv(size)
    connect = Minimal
else:
    from rdzv_plugin_tcp import TCPStore
    def connect():
        return TCPStore("127.0.0.1", port, timeout=timedelta(seconds=600))
connect_now, go_now, all_done, release = (threading.Event() for _ in range(4))
lock = threading.Lock()
connected, finished, errors = [], [], []
def done(outcome, value):
    with lock:
        outcome.append(value)
        # A failed client stops the run at once: the others would wait for it forever.
        if errors or len(finished) == count:
            all_done.set()
def client():
    try:
        connect_now.wait()
        store = connect()
        with lock:
            connected.append(time.time())
            if len(connected) == count:
                print("ready", flush=True)
        go_now.wait()
        if store.add("arrived", 1) == total:
            store.set("go", "1")
        assert store.get("go") == b"1"
        done(finished, time.time())
    except BaseException as e:
        with lock:
            first = not errors
        done(errors, repr(e))
        if first and not go_now.is_set():
            print("ready", flush=True)  # this process's clients will not all connect
        return
    # Client and connection live until the run has been measured: a finished thread
    # tearing down would take CPU from those still at work, which is no part of add + get.
    release.wait()
    getattr(store, "close", lambda: None)()  # rdzv's; torch's TCPStore closes when freed
threads = [threading.Thread(target=client) for _ in range(count)]
for t in threads:
    t.start()
print("started", flush=True)
sys.stdin.readline()
connect_now.set()
sys.stdin.readline()
go_now.set()
all_done.wait()
print(json.dumps({"connected": max(connected, default=0), "finished": max(finished, default=0),
                  "errors": errors[:3], "failed": len(errors)}), flush=True)
sys.stdin.readline()  # hold the connections until the server's memory was read
release.set()
for t in threads:
    t.join()
print(json.dumps({"released": time.time()}), flush=True)
"""


def build_shim(directory: str) -> str:
    source = os.path.join(directory, "numeric_getnameinfo.c")
    library = os.path.join(directory, "numeric_getnameinfo.so")
    with open(source, "w") as f:
        f.write(SHIM)
    try:
        subprocess.run(
            ["cc", "-shared", "-fPIC", "-O2", "-o", library, source, "-ldl"],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(
            f"store_scale needs a C compiler for its getnameinfo shim ({e}); "
            "install one with `apt-get install gcc`."
        ) from e
    return library


def start_server(kind: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    if kind in ("torch", "floor"):
        argv = [sys.executable, "-c", TORCH_SERVER]
    else:
        argv = [sys.executable, "-m", "rdzv_core", "serve", "--port", "0"]
        argv += ["--max-connections", "19000"]
    server = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    if not line:
        raise RuntimeError(f"the {kind} server did not start")
    return server, int(line.rsplit(":", 1)[1])


def tell(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()


def expect(procs: list[subprocess.Popen[str]], word: str) -> None:
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != word:
            raise RuntimeError(f"a client process said {line!r}, not {word!r}")


def reports_of(procs: list[subprocess.Popen[str]], kind: str) -> list[dict[str, Any]]:
    """Each client process's report of its add + get, in any order. A failed client stops
    the run at once (its process reports it; the others' clients would wait forever for
    the count it never added), and so does a run that takes over :data:`RUN_DEADLINE`."""
    import json

    waiting = {proc.stdout.fileno(): proc for proc in procs if proc.stdout is not None}
    reports = []
    deadline = time.monotonic() + RUN_DEADLINE
    while waiting:
        left = deadline - time.monotonic()
        ready, _, _ = select.select(list(waiting), [], [], max(0.0, left))
        if not ready:
            raise RuntimeError(f"{len(waiting)} {kind} client processes did not finish within "
                               f"{RUN_DEADLINE:.0f} s")  # fmt: skip
        for fd in ready:
            stdout = waiting.pop(fd).stdout
            assert stdout is not None
            report = json.loads(stdout.readline() or '{"failed": -1, "errors": ["exited"]}')
            if report["failed"]:
                raise RuntimeError(f"{kind} clients failed: {report['errors']}")
            reports.append(report)
    return reports


def run(
    kind: str, n: int, per_process: int, switch: float, env: dict[str, str]
) -> dict[str, float]:
    import json

    server, port = start_server(kind, env)
    counts = [per_process] * (n // per_process) + ([n % per_process] if n % per_process else [])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENTS, kind, str(port), str(count), str(n), str(switch)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for count in counts
    ]
    try:
        expect(procs, "started")  # imports done, threads parked
        time.sleep(1)
        base = rss_kib(server.pid)
        start = time.time()
        tell(procs)
        expect(procs, "ready")
        connected_rss = rss_kib(server.pid)
        time.sleep(0.5)
        cpu_before = cpu_seconds(server.pid), cpu_seconds(*(p.pid for p in procs))
        go = time.time()
        tell(procs)
        reports = reports_of(procs, kind)
        server_cpu = cpu_seconds(server.pid) - cpu_before[0]
        client_cpu = cpu_seconds(*(p.pid for p in procs)) - cpu_before[1]
        peak = rss_kib(server.pid)
        connect_s = max(r["connected"] for r in reports) - start
        ops_s = max(r["finished"] for r in reports) - go
        release = time.time()
        tell(procs)
        released = []
        for proc in procs:
            assert proc.stdout is not None
            released.append(json.loads(proc.stdout.readline())["released"])
        release_s = max(released) - release
    finally:
        for proc in procs:
            proc.kill()
        server.kill()
        for proc in [*procs, server]:
            proc.wait()
    return {
        "connect": connect_s,
        "ops": ops_s,
        "total": connect_s + ops_s,
        "release": release_s,
        "kib_per_conn": (connected_rss - base) / n,
        "peak_mib": peak / 1024,
        "server_cpu": server_cpu,
        "client_cpu": client_cpu,
    }


def median_run(
    kind: str, n: int, args: argparse.Namespace, env: dict[str, str]
) -> dict[str, float]:
    """The run with the median total of ``args.repeat`` runs."""
    runs = sorted((run(kind, n, args.per_process, args.switch_interval, env)
                   for _ in range(args.repeat)),
                  key=lambda r: r["total"])  # fmt: skip
    return runs[len(runs) // 2]


def main() -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="2000,8000,16000")
    parser.add_argument("--per-process", type=int, default=250)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--switch-interval", type=float, default=0.05)
    parser.add_argument(
        "--floor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time a minimal Python client (plain socket calls, no checks) against "
        "torch's server: what any pure-Python client costs in this layout",
    )
    parser.add_argument(
        "--busy",
        action="store_true",
        help="keep the cores busy meanwhile: 2 CPU-bound processes pinned to each core",
    )
    args, _ = parser.parse_known_args()
    with busy_cores() if args.busy else contextlib.nullcontext():
        return _report(args)


def _report(args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, LD_PRELOAD=build_shim(tmp))
        rows = []
        for n in (int(s) for s in args.sizes.split(",")):
            torch = median_run("torch", n, args, env)
            rdzv = median_run("rdzv", n, args, env)
            print(f"n={n} torch={torch} rdzv={rdzv}", file=sys.stderr)
            floor = []
            if args.floor:
                try:
                    low = median_run("floor", n, args, env)
                except RuntimeError as e:  # a comparison, not what is measured: say so
                    print(f"n={n} floor failed: {e}", file=sys.stderr)
                    floor = ["failed (see the log)"]
                else:
                    print(f"n={n} floor={low}", file=sys.stderr)
                    floor = [
                        f"{low['connect']:.2f} / {low['ops']:.2f} / {low['total']:.2f} "
                        f"({low['total'] / torch['total']:.2f}x)"
                    ]
            rows.append(
                [
                    f"{n:,}",
                    f"{torch['connect']:.2f} / {torch['ops']:.2f} / {torch['total']:.2f}",
                    f"{rdzv['connect']:.2f} / {rdzv['ops']:.2f} / {rdzv['total']:.2f}",
                    f"{rdzv['total'] / torch['total']:.2f}x",
                    f"{torch['kib_per_conn']:.1f}",
                    f"{rdzv['kib_per_conn']:.1f}",
                    f"{torch['peak_mib']:.0f} / {rdzv['peak_mib']:.0f}",
                    f"{torch['server_cpu']:.2f} / {rdzv['server_cpu']:.2f}",
                    f"{torch['release']:.2f} / {rdzv['release']:.2f}",
                    *floor,
                ]
            )
    text = (
        f"### Store at scale{' on busy cores' if args.busy else ''}: N clients of one server "
        f"({args.per_process} client threads per "
        f"process, switch interval {args.switch_interval * 1000:g} ms), rdzv vs torch 2.13 "
        f"TCPStore (libuv), median of {args.repeat} runs\n\n"
        + table(
            [
                "clients",
                "torch s: connect / add+get / total",
                "rdzv s: connect / add+get / total",
                "rdzv/torch total",
                "torch server KiB/conn",
                "rdzv server KiB/conn",
                "server peak MiB torch / rdzv",
                "server CPU s in add+get, torch / rdzv",
                "release s, torch / rdzv",
                *(["minimal Python client on torch's server, s (/torch)"] if args.floor else []),
            ],
            rows,
        )
        + "\n\nTargets: rdzv/torch total ≤ 1.0x at each size; rdzv server ≤ 8 KiB per connection."
    )
    print(text)
    return text


if __name__ == "__main__":
    main()
