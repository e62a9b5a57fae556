"""Two-node torchrun, --rdzv-backend=rdzv against --rdzv-backend=c10d, side by side.

- total: wall time from starting both torchrun agents until both workers finished their
  first gloo all_reduce (each worker prints the time it finished; the later one counts);
- rendezvous phase alone: two handlers in threads of one process, from creation until both
  returned from next_rendezvous (torch's c10d handler over its TCPStore, rdzv's handler as
  torchrun loads it, over the tcp store).

Runs alternate between the backends; medians of the rounds are quoted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

from common import free_port, table

TRAIN = """
import time
import torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.tensor([1.0])
dist.all_reduce(t)
print(time.time(), flush=True)
dist.destroy_process_group()
"""


def torchrun_total(backend: str, script: str) -> float:
    port = free_port()
    run_id = uuid.uuid4().hex[:8]
    conf = "last_call_timeout=1" if backend == "rdzv" else ""
    start = time.time()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc-per-node=1",
                f"--rdzv-backend={backend}",
                f"--rdzv-endpoint=127.0.0.1:{port}",
                f"--rdzv-id={run_id}",
                "--local-addr=127.0.0.1",
                *([f"--rdzv-conf={conf}"] if conf else []),
                script,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(2)
    ]
    finished = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        if proc.returncode:
            raise RuntimeError(f"torchrun with {backend} failed ({proc.returncode})")
        finished.append(float(out.split()[0]))
    return max(finished) - start


def rendezvous_phase(backend: str) -> float:
    from torch.distributed.elastic.rendezvous import RendezvousParameters
    from torch.distributed.elastic.rendezvous.registry import get_rendezvous_handler

    port = free_port()
    run_id = uuid.uuid4().hex[:8]
    handlers: list[Any] = [None, None]
    done = []

    def node(index: int) -> None:
        is_host = index == 0
        config = {"is_host": "true" if is_host else "false"}
        if backend == "rdzv":
            config["last_call_timeout"] = "1"
        params = RendezvousParameters(
            backend, f"127.0.0.1:{port}", run_id, 2, 2, local_addr="127.0.0.1", **config
        )
        handler = get_rendezvous_handler(params)
        handlers[index] = handler
        handler.next_rendezvous()
        done.append(time.perf_counter())

    start = time.perf_counter()
    threads = [threading.Thread(target=node, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.05)  # the host first
    for t in threads:
        t.join(120)
    elapsed = max(done) - start
    for handler in reversed(handlers):  # the host last: it keeps the store up for the others
        handler.shutdown()
    return elapsed


def main() -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args, _ = parser.parse_known_args()
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(TRAIN)
    totals: dict[str, list[float]] = {"rdzv": [], "c10d": []}
    phases: dict[str, list[float]] = {"rdzv": [], "c10d": []}
    try:
        for _ in range(args.rounds):
            for backend in ("rdzv", "c10d"):
                totals[backend].append(torchrun_total(backend, f.name))
                phases[backend].append(rendezvous_phase(backend))
    finally:
        os.unlink(f.name)
    t = {b: statistics.median(v) for b, v in totals.items()}
    p = {b: statistics.median(v) for b, v in phases.items()}
    rows = [
        ["two-node torchrun to the first all_reduce", f"{t['rdzv']:.2f}", f"{t['c10d']:.2f}",
         f"{t['rdzv'] / t['c10d']:.2f}", "≤ 1.0"],
        ["rendezvous phase (2 handlers)", f"{p['rdzv'] * 1000:.0f} ms",
         f"{p['c10d'] * 1000:.0f} ms", f"{p['rdzv'] / p['c10d']:.2f}", "≤ 0.5"],
    ]  # fmt: skip
    text = (
        f"### torchrun: --rdzv-backend=rdzv vs c10d (median of {args.rounds} alternating rounds)\n\n"
        + table(["what", "rdzv (s)", "c10d (s)", "rdzv / c10d", "target"], rows)
    )
    print(text)
    return text


if __name__ == "__main__":
    main()
