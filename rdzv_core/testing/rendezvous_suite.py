"""RendezvousScenarios: the elastic rendezvous, end to end, with real node processes.

Opt in with the same two things as :class:`StoreTypeConformance` (``store_type`` and an
``endpoint`` fixture): each test opens the store in the test process (hosting it, for a
store type with a host) and starts nodes as child processes running
``python -m rdzv_core.rendezvous.demo node``, which print one JSON line per event.
Nodes heartbeat every second and count as lost after two silent seconds. For a store type
without a host, ``is_host`` is an option it ignores.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from ..backend import StoreBackend
from ..params import RendezvousParameters
from ..registry import create_store
from ..rendezvous.handler import RendezvousHandler
from ..rendezvous.inspect import read_run
from ..store import Store
from ._support import SuiteBase

__all__ = ["RendezvousScenarios"]

WAIT = 60.0
# For tests that need every node in round 0: process start-up on a busy machine can spread
# past the demo's 1 s last call, and a round of max_nodes completes without waiting for it.
EVERY_NODE = "last_call_timeout=30"


def wait_for_run(
    store: Store, run_id: str, what: str, ready: Callable[[dict[str, Any]], bool]
) -> None:
    """Until the state of ``run_id``, as ``rdzv state`` reads it from ``store``, is
    ``ready``; fails naming ``what`` after :data:`WAIT` seconds. A node process can take
    seconds to start on a busy machine: wait for what it does, never a fixed time."""
    deadline = time.monotonic() + WAIT
    while not ready(read_run(store, run_id)):
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {WAIT} s")
        time.sleep(0.05)


class _Node:
    def __init__(self, cluster: _Cluster, name: str, config: str = "") -> None:
        self.name = name
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.finished = False  # its output ended
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rdzv_core.rendezvous.demo",
                "node",
                cluster.endpoint,
                cluster.store_type,
                cluster.run_id,
                str(cluster.low),
                str(cluster.high),
                config,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None, "the node's stdout must be piped"
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.finished = True

    def next(self, kind: str, timeout: float = WAIT) -> dict[str, Any]:
        """The node's next event of ``kind`` (events of other kinds are skipped; an
        ``error`` event fails unless it is the kind asked for)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=0.5)
            except queue.Empty:
                exited = self.finished and self.events.empty()
                if not exited and time.monotonic() < deadline:
                    continue
                stderr = self.proc.stderr.read() if exited and self.proc.stderr else ""
                raise AssertionError(
                    f"{self.name}: no '{kind}' event "
                    f"({'it exited' if exited else f'in {timeout} s'}) {stderr}"
                ) from None
            if event["event"] == kind:
                return event
            if event["event"] == "error" and kind != "error":
                raise AssertionError(f"{self.name} failed: {event['error']}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


class _Cluster:
    def __init__(self, store_type: str, endpoint: str, low: int, high: int, host: bool) -> None:
        self.store_type = store_type
        self.endpoint = endpoint
        self.low, self.high = low, high
        self.run_id = f"scenario-{uuid.uuid4().hex[:8]}"
        params = RendezvousParameters(
            "c10d",
            endpoint,
            self.run_id,
            1,
            1,
            store_type=store_type,
            is_host="true" if host else "false",
        )
        self.store: Store = create_store(params)
        self.nodes: list[_Node] = []

    def start(self, count: int = 1, config: str = "") -> list[_Node]:
        new = [_Node(self, f"n{len(self.nodes) + i + 1}", config) for i in range(count)]
        self.nodes += new
        return new

    def wait_run(self, what: str, ready: Callable[[dict[str, Any]], bool]) -> None:
        """Until the run's state is ``ready`` (see :func:`wait_for_run`)."""
        wait_for_run(self.store, self.run_id, what, ready)

    def wait_joined(self, count: int) -> None:
        """Until ``count`` nodes hold a slot in the run's current round."""
        self.wait_run(f"{count} nodes joined", lambda run: run.get("joined", 0) >= count)

    def handler(self) -> RendezvousHandler:
        """An observer handler in the test process (it never joins)."""
        return RendezvousHandler(
            self.run_id, self.store, StoreBackend(self.store, self.run_id), self.low, self.high
        )

    def close(self) -> None:
        for node in self.nodes:
            if node.proc.poll() is None:
                node.proc.kill()
            node.proc.wait()
        self.store.close()


def _rounds(nodes: list[_Node]) -> list[dict[str, Any]]:
    return [node.next("round") for node in nodes]


def _settle(nodes: list[_Node], world: int) -> list[dict[str, Any]]:
    """Each node's first round of ``world`` nodes. On busy cores a node can start or rejoin
    after a round's last call: the others form a smaller round first, then let it in."""
    rounds = []
    for node in nodes:
        while (event := node.next("round"))["world"] != world:
            pass
        rounds.append(event)
    return rounds


class RendezvousScenarios(SuiteBase):
    """Elastic scenarios over one store type, with real processes."""

    store_type: ClassVar[str]

    @pytest.fixture
    def cluster(self, endpoint: str) -> Iterator[Any]:
        made: list[_Cluster] = []

        def make(low: int, high: int, host: bool = True) -> _Cluster:
            made.append(_Cluster(self.store_type, endpoint, low, high, host))
            return made[-1]

        yield make
        for cluster in made:
            cluster.close()

    def test_nodes_join_and_get_deterministic_ranks(self, cluster: Any) -> None:
        c = cluster(2, 4)
        rounds = _rounds(c.start(4, EVERY_NODE))
        assert sorted(r["rank"] for r in rounds) == [0, 1, 2, 3], (
            "four nodes must get ranks 0..3, once each"
        )
        agreed = {(r["round"], r["world"], r["master"]) for r in rounds}
        assert agreed == {(0, 4, rounds[0]["master"])}, "the nodes disagree on round 0"
        pids = [r["pid"] for r in sorted(rounds, key=lambda r: r["rank"])]
        assert pids == sorted(pids), "ranks must follow the sorted node descriptors"

    def test_killed_node_is_reported_and_survivors_re_rendezvous(self, cluster: Any) -> None:
        c = cluster(2, 4)
        nodes = c.start(4)
        rounds = _settle(nodes, 4)
        assert len({r["round"] for r in rounds}) == 1, "the four nodes must share a round"
        victim = nodes[[r["rank"] for r in rounds].index(2)]
        survivors = [n for n in nodes if n is not victim]
        start = time.monotonic()
        victim.kill()
        changes = [n.next("change") for n in survivors]
        assert time.monotonic() - start < 10, "the step must happen within 10 s"
        assert all(len(ch["lost"]) == 1 for ch in changes), (
            "every survivor must name exactly one lost node"
        )
        after = _settle(survivors, 3)
        assert len({r["round"] for r in after}) == 1 and after[0]["round"] > rounds[0]["round"], (
            "the survivors must form a later round of 3 nodes together"
        )
        assert sorted(r["rank"] for r in after) == [0, 1, 2], (
            "the survivors must get ranks 0..2, once each"
        )

    def test_late_joiner_is_waiting_then_included_with_bootstrap_info(self, cluster: Any) -> None:
        c = cluster(2, 4)
        first = c.start(2)
        _rounds(first)
        (late,) = c.start(1)
        assert [n.next("change")["waiting"] for n in first] == [1, 1], (
            "both participants must see one node waiting"
        )
        rounds = _settle([*first, late], 3)
        assert len({r["round"] for r in rounds}) == 1 and rounds[0]["round"] >= 1, (
            "a later round must include the late joiner (3 nodes)"
        )
        masters = {r["master"] for r in rounds}
        assert len(masters) == 1 and masters.pop().rsplit(":", 1)[1].isdigit(), (
            "every node, the late joiner included, must get one bootstrap address"
        )

    def test_surplus_node_stands_by_and_exits_gracefully_on_close(self, cluster: Any) -> None:
        c = cluster(2, 2)
        rounds = _rounds(c.start(2))
        assert {r["world"] for r in rounds} == {2}, "the first round must have max_nodes (2) nodes"
        (surplus,) = c.start(1)
        c.wait_run("the surplus node standing by", lambda run: bool(run.get("spares")))
        time.sleep(1.0)  # time it would take to force a restart, were it to
        observer = c.handler()
        assert observer.num_nodes_waiting() == 0, "a surplus node must not force a restart"
        observer.set_closed()
        for node in c.nodes:
            node.next("closed")
            assert node.proc.wait(WAIT) == 0, "every node must exit 0 once the run is closed"
        assert surplus.proc.returncode == 0, (
            "a surplus node must exit gracefully (0) when the run closes"
        )

    def test_close_ends_the_run_for_everyone_and_refuses_newcomers(self, cluster: Any) -> None:
        c = cluster(3, 3)
        waiting = c.start(2)  # one short of min: they wait
        time.sleep(0.5)
        c.handler().set_closed()
        for node in waiting:
            node.next("closed")
        (newcomer,) = c.start(1)
        newcomer.next("closed")
        assert all(n.proc.wait(WAIT) == 0 for n in c.nodes), (
            "every node, the newcomer included, must exit 0 after the close"
        )

    def test_join_timeout_is_a_clear_error(self, cluster: Any) -> None:
        c = cluster(2, 2)
        (alone,) = c.start(1, "join_timeout=1")
        start = time.monotonic()
        error = alone.next("error")["error"]
        assert error.startswith("RendezvousTimeoutError") and "join timeout" in error, (
            "a lone node must fail with a RendezvousTimeoutError naming the join timeout"
        )
        assert "1 of at least 2 nodes" in error, (
            "the timeout message must say how many nodes joined of how many needed"
        )
        assert time.monotonic() - start < 10, "the step must happen within 10 s"
