"""The ``rdzv join``, ``rdzv state``, ``rdzv watch``, ``rdzv dashboard`` and ``rdzv demo``
commands."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import PluginLoadError, RendezvousError, StoreError, describe_error
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

    watch = sub.add_parser(
        "watch",
        help="show a run's status live",
        description="Show a run's status, read again every --interval seconds: on a "
        "terminal a screen (round, state, progress bar, members with heartbeat ages, spares, "
        "lost nodes, exclusions, the history of rounds); otherwise one line (or, with --json, "
        "one JSON object) each time it changes. Ends when the run is closed, or on Ctrl-C.",
    )
    _add_target(watch)
    watch.add_argument("--interval", type=float, default=1.0, help="seconds between reads (1)")
    watch.add_argument("--once", action="store_true", help="show the status once and exit")
    watch.add_argument("--json", action="store_true", help="JSON objects instead of lines")
    watch.add_argument(
        "--wait", action="store_true", help="wait for a run that has not started yet"
    )
    watch.set_defaults(run=_watch)

    dashboard = sub.add_parser(
        "dashboard",
        help="serve a live status page of a store's runs over HTTP",
        description="Serve a read-only status page (and its JSON API at /api/runs) of the "
        "runs in a store, until Ctrl-C or SIGTERM. It binds 127.0.0.1 unless --host says "
        "otherwise; with a token (--token-file, or the store's auth_token_file / auth_token "
        "option) every request must carry it.",
    )
    dashboard.add_argument("--endpoint", required=True, help="the store's endpoint")
    dashboard.add_argument("--store-type", default="tcp", help="store type (default tcp)")
    dashboard.add_argument("--config", default="", help="k=v,... rendezvous options")
    dashboard.add_argument(
        "--run-id", action="append", default=[],
        help="a run to show (repeat for more; a store that lists its keys shows every run)",
    )  # fmt: skip
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on")
    dashboard.add_argument("--port", type=int, default=8470, help="port (8470; 0 picks one)")
    dashboard.add_argument("--token-file", default=None, help="file holding the page's token")
    dashboard.add_argument(
        "--wait", action="store_true", help="accept --run-id runs that have not started yet"
    )
    dashboard.set_defaults(run=_dashboard)

    demo = sub.add_parser(
        "demo", help="run a full elastic rendezvous story with real local processes"
    )
    demo.add_argument(
        "--nodes", type=int, default=4, help="nodes at the start, 2 to 64 (default 4)"
    )
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


def _fail(error: BaseException) -> int:
    """Report ``error`` on stderr; 2 for bad input (a usage error), else 1."""
    print(f"rdzv: {describe_error(error)}", file=sys.stderr)
    return 2 if isinstance(error, (ValueError, TypeError)) else 1


_FAILURES = (ValueError, TypeError, RendezvousError, StoreError, PluginLoadError, OSError)


@contextmanager
def _connecting(args: argparse.Namespace) -> Iterator[None]:
    """Say on stderr, every few seconds, that we are still connecting to the store."""
    done = threading.Event()
    started = time.monotonic()

    def report() -> None:
        while not done.wait(2.0):
            print(
                f"rdzv: connecting to the {args.store_type} store at {args.endpoint} "
                f"({time.monotonic() - started:.0f} s so far)",
                file=sys.stderr,
                flush=True,
            )

    threading.Thread(target=report, daemon=True).start()
    try:
        yield
    finally:
        done.set()


def _join(args: argparse.Namespace) -> int:
    from .handler import create_handler

    try:
        low, high = parse_nnodes(args.nnodes)
        params = _params(args, low, high)
        with _connecting(args):
            handler = create_handler(params)
    except _FAILURES as e:
        return _fail(e)
    done = threading.Event()
    started = time.monotonic()
    join_timeout = handler.settings.join_timeout.total_seconds()
    live = sys.stderr.isatty()

    def report() -> None:
        while not done.wait(1.0):
            try:
                p = handler.progress()
            except RendezvousError:
                continue
            left = max(0.0, join_timeout - (time.monotonic() - started))
            state = "complete, waiting for the next round" if p["complete"] else "waiting"
            line = (
                f"rdzv join: round {p['round']}: {p['joined']} joined "
                f"(min {p['min_nodes']}, max {p['max_nodes']}), {state}; "
                f"{left:.0f} s left"
            )
            if live:  # one line, rewritten in place
                print(f"\r{line}\x1b[K", end="", file=sys.stderr, flush=True)
            else:
                print(line, file=sys.stderr, flush=True)

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        info = handler.next_rendezvous()
    except RendezvousError as e:
        done.set()
        handler.close()
        return _fail(e)
    finally:
        done.set()
        reporter.join(2)
        if live:
            print(file=sys.stderr, flush=True)
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
        with _connecting(args):
            store = create_store(_params(args, 1, 1, is_host="false"))
    except _FAILURES as e:
        return _fail(e)
    try:
        run = read_run(store, args.run_id)
    except _FAILURES as e:
        return _fail(e)
    finally:
        store.close()
    print(json.dumps(run, indent=2) if args.json else describe_run(run))
    return 0


def _watch(args: argparse.Namespace) -> int:
    from ..registry import create_store
    from .status import RunWatcher, render, summary

    if not 0.1 <= args.interval <= 3600:
        return _fail(ValueError(f"--interval must be 0.1 to 3600 seconds, got {args.interval}."))
    try:
        with _connecting(args):
            store = create_store(_params(args, 1, 1, is_host="false"))
    except _FAILURES as e:
        return _fail(e)
    screen = sys.stdout.isatty() and not args.json
    watcher = RunWatcher(store, args.run_id)
    last = None
    try:
        while True:
            try:
                run = watcher.snapshot()
            except _FAILURES as e:
                if last is None or args.once:
                    return _fail(e)
                print(f"rdzv watch: {describe_error(e)}; trying again", file=sys.stderr)
                time.sleep(args.interval)
                continue
            if not run["exists"] and not args.wait:
                return _fail(
                    RendezvousError(
                        f"No rendezvous state for run {args.run_id!r} in this store "
                        "(a wrong --run-id, or the run has not started: --wait waits for it)."
                    )
                )
            line = summary(run)
            if screen:
                print("\x1b[H\x1b[2J" + render(run), flush=True)
            elif line != last:
                print(json.dumps(run, sort_keys=True) if args.json else line, flush=True)
            last = line
            if args.once or run.get("closed"):
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        store.close()


def _page_token(args: argparse.Namespace, params: RendezvousParameters) -> str | None:
    """The page's token: --token-file, else the store's own (auth_token_file, auth_token)."""
    path = args.token_file or params.get("auth_token_file")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise ValueError(f"cannot read the token file {path!r}: {e.strerror}") from e
        if not token:
            raise ValueError(f"the token file {path!r} is empty")
        return token
    token = params.get("auth_token")
    return str(token) if token else None


def _dashboard(args: argparse.Namespace) -> int:
    import signal

    from ..dashboard import Dashboard
    from ..registry import create_store
    from .inspect import read_run

    if not 0 <= args.port <= 65535:
        return _fail(ValueError(f"--port must be 0 to 65535, got {args.port}."))
    try:
        config = {"store_type": args.store_type, **parse_config(args.config), "is_host": "false"}
        params = RendezvousParameters("c10d", args.endpoint, "rdzv-dashboard", 1, 1, **config)
        token = _page_token(args, params)
        with _connecting(args):
            store = create_store(params)
    except _FAILURES as e:
        return _fail(e)
    try:
        for run_id in args.run_id:
            if not args.wait and not read_run(store, run_id)["exists"]:
                raise RendezvousError(
                    f"No rendezvous state for run {run_id!r} in this store (a wrong --run-id, "
                    "or the run has not started: --wait shows it anyway)."
                )
        page = Dashboard(store, args.run_id, args.host, args.port, token)
    except _FAILURES as e:
        store.close()
        return _fail(e)
    print(f"rdzv dashboard: {page.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        page.close()
        store.close()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    try:
        return run_demo(args.nodes, args.store_type)
    except _FAILURES as e:
        return _fail(e)
