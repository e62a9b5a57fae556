"""Run every benchmark and write the tables to bench/results.md (see bench/README.md)."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.chdir(os.path.dirname(os.path.abspath(__file__)))

import etcd_latency  # noqa: E402
import failover  # noqa: E402
import file_store  # noqa: E402
import import_time  # noqa: E402
import observe  # noqa: E402
import policies  # noqa: E402
import redis_latency  # noqa: E402
import rendezvous  # noqa: E402
import scale  # noqa: E402
import soak  # noqa: E402
import store_load  # noqa: E402
import store_scale  # noqa: E402
import tcp_floor  # noqa: E402
import tcp_latency  # noqa: E402
import torch_view  # noqa: E402
import torchrun  # noqa: E402


def busy(report: Callable[[], str], *args: str) -> str:
    """``report`` run again with the cores busy (its ``--busy``)."""
    saved = sys.argv
    sys.argv = [saved[0], "--busy", *args]
    try:
        return report()
    finally:
        sys.argv = saved


def main() -> None:
    sys.argv = sys.argv[:1]
    parts = [
        f"# Benchmark results\n\n{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} "
        f"UTC, Python {platform.python_version()}, {os.cpu_count()} cores\n",
        import_time.main(),
        tcp_latency.main(),
        tcp_floor.main(),
        torch_view.main(),
        file_store.main(),
        etcd_latency.main(),
        redis_latency.main(),
        failover.main(),
        rendezvous.main(),
        scale.main(),
        busy(scale.main, "--sizes", "1024,4096"),
        policies.main(),
        busy(policies.main),
        observe.main(),
        store_scale.main(),
        busy(store_scale.main, "--no-floor"),
        store_load.main(),
        soak.main(),
        torchrun.main(),
    ]
    with open("results.md", "w") as f:
        f.write("\n\n".join(parts) + "\n")
    print("\nwrote bench/results.md")


if __name__ == "__main__":
    main()
