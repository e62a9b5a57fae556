"""Redis failures the store must survive or report: Sentinel and Cluster endpoints, a
master restarted empty, a failover that lost writes, connections killed mid-command."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from rdzv_plugin_redis import RedisStore
from rdzv_plugin_redis.plugin import client_options
from rdzv_plugin_redis.testing import RedisServer, SentinelGroup, start_redis_cluster
from redis_helpers import connections_killed, open_store, rejoin, sentinel_factory

from rdzv_core import (
    RendezvousParameters,
    StoreConnectionError,
    StoreDataLostError,
    StoreTimeoutError,
    create_backend,
)


def params(endpoint: str, **config: str) -> RendezvousParameters:
    return RendezvousParameters("c10d", endpoint, "run", 1, 1, store_type="redis", **config)


# -- endpoints -------------------------------------------------------------------------------


def test_sentinel_and_cluster_endpoints(tmp_path: object) -> None:
    options = client_options(params("redis+sentinel://s0,s1:5000/mymaster/2"))
    assert options["sentinels"] == [("s0", 26379), ("s1", 5000)]
    assert (options["service"], options["db"]) == ("mymaster", 2)
    assert "ssl" not in options["sentinel_options"]
    secure = client_options(params("rediss+sentinel://s0/m", sentinel_username="watch"))
    assert secure["ssl"] is True and secure["sentinel_options"]["ssl"] is True
    assert secure["sentinel_options"]["username"] == "watch"
    cluster = client_options(params("redis+cluster://c0:7000, c1:7001,c0:7000"))
    assert cluster["cluster_nodes"] == [("c0", 7000), ("c1", 7001)]


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("redis+sentinel://s0:26379", "must name the service"),
        ("redis+sentinel://s0,,s1/m", "has an empty Sentinel"),
        ("redis+sentinel://s0:x/m", "has a bad Sentinel"),
        ("redis+sentinel://s0/m/zero", "must be a number"),
        ("redis+sentinel://user:pw@s0/m", "never in the endpoint"),
        ("redis+cluster://c0:7000,c1:99999", "has a bad cluster node"),
        ("redis+cluster://c0:7000/1", "has only database 0"),
    ],
)
def test_bad_sentinel_and_cluster_endpoints_say_what_is_wrong(endpoint: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_backend(params(endpoint))


def test_a_service_no_sentinel_watches_is_named(sentinel_group: SentinelGroup) -> None:
    hosts = ",".join(s.endpoint for s in sentinel_group.sentinels)
    started = time.monotonic()
    with pytest.raises(ValueError) as info:
        create_backend(params(f"redis+sentinel://{hosts}/nosuch"))
    assert "monitors a service named 'nosuch'" in str(info.value)
    assert sentinel_group.service in str(info.value), "the error lists the services there are"
    assert time.monotonic() - started < 5, "a typo must not wait out the read timeout"


def test_a_cluster_without_the_runs_slot_is_a_clear_error() -> None:
    cluster = start_redis_cluster(1, assign_slots=False)
    try:
        node = cluster.nodes[0].redis()
        node.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "99")
        prefix = next(
            p for p in (f"p{i}/" for i in range(1000)) if node.cluster("keyslot", f"{{{p}}}x") > 99
        )
        with pytest.raises(Exception) as info:
            RedisStore(
                prefix=prefix, cluster_nodes=[("127.0.0.1", cluster.nodes[0].port)],
                timeout=timedelta(seconds=3),
            )  # fmt: skip
        assert "serves no node for hash slot" in str(info.value), info.value
        assert prefix in str(info.value)
    finally:
        cluster.stop()


# -- data loss -------------------------------------------------------------------------------


def test_a_master_restarted_empty_is_data_loss_for_every_client(own_redis: RedisServer) -> None:
    first = open_store(own_redis.port, "lost/")
    second = open_store(own_redis.port, "lost/")
    first.add("n", 5)
    second.set("k", "v")
    own_redis.restart()
    for store, call in ((first, lambda s: s.add("n", 1)), (second, lambda s: s.get("k"))):
        with pytest.raises(StoreDataLostError, match="epoch key is gone"):
            call(store)
        with pytest.raises(StoreDataLostError):  # for good: no call starts afresh
            store.check(["k"])


def test_a_master_restarted_empty_under_a_live_run_fails_every_node(
    own_redis: RedisServer,
) -> None:
    """Every node fails with the data-loss error within its read timeout; none re-joins a
    round 0 of a run it had completed."""
    from rdzv_core.testing.rendezvous_suite import _Cluster

    cluster = _Cluster("redis", own_redis.endpoint, 2, 2, host=False)
    try:
        nodes = cluster.start(2, "read_timeout=5")
        assert {r["round"] for r in (n.next("round") for n in nodes)} == {0}
        own_redis.restart()
        started = time.monotonic()
        for node in nodes:
            error = node.next("error", timeout=30)["error"]
            assert error.startswith("RendezvousConnectionError"), error
            assert "StoreDataLostError" in error and "lost the data" in error, error
            assert node.proc.wait(10) == 1
        assert time.monotonic() - started < 5 + 3
    finally:
        cluster.close()


@contextmanager
def replica_frozen(group: SentinelGroup) -> Iterator[RedisServer]:
    """The master, with its replica stopped (SIGSTOP) until the block ends."""
    master = group.master()
    (replica,) = [s for s in group.servers if s is not master]
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        yield master
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)


def test_a_failover_that_lost_writes_is_detected(sentinel_group: SentinelGroup) -> None:
    """The replica misses the latest writes, then the master dies: the promoted replica is
    behind what the client saw, and the client says so. (The replica is frozen while 48 MB
    of writes pass: more than the sockets between them hold, so the last writes are still
    in the master's buffers when it dies.)"""
    sentinel_group.wait_replicated()
    store = sentinel_factory(sentinel_group)()
    store.add("n", 1)
    time.sleep(0.2)  # replicated
    with replica_frozen(sentinel_group) as master:
        for i in range(6):
            store.set(f"big{i}", b"x" * (8 << 20))
        for _ in range(10):
            store.add("n", 1)  # acknowledged by the master alone
        master.kill()
    try:
        with pytest.raises(StoreDataLostError, match="write count went back"):
            store.add("n", 1)
    finally:
        store.close()
        rejoin(sentinel_group, master)
        sentinel_group.wait_replicated(60)


def test_a_single_lost_write_is_detected_by_the_next_write(
    sentinel_group: SentinelGroup,
) -> None:
    """One add acknowledged by the master alone is lost in the failover: the next write (a
    set, resent through the failover as it is) comes back with the count this client
    already saw, not below it, and that is data loss too. (The 48 MB that keep the add in
    the master's buffers are written by another client, outside the store's count.)"""
    sentinel_group.wait_replicated()
    store = sentinel_factory(sentinel_group)()
    store.add("n", 1)
    time.sleep(0.2)  # replicated
    with replica_frozen(sentinel_group) as master:
        filler = master.redis()
        for i in range(6):
            filler.set(f"filler/{uuid.uuid4().hex}/{i}", b"x" * (8 << 20))
        assert store.add("n", 1) == 2  # acknowledged by the master alone
        master.kill()
    try:
        with pytest.raises(StoreDataLostError, match="answered 2 to a write after this client"):
            store.set("k", "v")
    finally:
        store.close()
        rejoin(sentinel_group, master)
        sentinel_group.wait_replicated(60)


def test_with_sync_replicas_a_write_returns_only_once_a_replica_holds_it(
    sentinel_group: SentinelGroup,
) -> None:
    """The replica is frozen: an add runs on the master but is not acknowledged (the master
    could be cut off from its replicas and lose it). It returns once the replica holds it,
    applied once."""
    sentinel_group.wait_replicated()
    store = sentinel_factory(sentinel_group, sync_replicas=1)()
    returned: list[int] = []
    adder = threading.Thread(target=lambda: returned.append(store.add("n", 1)))
    with replica_frozen(sentinel_group):
        adder.start()
        adder.join(3.0)
        assert adder.is_alive(), "the add returned while no replica held it"
    adder.join(30)
    try:
        assert returned == [1]
        assert store.add("n", 0) == 1, "the add was applied more than once"
    finally:
        store.close()
        sentinel_group.wait_replicated(60)


def test_with_sync_replicas_a_write_no_replica_confirms_fails_in_the_timeout(
    sentinel_group: SentinelGroup,
) -> None:
    sentinel_group.wait_replicated()
    store = sentinel_factory(sentinel_group, sync_replicas=1, timeout=timedelta(seconds=3))()
    try:
        with replica_frozen(sentinel_group):
            started = time.monotonic()
            with pytest.raises(
                StoreConnectionError, match="did not get a write to 1 replicas"
            ) as e:
                store.set("k", "v")
            assert "reached 0 of the 1 replicas asked for" in str(e.value)
            assert time.monotonic() - started < 3 + 2
    finally:
        store.close()
        sentinel_group.wait_replicated(60)


def test_a_master_refusing_writes_for_want_of_replicas_is_retried(
    own_redis: RedisServer,
) -> None:
    """min-replicas-to-write with no replica: Redis answers NOREPLICAS, which a failover
    cures; the add waits it out and applies once."""
    admin = own_redis.redis()
    store = open_store(own_redis.port, f"norep/{uuid.uuid4().hex[:6]}/")
    admin.config_set("min-replicas-to-write", 1)
    returned: list[int] = []
    adder = threading.Thread(target=lambda: returned.append(store.add("n", 1)))
    try:
        adder.start()
        adder.join(1.5)
        assert adder.is_alive(), f"the add did not wait for the master to take writes: {returned}"
        admin.config_set("min-replicas-to-write", 0)
        adder.join(30)
        assert returned == [1]
        assert store.add("n", 0) == 1
    finally:
        admin.config_set("min-replicas-to-write", 0)
        store.close()


# -- retries that apply once -----------------------------------------------------------------


def test_adds_through_killed_connections_apply_exactly_once(redis_server: RedisServer) -> None:
    """Connections are killed server-side while four threads add: some replies are lost
    after the script ran, and the retries must neither lose nor repeat an add."""
    prefix = f"once/{uuid.uuid4().hex[:6]}/"
    stores = [open_store(redis_server.port, prefix) for _ in range(4)]
    results: list[list[int]] = [[] for _ in stores]

    def adder(i: int) -> None:
        results[i] = [stores[i].add("n", 1) for _ in range(300)]

    workers = [threading.Thread(target=adder, args=(i,)) for i in range(4)]
    with connections_killed(redis_server):
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
    returned = sorted(v for r in results for v in r)
    assert returned == list(range(1, 1201)), "an add was lost, repeated or misreported"
    assert stores[0].add("n", 0) == 1200


def test_queue_pushes_pops_and_appends_through_killed_connections_apply_once(
    redis_server: RedisServer,
) -> None:
    """As above, for the queue and append: two threads push, two pop, one appends while
    connections are killed; every item is popped exactly once and no append repeats."""
    prefix = f"once/{uuid.uuid4().hex[:6]}/"
    stores = [open_store(redis_server.port, prefix) for _ in range(5)]
    popped: list[list[bytes]] = [[], []]

    def pusher(i: int) -> None:
        for n in range(150):
            stores[i].queue_push("q", f"{i}:{n}")

    def popper(i: int) -> None:
        while len(popped[0]) + len(popped[1]) < 300:
            try:
                popped[i].append(stores[2 + i].queue_pop("q", timeout=1))
            except StoreTimeoutError:
                continue

    def appender() -> None:
        for _ in range(200):
            stores[4].append("log", "x")

    workers = [threading.Thread(target=pusher, args=(i,)) for i in range(2)]
    workers += [threading.Thread(target=popper, args=(i,)) for i in range(2)]
    workers.append(threading.Thread(target=appender))
    with connections_killed(redis_server):
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
    items = sorted(x for part in popped for x in part)
    assert items == sorted(f"{i}:{n}".encode() for i in range(2) for n in range(150)), (
        "an item was lost or popped twice"
    )
    for part in popped:  # each pusher's items arrive in its order
        for i in range(2):
            mine = [int(x.split(b":")[1]) for x in part if x.startswith(f"{i}:".encode())]
            assert mine == sorted(mine)
    assert stores[0].queue_len("q") == 0
    assert stores[0].get("log") == b"x" * 200, "an append was lost or repeated"
