"""Spares, segments and failing fast: who is active in a round, who waits, and when the
run cannot complete at all. Handlers in threads over the reference store, and node
processes over the file store."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from rdzv_plugin_file import FileStore

from rdzv_core import (
    EventKind,
    RendezvousClosedError,
    RendezvousExcludedError,
    RendezvousGracefulExitError,
    RendezvousTimeoutError,
    StoreBackend,
    register,
    unregister,
)
from rdzv_core.rendezvous import RendezvousHandler, RendezvousInfo
from rdzv_core.rendezvous.inspect import describe_run, read_run
from rdzv_core.rendezvous.policy import (
    Candidate,
    Exclusion,
    HealthCheck,
    RankPolicy,
    Segments,
)
from rdzv_core.testing import EventRecorder, MemoryStore
from rdzv_core.testing.rendezvous_suite import wait_for_run

from .test_handler import FAST
from .test_policy import clean_env, node_command


class Joiner:
    """A handler's next_rendezvous() running in a thread; the outcome once it returns."""

    def __init__(self, handler: RendezvousHandler) -> None:
        self.handler = handler
        self.info: RendezvousInfo | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.info = self.handler.next_rendezvous()
        except BaseException as e:
            self.error = e

    def done(self, timeout: float = 0) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    @property
    def rank(self) -> int:
        assert self.info is not None, self.error
        return self.info.rank


def settle(joiners: list[Joiner], active: int, timeout: float = 20) -> list[Joiner]:
    """Wait until ``active`` joiners completed their round; the rest must still wait."""
    deadline = time.monotonic() + timeout
    while sum(j.done() for j in joiners) < active:
        assert time.monotonic() < deadline, [j.error for j in joiners if j.done()]
        time.sleep(0.05)
    time.sleep(0.3)  # a spare that wrongly completed would have done so by now
    finished = [j for j in joiners if j.done()]
    assert len(finished) == active and all(j.error is None for j in finished), [
        j.error for j in finished
    ]
    return finished


