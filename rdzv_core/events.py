"""Rendezvous and store events, delivered to plugins through the ``rdzv_event`` hook."""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["EventKind", "RendezvousEvent", "emit"]


class EventKind(str, enum.Enum):
    """What happened."""

    STORE_CREATED = "store_created"
    STORE_HOSTED = "store_hosted"
    JOIN = "join"
    COMPLETED = "completed"
    NODE_LOST = "node_lost"
    RESTART_COUNTED = "restart_counted"
    EXCLUDED = "excluded"
    RANKS_ASSIGNED = "ranks_assigned"
    SPARE = "spare"
    PROMOTED = "promoted"
    CLOSED = "closed"
    FAILURE = "failure"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class RendezvousEvent:
    """One event: its kind, the store type and run it concerns, details, and any error."""

    kind: EventKind
    store_type: str | None = None
    run_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    error: BaseException | None = None
    time: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", EventKind(self.kind))
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))


def emit(event: RendezvousEvent) -> None:
    """Deliver ``event`` to every loaded plugin; an observer that raises is logged, not fatal."""
    from .registry import default_registry

    default_registry().emit(event)
