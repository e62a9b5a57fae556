"""``rdzv serve --metrics-port``: scraped over HTTP, the values match what the test did;
``--dashboard-port``: the status page of the runs the server holds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rdzv_plugin_tcp import TCPStore
from rdzv_plugin_tcp.protocol import FAILED, MAGIC, U32, VERSION
from rdzv_plugin_tcp.server import StoreServer
from rdzv_plugin_tcp.stats import ServerStats

from rdzv_core import StoreError

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Served:
    def __init__(self, tmp_path: Path, *extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RDZV_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rdzv_core", "serve", "--port", "0", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline().rsplit(":", 1)[1])
        self.urls: dict[str, str] = {}
        wanted = ("--metrics-port" in extra) + ("--dashboard-port" in extra)
        for _ in range(wanted):
            line = self.proc.stdout.readline().strip()
            name, _, url = line.partition(" on ")
            self.urls[name] = url

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=30)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("good-token\n")
    return path


@pytest.fixture
def served(tmp_path: Path, token_file: Path) -> Iterator[Served]:
    server = Served(tmp_path, "--max-connections", "3", "--auth-token-file", str(token_file),
                    "--metrics-port", "0", "--dashboard-port", "0")  # fmt: skip
    yield server
    server.stop()


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


def client(port: int, token: str = "good-token") -> TCPStore:
    return TCPStore("127.0.0.1", port, auth_token=token, timeout=timedelta(seconds=5))


def test_the_metrics_match_a_scripted_workload(served: Served) -> None:
    """3 connections, one refused at the connection limit, one wrong token, then 5 sets,
    3 gets, 2 adds and a compare_set: each counted where Prometheus users look for it."""
    first, second, third = (client(served.port) for _ in range(3))
    # One hello at the limit (a TCPStore would retry until its timeout: one refusal each).
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as raw:
        raw.sendall(U32.pack(5) + MAGIC + bytes([VERSION]))
        reply = raw.recv(4096)
    assert reply[4] == FAILED and b"connection limit" in reply
    third.close()
    with pytest.raises(StoreError, match="Authentication failed"):
        client(served.port, "wrong-token")
    for i in range(5):
        first.set(f"k{i}", "v" * 10)
    for i in range(3):
        assert first.get(f"k{i}") == b"v" * 10
    first.add("counter", 1)
    first.add("counter", 2)
    first.compare_set("k0", "v" * 10, "w")
    samples = scrape(served.urls["metrics"])
    deadline = time.monotonic() + 5  # a request is counted just after its reply is sent
    while value(samples, "rdzv_request_duration_seconds_count") < 11:
        assert time.monotonic() < deadline, "the last request was never counted"
        samples = scrape(served.urls["metrics"])
    first.close()
    second.close()
    assert value(samples, "rdzv_connections") == 2
    assert value(samples, "rdzv_connections_accepted_total") == 5
    assert value(samples, "rdzv_connections_refused_total", reason="connection_limit") == 1
    assert value(samples, "rdzv_connections_refused_total", reason="authentication") == 1
    assert value(samples, "rdzv_connections_refused_total", reason="version") == 0
    assert value(samples, "rdzv_authentication_failures_total") == 1
    assert value(samples, "rdzv_requests_total", op="set", outcome="ok") == 5
    assert value(samples, "rdzv_requests_total", op="get", outcome="ok") == 3
    assert value(samples, "rdzv_requests_total", op="add", outcome="ok") == 2
    assert value(samples, "rdzv_requests_total", op="compare_set", outcome="ok") == 1
    requests = sum(v for (name, _), v in samples.items() if name == "rdzv_requests_total")
    assert requests == 11, "no request the test did not make (pings, status reads) is counted"
    assert value(samples, "rdzv_request_duration_seconds_count") == 11
    assert value(samples, "rdzv_request_duration_seconds_bucket", le="+Inf") == 11
    assert 0 < value(samples, "rdzv_request_duration_seconds_sum") < 1
    assert value(samples, "rdzv_keys") == 6
    stored = sum(len(f"k{i}") + 10 for i in range(1, 5)) + len("k0") + 1
    stored += len("counter") + 1  # the counter's value is "3"
    assert value(samples, "rdzv_stored_bytes") == stored
    assert value(samples, "rdzv_parked_requests") == 0
    assert value(samples, "rdzv_received_bytes_total") > 0
    assert value(samples, "rdzv_sent_bytes_total") > 0
    assert value(samples, "process_resident_memory_bytes") > 10_000_000


def test_run_metrics_and_the_status_page_of_the_runs_held(served: Served) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RDZV_")}
    config = "is_host=false,auth_token=good-token,keep_alive_interval=1,last_call_timeout=1"
    joins = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rdzv_core",
                "join",
                "--endpoint",
                f"127.0.0.1:{served.port}",
                "--run-id",
                "metered",
                "--nnodes",
                "2",
                "--config",
                config,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    results = [json.loads(p.communicate(timeout=60)[0]) for p in joins]
    assert sorted(r["rank"] for r in results) == [0, 1]
    samples = scrape(served.urls["metrics"])
    assert value(samples, "rdzv_run_round", run="metered") == 0
    assert value(samples, "rdzv_run_nodes", run="metered", state="members") == 2
    assert value(samples, "rdzv_run_nodes", run="metered", state="joined") == 2
    assert value(samples, "rdzv_run_nodes", run="metered", state="lost") == 0
    assert 0 <= value(samples, "rdzv_run_last_round_seconds", run="metered") < 60
    page = served.urls["status page"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(page + "api/runs", timeout=10)
    assert refused.value.code == 401, "the server has a token: so has its page"
    request = urllib.request.Request(page + "api/runs",
                                     headers={"Authorization": "Bearer good-token"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as reply:
        runs = json.loads(reply.read())["runs"]
    assert [r["run_id"] for r in runs] == ["metered"] and runs[0]["world_size"] == 2


def test_a_busy_metrics_port_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RDZV_")}
        done = subprocess.run(
            [sys.executable, "-m", "rdzv_core", "serve", "--port", "0", "--metrics-port",
             str(port)], capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"rdzv serve: the metrics cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_without_metrics_the_server_counts_nothing(port: int) -> None:
    host = TCPStore("127.0.0.1", port, is_master=True)
    try:
        host.set("k", "v")
        server: Any = host._server  # type: ignore[attr-defined]
        assert server.stats is None
    finally:
        host.close()


def test_a_request_is_counted_after_its_reply_is_sent() -> None:
    """Counting never holds up a reply: the client has its answer while the server is
    still counting the request (here the count waits until the client has it)."""
    answered = threading.Event()

    class CountsOnceAnswered(ServerStats):
        def request(self, op: int, reply: list[bytes] | None, seconds: float) -> None:
            answered.wait(10)
            super().request(op, reply, seconds)

    server = StoreServer("127.0.0.1", 0, stats=CountsOnceAnswered())
    server.start()
    store = TCPStore("127.0.0.1", server.port, timeout=timedelta(seconds=3))
    try:
        assert store.add("k", 5) == 5  # times out if the count came before the reply
        answered.set()
        assert store.add("k", 1) == 6
        stats = server.stats
        assert stats is not None
        deadline = time.monotonic() + 5  # the second is counted just after its reply
        while stats.requests["add", "ok"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stats.requests["add", "ok"] == 2
    finally:
        answered.set()
        store.close()
        server.stop()
