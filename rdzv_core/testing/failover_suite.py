"""FailoverScenarios: an optional section for store types on a replicated engine.

A store type whose engine keeps serving when one of its members dies (an etcd leader, a
Redis master under Sentinel) proves it here. Opt in with one subclass that sets
``store_type`` and provides four fixtures:

- ``store_factory``: a picklable callable that opens a NEW client of ONE fresh key space on
  the replicated engine, with a timeout longer than a failover takes;
- ``failover``: a callable that kills the member serving writes now (leader, master) and
  returns once it is dead; the fixture brings the engine back to full strength when the
  test ends;
- ``endpoint``: the endpoint a rendezvous of node processes uses (every member, or the
  Sentinels);
- ``rendezvous_config`` (optional, default ``""``): extra ``k=v,...`` config for the nodes.

The tests run real processes: adds from several of them across the failover end with the
counter equal to the number of adds acknowledged (none lost, none applied twice); items
pushed by one process across the failover are popped by another exactly once, in order; a
read
blocked before the failover returns the value written after it; a rendezvous of four node
processes completes across it with ranks 0..3.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ..errors import StoreError, StoreTimeoutError
from ..rendezvous.demo import DEMO_CONFIG
from ..store import Store
from ._support import StoreFactory, SuiteBase, process_context

__all__ = ["FailoverScenarios"]

WAIT = 120.0
ADDERS = 4
NODES = 4


def _add_until_stopped(factory: StoreFactory, stop: str, results: Any) -> None:
    """Add 1 to ``n`` until the file ``stop`` exists; report (acknowledged, errors)."""
    acknowledged, errors = 0, []
    client = factory()
    try:
        while not os.path.exists(stop):
            try:
                client.add("n", 1)
                acknowledged += 1
            except StoreError as e:
                errors.append(f"{type(e).__name__}: {e}")
                time.sleep(0.05)
    finally:
        client.close()
    results.put((acknowledged, errors))


def _get_once(factory: StoreFactory, results: Any) -> None:
    client = factory()
    try:
        results.put(("value", client.get("late")))
    except BaseException as e:
        results.put(("error", f"{type(e).__name__}: {e}"))
    finally:
        client.close()


def _push_until_stopped(factory: StoreFactory, stop: str, results: Any) -> None:
    """Push 0, 1, 2, ... to queue ``q`` until the file ``stop`` exists, then ``end``;
    report (the items acknowledged, errors). Every 10 pushes, the count goes to ``pushed``."""
    acknowledged: list[bytes] = []
    errors: list[str] = []
    client = factory()
    try:
        while not os.path.exists(stop):
            item = str(len(acknowledged))
            try:
                client.queue_push("q", item)
                acknowledged.append(item.encode())
                if len(acknowledged) % 10 == 0:
                    client.set("pushed", str(len(acknowledged)))
            except StoreError as e:
                errors.append(f"{type(e).__name__}: {e}")
                time.sleep(0.05)
        client.queue_push("q", "end")
    finally:
        client.close()
    results.put(("pushed", acknowledged, errors))


def _pop_until_end(factory: StoreFactory, results: Any) -> None:
    """Pop queue ``q`` until ``end``; report (the items popped, errors)."""
    popped, errors = [], []
    client = factory()
    try:
        while True:
            try:
                item = client.queue_pop("q", timeout=1.0)
            except StoreTimeoutError:
                continue
            except StoreError as e:
                errors.append(f"{type(e).__name__}: {e}")
                time.sleep(0.05)
                continue
            if item == b"end":
                break
            popped.append(item)
    finally:
        client.close()
    results.put(("popped", popped, errors))


def _pushed(client: Store) -> int:
    try:
        return int(client.get("pushed"))
    except StoreError:
        return -1  # not yet, or mid-failover: look again later


def _read_counter(client: Store) -> int:
    try:
        return client.add("n", 0)
    except StoreError:
        return -1  # mid-failover: look again later


class FailoverScenarios(SuiteBase):
    """The store, and a rendezvous on it, across the death of the engine's leader."""

    store_type: ClassVar[str]

    @pytest.fixture
    def rendezvous_config(self) -> str:
        return ""

    @pytest.fixture
    def processes(self) -> Iterator[Callable[..., multiprocessing.process.BaseProcess]]:
        """Start processes (see ``process_context``); each is killed at the end of the test
        if still alive."""
        ctx = process_context()
        started: list[multiprocessing.process.BaseProcess] = []

        def start(target: Callable[..., None], *args: Any) -> multiprocessing.process.BaseProcess:
            proc = ctx.Process(target=target, args=args, daemon=True)
            proc.start()
            started.append(proc)
            return proc

        yield start
        for proc in started:
            if proc.is_alive():
                proc.kill()
            proc.join(10)

    def test_adds_across_a_failover_are_neither_lost_nor_doubled(
        self,
        process_store_factory: StoreFactory,
        new_client: StoreFactory,
        failover: Callable[[], None],
        processes: Callable[..., Any],
        tmp_path: Path,
    ) -> None:
        results = process_context().Queue()
        stop = str(tmp_path / "stop")
        for _ in range(ADDERS):
            processes(_add_until_stopped, process_store_factory, stop, results)
        watcher = new_client()
        deadline = time.monotonic() + WAIT
        while _read_counter(watcher) < 20 * ADDERS:
            assert time.monotonic() < deadline, "the adders never got going"
            time.sleep(0.05)
        failover()
        killed_at = _read_counter(watcher)  # rides out the failover itself
        while _read_counter(watcher) < killed_at + 20 * ADDERS:
            assert time.monotonic() < deadline, "the adds did not resume after the failover"
            time.sleep(0.05)
        Path(stop).touch()
        reports = [results.get(timeout=WAIT) for _ in range(ADDERS)]
        errors = [e for _, errs in reports for e in errs]
        assert not errors, f"adds failed across the failover (their outcome is unknown): {errors}"
        acknowledged = sum(count for count, _ in reports)
        assert watcher.add("n", 0) == acknowledged, (
            f"{acknowledged} adds were acknowledged but the counter is {watcher.add('n', 0)}: "
            "an add was lost or applied twice"
        )

    def test_queue_items_across_a_failover_are_popped_exactly_once_in_order(
        self,
        process_store_factory: StoreFactory,
        new_client: StoreFactory,
        failover: Callable[[], None],
        processes: Callable[..., Any],
        tmp_path: Path,
    ) -> None:
        results = process_context().Queue()
        stop = str(tmp_path / "stop")
        processes(_push_until_stopped, process_store_factory, stop, results)
        processes(_pop_until_end, process_store_factory, results)
        watcher = new_client()
        watcher.timeout = 5
        deadline = time.monotonic() + WAIT
        while _pushed(watcher) < 20:
            assert time.monotonic() < deadline, "the pusher never got going"
            time.sleep(0.05)
        failover()
        killed_at = _pushed(watcher)
        while _pushed(watcher) < killed_at + 20:
            assert time.monotonic() < deadline, "the pushes did not resume after the failover"
            time.sleep(0.05)
        Path(stop).touch()
        reports = dict((kind, (items, errors)) for kind, items, errors in
                       (results.get(timeout=WAIT) for _ in range(2)))  # fmt: skip
        errors = reports["pushed"][1] + reports["popped"][1]
        assert not errors, f"queue calls failed across the failover: {errors}"
        pushed, popped = reports["pushed"][0], reports["popped"][0]
        assert popped == pushed, (
            f"{len(pushed)} pushes were acknowledged and {len(popped)} items popped: an item "
            "was lost, popped twice or out of order"
        )

    def test_a_read_blocked_before_a_failover_returns_the_value_written_after(
        self,
        process_store_factory: StoreFactory,
        new_client: StoreFactory,
        failover: Callable[[], None],
        processes: Callable[..., Any],
    ) -> None:
        results = process_context().Queue()
        processes(_get_once, process_store_factory, results)
        writer = new_client()
        time.sleep(1.5)  # the reader has started and is blocked
        assert results.empty(), f"the read returned before the key existed: {results.get()}"
        failover()
        writer.set("late", "after the failover")
        outcome = results.get(timeout=WAIT)
        assert outcome == ("value", b"after the failover"), outcome

    def test_a_rendezvous_completes_across_a_failover(
        self,
        new_client: StoreFactory,
        failover: Callable[[], None],
        endpoint: str,
        rendezvous_config: str,
    ) -> None:
        run_id = f"failover-{uuid.uuid4().hex[:8]}"
        config = ",".join(filter(None, [DEMO_CONFIG, rendezvous_config]))
        command = [sys.executable, "-m", "rdzv_core.rendezvous.demo", "node", endpoint,
                   self.store_type, run_id, str(NODES), str(NODES), config]  # fmt: skip
        nodes = [
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(NODES)
        ]
        try:
            from ..params import RendezvousParameters
            from ..registry import create_store

            observer = create_store(
                RendezvousParameters("c10d", endpoint, run_id, 1, 1, store_type=self.store_type,
                                     **dict(kv.split("=", 1) for kv in config.split(",") if kv))
            )  # fmt: skip
            try:
                deadline = time.monotonic() + WAIT
                while observer.add(f"rdzv.{run_id}/nodes", 0) < NODES // 2:
                    assert time.monotonic() < deadline, "the nodes never started joining"
                    time.sleep(0.02)
            finally:
                observer.close()
            failover()  # while the rendezvous is under way
            rounds = []
            for node in nodes:
                assert node.stdout is not None, "the node's stdout must be piped"
                for line in node.stdout:
                    event = json.loads(line)
                    assert event["event"] != "error", f"a node failed: {event['error']}"
                    if event["event"] == "round":
                        rounds.append(event)
                        break
            assert sorted(r["rank"] for r in rounds) == list(range(NODES)), (
                f"the {NODES} nodes must complete one round with ranks 0..{NODES - 1}: {rounds}"
            )
            assert {(r["round"], r["world"]) for r in rounds} == {(0, NODES)}, rounds
        finally:
            for node in nodes:
                node.kill()
                node.communicate()
