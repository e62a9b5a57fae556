"""``rdzv serve``: run a TCP store server in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import resource
import signal
import sys
import threading
from typing import Any

import rdzv_plugin_tcp

from .auth import ENV_VAR, as_token, read_token_file

log = logging.getLogger("rdzv_plugin_tcp.serve")


def add_serve_command(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run a standalone TCP store server (store type tcp)",
        description="Run a TCP store server in the foreground; stop it with Ctrl-C or SIGTERM. "
        f"A token in ${ENV_VAR} or --auth-token-file turns authentication on.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port to listen on (default {rdzv_plugin_tcp.DEFAULT_PORT}; 0 picks one)",
    )
    parser.add_argument(
        "--host", default=None, help="address to listen on (default: every interface)"
    )
    parser.add_argument(
        "--auth-token-file",
        default=None,
        help=f"file holding the shared token (default: ${ENV_VAR}, if set)",
    )
    parser.add_argument(
        "--max-frame-size",
        type=int,
        default=rdzv_plugin_tcp.DEFAULT_MAX_FRAME_SIZE,
        help="largest request accepted, in bytes (default 64 MiB)",
    )
    parser.set_defaults(run=serve)


def _raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def serve(args: argparse.Namespace) -> int:
    from rdzv_core import StoreError

    from .server import StoreServer

    logging.getLogger("rdzv_plugin_tcp").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    try:
        token = (
            read_token_file(args.auth_token_file)
            if args.auth_token_file
            else as_token(os.environ.get(ENV_VAR))
        )
    except ValueError as e:
        print(f"rdzv serve: {e}", file=sys.stderr)
        return 2
    port = rdzv_plugin_tcp.DEFAULT_PORT if args.port is None else args.port
    fd_limit = _raise_fd_limit()
    try:
        server = StoreServer(args.host, port, auth_token=token, max_frame_size=args.max_frame_size)
    except (StoreError, ValueError) as e:
        print(f"rdzv serve: {e}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    server.start()
    where = f"{args.host or '*'}:{server.port}"
    log.info(
        "rdzv TCP store serving on %s (pid %d, auth %s, up to ~%d connections)",
        where,
        os.getpid(),
        "on" if token else "off",
        max(0, fd_limit - 16),
    )
    print(f"listening on {where}", flush=True)
    while not stop.wait(1.0):
        pass
    server.stop()
    log.info("stopped")
    return 0
