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
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rdzv_core import (
    EventKind,
    RendezvousExcludedError,
    RendezvousParameters,
    RendezvousRestartLimitError,
    RendezvousStateError,
    StoreBackend,
    hookimpl,
    register,
    unregister,
)
from rdzv_core.rendezvous import RendezvousHandler
from rdzv_core.rendezvous.demo import DEMO_CONFIG
from rdzv_core.rendezvous.inspect import describe_run, read_run
from rdzv_core.rendezvous.policy import (
    Candidate,
    Exclusion,
    HealthCheck,
    RankPolicy,
    RestartBudget,
    node_attributes,
    parse_attributes,
)
from rdzv_core.testing import EventRecorder

from .test_handler import FAST

DEFAULT_EXCLUSION = "exclude_by=host,cooldown_min=60,cooldown_max=3600"


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
        ({"rank_order": "topology"}, "rank_order=topology needs rank_key, the attribute"),
        ({"segment": "4"}, "segment (nodes per segment) and segment_key (the attribute they"),
        ({"segment_key": "nvl"}, "go together: segment=4,segment_key=nvl_domain"),
        ({"segment": "0", "segment_key": "nvl"}, "segment must be 1 or more nodes, got 0"),
        ({"segment": "2", "segment_key": "n v"}, "segment_key must be an attribute name"),
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
    assert run["policy"] == f"rank_order=sorted,{DEFAULT_EXCLUSION}" and run["restarts"] == 0
    shown = describe_run(run)
    assert "[rack=r0]" in shown and "policy rank_order=sorted," in shown


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
    assert (
        f"(rank_order=sorted,{DEFAULT_EXCLUSION}) differs from the one of run 'run' "
        f"(rank_order=sticky,{DEFAULT_EXCLUSION})"
    ) in str(caught.value)


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


# -- health checks and exclusion ---------------------------------------------------------------


def test_a_health_command_reports_its_last_line() -> None:
    check = HealthCheck.from_params(
        params(health_check="sh -c 'echo checking; echo disk full; exit 3'")
    )
    assert check is not None
    assert check.run() == "health check sh exited with status 3: disk full"
    assert HealthCheck.from_params(params(health_check="true")).run() is None  # type: ignore[union-attr]
    slow = HealthCheck(("sleep", "5"), timeout=0.2)
    assert slow.run() == "the health check sleep took longer than 0.2 s"
    assert HealthCheck(("sleep", "5"), timeout=0.2, fail_open=True).run() is None


