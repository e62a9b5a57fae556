"""Prometheus metrics of ``rdzv serve`` (``--metrics-port``), read at scrape time from the
server's counters (:class:`~rdzv_plugin_tcp.stats.ServerStats`), its keyspace, and the
rendezvous runs it holds. Names follow Prometheus conventions: ``rdzv_`` prefix, base
units, ``_total`` for counters.

Server: ``rdzv_connections`` (now), ``rdzv_connections_accepted_total``,
``rdzv_connections_refused_total{reason}`` (connection_limit, version, authentication),
``rdzv_authentication_failures_total``, ``rdzv_requests_total{op,outcome}`` (ok, error,
timeout, parked, failed), ``rdzv_request_duration_seconds`` (histogram of the time the
server spends on a request), ``rdzv_parked_requests``, ``rdzv_keys``,
``rdzv_stored_bytes``, ``rdzv_received_bytes_total``, ``rdzv_sent_bytes_total``, and the
process's ``process_resident_memory_bytes`` and friends.

Per run: ``rdzv_run_round{run}``, ``rdzv_run_nodes{run,state}`` (joined, members, stale,
spares, lost, pending) and ``rdzv_run_last_round_seconds{run}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .stats import LATENCY_BOUNDS

if TYPE_CHECKING:
    from .server import StoreServer

__all__ = ["ServerCollector", "serve_metrics"]

_MAX_RUNS = 100


class ServerCollector(Collector):
    """Metrics of ``server``; ``runs()`` returns the status of each run it holds."""

    def __init__(self, server: StoreServer, runs: Callable[[], list[dict[str, Any]]]) -> None:
        self._server = server
        self._runs = runs

    def collect(self) -> Iterator[Metric]:
        server = self._server
        stats = server.stats
        assert stats is not None, "the server was made without stats"
        yield _gauge("rdzv_connections", "Clients connected now.", server.connection_count)
        yield _counter("rdzv_connections_accepted", "Connections accepted.", stats.accepted)
        refused = CounterMetricFamily(
            "rdzv_connections_refused", "Connections refused, by reason.", labels=["reason"]
        )
        for reason in ("connection_limit", "version", "authentication"):
            refused.add_metric([reason], stats.refused[reason])
        yield refused
        yield _counter(
            "rdzv_authentication_failures", "Clients that sent a wrong token.", stats.auth_failures
        )
        requests = CounterMetricFamily(
            "rdzv_requests", "Requests handled, by operation and outcome.", labels=["op", "outcome"]
        )
        for (op, outcome), count in sorted(stats.requests.items()):
            requests.add_metric([op, outcome], count)
        yield requests
        buckets, total = [], 0
        for bound, count in zip([*map(str, LATENCY_BOUNDS), "+Inf"], stats.latency_counts):
            total += count
            buckets.append((bound, total))
        yield HistogramMetricFamily(
            "rdzv_request_duration_seconds",
            "Time the server spent handling a request (a parked read: until it was parked).",
            buckets=buckets,
            sum_value=stats.latency_sum,
        )
        keys, stored, parked = server.keyspace_sizes()
        yield _gauge("rdzv_parked_requests", "Reads and pops waiting for a key or item.", parked)
        yield _gauge("rdzv_keys", "Keys held.", keys)
        yield _gauge("rdzv_stored_bytes", "Bytes of keys and values held.", stored)
        yield _counter("rdzv_received_bytes", "Bytes received from clients.", stats.bytes_in)
        yield _counter("rdzv_sent_bytes", "Bytes sent to clients.", stats.bytes_out)
        yield from self._run_metrics()

    def _run_metrics(self) -> Iterator[Metric]:
        rounds = GaugeMetricFamily("rdzv_run_round", "The run's current round.", labels=["run"])
        nodes = GaugeMetricFamily(
            "rdzv_run_nodes", "The run's nodes, by state.", labels=["run", "state"]
        )
        took = GaugeMetricFamily(
            "rdzv_run_last_round_seconds",
            "Seconds from the first join to the ranks of the run's last completed round.",
            labels=["run"],
        )
        for run in self._runs()[:_MAX_RUNS]:
            name = run["run_id"]
            rounds.add_metric([name], run["round"])
            counts = {
                "joined": run["joined"],
                "members": len(run["members"]),
                "stale": sum(1 for m in run["members"] if m.get("stale")),
                "spares": len(run["spares"]),
                "lost": len(run["lost"]),
                "pending": run["waiting_or_lost"],
            }
            for state, count in counts.items():
                nodes.add_metric([name, state], count)
            done = [h for h in run["history"] if h.get("seconds") is not None]
            if done:
                took.add_metric([name], done[-1]["seconds"])
        yield rounds
        yield nodes
        yield took


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def _counter(name: str, text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, text, value=value)


def serve_metrics(
    server: StoreServer, runs: Callable[[], list[dict[str, Any]]], host: str, port: int
) -> Any:
    """Serve ``/metrics`` of ``server`` on ``host``:``port`` in a daemon thread; returns the
    HTTP server (its ``server_address`` has the port; ``shutdown()`` stops it)."""
    registry = CollectorRegistry()
    registry.register(ServerCollector(server, runs))
    registry.register(ProcessCollector(registry=None))
    http, _ = start_http_server(port, addr=host, registry=registry)
    return http
