"""Rendezvous policies: node attributes, the rank order and the restart budget, as pure
decisions, with handlers in threads over the reference store, and with node processes."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rdzv_core import (
    RendezvousParameters,
    RendezvousRestartLimitError,
    RendezvousStateError,
    StoreBackend,
    hookimpl,
    register,
    unregister,
)
from rdzv_core.rendezvous import HandlerSettings, RendezvousHandler
from rdzv_core.rendezvous.demo import DEMO_CONFIG
from rdzv_core.rendezvous.inspect import describe_run, read_run
from rdzv_core.rendezvous.policy import Candidate, RankPolicy, node_attributes, parse_attributes
from rdzv_core.testing import MemoryStore

FAST = HandlerSettings(
    join_timeout=timedelta(seconds=20),
    last_call_timeout=timedelta(seconds=1),
    keep_alive_interval=timedelta(seconds=0.5),
    keep_alive_max_attempt=4,
)


def params(**config: str) -> RendezvousParameters:
    return RendezvousParameters("c10d", "unused", "run", 1, 1, **config)


# -- attributes ------------------------------------------------------------------------------


def test_attributes_parse_with_either_separator() -> None:
    assert parse_attributes("rack=r7;nvl_domain=A, switch = s1", "RDZV_NODE_ATTRS") == {
        "rack": "r7",
        "nvl_domain": "A",
        "switch": "s1",
    }
    assert parse_attributes("", "x") == {} and parse_attributes(" ; ", "x") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rack", "'rack' is not a key=value pair; expected key=value pairs separated by"),
        ("rack=", "'rack=' is not a key=value pair"),
        ("ra ck=1", "'ra ck=1' is not a key=value pair"),
        ("host=me", "the attribute 'host' is reserved"),
        ("k=" + "v" * 300, "at most 256 characters"),
        ("k=a\tb", "must be printable"),
        (";".join(f"k{i}=v" for i in range(65)), "65 attributes, more than 64"),
    ],
)
def test_malformed_attributes_say_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="RDZV_NODE_ATTRS: ") as caught:
        parse_attributes(text, "RDZV_NODE_ATTRS")
    assert message in str(caught.value)


def test_attribute_sources_override_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hooks first, then RDZV_NODE_ATTRS, then the node_attrs config key."""
    monkeypatch.setenv("RDZV_NODE_ATTRS", "rack=env;zone=env")
    declared = [{"rack": "hook", "gpu": "h100"}, None]
    found = node_attributes(params(node_attrs="zone=config"), declared)
    assert found == {"rack": "env", "gpu": "h100", "zone": "config"}


def test_a_plugin_declares_attributes_through_the_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RDZV_NODE_ATTRS", raising=False)

    class Declares:
        @hookimpl
        def rdzv_node_attributes(self, params: RendezvousParameters) -> dict[str, str]:
            return {"rack": f"from-{params.run_id}"}

    plugin = Declares()
    register(plugin)
    try:
        from rdzv_core.registry import default_registry

        declared = default_registry().node_attributes(params())
        assert node_attributes(params(), declared) == {"rack": "from-run"}
    finally:
        unregister(plugin)


# -- the rank policy ---------------------------------------------------------------------------


def candidates(*attrs: dict[str, str], previous: list[int | None] | None = None) -> list[Candidate]:
    return [
        Candidate(f"n{i}", a, i, previous[i] if previous else None) for i, a in enumerate(attrs)
    ]


def test_sorted_is_the_default_order() -> None:
    policy = RankPolicy.from_params(params())
    assert policy == RankPolicy() and policy.describe() == "rank_order=sorted"
    assert policy.ranks(candidates({}, {}, {})) == [0, 1, 2]


def test_topology_keeps_each_groups_ranks_contiguous_whatever_the_join_order() -> None:
    domains = ["B", "A", "B", None, "A", "B", "A", "B"]
    attrs = [{"nvl": d} if d else {} for d in domains]
    policy = RankPolicy(order="topology", key="nvl")
    order = policy.ranks(candidates(*attrs))
    assert [domains[i] for i in order] == ["A", "A", "A", "B", "B", "B", "B", None]
    assert order == [1, 4, 6, 0, 2, 5, 7, 3], "within a group, the default order"


