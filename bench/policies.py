"""What the rendezvous policies cost: a 4,096-node rendezvous (`scale.py`'s layout) with
the code before policies existed (rdzv 0.2, a git worktree of it on PYTHONPATH), with this
code's default policies, with attributes + topology or sticky ranks + rank 0 pinned + a
plugin's health check that passes at once, and with segment=4 + sticky ranks + that health
check; interleaved, median of 3 (``--repeat``), quiet or with the cores busy (``--busy``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import busy_cores, table, variant_rows
from scale import run

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "be9c95b"  # the last commit before the policies


def worktree(commit: str) -> str:
    """A checkout of ``commit`` (made once) whose rdzv_core and tcp plugin can shadow this
    tree's through PYTHONPATH."""
    path = Path(tempfile.gettempdir()) / f"rdzv-bench-{commit}"
    if not path.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit],
                       check=True, capture_output=True)  # fmt: skip
    return f"{path}:{path / 'plugins' / 'tcp'}"


def main() -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--busy", action="store_true", help="2 CPU-bound processes pinned to each core meanwhile"
    )
    args, _ = parser.parse_known_args()
    before = {**os.environ, "PYTHONPATH": worktree(BEFORE)}
    policies = {
        "node_attrs": "rack=r1;nvl_domain=A",
        "rank_order": "topology",
        "rank_key": "rack",
        "rank0": "rack=r1",
    }
    sticky = {**policies, "rank_order": "sticky"}
    del sticky["rank_key"]
    segments = {**sticky, "segment": "4", "segment_key": "nvl_domain"}
    del segments["rank0"]
    variants = {
        "before policies (0.2 code)": ((), before),
        "default policies": ((), None),
        "attributes, topology, rank0, health hook": ((json.dumps(policies), "health-hook"), None),
        "attributes, sticky, rank0, health hook": ((json.dumps(sticky), "health-hook"), None),
        "segment=4, sticky, health hook": ((json.dumps(segments), "health-hook"), None),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    with busy_cores() if args.busy else contextlib.nullcontext():
        for attempt in range(args.repeat):
            for name, (extra, env) in variants.items():
                result = run(args.nodes, 128, 0, 0.05, extra, env)
                times[name].append(result["seconds"])
                cpu[name].append(result["cpu"])
                print(f"{name} run {attempt + 1}: {result['seconds']:.2f} s, "
                      f"{result['cpu']:.1f} CPU s", file=sys.stderr)  # fmt: skip
    rows = variant_rows(times, cpu, "before policies (0.2 code)")
    header = ["variant", "seconds", "each run", "ratio to 0.2", "CPU s", "CPU ratio"]
    text = (
        f"### Policies{' on busy cores' if args.busy else ''}: a {args.nodes:,}-node "
        "rendezvous (scale.py's layout), median of "
        f"{args.repeat}; CPU: the server's and the nodes' during the rendezvous\n\n"
        + table(header, rows)
    )
    print(text)
    return text


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
