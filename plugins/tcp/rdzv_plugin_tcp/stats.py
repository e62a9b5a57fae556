"""What a server counts for its metrics: plain integers, kept only when metrics are on
(``StoreServer(stats=ServerStats())``), so a server without metrics pays nothing."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

from .protocol import OK, OP_NAMES, TIMEOUT, VALUE_ERROR

__all__ = ["LATENCY_BOUNDS", "ServerStats"]

#: Upper bounds (seconds) of the request-duration histogram's buckets.
LATENCY_BOUNDS = (
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
)  # fmt: skip
_PARKED = 0xFF  # not a status byte: the request waits to be answered later
_OUTCOMES = {OK: "ok", TIMEOUT: "timeout", VALUE_ERROR: "error", _PARKED: "parked"}


@dataclass
class ServerStats:
    """Counters one server keeps; read by the metrics collector at scrape time."""

    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    auth_failures: int = 0
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))
    latency_sum: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    _counts: dict[int, int] = field(default_factory=dict)  # op << 8 | status -> count

    def request(self, op: int, reply: list[bytes] | None, seconds: float) -> None:
        """Count one request: its operation, outcome (ok, error, timeout, parked: answered
        later) and how long the server took to handle it. (On every request: kept to a
        few dictionary and list steps; the names are looked up when read.)"""
        key = op << 8 | (_PARKED if reply is None else reply[0][0] if reply[0] else OK)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1
        self.latency_counts[bisect_left(LATENCY_BOUNDS, seconds)] += 1
        self.latency_sum += seconds

    @property
    def requests(self) -> Counter[tuple[str, str]]:
        """Requests by (operation name, outcome)."""
        found: Counter[tuple[str, str]] = Counter()
        for key, count in list(self._counts.items()):
            found[OP_NAMES.get(key >> 8, "unknown"), _OUTCOMES.get(key & 0xFF, "failed")] += count
        return found
