"""Read a run's rendezvous keys back into a readable description (for ``rdzv state``)."""

from __future__ import annotations

import json
import time
from typing import Any

from ..errors import CONNECTION_FAILED, RendezvousConnectionError, StoreError
from ..store import PrefixStore, Store

__all__ = ["describe_run", "read_members", "read_run"]

_ABSENT = "\x00absent"


def _peek(store: Store, key: str) -> bytes | None:
    value = store.compare_set(key, _ABSENT, _ABSENT)
    return None if value == _ABSENT.encode() else value


def read_members(
    store: Store, round_: int, rounds: Memberships | None = None
) -> tuple[list[dict[str, Any]], list[str]] | None:
    """The members of a completed round (rank, node, heartbeats, attributes) and the ids
    reported lost in it, from the run's prefixed ``store``; None if the round did not
    complete with ranks. ``rounds`` as for :func:`read_run`."""
    r = f"r{round_}/"
    final = _peek(store, r + "final")
    world = _peek(store, r + "world")
    if final is None or world is None or final == b"closed" or final.startswith(b"failed:"):
        return None
    done = _peek(store, r + "completed_at")
    ids, attrs = _membership(store, round_, done, int(final.split(b":")[0]), int(world), rounds)
    beats = store.multi_get([f"hb/{node}" for node in ids]) if ids else []
    members = [
        {"rank": i, "node": node, "heartbeats": int(b or b"0"),
         "attributes": attrs.get(node, {})}
        for i, (node, b) in enumerate(zip(ids, beats))
    ]  # fmt: skip
    return members, _lost(store, r)


def _lost(store: Store, r: str) -> list[str]:
    count = int(_peek(store, r + "lost_count") or b"0")
    keys = [f"{r}lost_id/{i}" for i in range(1, count + 1)]
    return [v.decode() for v in store.multi_get(keys)] if keys else []


#: A completed round's member ids by rank and each node's attributes.
Membership = tuple[list[str], dict[str, dict[str, str]]]
#: Completed rounds' memberships already read, by (round, the round's ``completed_at``:
#: a run started again from nothing under the same id does not match).
Memberships = dict[tuple[int, bytes | None], Membership]


def _membership(
    store: Store,
    round_: int,
    completed_at: bytes | None,
    size: int,
    world: int,
    rounds: Memberships | None,
) -> Membership:
    """Round ``round_``'s membership, from ``rounds`` when it holds it (a completed round's
    ranks and slot records never change), else read (and kept there)."""
    key = (round_, completed_at)
    if rounds is not None and key in rounds:
        return rounds[key]
    r = f"r{round_}/"
    ids = [m.decode() for m in store.multi_get([f"{r}member/{i}" for i in range(world)])]
    attrs = _attributes(store.multi_get([f"{r}slot/{i}" for i in range(1, size + 1)]))
    if rounds is not None:
        rounds[key] = (ids, attrs)
    return ids, attrs


