"""The rendezvous handler's rules, with threads over the in-process reference store."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

import rdzv_core
from rdzv_core import (
    EventKind,
    RendezvousClosedError,
    RendezvousConnectionError,
    RendezvousGracefulExitError,
    RendezvousParameters,
    RendezvousTimeoutError,
    StoreBackend,
    StoreDataLostError,
)
from rdzv_core.rendezvous import (
    HandlerSettings,
    RendezvousHandler,
    RendezvousInfo,
    parse_config,
    parse_nnodes,
)
from rdzv_core.testing import EventRecorder, MemoryStore

# Heartbeats every 0.5 s; lost after 2 s of silence (four missed beats: robust under load).
FAST = HandlerSettings(
    join_timeout=timedelta(seconds=20),
    last_call_timeout=timedelta(seconds=1),
    keep_alive_interval=timedelta(seconds=0.5),
    keep_alive_max_attempt=4,
)

Make = Callable[..., RendezvousHandler]


@pytest.fixture
def make() -> Any:
    base = MemoryStore(timeout=timedelta(seconds=10))
    made: list[RendezvousHandler] = []

    def make_handler(
        low: int = 1, high: int = 1, settings: HandlerSettings = FAST, run_id: str = "run"
    ) -> RendezvousHandler:
        client = base.client()
        handler = RendezvousHandler(
            run_id, client, StoreBackend(client, run_id), low, high, settings=settings
        )
        made.append(handler)
        return handler

    make_handler.base = base  # type: ignore[attr-defined]
    yield make_handler
    for handler in made:
        handler.close()


def in_threads(*calls: Callable[[], Any]) -> list[Any]:
    """Run every call in its own thread; their results (or exceptions), in order."""
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as e:
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_round_completes_at_once_at_max(make: Make) -> None:
    handlers = [make(2, 3) for _ in range(3)]
    start = time.monotonic()
    infos = in_threads(*(h.next_rendezvous for h in handlers))
    assert time.monotonic() - start < 0.9, "a full round must not wait for the last call"
    assert sorted(i.rank for i in infos) == [0, 1, 2]
    assert {(i.world_size, i.round) for i in infos} == {(3, 0)}
    assert len({i.bootstrap_store_info for i in infos}) == 1


def test_round_with_min_nodes_completes_after_last_call(make: Make) -> None:
    handlers = [make(2, 4) for _ in range(2)]
    start = time.monotonic()
    infos = in_threads(*(h.next_rendezvous for h in handlers))
    elapsed = time.monotonic() - start
    assert {i.world_size for i in infos} == {2}
    assert 0.9 <= elapsed < 5


def test_ranks_follow_sorted_descriptors(make: Make) -> None:
    handlers = [make(4, 4) for _ in range(4)]
    infos = in_threads(*(h.next_rendezvous for h in reversed(handlers)))
    by_rank = sorted(zip(infos, reversed(handlers)), key=lambda pair: pair[0].rank)
    ids = [h._node for _, h in by_rank]
    assert ids == sorted(ids)


def test_returned_store_is_private_to_run_and_round(make: Make) -> None:
    (info,) = in_threads(make().next_rendezvous)
    assert isinstance(info, RendezvousInfo)
    info.store.set("k", "v")
    assert make.base.get("torch.rendezvous.run.0/k") == b"v"  # type: ignore[attr-defined]


def test_newcomer_waits_and_is_included_with_bootstrap_info(make: Make) -> None:
    a, b = make(1, 3), make(1, 3)
    in_threads(a.next_rendezvous)
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(b.next_rendezvous()))
    thread.start()
    deadline = time.monotonic() + 10
    while a.num_nodes_waiting() == 0:
        assert time.monotonic() < deadline, "the waiting node was never counted"
        time.sleep(0.01)
    assert a.num_nodes_waiting() == 1
    info_a = a.next_rendezvous()
    thread.join(10)
    info_b = results[0]
    assert (info_a.round, info_b.round) == (1, 1)
    assert info_a.world_size == info_b.world_size == 2
    assert info_a.bootstrap_store_info == info_b.bootstrap_store_info


def test_lost_participant_is_reported_to_everyone(make: Make) -> None:
    handlers = [make(3, 3) for _ in range(3)]
    infos = in_threads(*(h.next_rendezvous for h in handlers))
    victim = handlers[[i.rank for i in infos].index(1)]
    victim._stop_heartbeat()
    survivors = [h for h in handlers if h is not victim]
    deadline = time.monotonic() + 10
    while not all(h.num_nodes_waiting() for h in survivors):
        assert time.monotonic() < deadline, "the lost node was never reported"
        time.sleep(0.05)
    assert all(h.lost_nodes() == [victim.node_id] for h in survivors)


def test_a_member_joining_again_makes_the_others_re_rendezvous(make: Make) -> None:
    """torchrun restarts a node's workers after a worker failure and its agent calls
    next_rendezvous again: the other members see a change pending and follow it."""
    handlers = [make(2, 2) for _ in range(2)]
    first = in_threads(*(h.next_rendezvous for h in handlers))
    rejoin = threading.Thread(target=handlers[0].next_rendezvous)
    rejoin.start()
    deadline = time.monotonic() + 10
    while not handlers[1].num_nodes_waiting():
        assert time.monotonic() < deadline, "the other member never saw the re-join"
        time.sleep(0.05)
    second = handlers[1].next_rendezvous()
    rejoin.join(10)
    assert second.round == first[1].round + 1 and second.world_size == 2


def test_surplus_node_exits_gracefully_and_newcomer_is_refused(make: Make) -> None:
    a, b, surplus = make(2, 2), make(2, 2), make(2, 2)
    in_threads(a.next_rendezvous, b.next_rendezvous)
    results: list[Any] = []

    def stand_by() -> None:
        try:
            surplus.next_rendezvous()
        except BaseException as e:
            results.append(e)

    thread = threading.Thread(target=stand_by)
    thread.start()
    time.sleep(0.5)
    assert a.num_nodes_waiting() == 0
    a.set_closed()
    thread.join(10)
    assert isinstance(results[0], RendezvousGracefulExitError)
    assert str(results[0]) == "The rendezvous 'run' is closed, terminating pending rendezvous."
    with pytest.raises(RendezvousClosedError, match="'run' is closed"):
        make(2, 2).next_rendezvous()
    assert b.is_closed()


def test_a_node_arriving_after_the_close_is_refused_before_it_waits(make: Make) -> None:
    """The close marks the run's policy record, which every joining node reads: a node
    arriving later is refused at once, before it waits as a spare for a full round (no
    spare event, no standby count)."""
    a, b = make(2, 2), make(2, 2)
    in_threads(a.next_rendezvous, b.next_rendezvous)
    a.set_closed()
    recorder = EventRecorder()
    rdzv_core.register(recorder)
    try:
        with pytest.raises(RendezvousClosedError, match="'run' is closed"):
            make(2, 2).next_rendezvous()
    finally:
        rdzv_core.unregister(recorder)
    assert EventKind.SPARE not in [e.kind for e in recorder.events], recorder.events
    assert not make.base.check(["rdzv.run/r0/standby_count"])  # type: ignore[attr-defined]


def test_close_wakes_a_node_waiting_for_quorum(make: Make) -> None:
    waiting, closer = make(2, 2), make(2, 2)
    results = []
    thread = threading.Thread(target=lambda: results.append(in_threads(waiting.next_rendezvous)))
    thread.start()
    time.sleep(0.3)
    start = time.monotonic()
    closer.set_closed()
    thread.join(10)
    assert isinstance(results[0][0], RendezvousClosedError)
    assert time.monotonic() - start < 2


def test_join_timeout_message(make: Make) -> None:
    settings = HandlerSettings(join_timeout=timedelta(seconds=1))
    handler = make(2, 2, settings)
    start = time.monotonic()
    with pytest.raises(RendezvousTimeoutError) as info:
        handler.next_rendezvous()
    assert 0.9 <= time.monotonic() - start < 5
    assert str(info.value) == (
        "The rendezvous 'run' did not complete within the join timeout (0:00:01): "
        "1 of at least 2 nodes joined round 0."
    )


def test_waiting_node_opens_the_next_round_when_every_participant_is_gone(make: Make) -> None:
    a, b = make(1, 2), make(1, 2)
    in_threads(a.next_rendezvous)
    a._stop_heartbeat()
    (info,) = in_threads(b.next_rendezvous)
    assert isinstance(info, RendezvousInfo), info
    assert (info.round, info.world_size, info.rank) == (1, 1, 0)


def test_any_node_assigns_ranks_when_the_finaliser_died(make: Make) -> None:
    handler = make(2, 2)
    store = make.base.client()  # type: ignore[attr-defined]
    raw = RendezvousHandler("run", store, StoreBackend(store, "run"), 2, 2)._store
    results = []
    thread = threading.Thread(target=lambda: results.append(handler.next_rendezvous()))
    thread.start()
    raw.wait(["r0/slot/1"], 5)
    slot = raw.add("r0/seq", 1)
    raw.set(f"r0/slot/{slot}", json.dumps(["zzz-ghost", 1, 0, "00"]))
    raw.compare_set("r0/final", "", "2:the-finaliser-that-died")
    thread.join(10)
    assert results and results[0].world_size == 2 and results[0].rank == 0


def test_one_node_takes_over_from_a_dead_finaliser(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    """Everyone redoing the O(N) rank assignment at once would swamp the store at scale:
    the first waiting node to claim it takes over, the others keep waiting."""
    handlers = [make(4, 5) for _ in range(3)]
    store = make.base.client()  # type: ignore[attr-defined]
    raw = RendezvousHandler("run", store, StoreBackend(store, "run"), 4, 5)._store
    slot = raw.add("r0/seq", 1)
    raw.set(f"r0/slot/{slot}", json.dumps(["zzz-ghost", 1, 0, "00"]))

    def finalise_and_die() -> None:  # before the last call (1 s) ends
        raw.wait(["r0/slot/4"], 5)
        assert raw.compare_set("r0/final", "", "4:ghost") == b"4:ghost"

    with caplog.at_level("WARNING", logger="rdzv_core.rendezvous.handler"):
        *infos, _ = in_threads(*[h.next_rendezvous for h in handlers], finalise_and_die)
    assert all(isinstance(i, RendezvousInfo) and i.world_size == 4 for i in infos), infos
    assert sorted(i.rank for i in infos) == [0, 1, 2]
    takeovers = [r for r in caplog.records if "taking over" in r.getMessage()]
    assert len(takeovers) == 1, [r.getMessage() for r in takeovers]
    assert raw.get("r0/assigner").decode() in {h.node_id for h in handlers}


def test_a_slow_finaliser_that_heartbeats_is_waited_for(make: Make) -> None:
    handler = make(2, 2)
    store = make.base.client()  # type: ignore[attr-defined]
    raw = RendezvousHandler("run", store, StoreBackend(store, "run"), 2, 2)._store
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(handler.next_rendezvous()))
    thread.start()
    raw.wait(["r0/slot/1"], 5)
    slot = raw.add("r0/seq", 1)
    raw.set(f"r0/slot/{slot}", json.dumps(["zzz-slow", 1, 0, "00"]))
    raw.compare_set("r0/final", "", "2:slow-finaliser")
    started = time.monotonic()
    beating_for = 2 * FAST.liveness_window.total_seconds()
    while time.monotonic() - started < beating_for:  # alive, but never writes the ranks
        raw.add("hb/slow-finaliser", 1)
        assert not results, "a node took over from a finaliser that was still heartbeating"
        time.sleep(0.2)
    thread.join(20)
    assert results and results[0].rank == 0 and results[0].world_size == 2
    assert time.monotonic() - started >= beating_for + FAST.liveness_window.total_seconds() - 0.5
    assert raw.get("r0/assigner").decode() == handler.node_id


def test_store_failure_is_a_connection_error_and_shutdown_reports_it(make: Make) -> None:
    handler = make()
    in_threads(handler.next_rendezvous)
    handler._store.underlying_store.close()
    with pytest.raises(RendezvousConnectionError):
        handler.num_nodes_waiting()
    assert handler.shutdown() is False


def test_a_run_whose_state_vanished_is_an_error_never_a_new_round_0(make: Make) -> None:
    """A store that lost its data under the run (and did not notice it itself): the nodes
    that knew the run refuse to start it over."""
    handler = make()
    first = handler.next_rendezvous()
    handler.next_rendezvous()  # round 1
    store = make.base.client()  # type: ignore[attr-defined]
    store.delete_key("rdzv.run/round")  # the store forgot the run
    for call in (handler.next_rendezvous, handler.num_nodes_waiting):
        with pytest.raises(RendezvousConnectionError) as info:
            call()
        assert isinstance(info.value.__cause__, StoreDataLostError)
        assert "its round counter is gone (it was at round 1)" in str(info.value.__cause__)
    store.set("rdzv.run/round", "0")  # restored from an older backup
    with pytest.raises(RendezvousConnectionError) as info:
        handler.next_rendezvous()
    assert "went back from 1 to 0" in str(info.value.__cause__)
    assert first.round == 0


def test_a_node_that_fails_while_joining_frees_the_others_at_once(make: Make) -> None:
    """A node holding a slot fails (here: its own join timeout): the others wake at once,
    go on to the next round without it, and a later timeout of theirs names the cause."""
    patient = HandlerSettings(
        join_timeout=timedelta(seconds=4),
        last_call_timeout=timedelta(seconds=1),
        keep_alive_interval=timedelta(seconds=0.5),
        keep_alive_max_attempt=4,
    )
    hasty = HandlerSettings(
        join_timeout=timedelta(seconds=1),
        last_call_timeout=timedelta(seconds=1),
        keep_alive_interval=timedelta(seconds=0.5),
        keep_alive_max_attempt=4,
    )
    waiting = [make(4, 4, settings=patient) for _ in range(2)]
    failing = make(4, 4, settings=hasty)
    recorder = EventRecorder()
    rdzv_core.register(recorder)
    try:
        started = time.time()  # events carry wall-clock times
        results = in_threads(*(h.next_rendezvous for h in [*waiting, failing]))
    finally:
        rdzv_core.unregister(recorder)
    assert isinstance(results[2], RendezvousTimeoutError)
    lost = [e for e in recorder.events if e.kind is EventKind.NODE_LOST]
    assert lost and lost[0].details["round"] == 0
    assert failing.node_id in lost[0].details["cause"]
    assert lost[0].time - started < 2, "the others must learn it when it fails, not later"
    for error in results[:2]:
        assert isinstance(error, RendezvousTimeoutError), error
        assert "round 0 was abandoned" in str(error) and failing.node_id in str(error)
        assert "RendezvousTimeoutError" in str(error), "the cause must be named"


def test_a_node_that_dies_holding_a_slot_is_left_behind(make: Make) -> None:
    """A node took slot 1 and froze (its heartbeat stands still): the node watching it
    abandons the round after the liveness window, and the round that follows completes
    with the live nodes."""
    store = make.base.client()  # type: ignore[attr-defined]
    dead = json.dumps(["dead.host", 1, 0, "abcdef"])
    store.add("rdzv.run/r0/seq", 1)
    store.set("rdzv.run/r0/slot/1", dead)
    store.add("rdzv.run/hb/dead.host_1_0_abcdef", 1)
    nodes = [make(4, 4) for _ in range(4)]
    results: list[Any] = []
    first = threading.Thread(
        target=lambda: results.extend(in_threads(*(h.next_rendezvous for h in nodes[:2])))
    )
    first.start()
    time.sleep(3)  # past the liveness window (2 s): round 0 was abandoned
    later = in_threads(*(h.next_rendezvous for h in nodes[2:]))
    first.join(30)
    infos = [*results, *later]
    assert all(isinstance(i, RendezvousInfo) for i in infos), infos
    assert {(i.round, i.world_size) for i in infos} == {(1, 4)}
    assert sorted(i.rank for i in infos) == [0, 1, 2, 3]
    assert store.get("rdzv.run/r0/failure").startswith(b"node dead.host_1_0_abcdef stopped")
    assert store.get("rdzv.run/restarts") == b"1", "an abandoned round counts one restart"


def test_shutdown_closes_the_run(make: Make) -> None:
    handler, other = make(), make()
    in_threads(handler.next_rendezvous)
    assert handler.shutdown() is True
    assert other.is_closed()


def test_events(make: Make) -> None:
    recorder = EventRecorder()
    rdzv_core.register(recorder)
    try:
        handlers = [make(2, 2) for _ in range(2)]
        in_threads(*(h.next_rendezvous for h in handlers))
        handlers[1]._stop_heartbeat()
        deadline = time.monotonic() + 10
        while not handlers[0].num_nodes_waiting():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        handlers[0].set_closed()
    finally:
        rdzv_core.unregister(recorder)
    kinds = [e.kind for e in recorder.events]
    assert kinds.count(EventKind.JOIN) == 2 and kinds.count(EventKind.COMPLETED) == 2
    assert EventKind.NODE_LOST in kinds and kinds[-1] is EventKind.CLOSED
    assert all(e.run_id == "run" for e in recorder.events)


def test_handler_accessors(make: Make) -> None:
    handler = make()
    assert handler.get_backend() == "c10d"
    assert handler.get_run_id() == "run"
    assert handler.use_agent_store is False
    assert handler.is_closed() is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", 1, 1), "The run id must be a non-empty string."),
        (("r", 0, 1), "The minimum number of nodes (0) must be greater than zero."),
        (
            ("r", 3, 2),
            "The maximum number of nodes (2) must be greater than or equal to the "
            "minimum number of nodes (3).",
        ),
    ],
)
def test_handler_validation(args: tuple[Any, ...], message: str) -> None:
    store = MemoryStore()
    with pytest.raises(ValueError) as info:
        RendezvousHandler(args[0], store, StoreBackend(store, "x"), args[1], args[2])
    assert str(info.value) == message


@pytest.mark.parametrize("local_addr", ["a..b", "node 1", "x" * 64 + ".example", "[::1]", "1:2"])
def test_a_malformed_local_address_is_refused(local_addr: str) -> None:
    store = MemoryStore()
    with pytest.raises(ValueError) as info:
        RendezvousHandler("r", store, StoreBackend(store, "r"), 1, 1, local_addr)
    assert str(info.value) == (
        f"The local address {local_addr!r} must be a dot-separated list of labels, an IPv4 "
        "address, or an IPv6 address (the other nodes and workers reach this node by it)."
    )


@pytest.mark.parametrize("local_addr", ["node-1.cluster", "10.0.0.7", "::1", "fe80::1"])
def test_a_local_address_names_the_node_and_its_bootstrap(local_addr: str) -> None:
    store = MemoryStore()
    handler = RendezvousHandler("r", store, StoreBackend(store, "r"), 1, 1, local_addr)
    info = handler.next_rendezvous()
    assert handler.node_id.startswith(f"{local_addr}_")
    assert info.bootstrap_store_info.master_addr == local_addr
    handler.close()


def settings(**config: Any) -> HandlerSettings:
    return HandlerSettings.from_params(RendezvousParameters("c10d", "", "r", 1, 1, **config))


def test_settings_defaults_and_options() -> None:
    default = settings()
    assert (
        default.join_timeout,
        default.last_call_timeout,
        default.close_timeout,
        default.heartbeat_timeout,
    ) == tuple(timedelta(seconds=s) for s in (600, 30, 30, 5))
    assert default.liveness_window == timedelta(seconds=15)
    custom = settings(join_timeout="7", heartbeat_timeout=" 2 ", keep_alive_interval="1")
    assert custom.join_timeout == timedelta(seconds=7)
    assert custom.heartbeat_timeout == timedelta(seconds=2)
    assert custom.liveness_window == timedelta(seconds=3)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"join_timeout": "0"}, "The join timeout (0:00:00) must be positive."),
        ({"join_timeout": "-5"}, "The join timeout (-1 day, 23:59:55) must be positive."),
        ({"last_call_timeout": "0"}, "The last call timeout (0:00:00) must be positive."),
        ({"close_timeout": "-1"}, "The close timeout (-1 day, 23:59:59) must be positive."),
        ({"heartbeat_timeout": "0"}, "The heartbeat timeout (0:00:00) must be positive."),
        ({"keep_alive_interval": "0"}, "The keep-alive interval (0:00:00) must be positive."),
        ({"keep_alive_max_attempt": "0"}, "The keep-alive max attempt (0) must be at least 1."),
        (
            {"join_timeout": "2147483648"},
            "The join timeout must be at most 2147483647 seconds, got 2147483648.",
        ),
        (
            {"keep_alive_interval": "99999999999999999999"},
            "The keep-alive interval must be at most 2147483647 seconds, got 99999999999999999999.",
        ),
        (
            {"keep_alive_interval": "86401", "keep_alive_max_attempt": "24856"},
            "The liveness window, keep-alive interval x max attempt (86401 s x 24856), must be at "
            "most 2147483647 seconds.",
        ),
        (
            {"join_timeout": "1.5"},
            "The rendezvous configuration option 'join_timeout' does not represent a valid "
            "integer value.",
        ),
    ],
)
def test_settings_validation(config: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as info:
        settings(**config)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("  ", {}),
        ("a=1", {"a": "1"}),
        (" a = 1 , b=2", {"a": "1", "b": "2"}),
        ("a=b=c", {"a": "b=c"}),
        ("a=x y", {"a": "x y"}),
        ("a=1,a=2", {"a": "2"}),
    ],
)
def test_parse_config(text: str, expected: dict[str, str]) -> None:
    assert parse_config(text) == expected


@pytest.mark.parametrize("text", ["=1", "a=1,,b=2", "a=1,"])
def test_parse_config_empty_key(text: str) -> None:
    with pytest.raises(ValueError, match="must be in format <key1>=<value1>"):
        parse_config(text)


@pytest.mark.parametrize("text", ["a", "a="])
def test_parse_config_missing_value(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_config(text)
    assert str(info.value) == "The rendezvous configuration option 'a' must have a value specified."


def test_parse_nnodes() -> None:
    assert parse_nnodes("3") == (3, 3)
    assert parse_nnodes("1:4") == (1, 4)
    for bad in ("0", "3:2", "a", "1:2:3", ""):
        with pytest.raises(ValueError, match="nnodes"):
            parse_nnodes(bad)
