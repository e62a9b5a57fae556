"""A run's live status, for ``rdzv watch`` and scripts: the current round and its state,
the nodes with their heartbeat ages, spares, lost nodes, exclusions, and the history of the
rounds (when, how long, who joined or left). While a round gathers, the members shown are
those of the last completed round (``members_round``), with the ones lost marked.

A heartbeat is a counter: its age is how long *this watcher* has seen it stand still, so
the first look reports every node fresh. A member whose heartbeat stood still for the
run's liveness window is marked stale: the other nodes report it lost about then.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..store import PrefixStore, Store
from .inspect import Memberships, _peek, read_members, read_run

__all__ = ["RunStatuses", "RunWatcher", "render", "summary"]

#: How many rounds the history keeps.
HISTORY = 20
_DEFAULT_LIVENESS = 15.0


class RunWatcher:
    """Reads ``run_id``'s status from ``store`` each time :meth:`snapshot` is called."""

    def __init__(self, store: Store, run_id: str) -> None:
        self._raw = store
        self._run = PrefixStore(f"rdzv.{run_id}", store)
        self._run_id = run_id
        self._beats: dict[str, tuple[int, float]] = {}
        self._rounds: dict[int, dict[str, Any]] = {}  # finished rounds, read once
        self._members: Memberships = {}  # completed rounds' memberships, read once

    def snapshot(self) -> dict[str, Any]:
        """The status now (``read_run``'s fields, plus ``state``, each member's
        ``beat_age`` and ``stale``, and ``history``). Store failures raise
        RendezvousConnectionError."""
        run = read_run(self._raw, self._run_id, self._members)
        if not run["exists"]:
            return run
        if self._rounds and run["round"] < max(self._rounds):  # started again from nothing
            self._rounds.clear()
        run["members_round"] = run["round"] if run["complete"] else None
        if not run["complete"] and not run["closed"]:
            self._previous_members(run)
        now = time.monotonic()
        liveness = float(run.get("liveness") or _DEFAULT_LIVENESS)
        for member in run["members"]:
            age = self._age(member["node"], member["heartbeats"], now)
            member["beat_age"] = round(age, 1)
            member["stale"] = age >= liveness
        if len(self._beats) > 2 * len(run["members"]) + 64:  # forget nodes long gone
            shown = {member["node"] for member in run["members"]}
            self._beats = {node: seen for node, seen in self._beats.items() if node in shown}
        run["state"] = _state(run)
        run["history"] = self._history(run["round"])
        return run

    def _previous_members(self, run: dict[str, Any]) -> None:
        """While a round gathers, show the members of the last completed round (and who
        was lost in it): who was in the job, and who is missing."""
        for number in range(run["round"] - 1, max(-1, run["round"] - HISTORY - 1), -1):
            found = read_members(self._run, number, self._members)
            if found is not None:
                run["members"], lost = found
                run["lost"] = list(dict.fromkeys([*lost, *run["lost"]]))
                run["members_round"] = number
                return

    def _age(self, node: str, beat: int, now: float) -> float:
        seen = self._beats.get(node)
        if seen is None or seen[0] != beat:
            self._beats[node] = (beat, now)
            return 0.0
        return now - seen[1]

    def _history(self, current: int) -> list[dict[str, Any]]:
        rounds = []
        previous: set[str] | None = None
        first = max(0, current - HISTORY + 1)
        if first > 0 and first - 1 in self._rounds:
            previous = set(self._rounds[first - 1]["members"])
        for number in range(first, current + 1):
            entry = self._rounds.get(number) or self._read_round(number, number < current)
            members = set(entry["members"])
            shown = {k: v for k, v in entry.items() if k != "members"}
            if previous is not None and entry["outcome"] == "complete":
                shown["joined"] = sorted(members - previous)
                shown["left"] = sorted(previous - members)
            if entry["outcome"] == "complete":
                previous = members
            rounds.append(shown)
        for old in [n for n in self._rounds if n < first - 1]:
            del self._rounds[old]
        for key in [key for key in self._members if key[0] < first - 1]:
            del self._members[key]
        return rounds

    def _read_round(self, number: int, finished: bool) -> dict[str, Any]:
        r = f"r{number}/"
        final = _peek(self._run, r + "final")
        world = _peek(self._run, r + "world")
        started = _peek(self._run, r + "started")
        done = _peek(self._run, r + "completed_at")
        members: list[str] = []
        if final is None:
            outcome = "gathering"
        elif final == b"closed":
            outcome = "closed"
        elif final.startswith(b"failed:"):
            outcome = "failed"
        elif world is None:
            outcome = "assigning" if not finished else "no active set"
        else:
            outcome = "complete"
            if (number, done) in self._members:
                members = self._members[number, done][0]
            else:
                keys = [f"{r}member/{i}" for i in range(int(world))]
                members = [v.decode() for v in self._run.multi_get(keys)]
        failure = _peek(self._run, r + "failure") if outcome == "failed" else None
        entry: dict[str, Any] = {
            "round": number,
            "outcome": outcome,
            "world_size": len(members) if outcome == "complete" else None,
            "started": float(started) if started else None,
            "completed_at": float(done) if done else None,
            "seconds": round(float(done) - float(started), 3) if done and started else None,
            "failure": failure.decode(errors="replace") if failure else None,
            "members": members,
        }
        if finished or outcome == "complete":
            self._rounds[number] = entry
        return entry


