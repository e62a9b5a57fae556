"""Scale: an N-node rendezvous with the store server in its own process (`rdzv serve`) and
the nodes as threads spread over several processes (each node its own handler and its own
connection), as on a cluster; then the server's CPU while the job idles.

Reports the time from the first join until every node returned from next_rendezvous, and
the server's CPU share of one core over 10 idle seconds (heartbeats only). ``run`` also
returns the CPU seconds the server and every node process spent meanwhile (``cpu``), and
the server's alone (``server_cpu``).

Spread the nodes thinly: one Python process with a thousand busy threads (a node is two: its
own and its heartbeat's) serves its own requests at a tenth of the rate that the same
threads spread over eight processes get, so a crowded process measures the GIL, not the
rendezvous. 128 nodes per process is the default (10,000 nodes: 79 processes). For the same
reason the node processes use a 50 ms interpreter switch interval (``--switch-interval``):
with a hundred threads waking at once, CPython's default 5 ms has every thread that waits for
the interpreter lock wake 200 times a second, and on this VM that futex storm can hold both
cores for most of a minute — something a real node, one process with one client, never sees.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import threading
import time
import urllib.request

from common import busy_cores, cpu_seconds, table

NODE_PROCESS = """
import json, resource, sys, threading, time
sys.setswitchinterval(float(sys.argv[7]))
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
from rdzv_core import RendezvousParameters
from rdzv_core.rendezvous import create_handler
port, run_id, n, count, start_at, hold = sys.argv[1:7]
n, count, start_at, hold = int(n), int(count), float(start_at), float(hold)
extra = json.loads(sys.argv[8]) if len(sys.argv) > 8 else {}
if len(sys.argv) > 9 and sys.argv[9] == "health-hook":  # a plugin's check that passes at once
    from rdzv_core import hookimpl, register
    class Healthy:
        @hookimpl
        def rdzv_health_check(self):
            return lambda: None
    register(Healthy(), name="bench-health")
done = []
handlers = []
lock = threading.Lock()
def node():
    params = RendezvousParameters("c10d", f"127.0.0.1:{port}", run_id, n, n, is_host="false",
                                  read_timeout="600", join_timeout="900", last_call_timeout="60",
                                  **extra)
    handler = create_handler(params)
    with lock:
        handlers.append(time.time())
    go.wait()
    info = handler.next_rendezvous()
    with lock:
        done.append((time.time(), info.rank))
go = threading.Event()  # one timer, not a thousand sleeping pollers
cpu_at_start = []
def start():
    cpu_at_start.append(time.process_time())
    go.set()
threading.Timer(max(0.0, start_at - time.time()), start).start()
threads = [threading.Thread(target=node) for _ in range(count)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"last": max(d[0] for d in done), "ranks": [d[1] for d in done],
                  "created": max(handlers), "cpu": time.process_time() - cpu_at_start[0]}),
      flush=True)
