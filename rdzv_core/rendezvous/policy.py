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
import shlex
import shutil
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import RendezvousError
from ..params import RendezvousParameters
from ..registry import BUILTIN_ORDERS as ORDERS

__all__ = [
    "ATTRS_ENV",
    "Candidate",
    "Exclusion",
    "HealthCheck",
    "RankOrder",
    "RankOrderFactory",
    "RankPolicy",
    "RestartBudget",
    "Segments",
    "SortedOrder",
    "StickyOrder",
    "TopologyOrder",
    "node_attributes",
    "parse_attributes",
]

#: The environment variable an operator declares this node's attributes in.
ATTRS_ENV = "RDZV_NODE_ATTRS"
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_TEXT = 256
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


class RankOrder(ABC):
    """A way to choose a round's active nodes and order their ranks.

    The built-ins are ``sorted``, ``sticky`` and ``topology``; a plugin adds more through
    the ``rdzv_rank_orders`` hook (see :mod:`rdzv_core.hookspecs`), and proves them with
    :class:`rdzv_core.testing.RankOrderSuite`. One node per round calls :meth:`arrange`
    (another takes over if it dies), so the result must depend on the candidates only:
    not on their order in the list, the clock, randomness or the node computing it.
    """

    #: The name ``rank_order=`` selects it by.
    name: str = ""
    #: Config keys this order reads, each with a one-line description.
    options: Mapping[str, str] = {}
    #: True when :meth:`arrange` reads :attr:`Candidate.previous_rank`; the handler then
    #: keeps each round's ranks in the store (one more write per round).
    remembers_ranks: bool = False

    @abstractmethod
    def arrange(self, candidates: Sequence[Candidate]) -> Sequence[int]:
        """Indexes into ``candidates`` of the active nodes, in rank order (rank 0 first).

        Candidates left out are spares: they wait, and join the next round. Fewer active
        nodes than ``min_nodes`` means the round does not complete: its nodes join the
        next one. Each index at most once.
        """

    def describe(self) -> str:
        """This order's options as ``key=value`` pairs joined by ``,`` ("" when none): the
        nodes of a run compare it, so equal options must give equal text."""
        return ""


class SortedOrder(RankOrder):
    """Every candidate, by host, then process: nodes of one host get neighbouring ranks."""

    name = "sorted"

    def arrange(self, candidates: Sequence[Candidate]) -> Sequence[int]:
        return _by_position(candidates)


class StickyOrder(RankOrder):
    """Survivors of the previous round keep their rank where it still exists; the others
    fill the remaining ranks by host, then process."""

    name = "sticky"
    remembers_ranks = True

    def arrange(self, candidates: Sequence[Candidate]) -> Sequence[int]:
        size = len(candidates)
        placed: list[int | None] = [None] * size
        rest = []
        for i in _by_position(candidates):
            previous = candidates[i].previous_rank
            if previous is not None and previous < size and placed[previous] is None:
                placed[previous] = i
            else:
                rest.append(i)
        fill = iter(rest)
        return [i if i is not None else next(fill) for i in placed]


class TopologyOrder(RankOrder):
    """Ranks contiguous by the value of attribute ``key`` (groups by value, nodes without
    it last), by host, then process, within a group."""

    name = "topology"
    options = {"rank_key": "the attribute whose nodes get contiguous ranks"}

    def __init__(self, key: str) -> None:
        if not _KEY.fullmatch(key):
            raise ValueError(f"rank_key must be an attribute name, got {key!r}.")
        self.key = key

    def arrange(self, candidates: Sequence[Candidate]) -> Sequence[int]:
        def group(i: int) -> tuple[bool, str, int]:
            value = candidates[i].attrs.get(self.key)
            return value is None, value or "", candidates[i].position

        return sorted(range(len(candidates)), key=group)

    def describe(self) -> str:
        return f"rank_key={self.key}"


def _by_position(candidates: Sequence[Candidate]) -> list[int]:
    return sorted(range(len(candidates)), key=lambda i: candidates[i].position)


#: A plugin's rank orders: names to factories that read their options from the params.
RankOrderFactory = Callable[[RendezvousParameters], RankOrder]


def builtin_rank_order(name: str, key: str | None = None) -> RankOrder | None:
    """The built-in order ``name`` (``key``: its ``rank_key``); None if not built in."""
    if name == "topology":
        if key is None:
            raise ValueError(
                "rank_order=topology needs rank_key, the attribute to keep ranks contiguous by."
            )
        return TopologyOrder(key.strip())
    if name in ("sorted", "sticky"):
        if key is not None:
            raise ValueError(
                "rank_key (the attribute to keep ranks contiguous by) goes with "
                "rank_order=topology, and only with it."
            )
        return SortedOrder() if name == "sorted" else StickyOrder()
    return None


