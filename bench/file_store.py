"""file store latency and multi-process add throughput, side by side with torch's FileStore."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from common import median, table, time_op

OPS = ("set", "get", "add", "compare_set")

ADDER = """
import sys, time
kind, path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kind == "rdzv":
    from rdzv_plugin_file import FileStore
    store = FileStore(path)
else:
    import torch.distributed as dist
    store = dist.FileStore(path, -1)
print("ready", flush=True)
sys.stdin.readline()
for _ in range(count):
    store.add("n", 1)
"""


def stores(directory: str) -> dict[str, Any]:
    import torch.distributed as dist
    from rdzv_plugin_file import FileStore

    return {
        "rdzv": FileStore(os.path.join(directory, "rdzv.store")),
        "torch": dist.FileStore(os.path.join(directory, "torch.store"), -1),
    }


def latency(all_stores: dict[str, Any], rounds: int, count: int) -> dict[tuple[str, str], float]:
    ops = {}
    for name, store in all_stores.items():
        store.set("value", b"x" * 64)
        store.set("cas", b"same")
        ops[name] = {
            "set": lambda s=store: s.set("value", b"x" * 64),
            "get": lambda s=store: s.get("value"),
            "add": lambda s=store: s.add("counter", 1),
            "compare_set": lambda s=store: s.compare_set("cas", b"same", b"same"),
        }
    samples: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for op in OPS:
            for name in all_stores:
                samples.setdefault((name, op), []).extend(time_op(ops[name][op], count))
    return {k: median(v) for k, v in samples.items()}


def throughput(kind: str, directory: str, procs: int, count: int) -> tuple[float, int]:
    path = os.path.join(directory, f"{kind}-tput.store")
    children = [
        subprocess.Popen(
            [sys.executable, "-c", ADDER, kind, path, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(procs)
    ]
    for child in children:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    start = time.perf_counter()
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        child.wait()
    elapsed = time.perf_counter() - start
    if kind == "rdzv":
        from rdzv_plugin_file import FileStore

        final = int(FileStore(path).get("n"))
    else:
        import torch.distributed as dist

        final = int(dist.FileStore(path, -1).get("n"))
    return procs * count / elapsed, final


def wake_latency(directory: str, trials: int = 30) -> list[float]:
    """Milliseconds from a set to the return of a get blocked on that key in another store
    object (its own file descriptor and lock, as another process would have)."""
    import threading

    from rdzv_plugin_file import FileStore

    path = os.path.join(directory, "wake.store")
    writer, waiter = FileStore(path), FileStore(path)
    delays = []

    def wait_for(key: str, woke: list[float]) -> None:
        waiter.get(key)
        woke.append(time.perf_counter())

    for i in range(trials):
        woke: list[float] = []
        thread = threading.Thread(target=wait_for, args=(f"k{i}", woke))
        thread.start()
        time.sleep(0.05 + (i % 7) * 0.003)  # the waiter is in its back-off by now
        written = time.perf_counter()
        writer.set(f"k{i}", "v")
        thread.join()
        delays.append((woke[0] - written) * 1000)
    return delays


def main(rounds: int = 5, count: int = 1000, procs: int = 4, adds: int = 2000) -> str:
    with tempfile.TemporaryDirectory() as directory:
        result = latency(stores(directory), rounds, count)
        tput = {kind: throughput(kind, directory, procs, adds) for kind in ("rdzv", "torch")}
        delays = sorted(wake_latency(directory))
    rows = [
        [
            op,
            f"{result[('rdzv', op)]:.1f}",
            f"{result[('torch', op)]:.1f}",
            f"{result[('rdzv', op)] / result[('torch', op)]:.2f}",
        ]
        for op in OPS
    ]
    text = "### file store: median latency per operation, one process\n\n" + table(
        ["op", "rdzv µs", "torch µs", "rdzv/torch"], rows
    )
    text += f"\n\n### file store: add throughput, {procs} processes x {adds} adds\n\n" + table(
        ["store", "adds/s", "final count", "exact?"],
        [
            [k, f"{v[0]:.0f}", v[1], "yes" if v[1] == procs * adds else "NO"]
            for k, v in tput.items()
        ],
    )
    text += (
        f"\n\n### file store: a blocked get wakes after a write: median "
        f"{median(delays):.1f} ms, max {delays[-1]:.1f} ms ({len(delays)} trials)"
    )
    print(text)
    return text


if __name__ == "__main__":
    main()
