"""Honest failure over tcp: dead, frozen and restarted servers, and the node that hosts the
store leaving before the others are done with it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from rdzv_plugin_tcp import TCPStore
from tcp_helpers import Relay, Served, freeze, listening, wait_until

from rdzv_core import StoreConnectionError

README = Path(__file__).resolve().parents[3] / "README.md"


@pytest.fixture
def served() -> Iterator[Served]:
    server = Served()
    yield server
    if server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.stop(signal.SIGKILL)


def in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


# -- a lost link fails every pending and later call at once --------------------------------


def test_a_dead_server_fails_every_pending_and_later_call_at_once(served: Served) -> None:
    store = TCPStore("127.0.0.1", served.port, timeout=timedelta(seconds=60))
    pending = [in_thread(lambda: store.get("never")) for _ in range(3)]
    time.sleep(0.3)
    served.proc.kill()
    start = time.monotonic()
    for thread, errors in pending:
        thread.join(5)
        assert not thread.is_alive() and isinstance(errors[0], StoreConnectionError)
    assert time.monotonic() - start < 1.5
    for call in (lambda: store.set("k", "v"), lambda: store.add("n", 1), store.num_keys):
        start = time.monotonic()
        with pytest.raises(StoreConnectionError, match="Lost the TCP store"):
            call()
        assert time.monotonic() - start < 0.2, "a later call retried instead of failing"


def test_one_broken_link_fails_the_calls_pending_on_the_others(served: Served) -> None:
    relay = Relay(served.port)
    try:
        store = TCPStore("127.0.0.1", relay.port, timeout=timedelta(seconds=60))
        first = in_thread(lambda: store.get("a"))
        second = in_thread(lambda: store.get("b"))
        assert wait_until(lambda: len(relay.pairs) == 2, 5)
        time.sleep(0.2)
        relay.cut(0)
        for thread, errors in (first, second):
            thread.join(3)
            assert not thread.is_alive(), "a pending call outlived the lost link"
            assert isinstance(errors[0], StoreConnectionError)
    finally:
        relay.close()


# -- store identity ------------------------------------------------------------------------


def test_a_restarted_server_on_the_same_port_is_never_silently_used(served: Served) -> None:
    store = TCPStore("127.0.0.1", served.port)
    for _ in range(5):
        store.add("counter", 1)
    port = served.port
    served.proc.kill()
    served.proc.wait()
    restarted = subprocess.Popen(
        [sys.executable, "-m", "rdzv_core", "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert restarted.stdout is not None and restarted.stdout.readline().startswith("listen")
        with pytest.raises(StoreConnectionError):
            store.add("counter", 1)  # was 5: never 1 from the new, empty server
        with pytest.raises(StoreConnectionError):
            store.get("counter")
    finally:
        restarted.kill()
        restarted.wait()


def test_a_different_server_instance_behind_the_address_is_refused(served: Served) -> None:
    other = Served()
    relay = Relay(served.port)
    try:
        store = TCPStore("127.0.0.1", relay.port, timeout=timedelta(seconds=5))
        store.set("k", "v")
        relay.upstream = other.port  # a fail-over to another instance, say
        blocked = in_thread(lambda: store.get("later"))  # holds the first connection
        time.sleep(0.3)
        with pytest.raises(StoreConnectionError, match="restarted: a different server instance"):
            store.get("k")  # needs a second connection, which reaches the other instance
        blocked[0].join(5)
        assert isinstance(blocked[1][0], StoreConnectionError)
        with pytest.raises(StoreConnectionError, match="restarted"):
            store.num_keys()
    finally:
        relay.close()
        other.stop(signal.SIGKILL)


# -- a frozen host (SIGSTOP: no FIN, no RST, the kernel still acknowledges) -----------------


def test_a_host_that_drops_the_syn_fails_the_connect_within_the_timeout() -> None:
    """A listener whose accept queue is full drops new SYNs, as an overloaded or wedged
    host does: the connect itself must give up in time, saying it timed out."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=1):  # fills the queue
            start = time.monotonic()
            with pytest.raises(StoreConnectionError, match="within 1 s: .*timed out"):
                TCPStore("127.0.0.1", port, timeout=timedelta(seconds=1))
            elapsed = time.monotonic() - start
    assert elapsed < 1 + 1.0, f"the connect took {elapsed:.1f} s"