time.sleep(hold)  # stay in the job (heartbeating) while the server's idle cost is measured
"""


def run(
    n: int,
    per_process: int,
    idle_seconds: float,
    switch_interval: float,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    poll_page: bool = False,
) -> dict[str, float]:
    """One N-node rendezvous; ``extra`` are more node-process arguments (config as JSON,
    then ``health-hook``), ``env`` the environment of every process; ``poll_page``: the
    server serves its status page, read every second meanwhile (as a browser would)."""
    processes = -(-n // per_process)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    command = [sys.executable, "-m", "rdzv_core", "serve", "--port", "0", "--max-connections"]
    command += ["30000", *(["--dashboard-port", "0"] if poll_page else [])]
    server = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert server.stdout is not None
    port = server.stdout.readline().rsplit(":", 1)[1].strip()
    stop_polling = threading.Event()
    if poll_page:
        url = server.stdout.readline().split(" on ", 1)[1].strip() + "api/runs"

        def poll() -> None:
            while not stop_polling.wait(1.0):
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(url, timeout=30).read()

        threading.Thread(target=poll, daemon=True).start()
    start_at = time.time() + 5 + n / 400  # every handler connected by then
    per = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                NODE_PROCESS,
                port,
                f"scale-{n}",
                str(n),
                str(count),
                str(start_at),
                str(idle_seconds + 5),
                str(switch_interval),
                *extra,
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for count in per
    ]
    server_cpu: list[float] = []
    sampler = threading.Timer(
        max(0.0, start_at - time.time()), lambda: server_cpu.append(cpu_seconds(server.pid))
    )
    sampler.start()
    try:
        reports = []
        for proc in nodes:
            assert proc.stdout is not None
            reports.append(json.loads(proc.stdout.readline()))
        ranks = sorted(r for rep in reports for r in rep["ranks"])
        assert ranks == list(range(n)), "ranks are not 0..N-1 once each"
        elapsed = max(rep["last"] for rep in reports) - start_at
        sampler.join()
        server_spent = cpu_seconds(server.pid) - server_cpu[0]
        cpu = sum(rep["cpu"] for rep in reports) + server_spent
        late = max(rep["created"] for rep in reports) - start_at
        if late > 0:
            print(
                f"warning: the last handler was created {late:.1f} s after the start",
                file=sys.stderr,
            )
        idle = float("nan")
        if idle_seconds > 0:
            time.sleep(1)
            before = cpu_seconds(server.pid)
            time.sleep(idle_seconds)
            idle = (cpu_seconds(server.pid) - before) / idle_seconds
    finally:
        stop_polling.set()
        for proc in nodes:
            proc.kill()
        server.kill()
    return {
        "n": n,
        "seconds": elapsed,
        "cpu": cpu,
        "server_cpu": server_spent,
        "idle_core_share": idle,
    }


def main() -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1024,4096,10000")
    parser.add_argument("--per-process", type=int, default=128)
    parser.add_argument("--switch-interval", type=float, default=0.05)
    parser.add_argument("--idle-seconds", type=float, default=10)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each size up to 4,096 (median reported)"
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
    sizes = [int(n) for n in args.sizes.split(",")]
    times: dict[int, list[float]] = {n: [] for n in sizes}
    idle: dict[int, float] = {}
    for attempt in range(args.repeat):  # sizes interleaved, so drift hits them alike
        for n in sizes:
            if attempt and n > 4096:
                continue
            r = run(
                n, args.per_process, args.idle_seconds if not attempt else 0, args.switch_interval
            )
            times[n].append(r["seconds"])
            idle.setdefault(n, r["idle_core_share"])
            print(f"n={n} run {attempt + 1}: {r['seconds']:.2f} s", file=sys.stderr)
    median = {n: sorted(t)[len(t) // 2] for n, t in times.items()}
    rows = [
        [
            n,
            f"{median[n]:.1f}",
            " / ".join(f"{t:.1f}" for t in times[n]),
            f"{median[n] / n * 1000:.2f}",
            f"{idle[n] * 100:.1f} %",
        ]
        for n in sizes
    ]
    text = (
        f"### Scale{' on busy cores' if args.busy else ''}: N-node rendezvous, `rdzv serve` "
        "in its own process, nodes as threads, "
        f"{args.per_process} per process, switch interval {args.switch_interval * 1000:g} ms\n\n"
        + table(
            ["N", "seconds to all ranks (median)", "each run", "ms per node", "server CPU at rest"],
            rows,
        )
        + "\n\nTargets: 4,096 nodes under 10 s; 1,024 → 4,096 at most ~4.5x; at rest < 5 % of a core."
    )
    if 1024 in median and 4096 in median:
        text += f"\n\nGrowth 1,024 → 4,096 (medians): {median[4096] / median[1024]:.2f}x"
    print(text)
    return text


if __name__ == "__main__":
    main()