def test_sticky_keeps_the_survivors_ranks_and_fills_the_holes() -> None:
    """Ranks 0, 1, 3 survive; rank 2 died; a newcomer and a survivor whose rank is gone
    (the world shrank) fill what is free, in the default order."""
    previous: list[int | None] = [3, None, 0, 1]
    order = RankPolicy(order="sticky").ranks(candidates({}, {}, {}, {}, previous=previous))
    assert order == [2, 3, 1, 0]
    shrunk = RankPolicy(order="sticky").ranks(candidates({}, {}, previous=[4, 1]))
    assert shrunk == [0, 1]


def test_rank0_is_pinned_to_the_selected_node() -> None:
    policy = RankPolicy.from_params(params(rank0="rack=r2"))
    assert policy.rank0 == ("rack", "r2")
    assert policy.ranks(candidates({"rack": "r1"}, {"rack": "r1"}, {"rack": "r2"})) == [2, 0, 1]
    assert RankPolicy.from_params(params(rank0="node7")).rank0 == ("host", "node7")
    assert policy.ranks(candidates({"rack": "r1"}, {})) == [0, 1], "no such node: no move"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"rank_order": "random"}, "rank_order must be one of sorted, sticky, topology"),
        ({"rank_order": "topology"}, "rank_key (the attribute to keep ranks contiguous by)"),
        ({"rank_key": "rack"}, "goes with rank_order=topology, and only with it"),
        ({"rank0": "=x"}, "rank0 must be attribute=value (rank0=rack=r7) or a host name"),
        ({"max_restarts": "-1"}, "max_restarts must be 0 or more, got -1"),
        ({"max_restarts": "many"}, "max_restarts"),
    ],
)
def test_bad_policy_options_name_what_is_accepted(config: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        RankPolicy.from_params(params(**config))
    assert message in str(caught.value)


# -- handlers in threads -----------------------------------------------------------------------


@pytest.fixture
def make() -> Iterator[Callable[..., RendezvousHandler]]:
    base = MemoryStore(timeout=timedelta(seconds=10))
    made: list[RendezvousHandler] = []

    def make_handler(
        low: int, high: int, policy: RankPolicy | None = None, **attributes: str
    ) -> RendezvousHandler:
        client = base.client()
        handler = RendezvousHandler(
            "run", client, StoreBackend(client, "run"), low, high, "10.0.0.1", FAST,
            policy=policy, attributes=attributes,
        )  # fmt: skip
        made.append(handler)
        return handler

    make_handler.base = base  # type: ignore[attr-defined]
    yield make_handler
    for handler in made:
        handler.close()


def rendezvous(handlers: list[RendezvousHandler]) -> dict[RendezvousHandler, int]:
    """Every handler's rank in the round they all join (in threads)."""
    ranks: dict[RendezvousHandler, int] = {}
    errors: list[BaseException] = []

    def join(handler: RendezvousHandler) -> None:
        try:
            ranks[handler] = handler.next_rendezvous().rank
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=join, args=(h,)) for h in handlers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return ranks


def test_attributes_travel_in_the_slot_record_and_show_in_state(make: Any) -> None:
    nodes = [make(2, 2, rack=f"r{i}") for i in range(2)]
    rendezvous(nodes)
    run = read_run(make.base, "run")
    assert [m["attributes"] for m in run["members"]] == [
        {"host": "10.0.0.1", "rack": "r0"},
        {"host": "10.0.0.1", "rack": "r1"},
    ]
    assert run["policy"] == "rank_order=sorted" and run["restarts"] == 0
    shown = describe_run(run)
    assert "[rack=r0]" in shown and "policy rank_order=sorted; 0 restart(s)" in shown


def test_topology_ranks_with_handlers(make: Any) -> None:
    policy = RankPolicy(order="topology", key="nvl")
    domains = ["B", "A", "B", "A"]
    nodes = [make(4, 4, policy, nvl=d) for d in domains]
    ranks = rendezvous(nodes)
    by_rank = sorted(nodes, key=lambda h: ranks[h])
    assert [domains[nodes.index(h)] for h in by_rank] == ["A", "A", "B", "B"]


def test_rank0_pinned_with_handlers(make: Any) -> None:
    policy = RankPolicy(rank0=("role", "lead"))
    nodes = [make(3, 3, policy, role="worker"), make(3, 3, policy, role="worker")]
    nodes.append(make(3, 3, policy, role="lead"))
    assert rendezvous(nodes)[nodes[2]] == 0