@pytest.mark.parametrize("call", ["get", "wait", "set", "big_set", "connect"])
def test_a_frozen_server_fails_every_call_within_the_read_timeout(
    served: Served, call: str
) -> None:
    store = TCPStore("127.0.0.1", served.port, timeout=timedelta(seconds=2))
    store.set("k", "v")
    freeze(served.proc.pid)
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: store.get("never"),
        "wait": lambda: store.wait(["never"], timedelta(hours=1)),
        "set": lambda: store.set("k", "w"),
        "big_set": lambda: store.set("k", bytes(32 * 1024 * 1024)),  # the send itself stalls
        "connect": lambda: TCPStore(
            "127.0.0.1", served.port, timeout=timedelta(seconds=2)
        ).num_keys(),
    }
    start = time.monotonic()
    with pytest.raises(StoreConnectionError):
        calls[call]()
    elapsed = time.monotonic() - start
    assert elapsed < 2 + 1.5, f"{call} on a frozen server took {elapsed:.1f} s"


def test_a_default_socket_timeout_does_not_replace_the_stores_own(served: Served) -> None:
    """socket.setdefaulttimeout() gives every new socket Python's timeout; the store's own
    deadline (its kernel timeouts) must still be the one that ends a call."""
    socket.setdefaulttimeout(30)
    try:
        store = TCPStore("127.0.0.1", served.port, timeout=timedelta(seconds=2))
        store.set("k", "v")
    finally:
        socket.setdefaulttimeout(None)
    freeze(served.proc.pid)
    start = time.monotonic()
    with pytest.raises(StoreConnectionError, match="stopped answering"):
        store.get("never")
    elapsed = time.monotonic() - start
    assert elapsed < 2 + 1.5, f"the frozen server was noticed after {elapsed:.1f} s"


def test_a_frozen_store_host_fails_nodes_in_last_call_within_the_read_timeout(
    served: Served,
) -> None:
    from rdzv_core.testing.rendezvous_suite import _Cluster

    cluster = _Cluster("tcp", f"127.0.0.1:{served.port}", 2, 4, host=False)
    try:
        # Two of min 2, max 4: in last call (30 s), blocked in the store.
        nodes = cluster.start(2, "read_timeout=3,last_call_timeout=30")
        cluster.wait_joined(2)
        time.sleep(0.3)  # from their slots to the blocking read
        freeze(served.proc.pid)
        start = time.monotonic()
        for node in nodes:
            error = node.next("error", timeout=30)["error"]
            assert error.startswith("RendezvousConnectionError"), error
        elapsed = time.monotonic() - start
        assert elapsed < 3 + 2, f"nodes noticed the frozen host after {elapsed:.1f} s"
    finally:
        os.kill(served.proc.pid, signal.SIGCONT)
        cluster.close()


# -- the node that hosts the store leaves first --------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rdzv_join(port: int, run_id: str, nnodes: str, config: str = "") -> subprocess.Popen[str]:
    args = ["join", "--endpoint", f"127.0.0.1:{port}", "--run-id", run_id, "--nnodes", nnodes]
    if config:
        args += ["--config", config]
    return subprocess.Popen(
        [sys.executable, "-m", "rdzv_core", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("hosting", ["inferred", "explicit"])
def test_rdzv_join_with_a_hosting_node_ten_times_in_a_row(hosting: str) -> None:
    for attempt in range(10):
        port = free_port()
        host_config = "is_host=true" if hosting == "explicit" else ""
        client_config = "is_host=false" if hosting == "explicit" else ""
        host = rdzv_join(port, f"j{attempt}", "3", host_config)
        assert wait_until(lambda port=port: listening(port), 10)  # type: ignore[misc]
        others = [rdzv_join(port, f"j{attempt}", "3", client_config) for _ in range(2)]
        results = []
        for proc in [host, *others]:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, f"attempt {attempt}: exit {proc.returncode}: {err}"
            results.append(json.loads(out))
        assert sorted(r["rank"] for r in results) == [0, 1, 2], f"attempt {attempt}"


def launcher_snippet() -> str:
    """The README's "A launcher in fifteen lines", verbatim."""
    text = README.read_text()
    section = text[text.index("## A launcher in fifteen lines") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


TRAIN = """import os, time
time.sleep(float(os.environ["TRAIN_SECONDS"]))
"""


@pytest.mark.parametrize("host_finishes", ["first", "last"])
def test_readme_launcher_snippet_in_every_order_of_finishing(
    tmp_path: Path, host_finishes: str
) -> None:
    port = free_port()
    code = launcher_snippet().replace("node0:29400", f"127.0.0.1:{port}")
    (tmp_path / "train.py").write_text(TRAIN)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    quick, slow = ("0.2", "2.5") if host_finishes == "first" else ("2.5", "0.2")

    def node(seconds: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env={**env, "TRAIN_SECONDS": seconds},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    host = node(quick)
    assert wait_until(lambda: listening(port), 10)
    others = [node(slow) for _ in range(3)]  # max_nodes 4: the round completes at once
    start = time.monotonic()
    for proc in [host, *others]:
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, f"a launcher exited {proc.returncode}: {err}"
        assert "Traceback" not in err, err
    assert time.monotonic() - start < 20, "shutdown() blocked"
