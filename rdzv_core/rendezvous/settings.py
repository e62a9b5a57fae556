"""Handler settings from RendezvousParameters, and the launcher-style text parsers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from ..params import MAX_SECONDS, RendezvousParameters

__all__ = ["HandlerSettings", "parse_config", "parse_nnodes"]


def _positive(params: RendezvousParameters, key: str, name: str, default: int) -> timedelta:
    seconds = params.get_as_int(key, default)
    assert seconds is not None
    if seconds > MAX_SECONDS:
        raise ValueError(f"The {name} must be at most {MAX_SECONDS} seconds, got {seconds}.")
    value = timedelta(seconds=seconds)
    if value <= timedelta(0):
        raise ValueError(f"The {name} ({value}) must be positive.")
    return value


@dataclass(frozen=True)
class HandlerSettings:
    """The handler's timeouts, read from the rendezvous config (whole seconds).

    ``join_timeout`` (600): how long ``next_rendezvous`` may take. ``last_call_timeout``
    (30): how long a round with at least ``min_nodes`` waits for more before completing.
    ``close_timeout`` (30): how long a node hosting the store keeps it serving for the others
    as it leaves (``close``/``shutdown``). ``heartbeat_timeout`` (5): how
    long one keep-alive may take. ``keep_alive_interval`` (5) and ``keep_alive_max_attempt``
    (3): a node is beaten every interval and declared lost once its heartbeat has not moved
    for interval x max_attempt (15 s). Each timeout and the liveness window may be at most
    :data:`~rdzv_core.params.MAX_SECONDS`.
    """

    join_timeout: timedelta = timedelta(seconds=600)
    last_call_timeout: timedelta = timedelta(seconds=30)
    close_timeout: timedelta = timedelta(seconds=30)
    heartbeat_timeout: timedelta = timedelta(seconds=5)
    keep_alive_interval: timedelta = timedelta(seconds=5)
    keep_alive_max_attempt: int = 3

    @classmethod
    def from_params(cls, params: RendezvousParameters) -> HandlerSettings:
        attempts = params.get_as_int("keep_alive_max_attempt", 3)
        assert attempts is not None
        if attempts < 1:
            raise ValueError(f"The keep-alive max attempt ({attempts}) must be at least 1.")
        interval = _positive(params, "keep_alive_interval", "keep-alive interval", 5)
        seconds = int(interval.total_seconds())
        if seconds * attempts > MAX_SECONDS:
            raise ValueError(
                f"The liveness window, keep-alive interval x max attempt ({seconds} s x "
                f"{attempts}), must be at most {MAX_SECONDS} seconds."
            )
        return cls(
            join_timeout=_positive(params, "join_timeout", "join timeout", 600),
            last_call_timeout=_positive(params, "last_call_timeout", "last call timeout", 30),
            close_timeout=_positive(params, "close_timeout", "close timeout", 30),
            heartbeat_timeout=_positive(params, "heartbeat_timeout", "heartbeat timeout", 5),
            keep_alive_interval=interval,
            keep_alive_max_attempt=attempts,
        )

    @property
    def liveness_window(self) -> timedelta:
        """How long a heartbeat may stand still before its node counts as lost."""
        return self.keep_alive_interval * self.keep_alive_max_attempt


def parse_config(text: str) -> dict[str, str]:
    """``k1=v1,k2=v2`` as a dict, as torchrun parses ``--rdzv-conf`` (last duplicate wins)."""
    config: dict[str, str] = {}
    if not text.strip():
        return config
    for item in text.split(","):
        key, _, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not key:
            raise ValueError(
                "The rendezvous configuration string must be in format "
                "<key1>=<value1>,...,<keyN>=<valueN>."
            )
        if not value:
            raise ValueError(
                f"The rendezvous configuration option '{key}' must have a value specified."
            )
        config[key] = value
    return config


def parse_nnodes(text: str) -> tuple[int, int]:
    """``N`` or ``MIN:MAX`` as (min, max); both positive and MIN <= MAX."""
    parts = text.split(":")
    try:
        if len(parts) == 1:
            low = high = int(parts[0])
        elif len(parts) == 2:
            low, high = int(parts[0]), int(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise ValueError(
            f"--nnodes must be N or MIN:MAX with whole numbers, got {text!r}."
        ) from None
    if low < 1 or high < low:
        raise ValueError(f"--nnodes needs 1 <= MIN <= MAX, got {text!r}.")
    return low, high