def test_a_check_that_raises_fails_closed_unless_configured_open() -> None:
    def broken() -> str | None:
        raise OSError("no such device")

    assert HealthCheck(check=broken).run() == (
        "the health check failed to run: OSError: no such device"
    )
    assert HealthCheck(check=broken, fail_open=True).run() is None


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"health_check": "/no/such/check --fast"}, "'/no/such/check' is not an executable"),
        ({"health_check": "true", "health_timeout": "0"}, "health_timeout must be 1 to 86400"),
        ({"cooldown_min": "-1"}, "cooldown_min and cooldown_max must be positive"),
        ({"cooldown_min": "10", "cooldown_max": "5"}, "with cooldown_min <= cooldown_max"),
        ({"max_strikes": "0"}, "max_strikes must be 1 or more"),
        ({"exclude_by": "a b"}, "exclude_by must be an attribute name"),
    ],
)
def test_bad_health_and_exclusion_options(config: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        HealthCheck.from_params(params(**config))
        Exclusion.from_params(params(**config))
    assert message in str(caught.value)


def test_cooldown_doubles_per_strike_with_jitter_and_a_cap() -> None:
    rule = Exclusion(cooldown_min=1, cooldown_max=4, max_strikes=5)
    assert [rule.cooldown(n, 0) for n in (1, 2, 3, 4)] == [1, 2, 4, 4]
    assert 1 <= rule.cooldown(1, 0.99) <= 1.1
    assert not rule.permanent(4) and rule.permanent(5)


class Switch:
    """A health check whose answer the test sets."""

    def __init__(self) -> None:
        self.reason: str | None = "GPU 3 fell off the bus"
        self.runs = 0

    def __call__(self) -> str | None:
        self.runs += 1
        return self.reason


def test_a_failing_node_is_excluded_with_a_cooldown_that_doubles(make: Any) -> None:
    switch = Switch()
    rule = Exclusion(cooldown_min=1, cooldown_max=8)
    sick = make(1, 2, health=HealthCheck(check=switch), exclusion=rule, host="10.0.0.9")
    started = time.monotonic()
    with pytest.raises(
        RendezvousExcludedError,
        match=r"\(host=10.0.0.9\) is excluded .* for 1\.\d s more \(strike 1\): GPU 3 fell off the bus",
    ):
        sick.next_rendezvous()
    with pytest.raises(RendezvousExcludedError, match="strike 1"):
        sick.next_rendezvous()  # refused at once, without running the check again
    assert switch.runs == 1
    run = read_run(make.base, "run")
    assert run["exclusions"]["host=10.0.0.9"]["strikes"] == 1
    assert "GPU 3 fell off the bus" in describe_run(run)
    while time.monotonic() - started < 1.2:
        time.sleep(0.05)
    with pytest.raises(RendezvousExcludedError, match=r"for 2\.\d s more \(strike 2\)"):
        sick.next_rendezvous()  # the check runs again after the cool-down, and fails again
    healthy_peer = make(1, 2, exclusion=rule, host="10.0.0.1")
    assert healthy_peer.next_rendezvous().world_size == 1, "a healthy node is not held up"
    time.sleep(2.3)
    switch.reason = None
    ranks = rendezvous([sick, healthy_peer])  # the peer re-rendezvous with the newcomer
    assert sorted(ranks.values()) == [0, 1], "after its cool-down a healthy node joins"


def test_exclusions_survive_every_node_restarting(tmp_path: Path) -> None:
    """The records live in the store: new handlers (new processes, on a file store) of
    the same run refuse the excluded host until its cool-down ends."""
    from rdzv_plugin_file import FileStore

    path = tmp_path / "store"
    rule = Exclusion(cooldown_min=30, cooldown_max=60)

    def handler(check: Callable[[], str | None] | None) -> RendezvousHandler:
        store = FileStore(path, timeout=timedelta(seconds=10))
        health = HealthCheck(check=check) if check else None
        return RendezvousHandler(
            "run", store, StoreBackend(store, "run"), 1, 1, "10.0.0.9", FAST,
            health=health, exclusion=rule, owns_store=True,
        )  # fmt: skip

    first = handler(lambda: "ECC errors")
    with pytest.raises(RendezvousExcludedError, match="ECC errors"):
        first.next_rendezvous()
    first.close()
    again = handler(None)  # a restarted node on the same host, no check configured
    with pytest.raises(RendezvousExcludedError, match=r"for 29\.\d s more|for 3\d\.\d s more"):
        again.next_rendezvous()
    again.close()


def test_the_exclusion_key_may_be_any_attribute(make: Any) -> None:
    rule = Exclusion(by="rack", cooldown_min=30, cooldown_max=60)
    sick = make(1, 2, health=HealthCheck(check=lambda: "switch down"), exclusion=rule, rack="r7")
    with pytest.raises(RendezvousExcludedError, match=r"\(rack=r7\)"):
        sick.next_rendezvous()
    neighbour = make(1, 2, exclusion=rule, rack="r7", host="10.0.0.2")
    with pytest.raises(RendezvousExcludedError, match="rack=r7.*switch down"):
        neighbour.next_rendezvous()
    elsewhere = make(1, 2, exclusion=rule, rack="r8", host="10.0.0.3")
    assert elsewhere.next_rendezvous().world_size == 1


# -- node processes ----------------------------------------------------------------------------


def node_command(endpoint: str, run_id: str, low: int, high: int, config: str) -> list[str]:
    return [sys.executable, "-m", "rdzv_core.rendezvous.demo", "node", endpoint, "file",
            run_id, str(low), str(high), ",".join(filter(None, [DEMO_CONFIG, config]))]  # fmt: skip


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RDZV_")}
    return {**env, **extra}


def test_a_node_failing_its_health_check_stays_out_and_the_others_complete(
    tmp_path: Path,
) -> None:
    """3 node processes on one host, min 2, max 3, excluded by their own attribute `slot`:
    one runs a failing check. The other two complete within last_call_timeout + 1 s (and
    the processes' start-up), not the join timeout; the failing one exits naming the check's
    reason."""
    endpoint = str(tmp_path / "store")
    failing = "health_check=sh -c 'echo nvidia-smi: GPU lost; exit 1'"
    procs = [
        subprocess.Popen(node_command(endpoint, "health", 2, 3, ",".join(filter(None, ["exclude_by=slot", config]))),
                         stdout=subprocess.PIPE, text=True,
                         env=clean_env(RDZV_NODE_ATTRS=f"slot={i}"))
        for i, config in enumerate(["", "", failing])
    ]  # fmt: skip
    started = time.monotonic()
    try:
        events = []
        for proc in procs:
            assert proc.stdout is not None
            for line in proc.stdout:
                event = json.loads(line)
                if event["event"] in ("round", "error"):
                    events.append((event, time.monotonic() - started))
                    break
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)
            proc.stdout.close()  # type: ignore[union-attr]
    (a, ta), (b, tb), (c, _) = events
    assert a["event"] == b["event"] == "round" and {a["rank"], b["rank"]} == {0, 1}
    # last call 1 s + 1 s, + process start-up on busy cores; held up would be the join timeout
    assert a["world"] == 2 and max(ta, tb) < 1 + 1 + 10, "the healthy nodes were held up"
    assert c["event"] == "error" and "nvidia-smi: GPU lost" in c["error"]
    assert "RendezvousExcludedError" in c["error"] or "excluded" in c["error"]
    state = subprocess.run(
        [sys.executable, "-m", "rdzv_core", "state", "--store-type", "file", "--endpoint",
         endpoint, "--run-id", "health"],
        capture_output=True, text=True, env=clean_env(), timeout=60,
    )  # fmt: skip
    assert state.returncode == 0, state.stderr
    assert "excluded: slot=2" in state.stdout and "nvidia-smi: GPU lost" in state.stdout


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
                proc.stdout.close()  # type: ignore[union-attr]
        assert ranks[0] == 0, f"trial {trial}: the lead node got rank {ranks[0]}"
        # after the pinned node, rack r1's nodes, then r2's: contiguous by rack
        assert sorted(ranks[i] for i in (1, 3)) == [1, 2] and ranks[2] == 3


