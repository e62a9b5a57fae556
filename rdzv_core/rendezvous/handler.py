"""The rendezvous handler: membership, ranks and liveness over any Store.

The protocol (the README's "The rendezvous protocol" page) keeps every step O(1) per node:
a node takes an arrival slot with one atomic ``add``, one ``compare_set`` fixes a round's
membership, and nodes block on keys instead of polling. All of a run's keys live under
``rdzv.<run_id>/``; a round's keys under ``rdzv.<run_id>/r<round>/``.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from ..backend import RendezvousBackend
from ..endpoint import is_valid_host
from ..errors import (
    CONNECTION_FAILED,
    RendezvousClosedError,
    RendezvousConnectionError,
    RendezvousError,
    RendezvousGracefulExitError,
    RendezvousRestartLimitError,
    RendezvousTimeoutError,
    StoreDataLostError,
    StoreError,
)
from ..eventlog import ENV as EVENT_LOG_ENV
from ..eventlog import log_events_to
from ..events import EventKind, RendezvousEvent, emit
from ..params import RendezvousParameters
from ..store import PrefixStore, Store
from .admission import Admission
from .policy import (
    Candidate,
    Exclusion,
    HealthCheck,
    RankPolicy,
    RestartBudget,
    node_attributes,
)
from .settings import HandlerSettings

__all__ = [
    "RendezvousHandler",
    "RendezvousInfo",
    "RendezvousStoreInfo",
    "create_handler",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_ABSENT = "\x00absent"  # compare_set(key, _ABSENT, _ABSENT) reads a key without blocking
_CLOSED = b"closed"
_FAILED = "failed:"  # a round's final token when a node failed while it joined
_SPARE = "spare"  # a rank value: the rank policy left this node out of the round
_NO_ACTIVE = "none"  # a rank value: too few nodes could be active; join the next round
_EXCLUSIONS = "exclusions: "  # closed_reason prefix: exclusions left too few nodes
_STORE_FAILURES = (StoreError, OSError, TimeoutError)
_local_ids = itertools.count()


@dataclass(frozen=True)
class RendezvousStoreInfo:
    """Where rank 0 of a round invites the workers' own bootstrap (MASTER_ADDR/PORT)."""

    master_addr: str
    master_port: int


@dataclass(frozen=True)
class RendezvousInfo:
    """The outcome of one completed round, for this node."""

    store: Store
    rank: int
    world_size: int
    bootstrap_store_info: RendezvousStoreInfo
    round: int


@dataclass(frozen=True, order=True)
class _Node:
    addr: str
    pid: int
    local_id: int
    nonce: str
    attrs: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @property
    def id(self) -> str:
        return f"{self.addr}_{self.pid}_{self.local_id}_{self.nonce}"

    def encode(self) -> str:
        fields: list[Any] = [self.addr, self.pid, self.local_id, self.nonce]
        if self.attrs:
            fields.append(dict(self.attrs))
        return json.dumps(fields)

    @classmethod
    def decode(cls, raw: bytes) -> _Node:
        addr, pid, local_id, nonce, *rest = json.loads(raw)
        attrs = tuple((str(k), str(v)) for k, v in rest[0].items()) if rest else ()
        return cls(str(addr), int(pid), int(local_id), str(nonce), attrs)


@dataclass
class _Membership:
    round: int
    slot: int
    rank: int
    world_size: int
    successor: str | None
    watched_value: int | None = None
    watched_since: float = 0.0


def _r(round_: int, name: str) -> str:
    return f"r{round_}/{name}"


