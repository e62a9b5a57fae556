"""Failover: how long a store call takes to succeed after the engine's leader dies, next to
the time the engine itself takes to replace it (measured in the same trial).

- etcd: a 3-member cluster (heartbeat 50 ms, election timeout 500 ms); the store is given
  every member. Each trial kills the leader with SIGKILL, then at once calls ``add``
  (which retries through the election) while another thread polls the members for the
  new leader.
- Redis: a master, a replica and 3 Sentinels (down-after 500 ms); the store follows the
  Sentinels' master. Each trial kills the master, calls ``add``, and polls the Sentinels
  for the promoted replica.

Times are from the kill. Median and worst of the trials, on quiet cores and again with the
cores busy (2 CPU-bound processes pinned to each core).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from common import busy_cores, table

TRIALS = 5


def _trial(
    kill: Callable[[], None], call: Callable[[], object], engine: Callable[[], None]
) -> tuple[float, float]:
    """(seconds until ``call`` returned, seconds until ``engine`` returned), both from the kill."""
    marks: dict[str, float] = {}

    def watch() -> None:
        engine()
        marks["engine"] = time.monotonic()

    kill()
    killed = time.monotonic()
    watcher = threading.Thread(target=watch)
    watcher.start()
    call()
    marks["call"] = time.monotonic()
    watcher.join(120)
    return marks["call"] - killed, marks["engine"] - killed


def etcd_trials() -> list[tuple[float, float]]:
    from rdzv_plugin_etcd import EtcdStore
    from rdzv_plugin_etcd.testing import start_etcd_cluster

    cluster = start_etcd_cluster(3)
    results = []
    try:
        first, *others = [("127.0.0.1", m.port) for m in cluster.members]
        store = EtcdStore(*first, members=others, prefix=f"/fo/{uuid.uuid4().hex[:6]}/")
        for _ in range(TRIALS):
            cluster.wait_healthy()
            store.add("n", 1)
            leader = cluster.leader()

            def new_leader(old: object = leader) -> None:
                while cluster.leader() is old:
                    time.sleep(0.01)

            results.append(_trial(leader.kill, lambda: store.add("n", 1), new_leader))
            leader.restart()
        store.close()
    finally:
        cluster.stop()
    return results


def redis_trials() -> list[tuple[float, float]]:
    from rdzv_plugin_redis import RedisStore
    from rdzv_plugin_redis.testing import start_sentinel_group

    group = start_sentinel_group()
    results = []
    try:
        store = RedisStore(
            prefix=f"fo/{uuid.uuid4().hex[:6]}/",
            sentinels=[("127.0.0.1", s.port) for s in group.sentinels],
            service=group.service,
            timeout=timedelta(seconds=60),
        )
        for _ in range(TRIALS):
            group.wait_replicated()
            store.add("n", 1)
            group.wait_replicated()
            master = group.master()

            def promoted(old: object = master) -> None:
                while group.master() is old:
                    time.sleep(0.01)

            results.append(_trial(master.kill, lambda: store.add("n", 1), promoted))
            new = group.master(agreed=True)
            master.restart("--replicaof", "127.0.0.1", str(new.port))
        store.close()
    finally:
        group.stop()
    return results


def main() -> str:
    rows = []
    for cores in ("quiet", "busy"):
        with busy_cores() if cores == "busy" else contextlib.nullcontext():
            measured = [
                ("etcd, 3 members, leader killed", etcd_trials(), "new leader elected"),
                ("Redis + 3 Sentinels, master killed", redis_trials(), "replica promoted"),
            ]
        for name, trials, engine in measured:
            calls = sorted(c for c, _ in trials)
            engines = sorted(e for _, e in trials)
            rows.append([name, cores, f"{calls[len(calls) // 2]:.2f} / {calls[-1]:.2f}",
                         f"{engines[len(engines) // 2]:.2f} / {engines[-1]:.2f} ({engine})"])  # fmt: skip
    text = f"### Failover: seconds from the kill, median / worst of {TRIALS} trials\n\n" + table(
        ["engine", "cores", "store call succeeds", "the engine's own failover"], rows
    )
    text += "\n\nbusy: 2 CPU-bound processes pinned to each core beside the servers and the client."
    print(text)
    return text


if __name__ == "__main__":
    main()
