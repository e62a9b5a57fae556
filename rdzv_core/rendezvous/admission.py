"""Admission: whether this node may take a slot in a round.

The run's ``policy`` key holds one JSON record, ``{"options": ..., "exclusions": {...}}``:
the policy options every node of the run must share, the exclusion records (strikes,
until when, why) keyed by subject (``<exclude_by>=<value>``), and ``"closed": true`` once
the run is closed. A node checks the options once, then before each round it is refused
while its subject is excluded, and runs its health check; a failing check adds a strike (a
compare-and-set loop, so strikes from several nodes at once all count) and refuses it. The
closed mark lets that one read also answer "is the run closed?", so admission costs a
joining node no round trip of its own.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import RendezvousExcludedError, RendezvousStateError
from ..events import EventKind
from ..store import Store
from .policy import Exclusion, HealthCheck

__all__ = ["Admission"]

#: The option names the agreement message lists.
_AGREED = (
    "rank_order and its options, segment, segment_key, rank0, max_restarts, exclude_by, "
    "cooldown_min, cooldown_max, max_strikes, and a plugin's exclusion rule or restart budget"
)


class Admission:
    """Admits (or refuses) one node of a run, over the run's prefixed ``store``.

    ``options`` is the node's canonical policy line; ``facts`` go into the record when
    this node creates it (for readers such as ``rdzv watch``); ``on_exclusion(count, subject)`` is
    called after this node is struck out, with the number of subjects now excluded, before
    the refusal is raised; ``event(kind, **details)`` emits an event.
    """

    def __init__(
        self,
        store: Store,
        run_id: str,
        node_id: str,
        attributes: Mapping[str, str],
        options: str,
        exclusion: Exclusion,
        health: HealthCheck | None,
        on_exclusion: Callable[[int, str], None],
        event: Callable[..., None],
        facts: Mapping[str, Any] | None = None,
    ) -> None:
        self._store = store
        self._run_id = run_id
        self._node_id = node_id
        self._options = options
        self._exclusion = exclusion
        self.health = health
        self._on_exclusion = on_exclusion
        self._event = event
        self._facts = dict(facts or {})
        value = attributes.get(exclusion.by)
        self._subject = f"{exclusion.by}={value}" if value is not None else None
        self._checked = False
        self._fresh: dict[str, Any] | None = None  # the record read with the policy check
        #: True once this node was refused (by its health check or an exclusion).
        self.excluded = False

    def _record(self) -> tuple[bytes, dict[str, Any]]:
        """The run's policy record (raw and parsed), created with this node's options
        when the run has none: one round trip."""
        initial = json.dumps({"options": self._options, "exclusions": {}, **self._facts})
        raw = self._store.compare_set("policy", "", initial)
        return raw, dict(json.loads(raw))

    def check_policy(self) -> None:
        """Once per node: the first node of a run records its options; every other must
        use the same (RendezvousStateError naming both). The same read brings the
        exclusions for the first admission."""
        if self._checked:
            return
        _, record = self._record()
        if record["options"] != self._options:
            raise RendezvousStateError(
                f"This node's rendezvous policy ({self._options}) differs from the one of run "
                f"'{self._run_id}' ({record['options']}): every node of a run must use the "
                f"same policy options ({_AGREED})."
            )
        self._checked = True
        self._fresh = record

    def admit(self) -> bool:
        """Refuse this node while its subject is excluded; then run its health check.

        True when the record showed the run open and no health check ran since, so the
        caller may take the run as open without asking the store again; False when it
        must ask (a closed run's ``closed`` key is set before its record is marked)."""
        run, self._fresh = self._fresh, None
        if run is None:
            run = self._record()[1]
        record = run["exclusions"].get(self._subject) if self._subject else None
        if self._subject is not None and record is not None:
            left = record["until"] - time.time()
            if record["permanent"] or left > 0:
                raise self._refused(self._subject, record, left)
        self.check_health()
        return self.health is None and not run.get("closed")

    def mark_closed(self, absent: str) -> None:
        """Mark the run's record closed (when it has one; ``absent`` is the handler's
        value for reading a key without creating it). A node joining later learns it from
        its admission read; the round keys tell the others."""
        raw = self._store.compare_set("policy", absent, absent)
        while raw != absent.encode():
            run = json.loads(raw)
            if run.get("closed"):
                return
            new = json.dumps({**run, "closed": True})
            now = self._store.compare_set("policy", raw, new)
            if now == new.encode():
                return
            raw = now

    def check_health(self) -> None:
        """Run the health check (if any); on a failure strike this node out and raise
        RendezvousExcludedError with the reason."""
        if self.health is None:
            return
        reason = self.health.run()
        if reason is None:
            return
        subject = self._subject
        if subject is None:
            self.excluded = True
            raise RendezvousExcludedError(
                f"Node {self._node_id} may not join the rendezvous '{self._run_id}': {reason} "
                f"(it has no '{self._exclusion.by}' attribute to exclude it by)."
            )
        record, excluded = self._strike(subject, reason)
        self._event(
            EventKind.EXCLUDED, subject=subject, reason=reason, strikes=record["strikes"],
            seconds=None if record["permanent"] else round(record["until"] - time.time(), 3),
        )  # fmt: skip
        self._on_exclusion(excluded, subject)
        raise self._refused(subject, record, record["until"] - time.time())

    def _refused(
        self, subject: str, record: dict[str, Any], left: float
    ) -> RendezvousExcludedError:
        how = (
            f"permanently ({record['strikes']} strikes, max_strikes={self._exclusion.max_strikes})"
            if record["permanent"]
            else f"for {max(left, 0):.1f} s more (strike {record['strikes']})"
        )
        self.excluded = True
        return RendezvousExcludedError(
            f"Node {self._node_id} ({subject}) is excluded from the rendezvous "
            f"'{self._run_id}' {how}: {record['reason']}."
        )

    def _strike(self, subject: str, reason: str) -> tuple[dict[str, Any], int]:
        """One more strike for ``subject``; its new record and how many subjects are
        excluded now."""
        while True:
            raw, run = self._record()
            strikes = int(run["exclusions"].get(subject, {}).get("strikes", 0)) + 1
            seconds = self._exclusion.cooldown(strikes, secrets.randbelow(1000) / 1000)
            record = {
                "strikes": strikes,
                "until": time.time() + seconds,
                "permanent": self._exclusion.permanent(strikes),
                "reason": reason,
            }
            run["exclusions"][subject] = record
            new = json.dumps({**run, "by": self._node_id, "at": time.time()})
            if self._store.compare_set("policy", raw, new) == new.encode():
                now = time.time()
                active = [
                    r for r in run["exclusions"].values() if r["permanent"] or r["until"] > now
                ]
                return record, len(active)