def wait_for_loss(handlers: list[RendezvousHandler], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not all(h.num_nodes_waiting() for h in handlers):
        assert time.monotonic() < deadline, "the lost node was never reported"
        time.sleep(0.05)


# -- segments, as decisions ----------------------------------------------------------------------


def domains_candidates(domains: list[str], order: list[int]) -> list[Candidate]:
    """Candidates with attribute ``nvl`` from ``domains``, listed in ``order``; a
    candidate's position (host, then process) is its index in ``domains``."""
    return [Candidate(f"n{i}", {"nvl": domains[i]}, i) for i in order]


def test_only_whole_segments_are_active_with_contiguous_ranks_in_any_join_order() -> None:
    policy = RankPolicy(segments=Segments("nvl", 4))
    domains = ["A", "B", "A", "B", "B", "A", "B", "B"]
    results = set()
    for seed in range(20):
        order = list(range(8))
        random.Random(seed).shuffle(order)
        candidates = domains_candidates(domains, order)
        ranked = [candidates[i].id for i in policy.ranks(candidates)]
        results.add(tuple(ranked))
    assert results == {("n1", "n3", "n4", "n6")}, results


def test_segments_come_in_the_order_of_their_first_node_and_previous_members_stay() -> None:
    policy = RankPolicy(segments=Segments("nvl", 2))
    domains = ["B", "A", "B", "A", "A", "C"]  # A has 3: one whole segment; C none
    candidates = domains_candidates(domains, list(range(6)))
    assert [candidates[i].id for i in policy.ranks(candidates)] == ["n0", "n2", "n1", "n3"]
    # n4 was a member last round: within A it is chosen before n3 (then ranked by position)
    previous = [
        Candidate(c.id, c.attrs, c.position, 0 if c.id == "n4" else None) for c in candidates
    ]
    assert [previous[i].id for i in policy.ranks(previous)] == ["n0", "n2", "n1", "n4"]


def test_rank0_brings_its_whole_segment_first() -> None:
    policy = RankPolicy(segments=Segments("nvl", 2), rank0=("nvl", "Z"))
    domains = ["A", "A", "Z", "Z"]
    candidates = domains_candidates(domains, [3, 1, 0, 2])
    assert [candidates[i].id for i in policy.ranks(candidates)] == ["n2", "n3", "n0", "n1"]


def test_a_segment_larger_than_max_nodes_is_refused(make: Any) -> None:
    with pytest.raises(ValueError, match="segment=4 needs max_nodes of at least 4"):
        make(2, 3, RankPolicy(segments=Segments("nvl", 4)))


# -- spares with handlers ------------------------------------------------------------------------


def test_segment_spares_wait_and_the_run_closes_them_gracefully(make: Any) -> None:
    """8 nodes, nvl A x3 and B x5, segment=4: exactly 4 B nodes are active with ranks
    0-3; the other 4 are spares (no error, no pending change), shown by ``rdzv state``;
    closing the run lets them go with RendezvousGracefulExitError."""
    policy = RankPolicy(segments=Segments("nvl", 4))
    domains = ["A", "B", "A", "B", "B", "A", "B", "B"]
    handlers = [make(4, 8, policy, nvl=d) for d in domains]
    recorder = EventRecorder()
    register(recorder)
    try:
        joiners = [Joiner(h) for h in handlers]
        active = settle(joiners, 4)
    finally:
        unregister(recorder)
    assert sorted(j.rank for j in active) == [0, 1, 2, 3]
    assert {domains[handlers.index(j.handler)] for j in active} == {"B"}
    assert all(j.info is not None and j.info.world_size == 4 for j in active)
    assert all(h.num_nodes_waiting() == 0 for h in handlers)
    run = read_run(make.base, "run")
    assert run["world_size"] == 4 and len(run["members"]) == 4
    assert sorted(s["attributes"]["nvl"] for s in run["spares"]) == ["A", "A", "A", "B"]
    assert "spare" in describe_run(run)
    kinds = [e.kind for e in recorder.events]
    assert kinds.count(EventKind.SPARE) == 4 and kinds.count(EventKind.RANKS_ASSIGNED) == 1
    handlers[1].set_closed()
    spares = [j for j in joiners if j not in active]
    assert all(j.done(10) for j in spares)
    assert all(isinstance(j.error, RendezvousGracefulExitError) for j in spares), [
        j.error for j in spares
    ]


def test_a_spare_takes_the_lost_nodes_rank_with_sticky_ranks(make: Any) -> None:
    """4 active + 1 spare (max 4), sticky: the node with rank 2 dies; the next round keeps
    ranks 0, 1 and 3 on their nodes and the spare gets rank 2 (a promotion event)."""
    policy = RankPolicy(order="sticky")
    handlers = [make(4, 4, policy) for _ in range(4)]
    first = [Joiner(h) for h in handlers]
    settle(first, 4)
    spare = Joiner(make(4, 4, policy))
    assert not spare.done(1.0), "the fifth node must wait as a spare"
    ranks = {j.handler: j.rank for j in first}
    dead = next(h for h, r in ranks.items() if r == 2)
    dead.close()
    survivors = [h for h in handlers if h is not dead]
    wait_for_loss(survivors)
    recorder = EventRecorder()
    register(recorder)
    try:
        second = [Joiner(h) for h in survivors]
        settle([*second, spare], 4)
    finally:
        unregister(recorder)
    assert {ranks[j.handler]: j.rank for j in second} == {0: 0, 1: 1, 3: 3}
    assert spare.rank == 2
    promoted = [e for e in recorder.events if e.kind == EventKind.PROMOTED]
    assert len(promoted) == 1 and promoted[0].details["rank"] == 2


def test_previous_members_keep_their_places_ahead_of_a_spare(make: Any) -> None:
    """max 2 and a waiting spare: when both members re-rendezvous, they are the next
    round's members every time, however fast the spare wakes."""
    handlers = [make(2, 2) for _ in range(2)]
    settle([Joiner(h) for h in handlers], 2)
    spare = Joiner(make(2, 2))
    for _ in range(5):
        again = [Joiner(h) for h in handlers]
        settle([*again, spare], 2)
        assert not spare.done()


def test_a_spare_that_turns_sick_is_excluded_while_it_waits(make: Any) -> None:
    sick = threading.Event()
    check = HealthCheck(check=lambda: "GPU fell off the bus" if sick.is_set() else None,
                        interval=0.2)  # fmt: skip
    rule = Exclusion(by="name", cooldown_min=30, cooldown_max=60)
    members = [make(2, 2, exclusion=rule, name=f"m{i}") for i in range(2)]
    settle([Joiner(h) for h in members], 2)
    spare = Joiner(make(2, 2, health=check, exclusion=rule, name="spare"))
    assert not spare.done(0.5)
    sick.set()
    assert spare.done(5), "the spare's health was not checked again while it waited"
    assert isinstance(spare.error, RendezvousExcludedError)
    assert "GPU fell off the bus" in str(spare.error)
    assert "name=spare" in read_run(make.base, "run")["exclusions"]


def test_too_few_whole_segments_means_no_round_until_the_join_timeout(make: Any) -> None:
    settings = FAST.__class__(**{**FAST.__dict__, "join_timeout": timedelta(seconds=4)})
    policy = RankPolicy(segments=Segments("nvl", 2))
    joiners = [Joiner(make(2, 3, policy, settings=settings, nvl=d)) for d in "ABC"]
    assert all(j.done(15) for j in joiners)
    for j in joiners:
        assert isinstance(j.error, RendezvousTimeoutError), j.error
        assert "made 0 of its 3 nodes active, fewer than min_nodes=2" in str(j.error)


# -- failing fast when exclusions leave too few nodes ----------------------------------------------


def test_exclusions_that_leave_too_few_nodes_close_the_run_at_once(make: Any) -> None:
    rule = Exclusion(by="name", cooldown_min=30, cooldown_max=60)
    started = time.monotonic()
    healthy = [Joiner(make(3, 3, exclusion=rule, name=f"ok{i}")) for i in range(2)]
    sick = make(3, 3, exclusion=rule, health=HealthCheck(check=lambda: "bad NIC"), name="sick")
    with pytest.raises(RendezvousExcludedError, match="bad NIC"):
        sick.next_rendezvous()
    assert all(j.done(10) for j in healthy)
    assert time.monotonic() - started < FAST.join_timeout.total_seconds() / 2
    for j in healthy:
        assert type(j.error) is RendezvousClosedError, j.error
        assert "exclusions: 1 excluded (the last: name=sick) leave fewer than min_nodes=3" in str(
            j.error
        )


def test_a_registered_spare_keeps_the_run_open_when_one_node_is_excluded(make: Any) -> None:
    rule = Exclusion(by="name", cooldown_min=30, cooldown_max=60)
    joiners = [Joiner(make(3, 3, exclusion=rule, name=f"ok{i}")) for i in range(3)]
    sick = make(3, 3, exclusion=rule, health=HealthCheck(check=lambda: "bad NIC"), name="sick")
    with pytest.raises(RendezvousExcludedError):
        sick.next_rendezvous()
    settle(joiners, 3)
    assert not read_run(make.base, "run")["closed"]


# -- node processes ----------------------------------------------------------------------------


def read_events(proc: subprocess.Popen[str], kinds: tuple[str, ...]) -> dict[str, Any]:
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] in kinds:
            return dict(event)
    raise AssertionError(f"node {proc.pid} ended without {kinds}")


