"""rdzv-torch's handler as torch sees it, in-process: the entry point, use_agent_store,
errors, and the surplus node under a real torchrun."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from torch.distributed.elastic.rendezvous import RendezvousParameters
from torch.distributed.elastic.rendezvous.registry import get_rendezvous_handler
from torch_helpers import free_port


def test_the_entry_point_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from importlib.metadata import entry_points\n"
        "(ep,) = [e for e in entry_points(group='torchrun.handlers') if e.name == 'rdzv']\n"
        "creator = ep.load()()\n"
        "assert callable(creator)\n"
        "heavy = [m for m in ('torch', 'rdzv_core.rendezvous', 'rdzv_plugin_tcp.client')"
        " if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"loading the entry point imported {out.stdout}"


def rendezvous(port: int, n: int, **config: str) -> list[Any]:
    handlers: list[Any] = [None] * n
    infos: list[Any] = [None] * n

    def node(i: int) -> None:
        params = RendezvousParameters(
            "rdzv", f"127.0.0.1:{port}", f"run-{port}", n, n, local_addr="127.0.0.1",
            is_host="true" if i == 0 else "false", **config,
        )  # fmt: skip
        handlers[i] = get_rendezvous_handler(params)
        infos[i] = handlers[i].next_rendezvous()

    threads = [threading.Thread(target=node, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for handler in reversed(handlers):
        assert handler.shutdown()
    return [(h, i) for h, i in zip(handlers, infos)]


def test_the_handler_as_torch_sees_it() -> None:
    port = free_port()
    results = rendezvous(port, 2, last_call_timeout="1", timeout="900")
    for handler, info in results:
        assert handler.get_backend() == "rdzv" and handler.get_run_id() == f"run-{port}"
        assert handler.use_agent_store is False
        assert info.world_size == 2 and info.bootstrap_store_info.master_port != port
    assert sorted(info.rank for _, info in results) == [0, 1]


def test_use_agent_store_hands_out_the_torch_tcp_store() -> None:
    port = free_port()
    results = rendezvous(port, 2, store_type="torch-tcp", use_agent_store="true")
    for handler, info in results:
        assert handler.use_agent_store is True
        assert (info.bootstrap_store_info.master_addr, info.bootstrap_store_info.master_port) == (
            "127.0.0.1",
            port,
        ), "the workers must be sent to the agent's own torch TCPStore"
    with pytest.raises(ValueError, match="needs store_type=torch-tcp"):
        get_rendezvous_handler(
            RendezvousParameters("rdzv", f"127.0.0.1:{port}", "x", 1, 1, use_agent_store="true")
        )


def test_rdzv_errors_reach_torch_as_its_own_classes() -> None:
    from torch.distributed.elastic.rendezvous import RendezvousClosedError

    port = free_port()
    params = RendezvousParameters("rdzv", f"127.0.0.1:{port}", "closed", 1, 1)
    handler = get_rendezvous_handler(params)
    handler.set_closed()
    with pytest.raises(RendezvousClosedError):
        handler.next_rendezvous()
    handler.shutdown()


def test_an_unknown_torch_tcp_host_fails_at_once() -> None:
    """torch's TCPStore retries a name the resolver does not know until its timeout (60 s
    here); store type torch-tcp fails at once and says why."""
    from rdzv_core import RendezvousConnectionError, RendezvousParameters, create_backend

    start = time.monotonic()
    with pytest.raises(RendezvousConnectionError) as info:
        create_backend(
            RendezvousParameters(
                "rdzv", "no-such-host.invalid:1", "r", 1, 1, store_type="torch-tcp"
            )
        )
    assert "Cannot resolve the torch-tcp store host 'no-such-host.invalid'" in str(
        info.value.__cause__
    )
    assert time.monotonic() - start < 10


def test_shutdown_waits_at_most_close_timeout_for_a_peer_that_has_not_seen_the_close() -> None:
    """torch calls shutdown(); rdzv-torch's shutdown also releases the store. The hosting
    node waits for a live peer that has not seen the close for close_timeout in all, not
    once for the shutdown and again for the release."""
    port = free_port()
    handlers: list[Any] = [None, None]

    def node(i: int) -> None:
        params = RendezvousParameters(
            "rdzv", f"127.0.0.1:{port}", f"run-{port}", 2, 2, local_addr="127.0.0.1",
            is_host="true" if i == 0 else "false", close_timeout="2",
            keep_alive_interval="30",  # the peer's heartbeat will not look for the close
        )  # fmt: skip
        handlers[i] = get_rendezvous_handler(params)
        handlers[i].next_rendezvous()

    threads = [threading.Thread(target=node, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    host, peer = handlers
    started = time.monotonic()
    assert host.shutdown()
    elapsed = time.monotonic() - started
    peer.shutdown()  # its store is gone: it says so and returns
    assert 1.5 < elapsed < 2 + 1.0, f"the host waited {elapsed:.1f} s (close_timeout 2 s)"
