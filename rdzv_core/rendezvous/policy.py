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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..params import RendezvousParameters

__all__ = [
    "ATTRS_ENV",
    "Candidate",
    "Exclusion",
    "HealthCheck",
    "RankPolicy",
    "node_attributes",
    "parse_attributes",
]

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


# -- health checks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthCheck:
    """A check a node passes before it takes a slot in a round.

    ``command`` (argv) is an operator's script: exit status 0 is healthy; otherwise the
    last line of its output is the reason. ``check`` (from a plugin) returns None when
    healthy, else the reason. A check that raises or overruns ``timeout`` seconds fails
    the node, unless ``fail_open``.
    """

    command: tuple[str, ...] = ()
    check: Callable[[], str | None] | None = None
    timeout: float = 60.0
    fail_open: bool = False

    @classmethod
    def from_params(
        cls, params: RendezvousParameters, check: Callable[[], str | None] | None = None
    ) -> HealthCheck | None:
        """The check the config (``health_check``, ``health_timeout``,
        ``health_fail_open``) or a plugin's ``rdzv_health_check`` asks for; None if none."""
        text = params.get("health_check")
        timeout = params.get_as_int("health_timeout", 60)
        assert timeout is not None
        if not 0 < timeout <= 86400:
            raise ValueError(f"health_timeout must be 1 to 86400 seconds, got {timeout}.")
        fail_open = bool(params.get_as_bool("health_fail_open", False))
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
        return cls(command, check, float(timeout), fail_open)

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
    and for good from ``max_strikes`` strikes on (None: never)."""

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
        text = f"exclude_by={self.by},cooldown_min={self.cooldown_min:g},cooldown_max={self.cooldown_max:g}"
        return text + (f",max_strikes={self.max_strikes}" if self.max_strikes else "")

    def cooldown(self, strikes: int, jitter: float) -> float:
        """Seconds a node with ``strikes`` strikes stays out (``jitter`` in [0, 1))."""
        base: float = min(self.cooldown_max, self.cooldown_min * 2.0 ** (strikes - 1))
        return min(self.cooldown_max, base * (1 + 0.1 * jitter))

    def permanent(self, strikes: int) -> bool:
        return self.max_strikes is not None and strikes >= self.max_strikes