def test_sticky_ranks_and_a_spare_with_node_processes(tmp_path: Path) -> None:
    """5 node processes, 4 active + 1 spare, sticky: kill -9 rank 2; the next round keeps
    ranks 0, 1, 3 on the same nodes and the spare gets rank 2, within last_call_timeout +
    the liveness window (+ slack for process start-up on a busy machine)."""
    endpoint = str(tmp_path / "store")
    config = "rank_order=sticky"
    procs = [
        subprocess.Popen(node_command(endpoint, "sticky", 4, 4, config),
                         stdout=subprocess.PIPE, text=True, env=clean_env())
        for _ in range(4)
    ]  # fmt: skip
    spare = None
    try:
        first = {p: read_events(p, ("round", "error")) for p in procs}
        assert sorted(e["rank"] for e in first.values()) == [0, 1, 2, 3], first
        spare = subprocess.Popen(node_command(endpoint, "sticky", 4, 4, config),
                                 stdout=subprocess.PIPE, text=True, env=clean_env())  # fmt: skip
        store = FileStore(endpoint, timeout=timedelta(seconds=10))
        wait_for_run(store, "sticky", "the spare standing by", lambda run: bool(run["spares"]))
        store.close()
        victim = next(p for p, e in first.items() if e["rank"] == 2)
        victim.kill()
        killed = time.monotonic()
        survivors = [p for p in procs if p is not victim]
        second = {}
        for p in survivors:
            read_events(p, ("change",))
            second[p] = read_events(p, ("round", "error"))
        promoted = read_events(spare, ("round", "error"))
        took = time.monotonic() - killed
        assert {first[p]["rank"]: e["rank"] for p, e in second.items()} == {0: 0, 1: 1, 3: 3}
        assert promoted["rank"] == 2 and promoted["world"] == 4, promoted
        # last_call 1 s + liveness window 2 s, + the re-rendezvous and slack
        assert took < 1 + 2 + 4, f"the spare took {took:.1f} s to replace the lost node"
    finally:
        for p in [*procs, *([spare] if spare else [])]:
            p.kill()
            p.wait(10)
            p.stdout.close()  # type: ignore[union-attr]