def read_run(raw: Store, run_id: str, rounds: Memberships | None = None) -> dict[str, Any]:
    """The state of ``run_id``: round, closed, and the current round's membership.
    ``rounds``: completed rounds' memberships already read (a watcher's), filled in."""
    store = PrefixStore(f"rdzv.{run_id}", raw)
    try:
        round_raw = _peek(store, "round")
        if round_raw is None and not store.check(["policy"]):
            return {"run_id": run_id, "exists": False}
        round_ = int(round_raw or b"0")  # nodes came, but none took a slot yet
        closed = store.check(["closed"])
        r = f"r{round_}/"
        joined = int(_peek(store, r + "seq") or b"0")
        final = _peek(store, r + "final")
        ranked = final is not None and final != b"closed" and not final.startswith(b"failed:")
        size = int(final.split(b":")[0]) if final and ranked else None
        world = int(_peek(store, r + "world") or size or 0) if size else None
        members: list[dict[str, Any]] = []
        spares: list[dict[str, Any]] = []
        completed_at = _peek(store, r + "completed_at")
        if size and world:
            ids, attrs = _membership(store, round_, completed_at, size, world, rounds)
            beats = store.multi_get([f"hb/{node}" for node in ids])  # one request
            members = [
                {
                    "rank": i,
                    "node": node,
                    "heartbeats": int(b or b"0"),
                    "attributes": attrs.get(node, {}),
                }
                for i, (node, b) in enumerate(zip(ids, beats))
            ]
            left_out = json.loads(_peek(store, r + "spares") or b"[]")
            spares = [
                {"node": n, "attributes": attrs.get(n, {}), "why": "rank policy"} for n in left_out
            ]
        standby = int(_peek(store, r + "standby_count") or b"0")
        if standby:
            keys = [f"{r}standby/{i}" for i in range(1, standby + 1)]
            listed = {spare["node"] for spare in spares}
            spares += [
                {"node": node, "attributes": {}, "why": "round full"}
                for node in dict.fromkeys(v.decode() for v in store.multi_get(keys))
                if node not in listed
            ]
        lost = _lost(store, r)
        pending = int(_peek(store, r + "pending") or b"0")
        master = _peek(store, r + "master")
        policy = json.loads(_peek(store, "policy") or b"{}")
        restarts = int(_peek(store, "restarts") or b"0")
        closed_reason = _peek(store, "closed_reason")
        started = _peek(store, r + "started")
    except (StoreError, OSError, TimeoutError) as e:
        raise RendezvousConnectionError(CONNECTION_FAILED) from e
    return {
        "run_id": run_id,
        "exists": True,
        "closed": closed,
        "round": round_,
        "complete": size is not None,
        "joined": joined,
        "world_size": world,
        "members": members,
        "spares": spares,
        "waiting_or_lost": pending,
        "lost": lost,
        "master": json.loads(master) if master else None,
        "policy": policy.get("options"),
        "restarts": restarts,
        "closed_reason": closed_reason.decode(errors="replace") if closed_reason else None,
        "exclusions": _exclusions(policy.get("exclusions", {})),
        "nnodes": policy.get("nnodes"),
        "liveness": policy.get("liveness"),
        "started": float(started) if started else None,
        "completed_at": float(completed_at) if completed_at else None,
    }


def _exclusions(records: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The exclusion records, each with the seconds it has left (None: permanent)."""
    now = time.time()
    out = {}
    for subject, record in records.items():
        left = None if record["permanent"] else max(0.0, record["until"] - now)
        out[subject] = {**record, "seconds_left": left}
    return out


def _attributes(slots: list[bytes]) -> dict[str, dict[str, str]]:
    """Each node's attributes by node id, from the round's slot records."""
    found = {}
    for raw in slots:
        addr, pid, local_id, nonce, *rest = json.loads(raw)
        found[f"{addr}_{pid}_{local_id}_{nonce}"] = dict(rest[0]) if rest else {"host": addr}
    return found


def describe_run(run: dict[str, Any]) -> str:
    """``run`` (from :func:`read_run`) as a few readable lines."""
    if not run["exists"]:
        return f"run {run['run_id']!r}: no rendezvous state in this store"
    status = "closed" if run["closed"] else "complete" if run["complete"] else "gathering"
    lines = [f"run {run['run_id']!r}: round {run['round']}, {status}, {run['joined']} joined"]
    if run.get("closed_reason"):
        lines.append(f"closed: {run['closed_reason']}")
    if run.get("policy"):
        lines.append(f"policy {run['policy']}; {run['restarts']} restart(s) after failures")
    if run["complete"]:
        master = run["master"]
        where = f", master {master[0]}:{master[1]}" if master else ""
        lines.append(f"world size {run['world_size']}{where}")
        for m in run["members"]:
            shown = ", ".join(f"{k}={v}" for k, v in m["attributes"].items() if k != "host")
            lines.append(
                f"  rank {m['rank']:>4}  {m['node']}  ({m['heartbeats']} heartbeats)"
                + (f"  [{shown}]" if shown else "")
            )
    for spare in run.get("spares", []):
        lines.append(f"  spare      {spare['node']}  ({spare['why']})")
    if run["waiting_or_lost"]:
        lines.append(f"{run['waiting_or_lost']} change(s) pending: nodes waiting or lost")
    lines += [f"  lost: {node}" for node in run["lost"]]
    for subject, record in run.get("exclusions", {}).items():
        left = record["seconds_left"]
        if left is None or left > 0:
            how = "permanently" if left is None else f"{left:.0f} s left"
            lines.append(
                f"  excluded: {subject} ({how}, {record['strikes']} strike(s)): {record['reason']}"
            )
    return "\n".join(lines)