class RendezvousHandler:
    """Lets N nodes agree on a round's membership and ranks, elastically.

    A round completes at once when ``max_nodes`` have joined, or ``last_call_timeout``
    after the ``min_nodes``-th joined. Ranks are the positions of the participants sorted
    by (address, pid, local id, nonce): nodes of one host get neighbouring ranks. Every
    node heartbeats in the background; each participant watches the next rank's heartbeat
    and reports it lost when it stood still for ``keep_alive_interval x
    keep_alive_max_attempt``, which makes :meth:`num_nodes_waiting` positive for everyone.
    """

    def __init__(
        self,
        run_id: str,
        store: Store,
        backend: RendezvousBackend,
        min_nodes: int,
        max_nodes: int,
        local_addr: str | None = None,
        settings: HandlerSettings | None = None,
        *,
        owns_store: bool = False,
        policy: RankPolicy | None = None,
        attributes: Mapping[str, str] | None = None,
        health: HealthCheck | None = None,
        exclusion: Exclusion | None = None,
        budget: RestartBudget | None = None,
    ) -> None:
        if not run_id:
            raise ValueError("The run id must be a non-empty string.")
        if min_nodes < 1:
            raise ValueError(
                f"The minimum number of nodes ({min_nodes}) must be greater than zero."
            )
        if max_nodes < min_nodes:
            raise ValueError(
                f"The maximum number of nodes ({max_nodes}) must be greater than or equal to the "
                f"minimum number of nodes ({min_nodes})."
            )
        if local_addr is not None and not is_valid_host(local_addr):
            raise ValueError(
                f"The local address {local_addr!r} must be a dot-separated list of labels, an "
                "IPv4 address, or an IPv6 address (the other nodes and workers reach this node "
                "by it)."
            )
        segments = policy.segments if policy is not None else None
        if segments is not None and segments.size > max_nodes:
            raise ValueError(
                f"segment={segments.size} needs max_nodes of at least {segments.size} (a round "
                f"of at most {max_nodes} nodes never holds a whole segment)."
            )
        self._run_id = run_id
        self._raw_store = store
        self._store = PrefixStore(f"rdzv.{run_id}", store)
        self._backend = backend
        self._min = min_nodes
        self._max = max_nodes
        self._settings = settings or HandlerSettings()
        self._owns_store = owns_store
        self._policy = policy or RankPolicy()
        addr = local_addr or socket.getfqdn()
        attrs = tuple(sorted({**(attributes or {}), "host": addr}.items()))
        self._node = _Node(addr, os.getpid(), next(_local_ids), secrets.token_hex(3), attrs)
        exclusion = exclusion or Exclusion()
        self._budget = budget or RestartBudget(self._policy.max_restarts)
        options = ",".join(
            filter(None, [self._policy.describe(), exclusion.describe(), self._budget.describe()])
        )
        self._admission = Admission(
            self._store, run_id, self._node.id, dict(attrs),
            options, exclusion, health,
            self._close_if_too_few, self._event,
            {"nnodes": [min_nodes, max_nodes], "liveness": self._settings.liveness_window.total_seconds()},
        )  # fmt: skip
        self._lock = threading.Lock()
        self._member: _Membership | None = None
        self._standby = False
        self._counted_waiting: set[int] = set()
        self._registered = False
        self._closed_seen = False
        self._seen_round: int | None = None  # the highest round this node read
        self._member_round: int | None = None  # the last round this node had a rank in
        self._spare_round: int | None = None  # the round this node last waited as a spare
        self._failure_note = ""  # why the last round this node joined was abandoned
        self._lingered = False  # waited, as the host, for every node to see the close
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        # While a thread is inside next_rendezvous it beats between its waits and the
        # heartbeat thread keeps off the store, so a node needs a single connection.
        self._beat_lock = threading.Lock()
        self._joining = False
        self._last_beat = 0.0
        self._join_started = 0.0  # when the running next_rendezvous began

    # -- identity --------------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        """This node's id: ``{addr}_{pid}_{local id}_{nonce}``."""
        return self._node.id

    @property
    def settings(self) -> HandlerSettings:
        return self._settings

    @property
    def use_agent_store(self) -> bool:
        """False: rank 0 does not host a store for the workers; ``bootstrap_store_info``
        names a free port on rank 0's host for the workers' own bootstrap."""
        return False

    def get_backend(self) -> str:
        return self._backend.name

    def get_run_id(self) -> str:
        return self._run_id

    # -- store access ----------------------------------------------------------------------

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except _STORE_FAILURES as e:
            raise RendezvousConnectionError(CONNECTION_FAILED) from e

    def _peek(self, key: str) -> bytes | None:
        value = self._store.compare_set(key, _ABSENT, _ABSENT)
        return None if value == _ABSENT.encode() else value

    def _counter(self, key: str) -> int:
        return self._store.add(key, 0)

    def _current_round(self) -> int:
        value = self._peek("round")
        if value is None:
            if self._seen_round is not None:
                raise self._lost_run(
                    f"its round counter is gone (it was at round {self._seen_round})"
                )
            value = self._store.compare_set("round", "", "0")
        round_ = int(value)
        if self._seen_round is not None and round_ < self._seen_round:
            raise self._lost_run(f"its round counter went back from {self._seen_round} to {round_}")
        self._seen_round = round_
        return round_

    def _lost_run(self, what: str) -> StoreDataLostError:
        """A run whose state vanished is an error, never a new round 0."""
        return StoreDataLostError(
            f"The store lost the state of the rendezvous '{self._run_id}': {what}. Joining "
            "again would start the run over beside nodes that remember it; start the run again."
        )

    def _wait_key(self, key: str, seconds: float) -> bool:
        """Wait up to ``seconds`` for ``key``; False on timeout."""
        return self._wait_keys([key], seconds)

    def _wait_keys(self, keys: list[str], seconds: float) -> bool:
        """Wait up to ``seconds`` for every key; False on timeout. Inside next_rendezvous
        the wait is cut at each heartbeat that falls due, and the beat is sent between."""
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            end = deadline
            if self._beat_while_joining():
                end = min(end, self._last_beat + self._interval())
            try:
                self._store.wait(keys, timedelta(seconds=max(0.0, end - time.monotonic())))
            except StoreError as e:
                if not isinstance(e, TimeoutError):
                    raise
                if end >= deadline:
                    return False
            else:
                return True

    def _closed_error(self) -> RendezvousError:
        self._saw_close()
        try:
            reason = self._peek("closed_reason")
        except _STORE_FAILURES:
            reason = None  # the host may be gone with the store once the run is closed
        if reason is not None:
            text = reason.decode(errors="replace")
            if text.startswith(_EXCLUSIONS):
                return RendezvousClosedError(f"The rendezvous '{self._run_id}' is closed: {text}.")
            return RendezvousRestartLimitError(
                f"The rendezvous '{self._run_id}' is closed: {text}."
            )
        if self._standby:
            return RendezvousGracefulExitError(
                f"The rendezvous '{self._run_id}' is closed, terminating pending rendezvous."
            )
        return RendezvousClosedError(f"The rendezvous '{self._run_id}' is closed.")

    def _raise_if_closed(self) -> None:
        if self._store.check(["closed"]):
            raise self._closed_error()

    def _event(self, kind: EventKind, error: BaseException | None = None, **details: Any) -> None:
        details.setdefault("node", self._node.id)
        emit(RendezvousEvent(kind, None, self._run_id, details, error=error))

    # -- the rendezvous --------------------------------------------------------------------

    def next_rendezvous(self) -> RendezvousInfo:
        """Join the next round and return this node's rank in it once it completes.

        Raises RendezvousClosedError (RendezvousGracefulExitError for a surplus node) once
        the run is closed, RendezvousTimeoutError after ``join_timeout``, and
        RendezvousConnectionError when the store fails.
        """
        self._join_started = time.monotonic()
        deadline = self._join_started + self._settings.join_timeout.total_seconds()
        with self._beat_lock:
            self._joining = True
        try:
            with self._guard():
                self._beat()
                self._register()  # after the first beat: a listed node has a heartbeat key
                self._admission.check_policy()
                self._start_heartbeat()
                self._leave_round()
                known_open = self._admission.admit()
                return self._join(deadline, known_open)
        except RendezvousError as e:
            if not isinstance(e, RendezvousGracefulExitError):
                self._event(EventKind.FAILURE, e, step="next_rendezvous")
            raise
        finally:
            self._joining = False

    def _close_if_too_few(self, excluded: int, subject: str) -> None:
        """Fail the run at once when the ``excluded`` subjects leave fewer than
        ``min_nodes`` possible nodes: counting ``max_nodes`` nodes, or every node that
        registered if more did (nodes that register within ``last_call_timeout`` count)."""
        needed = self._min + excluded
        if self._max >= needed:
            return
        if self._wait_key(f"node/{needed}", self._settings.last_call_timeout.total_seconds()):
            return
        reason = (
            f"{_EXCLUSIONS}{excluded} excluded (the last: {subject}) leave fewer than "
            f"min_nodes={self._min} of the {max(self._max, self._counter('nodes'))} nodes"
        )
        self._close_for(reason)

    def _close_for(self, reason: str) -> None:
        """Close the run for every node, recording why (every node's error names it)."""
        log.error("rendezvous '%s': %s; closing the run", self._run_id, reason)
        self._store.compare_set("closed_reason", "", reason)
        self.set_closed()

    def _count_restart(self, round_: int, cause: str) -> None:
        """Count one failure-caused re-rendezvous for ``round_`` (once, whoever reports it);
        once the restart budget is exhausted the run is closed for every node with the
        reason."""
        claim = self._store.compare_set(_r(round_, "restart"), "", self._node.id)
        if claim != self._node.id.encode():
            return
        count = self._store.add("restarts", 1)
        self._event(EventKind.RESTART_COUNTED, round=round_, restarts=count, cause=cause)
        reason = self._budget.exhausted(count, cause)
        if reason is not None:
            self._close_for(reason)

    def _leave_round(self) -> None:
        """A member joining again (its agent restarts its workers): the other members of
        its round see a change pending (``num_nodes_waiting`` at least 1) and follow it
        into the next round, which it opens."""
        with self._lock:
            member, self._member = self._member, None
        if member is not None:
            pending = _r(member.round, "pending")
            if self._counter(pending) == 0:  # else the others know already
                self._store.add(pending, 1)
            self._open_next_round(member.round)

    def _join(self, deadline: float, known_open: bool) -> RendezvousInfo:
        """Take a slot in the open round and return the rank once it completes;
        ``known_open``: admission just read the run open (the first check is skipped)."""
        while True:
            if not known_open:
                self._raise_if_closed()
            known_open = False
            round_ = self._current_round()
            final = self._peek(_r(round_, "final"))
            if final is not None:
                if final.startswith(_FAILED.encode()):
                    self._move_past_failed_round(round_)
                else:
                    self._wait_for_next_round(round_, self._parse_final(final)[0], deadline)
                continue
            self._let_previous_members_first(round_)
            slot = self._store.add(_r(round_, "seq"), 1)
            try:
                self._store.set(_r(round_, f"slot/{slot}"), self._node.encode())
                self._event(EventKind.JOIN, round=round_, slot=slot)
                if slot == 1:
                    self._store.set(_r(round_, "started"), str(time.time()))
                if slot == self._min:
                    self._store.compare_set(_r(round_, "quorum"), "", "1")
                if slot == self._max:
                    self._try_finalize(round_, slot)
                final = self._await_final(round_, slot, deadline)
            except (RendezvousClosedError, RendezvousGracefulExitError):
                raise
            except BaseException as e:
                self._give_up_round(round_, e)
                raise
            if final.startswith(_FAILED.encode()):
                self._move_past_failed_round(round_)
                continue
            size, assigner = self._parse_final(final)
            if slot > size:
                self._wait_for_next_round(round_, size, deadline)
                continue
            info = self._complete(round_, slot, size, assigner, deadline)
            if info is not None:
                return info

    def _let_previous_members_first(self, round_: int) -> None:
        """A node that had no rank in the previous round (a spare, a newcomer) lets that
        round's survivors take their slots first: it waits, up to ``last_call_timeout``,
        until as many nodes as survived have joined ``round_``."""
        previous = round_ - 1
        if previous < 0 or self._member_round == previous:
            return
        world = self._peek(_r(previous, "world"))  # written only with a round's ranks
        if world is None:
            return  # no node had a rank in it (failed, closed, or no active set)
        survivors = int(world) - self._counter(_r(previous, "lost_count"))
        if survivors > 0:
            wait = self._settings.last_call_timeout.total_seconds()
            self._wait_key(_r(round_, f"slot/{survivors}"), wait)

    def _abandon_round(self, round_: int, node_id: str, cause: str) -> bool:
        """End ``round_`` before it completes because ``node_id``, which holds a slot in
        it, failed: the nodes waiting in it wake and start the next round without it.
        False when the round had completed (or was abandoned) already."""
        self._store.compare_set(_r(round_, "failure"), "", f"node {node_id} {cause}")
        token = f"{_FAILED}{node_id}"
        return self._store.compare_set(_r(round_, "final"), "", token) == token.encode()

    def _give_up_round(self, round_: int, error: BaseException) -> None:
        """This node fails while it holds a slot: tell the others (best effort; a store
        that failed cannot carry the news, and then its stalled heartbeat does)."""
        if isinstance(error, _STORE_FAILURES) or not isinstance(error, Exception):
            return
        try:
            self._abandon_round(
                round_, self._node.id, f"failed: {type(error).__name__}: {str(error).rstrip('.')}"
            )
        except _STORE_FAILURES as e:
            log.debug("could not tell the others this node failed: %s", e)

    def _move_past_failed_round(self, round_: int) -> None:
        """``round_`` was abandoned: say why (once), then open the next round."""
        failure = (self._peek(_r(round_, "failure")) or b"failed").decode(errors="replace")
        note = f"round {round_} was abandoned: {failure}"
        if note != self._failure_note:
            self._failure_note = note
            log.warning("rendezvous '%s': %s; joining round %d", self._run_id, note, round_ + 1)
            self._event(EventKind.NODE_LOST, round=round_, cause=failure)
        self._count_restart(round_, failure)
        self._raise_if_closed()
        self._open_next_round(round_)

    def _timeout(self, message: str) -> RendezvousTimeoutError:
        """A join timeout, naming the failure that abandoned an earlier round if any."""
        if self._failure_note:
            message += f" Earlier, {self._failure_note}."
        return RendezvousTimeoutError(message)

    def _parse_final(self, final: bytes) -> tuple[int, str]:
        """``(size, assigner id)`` from a final token; a closed run raises."""
        if final == _CLOSED:
            raise self._closed_error()
        size, _, assigner = final.decode().partition(":")
        return int(size), assigner

    def _await_final(self, round_: int, slot: int, deadline: float) -> bytes:
        """The round's final token: ``<size>:<id of the node assigning the ranks>``, or
        ``failed:<node id>`` when a node of the round failed before it completed. While
        waiting, this node watches the heartbeat of one other slot holder (_SlotWatch)."""
        final_key = _r(round_, "final")
        watch = _SlotWatch(self, round_, slot)
        if slot < self._min:
            self._await_quorum(round_, deadline, watch)
        last_call = time.monotonic() + self._settings.last_call_timeout.total_seconds()
        while True:
            now = time.monotonic()
            if now >= last_call:
                self._try_finalize(round_, min(self._counter(_r(round_, "seq")), self._max))
            elif now >= deadline:
                raise self._timeout(
                    f"The rendezvous '{self._run_id}' round {round_} did not complete within "
                    f"the join timeout ({self._settings.join_timeout})."
                )
            wait = min(last_call, deadline) - now
            if wait > 0:
                wait = min(wait, self._interval())
            if self._wait_key(final_key, wait):
                final = self._store.get(final_key)
                if final == _CLOSED:
                    self._raise_if_closed()
                    raise self._closed_error()
                return final
            watch.check()

    def _await_quorum(self, round_: int, deadline: float, watch: _SlotWatch) -> None:
        """Wait until ``min_nodes`` have joined ``round_``. The node that makes the quorum
        announces it; the count is re-read every interval in case that node died first."""
        interval = self._settings.keep_alive_interval.total_seconds()
        while True:
            remaining = deadline - time.monotonic()
            if self._wait_key(_r(round_, "quorum"), min(interval, remaining)):
                return
            if self._peek(_r(round_, "final")) is not None:
                return  # abandoned (or closed): the caller reads why
            joined = self._counter(_r(round_, "seq"))
            if joined >= self._min:
                return
            if remaining <= interval:
                raise self._timeout(
                    f"The rendezvous '{self._run_id}' did not complete within the join timeout "
                    f"({self._settings.join_timeout}): {joined} of at least {self._min} nodes "
                    f"joined round {round_}."
                )
            watch.check(joined)

    def _try_finalize(self, round_: int, size: int) -> None:
        token = f"{size}:{self._node.id}"
        if self._store.compare_set(_r(round_, "final"), "", token) == token.encode():
            self._assign_ranks(round_, size)

    def _assign_ranks(self, round_: int, size: int) -> None:
        """Write every participant's rank; any node may do it, the result is the same."""
        slots = [_r(round_, f"slot/{i}") for i in range(1, size + 1)]
        if not self._wait_keys(slots, self._store.timeout.total_seconds()):
            raise RendezvousTimeoutError(
                f"The rendezvous '{self._run_id}' round {round_}: not all of its {size} nodes "
                f"announced themselves within the read timeout ({self._store.timeout})."
            )
        nodes = [_Node.decode(raw) for raw in self._store.multi_get(slots)]
        self._beat_while_joining()  # the others watch this node's heartbeat meanwhile
        order = self._policy.ranks(self._candidates(nodes))
        world = len(order)
        ids = [nodes[slot].id for slot in order]
        active = set(order)
        spares = [slot for slot in range(size) if slot not in active]
        if world < self._min:
            reason = (
                f"the rank policy ({self._policy.describe()}) made {world} of its {size} nodes "
                f"active, fewer than min_nodes={self._min}"
            )
            keys = [_r(round_, f"rank/{slot + 1}") for slot in range(size)]
            self._store.multi_set(keys, [f"{_NO_ACTIVE}\n{reason}"] * size)
            self._event(EventKind.RANKS_ASSIGNED, round=round_, world_size=0, reason=reason)
            return
        if self._policy.remembers_ranks:
            self._store.set("last_ranks", json.dumps(ids))
        # A node's rank value names its successor too (and the world size, when the
        # policy left spares out): one read tells it everything.
        more = f"\n{world}" if world < size else ""
        keys = [_r(round_, "completed_at"), _r(round_, "world")]
        keys += [_r(round_, f"rank/{slot + 1}") for slot in order]
        values = [str(time.time()), str(world)] + [
            f"{rank}\n{ids[(rank + 1) % world]}{more}" for rank in range(world)
        ]
        keys += [_r(round_, f"member/{rank}") for rank in range(world)]
        values += ids
        if spares:
            keys += [_r(round_, "spares")] + [_r(round_, f"rank/{slot + 1}") for slot in spares]
            values += [json.dumps([nodes[slot].id for slot in spares])] + [_SPARE] * len(spares)
        self._store.multi_set(keys, values)
        self._record_summary(round_, ids)
        self._event(
            EventKind.RANKS_ASSIGNED, round=round_, world_size=world, members=ids,
            spares=[nodes[slot].id for slot in spares], policy=self._policy.describe(),
        )  # fmt: skip

    def _candidates(self, nodes: list[_Node]) -> list[Candidate]:
        """The round's nodes as the rank policy sees them (with the previous round's ranks
        when the policy keeps them)."""
        previous: dict[str, int] = {}
        if self._policy.remembers_ranks:
            raw = self._peek("last_ranks")
            previous = {node: rank for rank, node in enumerate(json.loads(raw))} if raw else {}
        position = {i: p for p, i in enumerate(sorted(range(len(nodes)), key=lambda i: nodes[i]))}
        return [
            Candidate(node.id, dict(node.attrs), position[i], previous.get(node.id))
            for i, node in enumerate(nodes)
        ]

    def _record_summary(self, round_: int, members: list[str]) -> None:
        """Keep a readable summary of the latest round in the backend (best effort)."""
        summary = json.dumps({"round": round_, "world_size": len(members), "members": members})
        try:
            current = self._backend.get_state()
            self._backend.set_state(summary.encode(), None if current is None else current[1])
        except RendezvousError as e:
            log.debug("could not record the round summary: %s", e)

    def _complete(
        self, round_: int, slot: int, size: int, assigner: str, deadline: float
    ) -> RendezvousInfo | None:
        """This node's rank in the completed ``round_``; None when the rank policy left it
        out (it waited as a spare) or made too few nodes active (the next round is open)."""
        rank_key = _r(round_, f"rank/{slot}")
        self._await_rank(round_, size, rank_key, assigner)
        fields = self._store.get(rank_key).decode().split("\n")
        if fields[0] == _SPARE:
            self._wait_for_next_round(round_, size, deadline, spare=True)
            return None
        if fields[0] == _NO_ACTIVE:
            self._failure_note = f"round {round_} did not complete: {fields[1]}"
            self._open_next_round(round_)
            return None
        rank = int(fields[0])
        world = int(fields[2]) if len(fields) > 2 else size
        successor = fields[1] if world > 1 else None
        self._standby = False
        bootstrap = self._bootstrap(round_, rank)
        if self._store.add(_r(round_, "read"), 1) == world:
            self._store.set(_r(round_, "all_read"), "1")  # a hosting node may now leave
        with self._lock:
            self._member = _Membership(round_, slot, rank, world, successor)
        self._member_round = round_
        if self._spare_round is not None:
            self._event(EventKind.PROMOTED, round=round_, rank=rank, spare_since=self._spare_round)
            self._spare_round = None
        self._event(
            EventKind.COMPLETED, round=round_, rank=rank, world_size=world,
            seconds=round(time.monotonic() - self._join_started, 3),
        )  # fmt: skip
        return RendezvousInfo(
            store=PrefixStore(f"torch.rendezvous.{self._run_id}.{round_}", self._raw_store),
            rank=rank,
            world_size=world,
            bootstrap_store_info=bootstrap,
            round=round_,
        )

    def _open_next_round(self, round_: int) -> None:
        self._store.compare_set("round", str(round_), str(round_ + 1))
        self._store.set(_r(round_ + 1, "open"), "1")

    def _await_rank(self, round_: int, size: int, rank_key: str, assigner: str) -> None:
        """Wait for this node's rank while the node assigning the ranks heartbeats.

        Once the ranks are a liveness window late, the assigner's heartbeat is read every
        window; when it stood still for one, the first waiting node to claim ``assigner``
        takes over and the others go on waiting, watching the new one. At scale, everyone
        redoing the O(N) assignment at once would swamp the store."""
        window = self._settings.liveness_window.total_seconds()
        claim_key = _r(round_, "assigner")
        claim = ""  # the claim we last saw; the finaliser itself holds none
        beat: int | None = None  # read only once the ranks are late: most rounds never are
        while not self._wait_key(rank_key, window):
            latest = self._counter(f"hb/{assigner}")
            if latest != beat:
                beat = latest  # first look, or alive and only slow
                continue
            owner = self._store.compare_set(claim_key, claim, self._node.id).decode()
            if owner == self._node.id:
                log.warning(
                    "rendezvous '%s': node %s stopped heartbeating while assigning the ranks "
                    "of round %d; taking over", self._run_id, assigner, round_,
                )  # fmt: skip
                self._assign_ranks(round_, size)
            else:
                claim = assigner = owner
                beat = None

    def _bootstrap(self, round_: int, rank: int) -> RendezvousStoreInfo:
        key = _r(round_, "master")
        if rank == 0:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind(("", 0))
                port = probe.getsockname()[1]
            self._store.set(key, json.dumps([self._node.addr, port]))
            return RendezvousStoreInfo(self._node.addr, port)
        self._wait_key(key, self._store.timeout.total_seconds())
        addr, port = json.loads(self._store.get(key))
        return RendezvousStoreInfo(str(addr), int(port))

    def _wait_for_next_round(
        self, round_: int, size: int, deadline: float, spare: bool = False
    ) -> None:
        """Wait until the participants of ``round_`` leave it: as a waiting node (counted
        in ``pending``: the participants re-rendezvous for it, within the join timeout), or
        as a spare (the round was full, or the rank policy left it out: it waits for as
        long as the run lasts, re-running the health check every ``health_interval``)."""
        self._standby = spare or size >= self._max
        if round_ not in self._counted_waiting:
            self._counted_waiting.add(round_)
            if self._standby:
                index = self._store.add(_r(round_, "standby_count"), 1)
                self._store.set(_r(round_, f"standby/{index}"), self._node.id)
                self._spare_round = round_ if self._spare_round is None else self._spare_round
                self._event(EventKind.SPARE, round=round_, reason="left out by the rank policy"
                            if spare else f"the round is full ({size} of max {self._max})")  # fmt: skip
            else:
                self._store.add(_r(round_, "pending"), 1)
        watch = _RoundWatch(self, round_)
        interval = self._settings.keep_alive_interval.total_seconds()
        health = self._admission.health
        next_check = time.monotonic() + (health.interval if health else 0)
        while True:
            if self._standby and health is not None and time.monotonic() >= next_check:
                self._admission.check_health()  # a spare turning sick is excluded as it waits
                next_check = time.monotonic() + health.interval
            wait = interval
            if not self._standby:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise self._timeout(
                        f"The rendezvous '{self._run_id}': this node waited the join timeout "
                        f"({self._settings.join_timeout}) for the {size} participants of "
                        f"round {round_} to re-rendezvous."
                    )
            if self._wait_key(_r(round_ + 1, "open"), wait):
                return
            self._raise_if_closed()
            if watch.all_lost():
                log.warning("every participant of round %d is gone; opening the next", round_)
                self._open_next_round(round_)

    # -- liveness --------------------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None:
            self._heartbeat = threading.Thread(
                target=self._heartbeat_loop, name=f"rdzv-heartbeat-{self._node.id}", daemon=True
            )
            self._heartbeat.start()

    def _interval(self) -> float:
        return self._settings.keep_alive_interval.total_seconds()

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self._interval()):
            try:
                with self._beat_lock:
                    if self._joining:
                        continue  # the joining thread beats between its waits
                    self._beat()
                    self._watch_successor()
            except Exception as e:
                log.warning("rendezvous '%s' heartbeat failed: %s", self._run_id, e)

    def _beat(self) -> None:
        self._store.add(f"hb/{self._node.id}", 1)
        self._last_beat = time.monotonic()

    def _beat_while_joining(self) -> bool:
        """Inside next_rendezvous, send the heartbeat if it is due; True when this thread
        is the one beating (its waits must then end by the next beat)."""
        if not self._joining or self._stop.is_set():
            return False
        if time.monotonic() - self._last_beat >= self._interval():
            self._beat()
        return True

    def _watch_successor(self) -> None:
        with self._lock:
            member = self._member
        if member is None or member.successor is None:
            return
        value = self._counter(f"hb/{member.successor}")
        now = time.monotonic()
        with self._lock:
            if self._member is not member:
                return
            if value != member.watched_value:
                member.watched_value, member.watched_since = value, now
                return
            if now - member.watched_since < self._settings.liveness_window.total_seconds():
                return
            lost, member.successor = member.successor, None
        self._report_lost(member.round, lost)

    def _report_lost(self, round_: int, node_id: str) -> None:
        claim = self._store.compare_set(_r(round_, f"lost/{node_id}"), "", self._node.id)
        if claim != self._node.id.encode():
            return
        index = self._store.add(_r(round_, "lost_count"), 1)
        self._store.set(_r(round_, f"lost_id/{index}"), node_id)
        self._store.add(_r(round_, "pending"), 1)
        log.warning("rendezvous '%s': node %s stopped heartbeating", self._run_id, node_id)
        self._event(EventKind.NODE_LOST, round=round_, lost=node_id)
        self._count_restart(round_, f"node {node_id} stopped heartbeating")

    # -- queries and control ---------------------------------------------------------------

    def _query(self, fn: Callable[[int], T]) -> T:
        with self._guard():
            with self._lock:
                member = self._member
            return fn(member.round if member is not None else self._current_round())

    def num_nodes_waiting(self) -> int:
        """How many changes wait for a re-rendezvous in this node's round: nodes waiting to
        join plus participants lost (at least 1 once a member joined again). Above zero,
        the participants should call :meth:`next_rendezvous` again. Once the run is closed it is 0, and this node
        stops needing the store (a hosting node may then leave)."""
        if self._closed_seen:
            return 0

        def read(round_: int) -> int:
            if self._store.check(["closed"]):
                self._saw_close()
                return 0
            return self._counter(_r(round_, "pending"))

        return self._query(read)

    def lost_nodes(self) -> list[str]:
        """The ids of the participants of this node's round reported lost."""

        def read(round_: int) -> list[str]:
            count = self._counter(_r(round_, "lost_count"))
            keys = [_r(round_, f"lost_id/{i}") for i in range(1, count + 1)]
            return [v.decode() for v in self._store.multi_get(keys)] if keys else []

        return self._query(read)

    def progress(self) -> dict[str, Any]:
        """A snapshot of the current round: number, nodes joined, complete or not."""

        def read(round_: int) -> dict[str, Any]:
            final = self._peek(_r(round_, "final"))
            return {
                "round": round_,
                "joined": self._counter(_r(round_, "seq")),
                "min_nodes": self._min,
                "max_nodes": self._max,
                "complete": final is not None and final != _CLOSED,
                "closed": self._store.check(["closed"]),
            }

        return self._query(read)

    def is_closed(self) -> bool:
        if self._closed_seen:
            return True
        with self._guard():
            closed = self._store.check(["closed"])
        if closed:
            self._saw_close()
        return closed

    def set_closed(self) -> None:
        """Close the run for every node: waiting nodes wake and raise, new ones are refused."""
        with self._guard():
            self._store.set("closed", "1")
            self._admission.mark_closed(_ABSENT)
            round_ = self._current_round()
            self._store.compare_set(_r(round_, "quorum"), "", _CLOSED)
            self._store.compare_set(_r(round_, "final"), "", _CLOSED)
            self._store.set(_r(round_ + 1, "open"), _CLOSED)
        self._saw_close()
        self._event(EventKind.CLOSED, round=round_)

    def shutdown(self) -> bool:
        """Stop heartbeating and close the run for every node (torch's semantics).

        A node that hosts the store keeps it serving until every live node has seen the
        close (at most ``close_timeout``). Returns True at once when this node already
        saw the run closed; False, with a warning, when the store could not be reached.
        """
        self._stop_heartbeat()
        if self._admission.excluded:
            # An excluded node never joined: its agent giving up must not end the job.
            log.info("rendezvous '%s': this node was excluded; leaving the run open", self._run_id)
            self._leave()
            return True
        if not self._closed_seen:
            try:
                self.set_closed()
            except RendezvousError as e:
                log.warning("The rendezvous '%s' could not be shut down: %s", self._run_id, e)
                return False
        self._linger()
        return True

    def close(self) -> None:
        """Stop this node's heartbeats and release the store it opened; the run goes on
        for the others (they see this node as lost once its heartbeat stands still).

        A node that hosts the store first keeps it serving until every participant of
        its round has read the result and, once the run is closed, until every live node
        has seen the close (at most ``close_timeout``)."""
        self._stop_heartbeat()
        self._leave()
        self._linger()
        if self._owns_store:
            self._raw_store.close()

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        thread = self._heartbeat
        if thread is not None and thread is not threading.current_thread():
            thread.join(self._settings.heartbeat_timeout.total_seconds())

    # -- leaving: acknowledgements a hosting node waits for ----------------------------------

    def _register(self) -> None:
        """List this node once in the run (``nodes``, ``node/<i>``) so a hosting node
        knows whose acknowledgements to wait for."""
        if not self._registered:
            index = self._store.add("nodes", 1)
            self._store.set(f"node/{index}", self._node.id)
            self._registered = True

    def _done(self, why: str) -> None:
        """Tell a hosting node that this node needs the store no more."""
        index = self._store.add("done", 1)
        self._store.set(f"done/{index}", f"{self._node.id} {why}")

    def _saw_close(self) -> None:
        """Acknowledge the close once; after it, this node no longer uses the store."""
        if self._closed_seen:
            return
        self._closed_seen = True
        self._stop.set()  # the run is over: no more heartbeats
        if self._registered:
            try:
                self._done("saw-close")
            except _STORE_FAILURES as e:
                log.debug("could not acknowledge the close: %s", e)

    def _leave(self) -> None:
        if self._registered and not self._closed_seen:
            self._closed_seen = True  # nothing more to acknowledge
            try:
                self._done("left")
            except _STORE_FAILURES as e:
                log.debug("could not record leaving: %s", e)

    def _linger(self) -> None:
        """As the store's host, keep serving until the others are done with it. Once it
        has waited for the close to reach everyone (``shutdown()``), a later ``close()``
        does not wait again: ``close_timeout`` bounds the two together."""
        if not self._raw_store.is_host or self._lingered:
            return
        deadline = time.monotonic() + self._settings.close_timeout.total_seconds()
        with self._lock:
            member = self._member
        try:
            if member is not None:
                all_read = _r(member.round, "all_read")
                if not self._wait_key(all_read, deadline - time.monotonic()):
                    log.warning(
                        "rendezvous '%s': leaving before every node read round %d's result "
                        "(close_timeout %s)", self._run_id, member.round,
                        self._settings.close_timeout,
                    )  # fmt: skip
            if self._store.check(["closed"]):
                self._await_everyone_done(deadline)
                self._lingered = True
        except _STORE_FAILURES as e:
            log.debug("stopped waiting for the other nodes: %s", e)

    def _await_everyone_done(self, deadline: float) -> None:
        """Wait until every registered node is done (saw the close, or left) or silent
        (its heartbeat stood still for the liveness window), until ``deadline``."""
        count = self._counter("nodes")
        ids = [
            v.decode() for v in self._store.multi_get([f"node/{i}" for i in range(1, count + 1)])
        ]
        waiting = set(ids) - {self._node.id}
        seen = 0
        beats: dict[str, tuple[int, float]] = {}
        window = self._settings.liveness_window.total_seconds()
        while waiting:
            done = self._counter("done")
            if done > seen:
                keys = [f"done/{i}" for i in range(seen + 1, done + 1)]
                for entry in self._store.multi_get(keys):
                    waiting.discard(entry.decode().split(" ", 1)[0])
                seen = done
            now = time.monotonic()
            order = sorted(waiting)
            values = self._store.multi_get([f"hb/{n}" for n in order]) if order else []
            for node_id, raw in zip(order, values):
                beat = int(raw)
                last = beats.get(node_id)
                if last is None or last[0] != beat:
                    beats[node_id] = (beat, now)
                elif now - last[1] >= window:
                    waiting.discard(node_id)  # gone without a word: not worth waiting for
            if not waiting:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning(
                    "rendezvous '%s': leaving before %d node(s) saw the close: %s",
                    self._run_id, len(waiting), ", ".join(sorted(waiting)),
                )  # fmt: skip
                return
            self._wait_key(f"done/{seen + 1}", min(remaining, 0.5))


