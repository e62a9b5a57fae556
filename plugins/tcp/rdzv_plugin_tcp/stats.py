"""What a server counts for its metrics: plain integers, kept only when metrics are on
(``StoreServer(stats=ServerStats())``), so a server without metrics pays nothing."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

from .protocol import OK, OP_NAMES, TIMEOUT, VALUE_ERROR

__all__ = ["LATENCY_BOUNDS", "ServerStats"]

#: Upper bounds (seconds) of the request-duration histogram's buckets.
LATENCY_BOUNDS = (
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
)  # fmt: skip
_OUTCOMES = {OK: "ok", TIMEOUT: "timeout", VALUE_ERROR: "error"}


@dataclass
class ServerStats:
    """Counters one server keeps; read by the metrics collector at scrape time."""

    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    auth_failures: int = 0
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))
    latency_sum: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0

    def request(self, op: int, reply: list[bytes] | None, seconds: float) -> None:
        """Count one request: its operation, outcome (ok, error, timeout, parked: answered
        later) and how long the server took to handle it."""
        if reply is None:
            outcome = "parked"
        else:
            outcome = _OUTCOMES.get(reply[0][0], "failed") if reply[0] else "ok"
        self.requests[OP_NAMES.get(op, "unknown"), outcome] += 1
        self.latency_counts[bisect.bisect_left(LATENCY_BOUNDS, seconds)] += 1
        self.latency_sum += seconds
