"""The ``rdzv join``, ``rdzv state`` and ``rdzv demo`` commands."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

from ..errors import RendezvousError
from ..params import RendezvousParameters
from .settings import parse_config, parse_nnodes

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the rendezvous subcommands to ``rdzv``."""
    join = sub.add_parser(
        "join",
        help="join a rendezvous and print this node's rank as JSON",
        description="Join a rendezvous, show progress on stderr, print the result as JSON on "
        "stdout, and exit (the other nodes will see this node's heartbeat stop).",
    )
    _add_target(join)
    join.add_argument("--nnodes", required=True, help="N, or MIN:MAX for an elastic job")
    join.add_argument("--local-addr", default=None, help="this node's address (default: FQDN)")
    join.set_defaults(run=_join)

    state = sub.add_parser("state", help="print the decoded state of a run")
    _add_target(state)
    state.add_argument("--json", action="store_true", help="print machine-readable JSON")
    state.set_defaults(run=_state)

    demo = sub.add_parser(
        "demo", help="run a full elastic rendezvous story with real local processes"
    )
    demo.add_argument("--nodes", type=int, default=4, help="nodes at the start (default 4)")
    demo.add_argument("--store-type", default="tcp", help="tcp (default) or file")
    demo.set_defaults(run=_demo)


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", required=True, help="the store's endpoint, e.g. HOST:PORT")
    parser.add_argument("--run-id", required=True, help="the job's run id")
    parser.add_argument("--store-type", default="tcp", help="store type (default tcp)")
    parser.add_argument("--config", default="", help="k=v,... rendezvous options")


def _params(args: argparse.Namespace, low: int, high: int, **extra: str) -> RendezvousParameters:
    config: dict[str, Any] = {"store_type": args.store_type, **parse_config(args.config)}
    config.update(extra)
    return RendezvousParameters(
        "c10d", args.endpoint, args.run_id, low, high, getattr(args, "local_addr", None), **config
    )


def _fail(message: str, code: int = 1) -> int:
    print(f"rdzv: {message}", file=sys.stderr)
    return code


def _join(args: argparse.Namespace) -> int:
    from .handler import create_handler

    try:
        low, high = parse_nnodes(args.nnodes)
        params = _params(args, low, high)
        handler = create_handler(params)
    except (ValueError, RendezvousError) as e:
        return _fail(f"{e}{': ' + str(e.__cause__) if e.__cause__ else ''}", 2)
    done = threading.Event()
    started = time.monotonic()
    join_timeout = handler.settings.join_timeout.total_seconds()

    def report() -> None:
        while not done.wait(1.0):
            try:
                p = handler.progress()
            except RendezvousError:
                continue
            left = max(0.0, join_timeout - (time.monotonic() - started))
            state = "complete, waiting for the next round" if p["complete"] else "waiting"
            print(
                f"rdzv join: round {p['round']}: {p['joined']} joined "
                f"(min {p['min_nodes']}, max {p['max_nodes']}), {state}; "
                f"{left:.0f} s left",
                file=sys.stderr,
                flush=True,
            )

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        info = handler.next_rendezvous()
    except RendezvousError as e:
        done.set()
        cause = f" ({e.__cause__})" if e.__cause__ else ""
        return _fail(f"{type(e).__name__}: {e}{cause}")
    finally:
        done.set()
    print(
        json.dumps(
            {
                "run_id": args.run_id,
                "node": handler.node_id,
                "round": info.round,
                "rank": info.rank,
                "world_size": info.world_size,
                "master_addr": info.bootstrap_store_info.master_addr,
                "master_port": info.bootstrap_store_info.master_port,
                "seconds": round(time.monotonic() - started, 3),
            }
        ),
        flush=True,
    )
    handler.close()
    return 0


def _state(args: argparse.Namespace) -> int:
    from ..registry import create_store
    from .inspect import describe_run, read_run

    try:
        store = create_store(_params(args, 1, 1, is_host="false"))
    except (ValueError, RendezvousError) as e:
        return _fail(f"{e}{': ' + str(e.__cause__) if e.__cause__ else ''}", 2)
    try:
        run = read_run(store, args.run_id)
    except RendezvousError as e:
        return _fail(f"{e}: {e.__cause__}")
    finally:
        store.close()
    print(json.dumps(run, indent=2) if args.json else describe_run(run))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.nodes, args.store_type)
