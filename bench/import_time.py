"""Startup cost: a fresh process that imports rdzv_core and lists the store types, next to
one that imports torch's rendezvous module, and a bare interpreter."""

from __future__ import annotations

import subprocess
import sys
import time

from common import median, table

CASES = {
    "python -c pass": "pass",
    "import rdzv_core + store_types()": "import rdzv_core; rdzv_core.store_types()",
    "import torch.distributed.elastic.rendezvous": "import torch.distributed.elastic.rendezvous",
}


def wall(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return (time.perf_counter() - start) * 1000


def main(runs: int = 15) -> str:
    samples: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(runs):
        for name, code in CASES.items():  # interleaved
            samples[name].append(wall(code))
    base = median(samples["python -c pass"])
    rows = [[name, f"{median(v):.0f}", f"{median(v) - base:.0f}"] for name, v in samples.items()]
    text = f"### Startup: fresh process, median of {runs} runs\n\n" + table(
        ["command", "wall ms", "over bare python ms"], rows
    )
    print(text)
    return text


if __name__ == "__main__":
    main()
