"""The event log: one JSON line per event, from handlers in this process (config key
``event_log``) and from node processes sharing one file (``RDZV_EVENT_LOG``)."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import rdzv_core
from rdzv_core import RendezvousParameters, StoreType, hookimpl
from rdzv_core.eventlog import EventLog, log_events_to
from rdzv_core.rendezvous import create_handler
from rdzv_core.testing import MemoryStore

from .test_policy import clean_env, node_command


class SharedMemory:
    """A store type whose stores are clients of one in-process store."""

    def __init__(self) -> None:
        self.base = MemoryStore(timeout=timedelta(seconds=10))

    @hookimpl
    def rdzv_store_type(self) -> StoreType:
        return StoreType("shared", "For these tests.", lambda params: self.base.client(),
                         capabilities=MemoryStore.capabilities)  # fmt: skip


@pytest.fixture
def shared() -> Iterator[SharedMemory]:
    plugin = SharedMemory()
    rdzv_core.register(plugin)
    yield plugin
    rdzv_core.unregister(plugin)


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_config_key_logs_every_event_of_a_round(tmp_path: Path, shared: Any) -> None:
    path = tmp_path / "events.jsonl"
    config = {"store_type": "shared", "event_log": str(path), "last_call_timeout": "1"}
    handlers = [
        create_handler(RendezvousParameters("c10d", "x", "job", 2, 2, "10.0.0.1", **config))
        for _ in range(2)
    ]
    try:
        threads = [threading.Thread(target=h.next_rendezvous) for h in handlers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        handlers[0].shutdown()
    finally:
        for handler in handlers:
            handler.close()
        log_events_to(str(path)).stop()
    events = read_log(path)
    kinds = [e["kind"] for e in events]
    assert kinds.count("store_created") == 2 and kinds.count("join") == 2
    assert kinds.count("ranks_assigned") == 1 and kinds.count("closed") == 1
    completed = [e for e in events if e["kind"] == "completed"]
    assert sorted(e["details"]["rank"] for e in completed) == [0, 1]
    assert all(e["run_id"] == "job" and e["details"]["seconds"] >= 0 for e in completed)
    assigned = next(e for e in events if e["kind"] == "ranks_assigned")
    assert len(assigned["details"]["members"]) == 2 and assigned["details"]["spares"] == []


def test_failures_are_logged_with_their_description(tmp_path: Path, shared: Any) -> None:
    path = tmp_path / "events.jsonl"
    config = {"store_type": "shared", "event_log": str(path), "join_timeout": "1"}
    handler = create_handler(RendezvousParameters("c10d", "x", "late", 2, 2, **config))
    try:
        with pytest.raises(rdzv_core.RendezvousTimeoutError):
            handler.next_rendezvous()
    finally:
        handler.close()
        log_events_to(str(path)).stop()
    failure = next(e for e in read_log(path) if e["kind"] == "failure")
    assert failure["error"].startswith("RendezvousTimeoutError: The rendezvous 'late'")


def test_an_unwritable_log_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="event_log: cannot open .*missing/events.jsonl"):
        EventLog(str(tmp_path / "missing" / "events.jsonl"))


def test_node_processes_share_one_log_file(tmp_path: Path) -> None:
    """Three node processes append to one file: every line is whole JSON; the file tells
    the story (joins, the ranks, a lost node, the next round)."""
    endpoint = str(tmp_path / "store")
    path = tmp_path / "events.jsonl"
    env = clean_env(RDZV_EVENT_LOG=str(path))
    procs = [
        subprocess.Popen(node_command(endpoint, "story", 2, 3, ""), stdout=subprocess.PIPE,
                         text=True, env=env)
        for _ in range(3)
    ]  # fmt: skip

    def round_of(proc: subprocess.Popen[str], world: int) -> int:
        """The node's next round of ``world`` nodes (on busy cores a node can start after
        round 0's last call: a round of 2 comes first, then one of 3)."""
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "round" and event["world"] == world:
                return int(event["round"])
        raise AssertionError("the node ended before its round")

    try:
        full = {round_of(proc, 3) for proc in procs}
        assert len(full) == 1, f"the three nodes are in different rounds: {full}"
        procs[2].kill()
        after = {round_of(p, 2) for p in procs[:2]}
        assert len(after) == 1 and min(after) > min(full), f"the survivors' rounds: {after}"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)
            proc.stdout.close()  # type: ignore[union-attr]
    events = read_log(path)  # every line parses: none was torn or interleaved
    assert len({e["pid"] for e in events}) == 3
    kinds = [e["kind"] for e in events]
    rounds = [e["details"]["round"] for e in events if e["kind"] == "completed"]
    assert kinds.count("join") >= 5 and kinds.count("ranks_assigned") == len(set(rounds))
    lost = [e for e in events if e["kind"] == "node_lost"]
    assert lost and all(e["run_id"] == "story" for e in lost)
    assert rounds.count(min(full)) == 3 and rounds.count(min(after)) == 2