def test_sticky_survivors_keep_their_ranks_and_a_newcomer_fills_the_hole(make: Any) -> None:
    policy = RankPolicy(order="sticky")
    nodes = [make(3, 4, policy) for _ in range(4)]
    first = rendezvous(nodes)
    assert sorted(first.values()) == [0, 1, 2, 3]
    dead = next(h for h in nodes if first[h] == 2)
    dead.close()  # its heartbeat stands still: the others see it lost
    survivors = [h for h in nodes if h is not dead]
    deadline = time.monotonic() + 15
    while not all(h.num_nodes_waiting() for h in survivors):
        assert time.monotonic() < deadline, "the lost node was never reported"
        time.sleep(0.1)
    newcomer = make(3, 4, policy)
    second = rendezvous([*survivors, newcomer])
    assert {first[h]: second[h] for h in survivors} == {0: 0, 1: 1, 3: 3}
    assert second[newcomer] == 2


def test_nodes_with_another_policy_are_refused(make: Any) -> None:
    first = make(1, 2, RankPolicy(order="sticky"))
    other = make(1, 2, RankPolicy())
    rendezvous([first])
    with pytest.raises(RendezvousStateError) as caught:
        other.next_rendezvous()
    assert "(rank_order=sorted) differs from the one of run 'run' (rank_order=sticky)" in str(
        caught.value
    )


def test_the_restart_budget_closes_the_run_for_every_node(make: Any) -> None:
    """max_restarts=1: the first loss is a restart, the second closes the run; every node
    gets RendezvousRestartLimitError, and the count lives in the store."""
    policy = RankPolicy(max_restarts=1)
    nodes = [make(1, 3, policy) for _ in range(3)]
    rendezvous(nodes)
    for lost in range(2):
        nodes.pop().close()
        deadline = time.monotonic() + 15
        while not all(h.num_nodes_waiting() or h.is_closed() for h in nodes):
            assert time.monotonic() < deadline, "the lost node was never reported"
            time.sleep(0.1)
        if lost == 0:
            rendezvous(nodes)
    for node in nodes:
        with pytest.raises(RendezvousRestartLimitError, match="more than max_restarts=1"):
            node.next_rendezvous()
    run = read_run(make.base, "run")
    assert run["restarts"] == 2 and "more than max_restarts=1" in run["closed_reason"]
    late = make(1, 3, policy)
    with pytest.raises(RendezvousRestartLimitError):
        late.next_rendezvous()


# -- node processes ----------------------------------------------------------------------------


def test_rank0_pinned_across_shuffled_starts_of_node_processes(tmp_path: Path) -> None:
    """Four node processes (file store), attributes from RDZV_NODE_ATTRS, rank0=role=lead;
    started in a different order each run, the lead node gets rank 0 every time."""
    for trial in range(3):
        endpoint = str(tmp_path / f"store-{trial}")
        config = f"{DEMO_CONFIG},rank0=role=lead,rank_order=topology,rank_key=rack"
        roles = ["lead", "worker", "worker", "worker"]
        racks = ["r2", "r1", "r2", "r1"]
        order = list(range(4))
        random.Random(trial).shuffle(order)
        procs = {}
        for i in order:
            env = {k: v for k, v in os.environ.items() if not k.startswith("RDZV_")}
            env["RDZV_NODE_ATTRS"] = f"role={roles[i]};rack={racks[i]}"
            command = [sys.executable, "-m", "rdzv_core.rendezvous.demo", "node", endpoint,
                       "file", "pinned", "4", "4", config]  # fmt: skip
            procs[i] = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
            time.sleep(0.05)
        ranks = {}
        try:
            for i, proc in procs.items():
                assert proc.stdout is not None
                for line in proc.stdout:
                    event = json.loads(line)
                    assert event["event"] != "error", event
                    if event["event"] == "round":
                        ranks[i] = event["rank"]
                        break
        finally:
            for proc in procs.values():
                proc.kill()
                proc.wait(10)
        assert ranks[0] == 0, f"trial {trial}: the lead node got rank {ranks[0]}"
        # after the pinned node, rack r1's nodes, then r2's: contiguous by rack
        assert sorted(ranks[i] for i in (1, 3)) == [1, 2] and ranks[2] == 3