class _SlotWatch:
    """While a round gathers, tells when a node holding a slot in it stopped heartbeating.

    Each waiting node watches one other: slot k watches slot k - 1, and slot 1 watches the
    latest slot, so every slot holder is watched by exactly one node at O(1) reads per
    interval. A watched node whose heartbeat stood still for the liveness window, or that
    took a slot and never announced itself in it, gets the round abandoned."""

    def __init__(self, handler: RendezvousHandler, round_: int, slot: int) -> None:
        self._handler = handler
        self._round = round_
        self._slot = slot
        self._target = 0
        self._node: str | None = None
        self._beat: int | None = None
        self._since = self._looked = time.monotonic()

    def check(self, joined: int | None = None) -> None:
        h = self._handler
        if self._slot > 1:
            target = self._slot - 1
        else:
            target = joined if joined is not None else h._counter(_r(self._round, "seq"))
        if target < 1 or target == self._slot:
            return
        if target != self._target:
            self._target, self._node, self._beat = target, None, None
            self._since = time.monotonic()
        beat: int | None = None
        if self._node is None:
            raw = h._peek(_r(self._round, f"slot/{target}"))
            if raw is not None:
                self._node = _Node.decode(raw).id
        if self._node is not None:
            beat = h._counter(f"hb/{self._node}")
        now = time.monotonic()
        # A gap in this node's own looking (the store was away for everyone, e.g. failing
        # over) is no evidence against the watched node: its clock starts again.
        if now - self._looked > 2 * h.settings.keep_alive_interval.total_seconds():
            self._since = now
        self._looked = now
        if beat is not None and beat != self._beat:
            self._beat, self._since = beat, now
            return
        if now - self._since < h.settings.liveness_window.total_seconds():
            return
        if self._node is None:
            h._abandon_round(
                self._round, f"in slot {target}", "took the slot and never announced itself"
            )
        else:
            seconds = round(now - self._since, 1)
            h._abandon_round(
                self._round, self._node, f"stopped heartbeating for {seconds} s while joining"
            )