SURPLUS_NODE = """
import json, sys, time
from rdzv_core import RendezvousGracefulExitError, RendezvousParameters
from rdzv_core.rendezvous import create_handler
from rdzv_core.rendezvous.demo import DEMO_CONFIG
from rdzv_core.rendezvous.settings import parse_config

endpoint, last = sys.argv[1], int(sys.argv[2])
# a long last call: round 0 has its 3 members however slowly the processes start
config = {**parse_config(DEMO_CONFIG), "is_host": "false", "last_call_timeout": "30"}
handler = create_handler(RendezvousParameters("c10d", endpoint, "surplus", 2, 3,
                                              store_type="file", **config))
try:
    while True:
        info = handler.next_rendezvous()
        print(json.dumps({"round": info.round, "rank": info.rank, "world": info.world_size}),
              flush=True)
        if info.round == last:
            if info.rank == 0:
                handler.set_closed()
            break
        if info.rank == 0:
            time.sleep(0.1)  # rank 0's agent restarts its workers: a re-rendezvous
            continue
        while not handler.num_nodes_waiting():
            time.sleep(0.05)
except RendezvousGracefulExitError:
    print(json.dumps({"spare": "released"}), flush=True)
finally:
    handler.close()
"""


def test_surplus_live_nodes_never_fail_a_re_rendezvous(tmp_path: Path) -> None:
    """max + 2 live node processes (max 3): 20 re-rendezvous in a row, each started by a
    member joining again, complete with the same 3 members; the 2 spares wait without an
    error and are let go gracefully when the run ends."""
    endpoint = str(tmp_path / "store")
    last = 20
    procs = [
        subprocess.Popen([sys.executable, "-c", SURPLUS_NODE, endpoint, str(last)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=clean_env())
        for _ in range(5)
    ]  # fmt: skip
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0] * 5, [err[-2000:] for _, err in outputs]
    lines = [[json.loads(line) for line in out.splitlines()] for out, _ in outputs]
    members = [found for found in lines if found and "round" in found[0]]
    spares = [found for found in lines if found and "spare" in found[0]]
    assert len(members) == 3 and len(spares) == 2, lines
    for found in members:
        assert [e["round"] for e in found] == list(range(last + 1)), found
        assert {e["world"] for e in found} == {3}
    for round_ in range(last + 1):
        assert sorted(found[round_]["rank"] for found in members) == [0, 1, 2]


def test_the_restart_budget_with_node_processes(tmp_path: Path) -> None:
    """max_restarts=2 over 5 node processes: a killed node comes back at once (a newcomer:
    no reset, no count), then two more nodes are killed; the third failure closes the run
    and every surviving node ends the same way, naming the budget."""
    endpoint = str(tmp_path / "store")

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(node_command(endpoint, "budget", 2, 5, "max_restarts=2"),
                                stdout=subprocess.PIPE, text=True, env=clean_env())  # fmt: skip

    nodes = [start() for _ in range(5)]
    try:
        for node in nodes:
            read_events(node, ("round",))
        for step, victim in enumerate([0, 1, 2]):
            nodes[victim].kill()
            alive = [n for i, n in enumerate(nodes) if i > victim or i == 5]
            if step < 2:
                for node in alive:
                    read_events(node, ("round",))
            if step == 0:
                nodes.append(start())  # the killed node's replacement, at once
                for node in [*alive, nodes[5]]:
                    read_events(node, ("round",))
        ends = [read_events(n, ("closed", "error")) for n in nodes[3:]]
        codes = [n.wait(30) for n in nodes[3:]]
    finally:
        for node in nodes:
            node.kill()
            node.wait(10)
            node.stdout.close()  # type: ignore[union-attr]
    assert [e["event"] for e in ends] == ["closed"] * 3 and codes == [0, 0, 0], ends
    assert all("failures caused 3 re-rendezvous, more than max_restarts=2" in e["reason"]
               for e in ends), ends  # fmt: skip


