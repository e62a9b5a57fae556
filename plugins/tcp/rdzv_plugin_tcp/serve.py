"""``rdzv serve``: run a TCP store server in the foreground until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import resource
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import rdzv_plugin_tcp

from .auth import ENV_VAR, as_token, read_token_file

log = logging.getLogger("rdzv_plugin_tcp.serve")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {text!r}")
    return port


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {low}, got {text!r}")
        return value

    return parse


def add_serve_command(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run a standalone TCP store server (store type tcp)",
        description="Run a TCP store server in the foreground; stop it with Ctrl-C or SIGTERM. "
        f"A token in ${ENV_VAR} or --auth-token-file turns authentication on.",
    )
    parser.add_argument(
        "--port",
        type=_port,
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
        type=_at_least(1024),
        default=rdzv_plugin_tcp.DEFAULT_MAX_FRAME_SIZE,
        help="largest request or reply, in bytes (default 64 MiB)",
    )
    parser.add_argument(
        "--max-connections",
        type=_at_least(1),
        default=None,
        help="clients served at once; more are refused (default: 16384, or what the "
        "descriptor limit allows)",
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (off by default; 0 picks)",
    )
    parser.add_argument(
        "--dashboard-port",
        type=_port,
        default=None,
        help="serve the live status page of the runs held (off by default; 0 picks one)",
    )
    parser.add_argument(
        "--http-host",
        default="127.0.0.1",
        help="address the metrics and the status page listen on (default 127.0.0.1)",
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


class _BackgroundStderr(logging.Handler):
    """Formats records on the caller's thread and writes them to stderr from a daemon
    thread, so a slow or blocked stderr never blocks the server. When the queue of
    unwritten lines is full, new lines are dropped and counted."""

    def __init__(self, capacity: int = 1000) -> None:
        super().__init__()
        self._lines: deque[str] = deque()
        self._capacity = capacity
        self._dropped = 0
        self._ready = threading.Condition()
        threading.Thread(target=self._write, name="rdzv-serve-log", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        with self._ready:
            if len(self._lines) >= self._capacity:
                self._dropped += 1
                return
            self._lines.append(line)
            self._ready.notify()

    def _write(self) -> None:
        while True:
            with self._ready:
                while not self._lines:
                    self._ready.wait()
                lines = list(self._lines)
                self._lines.clear()
                dropped, self._dropped = self._dropped, 0
            if dropped:
                lines.insert(0, f"({dropped} log lines dropped: stderr was not being read)\n")
            try:
                sys.stderr.write("".join(lines))
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    def drain(self, timeout: float) -> None:
        """Give the writer up to ``timeout`` seconds to write what is queued."""
        deadline = time.monotonic() + timeout
        while self._lines and time.monotonic() < deadline:
            time.sleep(0.01)


def _return_freed_memory_to_the_os() -> None:
    """Fix glibc's mmap threshold so big freed buffers (large values, a client's frames)
    go back to the OS at once instead of staying in the heap. Only ``rdzv serve`` does
    this: it owns its process."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc


def _serve_http(
    args: argparse.Namespace, server: Any, token: bytes | None
) -> list[Callable[[], None]]:
    """Start the metrics endpoint and the status page asked for; their closers. Both read
    the runs through a client of this server (with its token); the page asks for it too."""
    if args.metrics_port is None and args.dashboard_port is None:
        return []
    from datetime import timedelta

    from rdzv_core.rendezvous.status import RunStatuses

    from .client import TCPStore
    from .server import share_server

    # The reader calls the server in this process: its reads are not clients' requests.
    share_server(server)
    reader = TCPStore("127.0.0.1", server.port, is_master=True, auth_token=token,
                      timeout=timedelta(seconds=10))  # fmt: skip
    closers: list[Callable[[], None]] = [reader.close]
    statuses = RunStatuses(reader)  # the page and the metrics share their snapshots
    if args.metrics_port is not None:
        from .metrics import serve_metrics

        def runs() -> list[dict[str, Any]]:
            return [statuses.get(run_id) for run_id in server.run_ids()]

        try:
            http = serve_metrics(server, runs, args.http_host, args.metrics_port)
        except OSError as e:
            reader.close()
            raise OSError(
                f"the metrics cannot listen on {args.http_host}:{args.metrics_port}: {e.strerror}"
            ) from None
        closers.append(http.shutdown)
        host, bound = http.server_address[:2]
        print(f"metrics on http://{host}:{bound}/metrics", flush=True)
    if args.dashboard_port is not None:
        from rdzv_core.dashboard import Dashboard

        page_token = token.decode() if token else None
        try:
            page = Dashboard(
                reader,
                [],
                args.http_host,
                args.dashboard_port,
                page_token,
                server.run_ids,
                statuses,
            )
        except OSError:
            for close in reversed(closers):
                close()
            raise
        closers.append(page.close)
        print(f"status page on {page.url}", flush=True)
    return closers[::-1]


def serve(args: argparse.Namespace) -> int:
    from rdzv_core import StoreError

    from .limits import ServerLimits
    from .server import StoreServer
    from .stats import ServerStats

    handler = _BackgroundStderr()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(min(root.level, logging.INFO))  # INFO at least; -vv gives DEBUG
    try:
        token = (
            read_token_file(args.auth_token_file)
            if args.auth_token_file
            else as_token(os.environ.get(ENV_VAR), f"${ENV_VAR}")
        )
    except ValueError as e:
        print(f"rdzv serve: {e}", file=sys.stderr)
        return 2
    port = rdzv_plugin_tcp.DEFAULT_PORT if args.port is None else args.port
    fd_limit = _raise_fd_limit()
    _return_freed_memory_to_the_os()
    allowed = max(1, fd_limit - 64)  # the rest: the listener, logs, a margin
    connections = min(args.max_connections or 16384, allowed)
    if args.max_connections and args.max_connections > allowed:
        log.warning(
            "--max-connections %d is more than the descriptor limit (%d) allows: serving up "
            "to %d connections (raise the limit with ulimit -n)",
            args.max_connections,
            fd_limit,
            connections,
        )
    try:
        limits = ServerLimits(
            max_frame_size=args.max_frame_size,
            max_connections=connections,
            max_buffered_bytes=max(ServerLimits.max_buffered_bytes, args.max_frame_size),
        )
    except ValueError as e:
        print(f"rdzv serve: {e}", file=sys.stderr)
        return 2
    stats = ServerStats() if args.metrics_port is not None else None
    try:
        server = StoreServer(args.host, port, auth_token=token, limits=limits, stats=stats)
    except StoreError as e:
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
        "rdzv TCP store serving on %s (pid %d, auth %s, up to %d connections)",
        where,
        os.getpid(),
        "on" if token else "off",
        connections,
    )
    print(f"listening on {where}", flush=True)
    try:
        extras = _serve_http(args, server, token)
    except OSError as e:
        server.stop()
        print(f"rdzv serve: {e}", file=sys.stderr)
        return 1
    while not stop.wait(0.5):
        if server.wait_stopped(0):
            break
    for close in extras:
        close()
    server.stop()
    if server.failure is not None:
        print(f"rdzv serve: the server failed and stopped: {server.failure!r}", file=sys.stderr)
        handler.drain(1.0)
        return 1
    log.info("stopped")
    handler.drain(1.0)
    return 0