class RunStatuses:
    """Snapshots of the runs on ``store`` for many readers (a status page, metrics).

    A snapshot is reused for ``min_age`` seconds (0.5), or for ``cost_factor`` (20) times as
    long as reading it took when that is longer: many readers cost the store what one
    does, and reading takes about 1/``cost_factor`` of the store's time at most, however
    large the run or busy the store. Thread-safe.
    """

    def __init__(self, store: Store, min_age: float = 0.5, cost_factor: float = 20) -> None:
        self._store = store
        self._min_age = min_age
        self._cost_factor = cost_factor
        self._lock = threading.Lock()
        self._watchers: dict[str, RunWatcher] = {}
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}  # run -> (expiry, status)

    def get(self, run_id: str) -> dict[str, Any]:
        """``run_id``'s status (a :meth:`RunWatcher.snapshot`), perhaps reused."""
        with self._lock:
            cached = self._cache.get(run_id)
            if cached is not None and time.monotonic() < cached[0]:
                return cached[1]
            watcher = self._watchers.get(run_id)
            if watcher is None:
                watcher = self._watchers[run_id] = RunWatcher(self._store, run_id)
            start = time.monotonic()
            snapshot = watcher.snapshot()
            now = time.monotonic()
            lifetime = max(self._min_age, self._cost_factor * (now - start))
            self._cache[run_id] = (now + lifetime, snapshot)
            return snapshot


def _state(run: dict[str, Any]) -> str:
    if run["closed"]:
        return "closed"
    if run["complete"]:
        return "complete"
    low = (run.get("nnodes") or [None])[0]
    if low is not None and run["joined"] >= low:
        return "last call"
    return "joining"


def _clean(text: Any) -> str:
    """``text`` safe for a terminal: control characters (escape sequences a node could
    send) shown as ``?``."""
    return "".join(c if c.isprintable() else "?" for c in str(text))


def summary(run: dict[str, Any]) -> str:
    """One line: the round, its state and its counts (for output that is not a terminal)."""
    if not run["exists"]:
        return f"run {_clean(run['run_id'])}: no rendezvous state"
    nnodes = run.get("nnodes") or ["?", "?"]
    stale = sum(1 for m in run["members"] if m.get("stale"))
    return (
        f"run {_clean(run['run_id'])} round {run['round']} {run['state']}: "
        f"{run['joined']} joined (min {nnodes[0]}, max {nnodes[1]}), "
        f"{len(run['members'])} members ({stale} stale), {len(run['spares'])} spares, "
        f"{len(run['lost'])} lost, {run['waiting_or_lost']} pending"
        + (f"; closed: {_clean(run['closed_reason'])}" if run.get("closed_reason") else "")
    )


def _bar(done: int, low: int, high: int, width: int = 30) -> str:
    filled = min(width, round(width * done / max(high, 1)))
    mark = min(width - 1, round(width * low / max(high, 1)))
    cells = ["#" if i < filled else "-" for i in range(width)]
    cells[mark] = "|" if mark >= filled else cells[mark]
    return "[" + "".join(cells) + "]"


def render(run: dict[str, Any], width: int = 100) -> str:
    """The status as a screen of text: a header with a progress bar, the members, spares,
    lost nodes and exclusions, then the history."""
    if not run["exists"]:
        return summary(run)
    nnodes = run.get("nnodes") or [0, 0]
    lines = [summary(run)[:width]]
    if nnodes[1]:
        lines.append(f"{_bar(run['joined'], nnodes[0], nnodes[1])} {run['joined']} of "
                     f"{nnodes[0]}..{nnodes[1]}")  # fmt: skip
    shown = run.get("members_round")
    if shown is not None and shown != run["round"]:
        lines.append(f"round {run['round']} is gathering; the members of round {shown}:")
    lines.append(f"{'rank':>5}  {'node':<36} {'host':<20} {'heartbeat':>10}  attributes")
    for m in run["members"]:
        attrs = ", ".join(f"{k}={v}" for k, v in m["attributes"].items() if k != "host")
        beat = f"{m['beat_age']:.1f} s" + (" STALE" if m.get("stale") else "")
        host = m["attributes"].get("host", "")
        lines.append(
            _clean(f"{m['rank']:>5}  {m['node']:<36} {host:<20} {beat:>10}  {attrs}")[:width]
        )
    for spare in run["spares"]:
        lines.append(_clean(f"{'spare':>5}  {spare['node']:<36} ({spare['why']})")[:width])
    for node in run["lost"]:
        lines.append(_clean(f"{'lost':>5}  {node}")[:width])
    for subject, record in run.get("exclusions", {}).items():
        left = record["seconds_left"]
        if left is None or left > 0:
            how = "permanently" if left is None else f"{left:.0f} s left"
            lines.append(_clean(f"excluded {subject} ({how}): {record['reason']}")[:width])
    lines.append("history:")
    for entry in run["history"][-10:]:
        took = f" in {entry['seconds']:.2f} s" if entry.get("seconds") is not None else ""
        when = (
            time.strftime(" at %H:%M:%S", time.localtime(entry["started"]))
            if entry.get("started")
            else ""
        )
        change = ""
        if entry.get("joined") or entry.get("left"):
            change = f", +{len(entry['joined'])} joined, -{len(entry['left'])} left"
        size = f" world {entry['world_size']}" if entry.get("world_size") else ""
        why = f": {entry['failure']}" if entry.get("failure") else ""
        lines.append(_clean(f"  round {entry['round']} {entry['outcome']}{size}{when}{took}"
                            f"{change}{why}")[:width])  # fmt: skip
    return "\n".join(lines)
