"""Run every benchmark and write the tables to bench/results.md (see bench/README.md)."""

from __future__ import annotations

import datetime
import os
import platform
import sys
import traceback
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
    sections: list[tuple[str, Callable[[], str]]] = [
        ("import_time", import_time.main),
        ("tcp_latency", tcp_latency.main),
        ("tcp_floor", tcp_floor.main),
        ("torch_view", torch_view.main),
        ("file_store", file_store.main),
        ("etcd_latency", etcd_latency.main),
        ("redis_latency", redis_latency.main),
        ("failover", failover.main),
        ("rendezvous", rendezvous.main),
        ("scale", scale.main),
        ("scale --busy", lambda: busy(scale.main, "--sizes", "1024,4096")),
        ("policies", policies.main),
        ("policies --busy", lambda: busy(policies.main)),
        ("observe", observe.main),
        ("store_scale", store_scale.main),
        ("store_scale --busy", lambda: busy(store_scale.main, "--no-floor")),
        ("store_load", store_load.main),
        ("soak", soak.main),
        ("torchrun", torchrun.main),
    ]
    parts = [
        f"# Benchmark results\n\n{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} "
        f"UTC, Python {platform.python_version()}, {os.cpu_count()} cores\n",
    ]
    failed = []
    for name, section in sections:
        # One benchmark that fails (or gives up at its deadline) is reported as such; the
        # others still run and the results are still written.
        try:
            parts.append(section())
        except Exception as e:
            traceback.print_exc()
            failed.append(name)
            parts.append(f"### {name}: FAILED ({type(e).__name__}: {e})")
    with open("results.md", "w") as f:
        f.write("\n\n".join(parts) + "\n")
    print("\nwrote bench/results.md")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