class _RoundWatch:
    """Tells a waiting node when every participant of a round stopped heartbeating."""

    def __init__(self, handler: RendezvousHandler, round_: int) -> None:
        self._handler = handler
        self._round = round_
        self._members: list[str] | None = None
        self._last: list[int] = []
        self._since = time.monotonic()

    def all_lost(self) -> bool:
        store = self._handler._store
        if self._members is None:
            world = self._handler._peek(_r(self._round, "world"))
            if world is None:
                return False  # the ranks are not assigned yet
            keys = [_r(self._round, f"member/{rank}") for rank in range(int(world))]
            if not keys or not store.check(keys):
                return False
            self._members = [v.decode() for v in store.multi_get(keys)]
        beats = [store.add(f"hb/{m}", 0) for m in self._members]
        now = time.monotonic()
        if beats != self._last:
            self._last, self._since = beats, now
            return False
        return now - self._since >= self._handler.settings.liveness_window.total_seconds()


def create_handler(params: RendezvousParameters) -> RendezvousHandler:
    """The handler for ``params``: settings validated first, then the backend and store
    from :func:`~rdzv_core.create_backend`."""
    from ..registry import create_backend, default_registry

    settings = HandlerSettings.from_params(params)
    log_to = params.get("event_log") or os.environ.get(EVENT_LOG_ENV)
    if log_to:
        log_events_to(str(log_to))
    registry = default_registry()
    policy = registry.rank_policy(params)
    exclusion = registry.exclusion_rule(params) or Exclusion.from_params(params)
    budget = registry.restart_budget(params)
    attributes = node_attributes(params, registry.node_attributes(params))
    health = HealthCheck.from_params(params, registry.health_check(params))
    backend, store = create_backend(params)
    try:
        return RendezvousHandler(
            params.run_id,
            store,
            backend,
            params.min_nodes,
            params.max_nodes,
            params.local_addr,
            settings,
            owns_store=True,
            policy=policy,
            attributes=attributes,
            health=health,
            exclusion=exclusion,
            budget=budget,
        )
    except BaseException:
        store.close()  # a hosted server must not outlive the handler that was refused
        raise