def test_a_plugin_adds_a_health_check_and_failures_are_events(make: Any) -> None:
    class Checks:
        @hookimpl
        def rdzv_health_check(self, params: RendezvousParameters) -> Callable[[], str | None]:
            return lambda: f"NIC down on {params.run_id}"

    plugin, recorder = Checks(), EventRecorder()
    register(plugin, name="nic-check")
    register(recorder)
    try:
        from rdzv_core.registry import default_registry

        check = default_registry().health_check(params())
        assert check is not None
        assert check() == "NIC down on run (health check of plugin 'nic-check')"
        rule = Exclusion(cooldown_min=30, cooldown_max=60, max_strikes=1)
        node = make(1, 1, health=HealthCheck(check=check), exclusion=rule)
        with pytest.raises(
            RendezvousExcludedError, match=r"permanently \(1 strikes, max_strikes=1\)"
        ):
            node.next_rendezvous()
    finally:
        unregister(plugin)
        unregister(recorder)
    excluded = [e for e in recorder.events if e.kind == EventKind.EXCLUDED]
    assert len(excluded) == 1 and excluded[0].details["subject"] == "host=10.0.0.1"
    assert excluded[0].details["seconds"] is None and "NIC down" in excluded[0].details["reason"]


def test_restarts_are_events(make: Any) -> None:
    recorder = EventRecorder()
    register(recorder)
    try:
        nodes = [make(1, 2) for _ in range(2)]
        rendezvous(nodes)
        nodes.pop().close()
        deadline = time.monotonic() + 15
        while not nodes[0].num_nodes_waiting():
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        unregister(recorder)
    counted = [e for e in recorder.events if e.kind == EventKind.RESTART_COUNTED]
    assert [e.details["restarts"] for e in counted] == [1]
    assert "stopped heartbeating" in counted[0].details["cause"]