@dataclass(frozen=True)
class Segments:
    """NVLink-domain style selection: only whole groups of ``size`` nodes sharing a value
    of attribute ``key`` are active, and each group's ranks are contiguous. Groups come
    in the order of their first node; within a value, previous members first."""

    key: str
    size: int

    def __post_init__(self) -> None:
        if not _KEY.fullmatch(self.key):
            raise ValueError(f"segment_key must be an attribute name, got {self.key!r}.")
        if self.size < 1:
            raise ValueError(f"segment must be 1 or more nodes, got {self.size}.")

    def select(self, candidates: Sequence[Candidate]) -> list[list[int]]:
        """The whole segments among ``candidates``, as lists of indexes."""
        groups: dict[str, list[int]] = {}
        preferred = sorted(
            range(len(candidates)),
            key=lambda i: (candidates[i].previous_rank is None, candidates[i].position),
        )
        for i in preferred:
            value = candidates[i].attrs.get(self.key)
            if value is not None:
                groups.setdefault(value, []).append(i)
        first = {v: min(candidates[i].position for i in m) for v, m in groups.items()}
        segments = []
        for value in sorted(groups, key=first.__getitem__):
            members = groups[value]
            whole = len(members) - len(members) % self.size
            segments += [members[s : s + self.size] for s in range(0, whole, self.size)]
        return segments


@dataclass(frozen=True)
class RankPolicy:
    """How the node that assigns the ranks chooses a round's active nodes and orders them.

    ``order``: the :class:`RankOrder` by name (``sorted``, the default; ``sticky``;
    ``topology``; or a plugin's); ``rank_order`` an instance of it (built from ``order``
    and ``key`` for the built-ins). ``segments``: only whole segments are active, each
    with contiguous ranks. ``rank0``: ``(attribute, value)`` of the node moved to rank 0
    (the first such node in the order, with its segment; none present: no move).
    ``max_restarts``: re-rendezvous that failures may cause before the run is closed
    (None: no limit).
    """

    order: str = "sorted"
    key: str | None = None
    rank0: tuple[str, str] | None = None
    max_restarts: int | None = None
    segments: Segments | None = None
    rank_order: RankOrder | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.rank_order is None:
            found = builtin_rank_order(self.order, self.key)
            if found is None:
                raise ValueError(
                    f"rank_order must be one of {', '.join(ORDERS)}, got {self.order!r}."
                )
            object.__setattr__(self, "rank_order", found)
        if self.max_restarts is not None and self.max_restarts < 0:
            raise ValueError(f"max_restarts must be 0 or more, got {self.max_restarts}.")

    @classmethod
    def from_params(
        cls, params: RendezvousParameters, plugins: Mapping[str, RankOrderFactory] | None = None
    ) -> RankPolicy:
        """The policy the config asks for: ``rank_order`` (a built-in or one of
        ``plugins``), ``rank_key``, ``rank0`` (``attribute=value``, or a bare host name),
        ``segment`` with ``segment_key``, and ``max_restarts``."""
        rank0 = None
        pinned = params.get("rank0")
        if pinned:
            attribute, sep, value = str(pinned).partition("=")
            rank0 = (attribute.strip(), value.strip()) if sep else ("host", attribute.strip())
            if not _KEY.fullmatch(rank0[0]) or not rank0[1]:
                raise ValueError(
                    f"rank0 must be attribute=value (rank0=rack=r7) or a host name, got {pinned!r}."
                )
        name = str(params.get("rank_order", "sorted")).strip().lower()
        plugins = plugins or {}
        key = params.get("rank_key")
        order = builtin_rank_order(name, None if key is None else str(key))
        if order is None and name in plugins:
            order = plugins[name](params)
            if not isinstance(order, RankOrder) or order.name != name:
                raise TypeError(
                    f"The factory of rank order {name!r} returned {order!r}, not a RankOrder "
                    f"named {name!r}."
                )
        if order is None:
            raise ValueError(
                f"rank_order must be one of {', '.join([*ORDERS, *sorted(plugins)])}, got {name!r}."
            )
        return cls(
            order=name,
            key=None if key is None else str(key).strip(),
            rank0=rank0,
            max_restarts=params.get_as_int("max_restarts"),
            segments=_segments(params),
            rank_order=order,
        )

    def describe(self) -> str:
        """The options as one canonical line (what the nodes of a run compare)."""
        assert self.rank_order is not None
        parts = [f"rank_order={self.order}"]
        if self.rank_order.describe():
            parts.append(self.rank_order.describe())
        if self.segments is not None:
            parts.append(f"segment={self.segments.size},segment_key={self.segments.key}")
        if self.rank0 is not None:
            parts.append(f"rank0={self.rank0[0]}={self.rank0[1]}")
        if self.max_restarts is not None:
            parts.append(f"max_restarts={self.max_restarts}")
        return ",".join(parts)

    @property
    def remembers_ranks(self) -> bool:
        """Whether the choice needs the previous round's ranks."""
        assert self.rank_order is not None
        return self.rank_order.remembers_ranks or self.segments is not None

    def ranks(self, candidates: Sequence[Candidate]) -> list[int]:
        """The active candidates' indexes in rank order (rank 0 first); the candidates
        left out are this round's spares."""
        assert self.rank_order is not None
        pool = list(range(len(candidates)))
        segment_of: dict[int, int] = {}
        if self.segments is not None:
            chosen = self.segments.select(candidates)
            segment_of = {i: n for n, members in enumerate(chosen) for i in members}
            pool = sorted(segment_of)
        arranged = self.rank_order.arrange([candidates[i] for i in pool])
        order = [pool[j] for j in _checked(arranged, len(pool), self.order)]
        if self.rank0 is not None:
            attribute, value = self.rank0
            chosen0 = next((i for i in order if candidates[i].attrs.get(attribute) == value), None)
            if chosen0 is not None:
                order.remove(chosen0)
                order.insert(0, chosen0)
        if segment_of:
            # Each segment's ranks contiguous: segments in the order of their first node.
            first: dict[int, int] = {}
            for position, i in enumerate(order):
                first.setdefault(segment_of[i], position)
            order = sorted(order, key=lambda i: first[segment_of[i]])
        return order


