"""etcd clusters: endpoint lists, a leader killed under a rendezvous (20 trials in a row),
and a cluster that lost its quorum."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from datetime import timedelta

import pytest
from rdzv_plugin_etcd import EtcdStore
from rdzv_plugin_etcd.plugin import parse_etcd_endpoints
from rdzv_plugin_etcd.testing import EtcdCluster, free_port

from rdzv_core import RendezvousParameters, StoreConnectionError, create_backend
from rdzv_core.rendezvous import create_handler

TRIALS = 20
NODES = 4


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("a:1,b:2,c", ("http", [("a", 1), ("b", 2), ("c", 2379)])),
        ("https://a:1, https://b:2", ("https", [("a", 1), ("b", 2)])),
        ("a:1,a:1,b:1", ("http", [("a", 1), ("b", 1)])),  # repeats count once
        ("[::1]:1,127.0.0.1:2", ("http", [("::1", 1), ("127.0.0.1", 2)])),
    ],
)
def test_endpoint_lists(endpoint: str, expected: tuple[str, list[tuple[str, int]]]) -> None:
    assert parse_etcd_endpoints(endpoint, None) == expected


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("a:1,b:x", "endpoint list 'a:1,b:x' has a bad member"),
        ("a:1,,b:2", "has an empty member"),
        ("a:1,", "has an empty member"),
        ("http://a:1,https://b:2", "mix http and https"),
        ("a:1,ftp://b:2", "has a bad member"),
    ],
)
def test_bad_endpoint_lists_name_the_member(endpoint: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_backend(RendezvousParameters("c10d", endpoint, "run", 1, 1, store_type="etcd"))


def test_a_dead_first_member_is_skipped(etcd_cluster: EtcdCluster) -> None:
    dead = f"127.0.0.1:{free_port()}"
    params = RendezvousParameters(
        "c10d", f"{dead},{etcd_cluster.endpoint}", "run-" + uuid.uuid4().hex[:6], 1, 1,
        store_type="etcd",
    )  # fmt: skip
    _, store = create_backend(params)
    store.set("k", "v")
    assert store.get("k") == b"v"
    store.close()


def _join(endpoint: str, run_id: str) -> tuple[int, int, float]:
    """One node's rendezvous in a worker process: (rank, world size, seconds taken)."""
    params = RendezvousParameters(
        "c10d", endpoint, run_id, NODES, NODES, store_type="etcd",
        keep_alive_interval="1", keep_alive_max_attempt="3", last_call_timeout="1",
        join_timeout="60",
    )  # fmt: skip
    started = time.monotonic()
    handler = create_handler(params)
    try:
        info = handler.next_rendezvous()
        return info.rank, info.world_size, time.monotonic() - started
    finally:
        handler.close()


def test_leader_killed_while_four_nodes_join_twenty_trials_in_a_row(
    etcd_cluster: EtcdCluster,
) -> None:
    """Each trial: four node processes join while the leader is killed; all four complete
    with ranks 0..3 within the election time plus a few seconds."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(NODES) as pool:
        pool.map(abs, range(NODES))  # the workers are up before the first trial
        for trial in range(TRIALS):
            etcd_cluster.wait_healthy()
            leader = etcd_cluster.leader()
            run_id = f"trial{trial}-{uuid.uuid4().hex[:6]}"
            pending = [
                pool.apply_async(_join, (etcd_cluster.endpoint, run_id)) for _ in range(NODES)
            ]
            time.sleep(0.05 * (trial % 4))  # kill at different points of the join
            leader.kill()
            killed = time.monotonic()
            results = [p.get(timeout=60) for p in pending]
            took = time.monotonic() - killed
            assert sorted(rank for rank, _, _ in results) == list(range(NODES)), (trial, results)
            assert {world for _, world, _ in results} == {NODES}
            assert took < etcd_cluster.election_ms / 1000 * 3 + 5, (trial, took)
            leader.restart()


def test_a_cluster_without_quorum_fails_every_call_within_the_read_timeout(
    etcd_cluster: EtcdCluster,
) -> None:
    (first, *others) = [("127.0.0.1", m.port) for m in etcd_cluster.members]
    store = EtcdStore(
        *first, members=others, prefix=f"/q/{uuid.uuid4().hex[:6]}/",
        timeout=timedelta(seconds=3),
    )  # fmt: skip
    store.set("k", "v")
    victims = etcd_cluster.members[:2]
    for member in victims:
        member.kill()
    try:
        for call in (
            lambda: store.get("k"),
            lambda: store.add("n", 1),
            lambda: store.set("k", "w"),
        ):
            started = time.monotonic()
            with pytest.raises(StoreConnectionError, match="did not answer within"):
                call()
            assert time.monotonic() - started < 3 + 3, "a call outlived its read timeout"
    finally:
        for member in victims:
            member.restart()
        etcd_cluster.wait_healthy()
        store.close()