def test_an_excluded_nodes_shutdown_leaves_the_run_open(make: Any) -> None:
    """torch's agent calls shutdown() when next_rendezvous fails: for an excluded node that
    must not end the job of the others."""
    rule = Exclusion(cooldown_min=30, cooldown_max=60)
    peer = make(1, 2, exclusion=rule, host="10.0.0.1")
    rendezvous([peer])
    sick = make(1, 2, health=HealthCheck(check=lambda: "bad"), exclusion=rule, host="10.0.0.5")
    with pytest.raises(RendezvousExcludedError):
        sick.next_rendezvous()
    assert sick.shutdown() is True
    assert not peer.is_closed() and not read_run(make.base, "run")["closed"]


class FixedCooldown(Exclusion):
    """A site's rule: 1.5 s out, whatever the strikes; never for good."""

    def cooldown(self, strikes: int, jitter: float) -> float:
        return 1.5

    def describe(self) -> str:
        return f"exclusion=fixed-1.5s,exclude_by={self.by}"


class OneRestart(RestartBudget):
    def exhausted(self, count: int, cause: str) -> str | None:
        return f"the site allows one restart, this is number {count}" if count > 1 else None

    def describe(self) -> str:
        return "restart_budget=one"


def test_plugins_decide_the_exclusion_rule_and_the_restart_budget(make: Any) -> None:
    class SitePolicy:
        @hookimpl
        def rdzv_exclusion_rule(self) -> Exclusion:
            return FixedCooldown(by="name")

        @hookimpl
        def rdzv_restart_budget(self) -> RestartBudget:
            return OneRestart()

    plugin = SitePolicy()
    register(plugin)
    try:
        from rdzv_core.registry import default_registry

        rule = default_registry().exclusion_rule(params())
        budget = default_registry().restart_budget(params())
    finally:
        unregister(plugin)
    assert isinstance(rule, FixedCooldown) and isinstance(budget, OneRestart)
    sick = make(1, 3, health=HealthCheck(check=lambda: "bad"), exclusion=rule, budget=budget,
                name="sick")  # fmt: skip
    for _ in range(2):  # the second strike is 1.5 s too: the plugin's rule, not doubling
        with pytest.raises(RendezvousExcludedError, match=r"for 1\.[0-5] s more \(strike"):
            sick.next_rendezvous()
        time.sleep(1.6)
    nodes = [make(1, 3, exclusion=rule, budget=budget, name=f"n{i}") for i in range(3)]
    rendezvous(nodes)
    assert "restart_budget=one" in read_run(make.base, "run")["policy"]
    for lost in range(2):
        nodes.pop().close()
        deadline = time.monotonic() + 15
        while not all(h.num_nodes_waiting() or h.is_closed() for h in nodes):
            assert time.monotonic() < deadline, "the lost node was never reported"
            time.sleep(0.1)
        if lost == 0:
            rendezvous(nodes)
    for node in nodes:
        with pytest.raises(RendezvousRestartLimitError, match="the site allows one restart"):
            node.next_rendezvous()


def test_a_hook_that_returns_the_wrong_type_is_named() -> None:
    class Broken:
        @hookimpl
        def rdzv_restart_budget(self) -> object:
            return 3

    plugin = Broken()
    register(plugin)
    try:
        from rdzv_core.registry import default_registry

        with pytest.raises(
            Exception, match="rdzv_restart_budget returned int, not a RestartBudget"
        ):
            default_registry().restart_budget(params())
    finally:
        unregister(plugin)