def _checked(arranged: Sequence[int], size: int, name: str) -> list[int]:
    """``arranged`` when it is distinct indexes below ``size``; a clear error if not."""
    result = list(arranged)
    if len(set(result)) != len(result) or not all(
        isinstance(i, int) and 0 <= i < size for i in result
    ):
        raise RendezvousError(
            f"Rank order {name!r} returned {result[:16]!r}: expected distinct indexes of "
            f"its {size} candidates."
        )
    return result


def _segments(params: RendezvousParameters) -> Segments | None:
    size = params.get_as_int("segment")
    key = params.get("segment_key")
    if size is None and key is None:
        return None
    if size is None or key is None:
        raise ValueError(
            "segment (nodes per segment) and segment_key (the attribute they share) go "
            "together: segment=4,segment_key=nvl_domain."
        )
    return Segments(str(key).strip(), size)


# -- health checks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthCheck:
    """A check a node passes before it takes a slot in a round.

    ``command`` (argv) is an operator's script: exit status 0 is healthy; otherwise the
    last line of its output is the reason. ``check`` (from a plugin) returns None when
    healthy, else the reason. A check that raises or overruns ``timeout`` seconds fails
    the node, unless ``fail_open``. A spare runs it again every ``interval`` seconds.
    """

    command: tuple[str, ...] = ()
    check: Callable[[], str | None] | None = None
    timeout: float = 60.0
    fail_open: bool = False
    #: Seconds between the checks a spare runs while it waits.
    interval: float = 60.0

    @classmethod
    def from_params(
        cls, params: RendezvousParameters, check: Callable[[], str | None] | None = None
    ) -> HealthCheck | None:
        """The check the config (``health_check``, ``health_timeout``,
        ``health_fail_open``, ``health_interval``) or a plugin's ``rdzv_health_check`` asks for; None if none."""
        text = params.get("health_check")
        timeout = params.get_as_int("health_timeout", 60)
        assert timeout is not None
        if not 0 < timeout <= 86400:
            raise ValueError(f"health_timeout must be 1 to 86400 seconds, got {timeout}.")
        fail_open = bool(params.get_as_bool("health_fail_open", False))
        interval = params.get_as_int("health_interval", 60)
        assert interval is not None
        if not 0 < interval <= 86400:
            raise ValueError(f"health_interval must be 1 to 86400 seconds, got {interval}.")
        if not text and check is None:
            return None
        command: tuple[str, ...] = ()
        if text:
            command = tuple(shlex.split(str(text)))
            if not command or shutil.which(command[0]) is None:
                raise ValueError(
                    f"health_check: {command[0] if command else text!r} is not an executable "
                    "on PATH or a path to one (give the command and its arguments)."
                )
        return cls(command, check, float(timeout), fail_open, float(interval))

    def run(self) -> str | None:
        """None when healthy, else why not."""
        try:
            reason = self._run_command() if self.command else None
            if reason is None and self.check is not None:
                reason = self.check()
        except Exception as e:
            reason = f"the health check failed to run: {type(e).__name__}: {e}"
            return None if self.fail_open else reason
        return reason

    def _run_command(self) -> str | None:
        try:
            done = subprocess.run(
                self.command, capture_output=True, text=True, timeout=self.timeout,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            if self.fail_open:
                return None
            return f"the health check {self.command[0]} took longer than {self.timeout:g} s"
        if done.returncode == 0:
            return None
        lines = (done.stdout + done.stderr).strip().splitlines()
        last = lines[-1].strip()[:MAX_ATTRIBUTE_TEXT] if lines else "(no output)"
        return f"health check {self.command[0]} exited with status {done.returncode}: {last}"


# -- exclusion with cool-down ------------------------------------------------------------------


@dataclass(frozen=True)
class Exclusion:
    """How failing nodes are kept out: by the value of attribute ``by`` (``host``: the
    machine; ``rack``: the whole rack), for a cool-down that doubles with each strike
    (``cooldown_min`` x 2^(strikes-1), plus up to 10 % jitter, capped at ``cooldown_max``),
    and for good from ``max_strikes`` strikes on (None: never). A plugin returns a subclass
    from ``rdzv_exclusion_rule`` to decide otherwise (overriding :meth:`cooldown`,
    :meth:`permanent` and :meth:`describe`)."""

    by: str = "host"
    cooldown_min: float = 60.0
    cooldown_max: float = 3600.0
    max_strikes: int | None = None

    def __post_init__(self) -> None:
        if not _KEY.fullmatch(self.by):
            raise ValueError(f"exclude_by must be an attribute name, got {self.by!r}.")
        if not 0 < self.cooldown_min <= self.cooldown_max:
            raise ValueError(
                "cooldown_min and cooldown_max must be positive with cooldown_min <= "
                f"cooldown_max, got {self.cooldown_min:g} and {self.cooldown_max:g}."
            )
        if self.max_strikes is not None and self.max_strikes < 1:
            raise ValueError(f"max_strikes must be 1 or more, got {self.max_strikes}.")

    @classmethod
    def from_params(cls, params: RendezvousParameters) -> Exclusion:
        low = params.get_as_int("cooldown_min", 60)
        high = params.get_as_int("cooldown_max", max(3600, low or 0))
        assert low is not None and high is not None
        return cls(
            str(params.get("exclude_by", "host")).strip(),
            float(low),
            float(high),
            params.get_as_int("max_strikes"),
        )

    def describe(self) -> str:
        """The rule as text; every node of a run must describe it the same way (a plugin's
        subclass names itself here)."""
        text = f"exclude_by={self.by},cooldown_min={self.cooldown_min:g},cooldown_max={self.cooldown_max:g}"
        return text + (f",max_strikes={self.max_strikes}" if self.max_strikes else "")

    def cooldown(self, strikes: int, jitter: float) -> float:
        """Seconds a node with ``strikes`` strikes stays out (``jitter`` in [0, 1))."""
        base: float = min(self.cooldown_max, self.cooldown_min * 2.0 ** (strikes - 1))
        return min(self.cooldown_max, base * (1 + 0.1 * jitter))

    def permanent(self, strikes: int) -> bool:
        return self.max_strikes is not None and strikes >= self.max_strikes


# -- the restart budget --------------------------------------------------------------------------


@dataclass(frozen=True)
class RestartBudget:
    """How many re-rendezvous failures may cause in a run before it is closed.

    The built-in rule: more than ``max_restarts`` (None: no limit). A plugin returns a
    subclass from ``rdzv_restart_budget`` to decide otherwise (overriding :meth:`exhausted`
    and :meth:`describe`); every node of a run must describe it the same way.
    """

    max_restarts: int | None = None

    def __post_init__(self) -> None:
        if self.max_restarts is not None and self.max_restarts < 0:
            raise ValueError(f"max_restarts must be 0 or more, got {self.max_restarts}.")

    def exhausted(self, count: int, cause: str) -> str | None:
        """None while the run may go on after its ``count``-th failure-caused
        re-rendezvous (the latest caused by ``cause``); else why it is closed."""
        if self.max_restarts is None or count <= self.max_restarts:
            return None
        return (
            f"failures caused {count} re-rendezvous, more than max_restarts="
            f"{self.max_restarts} (the last: {cause})"
        )

    def describe(self) -> str:
        """The rule as text ("" for the built-in: ``max_restarts`` is in the policy line)."""
        return ""
