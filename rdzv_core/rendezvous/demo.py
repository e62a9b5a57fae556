"""``rdzv demo``: an elastic rendezvous story told with real local processes.

The demo process hosts the store (a TCP server in-process, or a temporary file), starts
node processes (``python -m rdzv_core.rendezvous.demo node ...``) and narrates: the nodes
join and get ranks; one is killed with SIGKILL and the survivors re-rendezvous without it;
a newcomer joins and the next round includes it; the run is closed and every node exits.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import IO, Any

from ..backend import StoreBackend
from ..errors import (
    RendezvousClosedError,
    RendezvousError,
    RendezvousGracefulExitError,
    describe_error,
)
from ..params import RendezvousParameters
from ..registry import create_store
from ..store import Store
from .handler import RendezvousHandler, create_handler
from .settings import parse_config

DEMO_CONFIG = "keep_alive_interval=1,keep_alive_max_attempt=2,last_call_timeout=1,join_timeout=60"
STEP_TIMEOUT = 60.0
MAX_DEMO_NODES = 64  # each node is a process: a typo must not fork thousands


# -- a node ----------------------------------------------------------------------------------


def _say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": time.time(), **fields}), flush=True)


def run_node(
    endpoint: str, store_type: str, run_id: str, low: int, high: int, config: str = ""
) -> int:
    """Rendezvous, "train" until a membership change, re-rendezvous; until closed.

    ``config`` (``k=v,...``) overrides the demo's fast timeouts.
    """
    options = {**parse_config(DEMO_CONFIG), "is_host": "false", **parse_config(config)}
    params = RendezvousParameters(
        "c10d", endpoint, run_id, low, high, store_type=store_type, **options
    )
    handler = create_handler(params)
    try:
        while True:
            info = handler.next_rendezvous()
            master = info.bootstrap_store_info
            _say(
                "round",
                round=info.round,
                rank=info.rank,
                world=info.world_size,
                master=f"{master.master_addr}:{master.master_port}",
                pid=os.getpid(),
            )
            while True:
                waiting = handler.num_nodes_waiting()
                if waiting:
                    _say("change", waiting=waiting, lost=handler.lost_nodes())
                    break
                if handler.is_closed():
                    break  # next_rendezvous raises the close, with its reason
                time.sleep(0.1)
    except (RendezvousClosedError, RendezvousGracefulExitError) as e:
        _say("closed", reason=str(e))
        return 0
    except RendezvousError as e:
        _say("error", error=describe_error(e))
        return 1
    finally:
        handler.close()


# -- the narrator ----------------------------------------------------------------------------


class _Node:
    def __init__(self, name: str, proc: subprocess.Popen[str]) -> None:
        self.name = name
        self.proc = proc
        self.last: dict[str, Any] = {}


class _Story:
    def __init__(self, count: int, store_type: str) -> None:
        self.count = count
        self.store_type = store_type
        self.run_id = f"demo-{uuid.uuid4().hex[:6]}"
        self.low, self.high = max(1, count - 1), count
        self.events: queue.Queue[tuple[_Node, dict[str, Any]]] = queue.Queue()
        self.nodes: list[_Node] = []
        self.store, self.endpoint, self._cleanup = self._host_store()

    def _host_store(self) -> tuple[Store, str, str | None]:
        if self.store_type == "file":
            fd, path = tempfile.mkstemp(prefix="rdzv-demo-", suffix=".store")
            os.close(fd)
            params = RendezvousParameters("c10d", path, self.run_id, 1, 1, store_type="file")
            return create_store(params), path, path
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        endpoint = f"127.0.0.1:{port}"
        params = RendezvousParameters(
            "c10d", endpoint, self.run_id, 1, 1, store_type=self.store_type, is_host="true"
        )
        return create_store(params), endpoint, None

    def start_node(self) -> _Node:
        name = f"n{len(self.nodes) + 1}"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rdzv_core.rendezvous.demo",
                "node",
                self.endpoint,
                self.store_type,
                self.run_id,
                str(self.low),
                str(self.high),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        node = _Node(name, proc)
        self.nodes.append(node)
        threading.Thread(target=self._read, args=(node, proc.stdout), daemon=True).start()
        return node

    def _read(self, node: _Node, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            try:
                self.events.put((node, json.loads(line)))
            except json.JSONDecodeError:
                continue

    def await_round(self, expected: list[_Node], world: int) -> int:
        """Wait until every node of ``expected`` reports one round of size ``world``."""
        deadline = time.monotonic() + STEP_TIMEOUT
        rounds: dict[str, int] = {}
        while True:
            done = {rounds.get(n.name) for n in expected}
            if len(done) == 1 and None not in done:
                return done.pop()  # type: ignore[return-value]
            node, event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            node.last = event
            if event["event"] == "round" and event["world"] == world:
                rounds[node.name] = event["round"]
            elif event["event"] == "error":
                raise RuntimeError(f"{node.name} failed: {event['error']}")

    def table(self, nodes: list[_Node]) -> None:
        print(f"    {'node':<5} {'pid':>7}  {'round':>5}  {'rank':>4}  {'world':>5}  master")
        for node in sorted(nodes, key=lambda n: n.last.get("rank", 0)):
            e = node.last
            print(
                f"    {node.name:<5} {e.get('pid', 0):>7}  {e.get('round', '-'):>5}  "
                f"{e.get('rank', '-'):>4}  {e.get('world', '-'):>5}  {e.get('master', '')}"
            )

    def close(self) -> None:
        for node in self.nodes:
            if node.proc.poll() is None:
                node.proc.kill()
            node.proc.wait()
        self.store.close()
        if self._cleanup:
            os.unlink(self._cleanup)


def _step(number: int, title: str, seconds: float) -> None:
    print(f"\n[{number}] {title} ".ljust(66, ".") + f" {seconds:6.2f} s")


def run_demo(count: int, store_type: str) -> int:
    """Tell the story with ``count`` nodes over ``store_type``; 0 when every step held."""
    if not 2 <= count <= MAX_DEMO_NODES:
        print(
            f"rdzv demo: --nodes must be from 2 to {MAX_DEMO_NODES}, got {count}", file=sys.stderr
        )
        return 2
    story = _Story(count, store_type)
    print(
        f"rdzv demo: {count} node processes, store type '{store_type}' at {story.endpoint}, "
        f"run '{story.run_id}', nnodes {story.low}:{story.high}"
    )
    print(f"           options: {DEMO_CONFIG}")
    try:
        start = time.monotonic()
        first = [story.start_node() for _ in range(count)]
        story.await_round(first, count)
        _step(1, f"{count} nodes join and get ranks", time.monotonic() - start)
        story.table(first)

        victim = next(n for n in first if n.last.get("rank") == 1)
        survivors = [n for n in first if n is not victim]
        start = time.monotonic()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        story.await_round(survivors, count - 1)
        _step(
            2, f"kill -9 {victim.name} (rank 1); survivors re-rendezvous", time.monotonic() - start
        )
        story.table(survivors)

        start = time.monotonic()
        newcomer = story.start_node()
        everyone = [*survivors, newcomer]
        story.await_round(everyone, count)
        _step(
            3,
            f"newcomer {newcomer.name} joins; the next round includes it",
            time.monotonic() - start,
        )
        story.table(everyone)

        start = time.monotonic()
        closer = RendezvousHandler(
            story.run_id,
            story.store,
            StoreBackend(story.store, story.run_id),
            story.low,
            story.high,
        )
        closer.set_closed()
        for node in everyone:
            node.proc.wait(STEP_TIMEOUT)
        _step(4, "close the run; every node exits cleanly", time.monotonic() - start)
        codes = {node.name: node.proc.returncode for node in everyone}
        print(f"    exit codes: {codes}")
        if any(codes.values()):
            return 1
    except (queue.Empty, RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"\nrdzv demo: a step did not complete: {e!r}", file=sys.stderr)
        return 1
    finally:
        story.close()
    print("\nrdzv demo: done.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rdzv_core.rendezvous.demo")
    sub = parser.add_subparsers(dest="command", required=True)
    node = sub.add_parser("node")
    for name in ("endpoint", "store_type", "run_id"):
        node.add_argument(name)
    node.add_argument("low", type=int)
    node.add_argument("high", type=int)
    node.add_argument("config", nargs="?", default="")
    args = parser.parse_args(argv)
    return run_node(args.endpoint, args.store_type, args.run_id, args.low, args.high, args.config)


if __name__ == "__main__":
    raise SystemExit(main())
