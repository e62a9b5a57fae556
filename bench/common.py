"""Helpers shared by the benchmarks: pinning, child servers, timing, tables."""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence

CPUS = sorted(os.sched_getaffinity(0))
SERVER_CPU = {CPUS[0]}
CLIENT_CPU = {CPUS[-1]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port}")


def spawn(code: str, *args: str, cpus: set[int] | None = SERVER_CPU) -> subprocess.Popen[bytes]:
    """A child Python running ``code``, pinned to ``cpus``."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args])
    if cpus:
        os.sched_setaffinity(proc.pid, cpus)
    return proc


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB (0 once it is a zombie)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(*pids: int) -> float:
    """User plus system CPU time of the processes ``pids``, added up."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def busy_cores(per_core: int = 2) -> Iterator[None]:
    """The cores kept busy while the block runs, as on a training node: ``per_core``
    CPU-bound processes pinned to each core (data loaders, the ranks' Python threads)."""
    procs = []
    for i in range(per_core * len(CPUS)):
        proc = subprocess.Popen([sys.executable, "-c", "while True:\n    pass"])
        os.sched_setaffinity(proc.pid, {CPUS[i % len(CPUS)]})
        procs.append(proc)
    time.sleep(0.5)  # let them start spinning
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def time_op(op: Callable[[], object], count: int) -> list[float]:
    """``count`` timings of ``op`` in microseconds."""
    samples = []
    clock = time.perf_counter_ns
    for _ in range(count):
        start = clock()
        op()
        samples.append((clock() - start) / 1000)
    return samples


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def variant_rows(
    times: dict[str, list[float]], cpu: dict[str, list[float]], base: str
) -> list[list[str]]:
    """Table rows of rendezvous variants: median seconds, each run, the ratio to ``base``,
    median CPU seconds and the CPU ratio."""
    wall, spent = median(times[base]), median(cpu[base])
    return [
        [
            name,
            f"{median(t):.2f}",
            " / ".join(f"{x:.2f}" for x in t),
            f"{median(t) / wall:.2f}",
            f"{median(cpu[name]):.1f}",
            f"{median(cpu[name]) / spent:.2f}",
        ]
        for name, t in times.items()
    ]
