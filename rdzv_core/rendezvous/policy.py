"""Rendezvous policies: what a node declares about itself, and the order of the ranks.

- **Node attributes** (``host`` always, plus any ``key=value`` an operator or a plugin
  declares: rack, switch, NVLink domain, ...) travel in the node's slot record and show in
  ``rdzv state``.
- **The rank order** of a completed round, computed by the one node that assigns the ranks:
  ``sorted`` (by host, then process: nodes of one host get neighbouring ranks), ``sticky``
  (survivors of the previous round keep their ranks; newcomers fill the holes),
  ``topology`` (ranks contiguous by an attribute), and optionally rank 0 pinned to the node
  an attribute selects.
- **The restart budget**: the number of re-rendezvous that failures may cause in a run.

Every node of a run must use the same policy options: :meth:`RankPolicy.describe` is what
they compare.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..params import RendezvousParameters

__all__ = ["ATTRS_ENV", "Candidate", "RankPolicy", "node_attributes", "parse_attributes"]

#: The environment variable an operator declares this node's attributes in.
ATTRS_ENV = "RDZV_NODE_ATTRS"
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_TEXT = 256
ORDERS = ("sorted", "sticky", "topology")
_KEY = re.compile(r"[A-Za-z0-9_.\-]+")
_FORM = "key=value pairs separated by ';' or ',' (keys of letters, digits, '_', '.', '-')"


def parse_attributes(text: str, source: str) -> dict[str, str]:
    """``key=value`` pairs separated by ``;`` or ``,`` (later keys win) from ``source``
    (named in the errors). ``host`` is reserved: it is always the node's address."""
    found: dict[str, str] = {}
    for item in re.split(r"[;,]", text):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _KEY.fullmatch(key) or not value:
            raise ValueError(
                f"{source}: {item.strip()!r} is not a key=value pair; expected {_FORM}."
            )
        if key == "host":
            raise ValueError(
                f"{source}: the attribute 'host' is reserved (it is the node's address)."
            )
        if len(value) > MAX_ATTRIBUTE_TEXT or not value.isprintable():
            raise ValueError(
                f"{source}: the value of {key!r} must be printable and at most "
                f"{MAX_ATTRIBUTE_TEXT} characters."
            )
        found[key] = value
    if len(found) > MAX_ATTRIBUTES:
        raise ValueError(f"{source}: {len(found)} attributes, more than {MAX_ATTRIBUTES}.")
    return found


def node_attributes(
    params: RendezvousParameters, declared: Sequence[Mapping[str, Any] | None] = ()
) -> dict[str, str]:
    """This node's attributes: those plugins ``declared`` (``rdzv_node_attributes``), then
    ``RDZV_NODE_ATTRS``, then the ``node_attrs`` config key; each source overrides the
    ones before it."""
    found: dict[str, str] = {}
    for index, mapping in enumerate(declared):
        if mapping:
            text = ";".join(f"{k}={v}" for k, v in mapping.items())
            found.update(parse_attributes(text, f"rdzv_node_attributes hook #{index + 1}"))
    found.update(parse_attributes(os.environ.get(ATTRS_ENV, ""), ATTRS_ENV))
    found.update(parse_attributes(params.get("node_attrs", "") or "", "node_attrs"))
    return found


@dataclass(frozen=True)
class Candidate:
    """A participant of a round as the rank policy sees it."""

    id: str
    attrs: Mapping[str, str]
    #: Its position in the default order (host, pid, local id, nonce).
    position: int
    #: Its rank in the run's previous round, if it was a participant there.
    previous_rank: int | None = None


@dataclass(frozen=True)
class RankPolicy:
    """How the node that assigns the ranks orders a round's participants.

    ``order``: ``sorted`` (default), ``sticky`` or ``topology``; ``key``: the attribute
    ``topology`` groups by (nodes without it come last); ``rank0``: ``(attribute, value)``
    of the node moved to rank 0 (the first such node in the order; none present: no move).
    ``max_restarts``: re-rendezvous that failures may cause before the run is closed
    (None: no limit).
    """

    order: str = "sorted"
    key: str | None = None
    rank0: tuple[str, str] | None = None
    max_restarts: int | None = None

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"rank_order must be one of {', '.join(ORDERS)}, got {self.order!r}.")
        if (self.order == "topology") != (self.key is not None):
            raise ValueError(
                "rank_key (the attribute to keep ranks contiguous by) goes with "
                "rank_order=topology, and only with it."
            )
        if self.key is not None and not _KEY.fullmatch(self.key):
            raise ValueError(f"rank_key must be an attribute name, got {self.key!r}.")
        if self.max_restarts is not None and self.max_restarts < 0:
            raise ValueError(f"max_restarts must be 0 or more, got {self.max_restarts}.")

    @classmethod
    def from_params(cls, params: RendezvousParameters) -> RankPolicy:
        """The policy the config asks for: ``rank_order``, ``rank_key``, ``rank0``
        (``attribute=value``, or a bare host name) and ``max_restarts``."""
        rank0 = None
        pinned = params.get("rank0")
        if pinned:
            attribute, sep, value = str(pinned).partition("=")
            rank0 = (attribute.strip(), value.strip()) if sep else ("host", attribute.strip())
            if not _KEY.fullmatch(rank0[0]) or not rank0[1]:
                raise ValueError(
                    f"rank0 must be attribute=value (rank0=rack=r7) or a host name, got {pinned!r}."
                )
        return cls(
            order=str(params.get("rank_order", "sorted")).strip().lower(),
            key=params.get("rank_key"),
            rank0=rank0,
            max_restarts=params.get_as_int("max_restarts"),
        )

    def describe(self) -> str:
        """The options as one canonical line (what the nodes of a run compare)."""
        parts = [f"rank_order={self.order}"]
        if self.key is not None:
            parts.append(f"rank_key={self.key}")
        if self.rank0 is not None:
            parts.append(f"rank0={self.rank0[0]}={self.rank0[1]}")
        if self.max_restarts is not None:
            parts.append(f"max_restarts={self.max_restarts}")
        return ",".join(parts)

    @property
    def remembers_ranks(self) -> bool:
        """Whether the order needs the previous round's ranks."""
        return self.order == "sticky"

    def ranks(self, candidates: Sequence[Candidate]) -> list[int]:
        """The candidates' indexes in rank order (rank 0 first)."""
        default = sorted(range(len(candidates)), key=lambda i: candidates[i].position)
        if self.order == "topology":
            key = self.key or ""

            def group(i: int) -> tuple[bool, str, int]:
                value = candidates[i].attrs.get(key)
                return value is None, value or "", candidates[i].position

            order = sorted(default, key=group)
        elif self.order == "sticky":
            order = _sticky(candidates, default)
        else:
            order = default
        if self.rank0 is not None:
            attribute, value = self.rank0
            chosen = next((i for i in order if candidates[i].attrs.get(attribute) == value), None)
            if chosen is not None:
                order.remove(chosen)
                order.insert(0, chosen)
        return order


def _sticky(candidates: Sequence[Candidate], default: list[int]) -> list[int]:
    """Survivors keep their previous rank where it still exists; the others fill the
    remaining ranks in the default order."""
    size = len(candidates)
    placed: list[int | None] = [None] * size
    rest = []
    for i in default:
        previous = candidates[i].previous_rank
        if previous is not None and previous < size and placed[previous] is None:
            placed[previous] = i
        else:
            rest.append(i)
    fill = iter(rest)
    return [i if i is not None else next(fill) for i in placed]