# -- cost ----------------------------------------------------------------------------------------


COUNT_LOCK = threading.Lock()


class CountingStore(MemoryStore):
    """The reference store, counting the requests its clients make (one per call)."""

    def __init__(self, counts: list[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.counts = counts

    def client(self) -> CountingStore:
        return CountingStore(self.counts, timeout=self.timeout, _data=self._data)

    def _count(self) -> None:
        with COUNT_LOCK:
            self.counts[0] += 1

    def set(self, key: str, value: Any) -> None:
        self._count()
        super().set(key, value)

    def get(self, key: str) -> bytes:
        self._count()
        return super().get(key)

    def add(self, key: str, amount: int) -> int:
        self._count()
        return super().add(key, amount)

    def compare_set(self, key: str, expected: Any, desired: Any) -> bytes:
        self._count()
        return super().compare_set(key, expected, desired)

    def wait(self, keys: Any, timeout: Any = None) -> None:
        self._count()
        super().wait(keys, timeout)

    def check(self, keys: Any) -> bool:
        self._count()
        return super().check(keys)

    def multi_get(self, keys: Any) -> list[bytes]:
        self._count()
        return super().multi_get(keys)

    def multi_set(self, keys: Any, values: Any) -> None:
        self._count()
        super().multi_set(keys, values)


def _requests_per_node(
    size: int, rounds: int, policy: RankPolicy | None, health: HealthCheck | None
) -> float:
    """Requests per node while ``size`` nodes (attribute ``nvl`` A, B, A, ...) complete
    ``rounds`` rounds, each node joining again for the next."""
    settings = FAST.__class__(**{**FAST.__dict__, "keep_alive_interval": timedelta(seconds=30)})
    counts = [0]
    base = CountingStore(counts, timeout=timedelta(seconds=10))
    handlers = []
    for i in range(size):
        client = base.client()
        handlers.append(RendezvousHandler(
            "run", client, StoreBackend(client, "run"), size, size, "10.0.0.1", settings,
            policy=policy, attributes={"nvl": "AB"[i % 2]}, health=health,
        ))  # fmt: skip
    counts[0] = 0
    try:
        for _ in range(rounds):
            joiners = [Joiner(h) for h in handlers]
            assert all(j.done(30) for j in joiners) and all(j.error is None for j in joiners)
        return counts[0] / size
    finally:
        for handler in handlers:
            handler.close()


@pytest.mark.parametrize(
    "policy",
    [
        RankPolicy(),
        RankPolicy(order="sticky", segments=Segments("nvl", 2), rank0=("nvl", "A")),
    ],
    ids=["default", "segment+sticky+rank0+health"],
)
def test_store_requests_per_node_per_round_do_not_grow_with_the_job(policy: RankPolicy) -> None:
    """Requests per node in a round (two rounds: the second after every node joins again)
    are the same for 4 and for 16 nodes: O(1) per node, the policies included."""
    health = HealthCheck(check=lambda: None) if policy.segments else None
    per_node = {size: _requests_per_node(size, 2, policy, health) for size in (4, 16)}
    assert per_node[16] <= per_node[4] + 1, per_node
    assert per_node[16] < 50, per_node  # about 20 a round, waits included


def test_admission_costs_a_joining_node_no_request_of_its_own() -> None:
    """The policy record's read (agreement, exclusions, closed mark) stands in for the
    closed check a join makes anyway; only a health check, which takes time, makes the
    node ask again. A first join stays within 17 requests a node (heartbeat, two to
    register, the record, round, final, slot number, slot, then wait and read the final
    token, the rank and the master address, the read count), the assigner's included."""
    plain = _requests_per_node(16, 1, None, None)
    checked = _requests_per_node(16, 1, None, HealthCheck(check=lambda: None))
    assert 0.5 < checked - plain < 1.5, (plain, checked)  # one closed check a node
    assert plain <= 17, plain
