"""StoreServer: the TCP store's server, one epoll (or poll) loop in a background thread.

Blocking reads (get, wait, multi_get) park the connection on the keys they need and are
answered when a write sets the last of them or their deadline passes; nothing polls.
Every connection has bounded buffers and deadlines (:class:`ServerLimits`), so a client
that misbehaves only ever affects itself: it is answered with an error or closed, with a
rate-limited log line. Replies reference stored values instead of copying them.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import select
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from rdzv_core import StoreConnectionError, StoreError
from rdzv_core.storekit import resolver_host

from .auth import ANSWER_SIZE, verify
from .keyspace import Keyspace, Waiter
from .limits import ServerLimits, with_max_frame_size
from .protocol import (
    ACCEPTED_VERSIONS,
    ADD,
    ALIVE,
    APPEND,
    CAS,
    CHECK,
    DELETE,
    FAILED,
    GET,
    HANDSHAKE_FRAME_LIMIT,
    I64,
    LIST_KEYS,
    MAGIC,
    MAX_WAIT_SECONDS,
    MULTI_GET,
    MULTI_SET,
    NONCE_SIZE,
    NUM_KEYS,
    PING,
    QUEUE_LEN,
    QUEUE_POP,
    QUEUE_PUSH,
    SERVER_ID_SIZE,
    SET,
    TIMEOUT,
    U32,
    U64,
    VALUE_ERROR,
    WAIT,
    ProtocolError,
    Reader,
    hello_reply,
    key_and_int,
    key_and_rest,
    version_refusal,
)
from .spin import SpinPolicy
from .stats import ServerStats

__all__ = ["StoreServer", "acquire_server", "release_server"]

log = logging.getLogger(__name__)

_HELLO, _AUTH, _READY, _REFUSING = range(4)
_RECV_SIZE = 64 * 1024  # one read; also what any connection may hold beyond the budget
_OUT_HIGH_WATER = 4 * 1024 * 1024  # stop taking requests while this much is unsent
_HELD_INPUT_LIMIT = 1024 * 1024  # input kept while a connection's requests are held
_SMALL_REPLY = 16 * 1024  # replies up to this size are copied into one buffer
_MAX_IOV = 512  # chunks per sendmsg
_HELLO_HEAD = U32.pack(5)  # a hello's frame header: "RDZV" and the version byte follow
#: Every receive and send on a connection: never block (connections keep the blocking
#: mode they are accepted in, which saves a system call per connection), never SIGPIPE.
_NO_WAIT = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
_TICK = 1.0  # housekeeping interval: deadlines, accept back-off, log summaries
#: How long the loop busy-polls for the next request after serving some (seconds), while
#: its SpinPolicy says spinning pays.
SERVER_SPIN_SECONDS = 0.0001
_MAX_ACCEPTS = 256  # connections accepted per wake-up, at most
#: Linux's TCP_INFO on a listener: ``tcpi_unacked`` (a u32 at this offset) is the number of
#: connections waiting to be accepted.
_TCP_INFO = getattr(socket, "TCP_INFO", None)
_QUEUED_AT, _QUEUED = 24, struct.Struct("@I")
_MAX_REFUSING = 64  # connections being told "server full" at once; more are just closed
_ACCEPT_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_IN, _OUT, _BROKEN = select.POLLIN, select.POLLOUT, select.POLLERR | select.POLLHUP


class _Poller:
    """epoll where the system has it, else poll(2): descriptors and event masks in,
    ``(descriptor, events)`` out, waiting at most ``poll(timeout)`` seconds. Used directly,
    without the selectors module's bookkeeping, since the loop pays for every step once
    per request."""

    def __init__(self) -> None:
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        impl: Any = self._epoll or select.poll()
        self.register = impl.register
        self.modify = impl.modify
        self.unregister = impl.unregister
        self.poll: Callable[[float], list[tuple[int, int]]]
        if self._epoll is not None:
            self.poll = self._epoll.poll  # takes seconds itself: no Python frame per wait
        else:
            self.poll = lambda timeout: impl.poll(timeout * 1000)

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()


class _LogLimiter:
    """At most ``burst`` warnings per ``window`` seconds, then one line counting the rest;
    connects and disconnects are summed into one INFO line per window."""

    def __init__(self, burst: int = 10, window: float = 10.0) -> None:
        self.burst = burst
        self.window = window
        self.window_start = time.monotonic()
        self.warned = 0
        self.suppressed = 0
        self.connected = 0
        self.disconnected = 0

    def warning(self, message: str, *args: object) -> None:
        self._roll()
        if self.warned < self.burst:
            self.warned += 1
            log.warning(message, *args)
        else:
            self.suppressed += 1

    def _roll(self, connected_now: int | None = None, force: bool = False) -> None:
        now = time.monotonic()
        if now - self.window_start < self.window and not force:
            return
        if self.suppressed:
            log.warning(
                "%d more warnings in the last %.0f s not shown",
                self.suppressed,
                now - self.window_start,
            )
        if (self.connected or self.disconnected) and connected_now is not None:
            log.info(
                "%d clients connected and %d disconnected in the last %.0f s; %d connected now",
                self.connected,
                self.disconnected,
                now - self.window_start,
                connected_now,
            )
        self.window_start = now
        self.warned = self.suppressed = self.connected = self.disconnected = 0

    def tick(self, connected_now: int, force: bool = False) -> None:
        self._roll(connected_now, force)


class _Conn:
    __slots__ = (
        "accepted",
        "closing",
        "discard",
        "events",
        "fd",
        "frame_started",
        "hello_answer",
        "holding",
        "nonce",
        "out",
        "out_size",
        "paused",
        "peer",
        "rbuf",
        "send_progress",
        "sock",
        "state",
        "waiter",
    )

    def __init__(self, sock: socket.socket, peer: str, now: float) -> None:
        self.sock = sock
        self.peer = peer
        self.rbuf = bytearray()
        self.out: deque[bytes | memoryview] = deque()
        self.out_size = 0
        self.state = _HELLO
        self.nonce = b""
        self.waiter: Waiter | None = None
        self.fd = sock.fileno()
        self.events = _IN
        self.closing = False
        self.discard = 0  # bytes of an oversized frame still to be dropped
        self.paused = False
        self.accepted = now
        self.frame_started = 0.0
        self.send_progress = 0.0
        self.holding = False  # the hello's answer waits to leave with the next reply
        self.hello_answer = b""  # that answer, framed, once made

    def held(self) -> bool:
        """Whether new requests must wait (a parked read, or too many unsent replies)."""
        return self.waiter is not None or self.out_size >= _OUT_HIGH_WATER


class _Local:
    """A request made by a store in the server's own process: no socket involved."""

    __slots__ = ("event", "reply", "waiter")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reply: bytes | None = None
        self.waiter: Waiter | None = None


def _listen(host: str | None, port: int, backlog: int) -> socket.socket:
    if host:
        address = resolver_host(host)
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        return socket.create_server((address, port), family=infos[0][0], backlog=backlog)
    if socket.has_dualstack_ipv6():
        try:
            return socket.create_server(
                ("::", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=backlog
            )
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise
    return socket.create_server(("0.0.0.0", port), backlog=backlog)


#: Options of every client connection: no Nagle delay, and keep-alive probes, so the
#: kernel notices a client whose host died (about 2 minutes).
_CONNECTION_OPTIONS = [
    (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    *(
        (socket.IPPROTO_TCP, getattr(socket, name), value)
        for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 6))
        if hasattr(socket, name)
    ),
]
#: Linux gives an accepted connection the listener's options: set once, not per client.
_INHERITS_OPTIONS = sys.platform.startswith("linux")


def _set_connection_options(sock: socket.socket) -> None:
    for level, option, value in _CONNECTION_OPTIONS:
        sock.setsockopt(level, option, value)


class StoreServer:
    """A TCP store server. It listens as soon as it is constructed (so a busy port fails
    here, not later); :meth:`start` runs it in a daemon thread, :meth:`serve_forever` in
    the calling thread, and :meth:`stop` ends it and closes every connection.

    ``host`` None listens on every interface (IPv6 and IPv4); a name or address narrows it.
    Every new server has a random :attr:`server_id`, sent in the handshake, so clients
    can tell a restarted server from the one they knew. If the loop ever fails, the server
    closes every connection and its listener and records the error in :attr:`failure`.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int = 0,
        *,
        auth_token: bytes | None = None,
        limits: ServerLimits | None = None,
        backlog: int = 4096,
        max_frame_size: int | None = None,
        stats: ServerStats | None = None,
    ) -> None:
        if max_frame_size is not None:
            limits = with_max_frame_size(limits, max_frame_size, "StoreServer")
        self.limits = limits or ServerLimits()
        try:
            self._listener = _listen(host, port, backlog)
        except (OSError, OverflowError, ValueError) as e:
            where = f"{host}:{port}" if host else f"port {port}"
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise StoreError(f"The TCP store server cannot listen on {where}: {reason}") from e
        self._listener.setblocking(False)
        if _INHERITS_OPTIONS:
            _set_connection_options(self._listener)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self.server_id = os.urandom(SERVER_ID_SIZE)
        self.failure: BaseException | None = None
        #: The counters behind the metrics, when they are on (None: nothing is counted).
        self.stats = stats
        self._token = auth_token
        self._poller = _Poller()
        self._spin = SpinPolicy()  # whether the loop busy-polls for the next request
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._keys = Keyspace(self._woken)
        self._conns: set[_Conn] = set()
        self._by_fd: dict[int, _Conn] = {}
        self._refusing = 0
        self._ready: list[_Conn] = []
        self._paused: deque[_Conn] = deque()
        self._buffered = 0
        self._accepting = True
        self._accept_backoff = 0.0
        self._accept_resume = 0.0
        self._next_tick = 0.0
        self._logs = _LogLimiter()
        # Requests from stores in this process run in their own thread under this lock;
        # replies they owe to socket clients go through the outbox to the loop thread.
        self._lock = threading.RLock()
        self._outbox: list[tuple[_Conn, list[bytes]]] = []
        self._loop_thread: int | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def max_frame_size(self) -> int:
        return self.limits.max_frame_size

    @property
    def connection_count(self) -> int:
        """Clients connected now."""
        return len(self._conns)

    def keyspace_sizes(self) -> tuple[int, int, int]:
        """(keys, bytes of keys and values, parked reads and pops) now: one pass over the
        keys, under the lock requests run under."""
        with self._lock:
            return self._keys.sizes()

    def run_ids(self) -> list[str]:
        """The rendezvous runs this server holds keys of."""
        with self._lock:
            names = self._keys.keys()
        return [
            key[len(b"rdzv.") : -len(b"/policy")].decode(errors="replace")
            for key in names
            if key.startswith(b"rdzv.") and key.endswith(b"/policy")
        ]

    def start(self) -> StoreServer:
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(
            target=self.serve_forever, name=f"rdzv-tcp-server-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every connection; waits for the loop to finish."""
        self._stopping = True
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        elif self._thread is None and not self._stopped.is_set():
            self._close_all()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block until the loop has ended (stopped or failed); False on timeout."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> StoreServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # full (a wake-up is already pending) or closed

    def serve_forever(self) -> None:
        """Run the loop in this thread until :meth:`stop`."""
        self._loop_thread = threading.get_ident()
        try:
            self._poller.register(self._listener.fileno(), _IN)
            self._poller.register(self._wake_r.fileno(), _IN)
            self._loop()
        except BaseException as e:
            self.failure = e
            log.critical("The TCP store server on port %d failed: %r", self.port, e, exc_info=e)
            if self._thread is None:
                raise  # serve_forever() was called directly: the caller sees the failure
        finally:
            self._close_all()

    def _loop(self) -> None:
        poll = self._poller.poll
        by_fd = self._by_fd
        next_deadline = self._keys.next_deadline
        listener, wake = self._listener.fileno(), self._wake_r.fileno()
        self._next_tick = time.monotonic() + _TICK
        spin = self._spin
        served = False  # the last pass read requests
        while not self._stopping:
            now = time.monotonic()
            deadline = next_deadline()
            if (
                self._ready
                or self._outbox
                or now >= self._next_tick
                or (deadline is not None and deadline <= now)
                or not self._accepting
            ):
                self._chores(now, deadline)
                now, deadline = time.monotonic(), next_deadline()
            due = self._next_tick  # at most _TICK away
            if deadline is not None and deadline < due:
                due = deadline
            if not self._accepting and self._accept_resume < due:
                due = self._accept_resume
            timeout = due - now if due > now else 0.0
            events = None
            if served and timeout > 0.0 and spin.should_spin():
                # Clients sending back to back send again within microseconds of a reply:
                # polling for that costs less than sleeping and being woken.
                spin_until = time.perf_counter() + SERVER_SPIN_SECONDS
                while not (events := poll(0.0)) and time.perf_counter() < spin_until:
                    pass
                spin.spun(bool(events))
            served = False
            for fd, mask in events or poll(timeout):
                conn = by_fd.get(fd)
                if conn is None:
                    if fd == listener:
                        self._accept()
                    elif fd == wake:
                        self._drain_wake()
                    continue
                if mask & _BROKEN:  # an error or hang-up: let the next send or recv say which
                    mask |= conn.events
                if mask & _OUT and conn.events & _OUT:
                    self._flush(conn)
                if mask & _IN and conn.events & _IN and by_fd.get(fd) is conn:
                    self._read(conn)
                    served = True

    def _chores(self, now: float, deadline: float | None) -> None:
        """What the loop does between waits when there is something to do: expire parked
        reads, resume accepting, housekeeping, replies from other threads, and requests
        that were held back."""
        if deadline is not None and deadline <= now:
            self._expire(now)
        if not self._accepting and now >= self._accept_resume:
            self._accepting = True
            self._poller.register(self._listener.fileno(), _IN)
        if now >= self._next_tick:
            self._housekeeping(now)
        if self._outbox:
            self._flush_outbox()
        while self._ready:
            ready, self._ready = self._ready, []
            for conn in ready:
                if conn in self._conns:
                    self._process(conn)

    def _flush_outbox(self) -> None:
        with self._lock:
            outbox, self._outbox = self._outbox, []
        for conn, chunks in outbox:
            if conn in self._conns:
                conn.waiter = None
                self._send(conn, chunks)
                self._ready.append(conn)

    def _close_all(self) -> None:
        with self._lock:
            self._stopping = True
            for waiter in self._keys.waiting():
                if isinstance(waiter.owner, _Local):
                    waiter.owner.event.set()  # it sees the server stopping
        self._logs.tick(len(self._conns), force=True)
        for conn in list(self._conns):
            self._close(conn, None, quiet=True)
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        try:
            self._poller.close()
        except Exception:  # pragma: no cover - closing a broken selector
            pass
        self._stopped.set()

    def _drain_wake(self) -> None:
        try:
            self._wake_r.recv(4096)
        except OSError:
            pass

    def _housekeeping(self, now: float) -> None:
        """Once per tick: close connections past their deadlines, summarise the log."""
        self._next_tick = now + _TICK
        limits = self.limits
        for conn in list(self._conns):
            if conn.state != _READY:
                if now - conn.accepted > limits.handshake_timeout:
                    if conn.state == _HELLO and not conn.rbuf:
                        # Silent since it connected: a client's store not used yet (its
                        # hello goes with its first request, on a new connection by
                        # then), or a port scan. Not worth a warning.
                        log.debug("closed connection of %s: silent since it connected", conn.peer)
                        self._close(conn, None, quiet=True)
                    else:
                        self._close(conn, "no handshake within the handshake timeout")
            elif conn.out_size and now - conn.send_progress > limits.send_timeout:
                self._close(conn, f"left {conn.out_size} bytes of replies unread")
            elif conn.frame_started and now - conn.frame_started > limits.frame_timeout:
                self._close(conn, f"a frame took longer than {limits.frame_timeout:g} s")
        self._logs.tick(len(self._conns))
        with self._lock:
            self._keys.tidy()

    # -- connections -----------------------------------------------------------------------

    def _accept(self) -> None:
        # The listener's own accept, wrapped here: socket.accept() would also read the
        # listener's family and type as enums for every connection.
        accept, family = self._listener._accept, self._listener.family  # type: ignore[attr-defined]
        for _ in range(self._waiting_connections()):
            try:
                fd, address = accept()
                sock = socket.socket(family, socket.SOCK_STREAM, 0, fd)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno not in _ACCEPT_ERRORS:
                    self._logs.warning("accept failed: %s", e)
                    return
                # Out of descriptors or memory: pause accepting (no spin), keep serving.
                self._accept_backoff = min(max(0.05, self._accept_backoff * 2), 2.0)
                self._accept_resume = time.monotonic() + self._accept_backoff
                self._accepting = False
                self._poller.unregister(self._listener.fileno())
                self._logs.warning(
                    "cannot accept connections (%s); pausing %.2f s, still serving %d clients",
                    os.strerror(e.errno or 0),
                    self._accept_backoff,
                    len(self._conns),
                )
                return
            self._accept_backoff = 0.0
            try:
                self._admit(sock, address)
            except OSError as e:  # the peer vanished already
                sock.close()
                self._logs.warning("could not set up a new connection: %s", e)

    def _waiting_connections(self) -> int:
        """How many connections to accept now: as many as wait, where the system says
        (so no last accept fails only to say there are none left: a system call and an
        exception, about 8 µs, paid by every connection that comes alone), at most
        _MAX_ACCEPTS so that one busy listener cannot starve the clients (the listener
        stays readable while any wait: the loop comes back)."""
        if _TCP_INFO is None:
            return _MAX_ACCEPTS
        try:
            info = self._listener.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _QUEUED_AT + 4)
            queued: int = _QUEUED.unpack_from(info, _QUEUED_AT)[0]
        except (OSError, struct.error):  # not Linux's TCP_INFO after all
            return _MAX_ACCEPTS
        # None waiting, though the listener woke us: do not trust the count.
        return min(queued, _MAX_ACCEPTS) if queued else _MAX_ACCEPTS

    def _admit(self, sock: socket.socket, address: Any) -> None:
        if sock.gettimeout() is not None:  # socket.setdefaulttimeout() was called
            sock.setblocking(False)  # else a send or receive would wait out that timeout
        full = len(self._conns) - self._refusing >= self.limits.max_connections
        if self.stats is not None:
            self.stats.accepted += 1
        if full and self._refusing >= _MAX_REFUSING:
            if self.stats is not None:
                self.stats.refused["connection_limit"] += 1
            sock.close()
            self._logs.warning("connection limit reached: closed a new connection at once")
            return
        if not _INHERITS_OPTIONS:
            _set_connection_options(sock)
        peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        conn = _Conn(sock, peer, time.monotonic())
        if full:
            conn.state = _REFUSING
            self._refusing += 1
        self._conns.add(conn)
        self._by_fd[conn.fd] = conn
        self._poller.register(conn.fd, _IN)
        self._logs.connected += 1
        log.debug("client %s connected (%d connected)", peer, len(self._conns))

    def _close(self, conn: _Conn, reason: str | None, quiet: bool = False) -> None:
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        if conn.state == _REFUSING:
            self._refusing -= 1
        if conn.waiter is not None:
            with self._lock:
                self._keys.cancel(conn.waiter)
            conn.waiter = None
        self._by_fd.pop(conn.fd, None)
        if conn.events:
            try:
                self._poller.unregister(conn.fd)
            except (KeyError, ValueError, OSError):
                pass
        self._buffered -= len(conn.rbuf)
        conn.rbuf = bytearray()
        conn.out.clear()
        conn.out_size = 0
        if reason:
            self._logs.warning("closed connection of %s: %s", conn.peer, reason)
        elif not quiet:
            self._logs.disconnected += 1
            log.debug("client %s disconnected (%d connected)", conn.peer, len(self._conns))
        conn.sock.close()
        self._resume_paused()

    def _set_events(self, conn: _Conn) -> None:
        want = 0
        if conn.out:
            want |= _OUT
        if not conn.closing and not conn.paused:
            want |= _IN
        if want != conn.events:
            if not conn.events:
                self._poller.register(conn.fd, want)
            elif not want:
                self._poller.unregister(conn.fd)
            else:
                self._poller.modify(conn.fd, want)
            conn.events = want

    def _read(self, conn: _Conn) -> None:
        if conn.rbuf and self._buffered >= self.limits.max_buffered_bytes:
            # Over the total budget: a connection in the middle of a frame waits its turn.
            conn.paused = True
            self._paused.append(conn)
            self._set_events(conn)
            return
        try:
            data = conn.sock.recv(_RECV_SIZE, _NO_WAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._close(conn, None if conn.state == _READY else f"receive failed: {e}")
            return
        if self.stats is not None:
            self.stats.bytes_in += len(data)
        if not data:
            if conn.rbuf and not conn.held():
                self._close(conn, f"connection closed inside a frame ({len(conn.rbuf)} bytes)")
            else:
                self._close(conn, None)
            return
        if conn.discard:
            dropped = min(conn.discard, len(data))
            conn.discard -= dropped
            data = data[dropped:]
            if not data:
                return
        if not conn.rbuf:
            size = len(data) - 4
            if (
                size > 0
                and U32.unpack_from(data)[0] == size
                and conn.waiter is None
                and not conn.out
                # (what _frame_limit says: every frame limit is at least the handshake's)
                and (
                    size <= HANDSHAKE_FRAME_LIMIT
                    or (conn.state == _READY and size <= self.limits.max_frame_size)
                )
            ):
                # The common case: one whole request (or handshake step) alone in this
                # read, from an idle connection. Handled straight from the received
                # bytes, no buffering.
                if self._handle_safely(conn, data[4:]) and conn.out:
                    self._set_events(conn)
                return
            if conn.state == _HELLO and self._hello_and_request(conn, data):
                return
            conn.frame_started = time.monotonic()
        conn.rbuf += data
        self._buffered += len(data)
        if conn.held() and len(conn.rbuf) > _HELD_INPUT_LIMIT:
            self._close(
                conn,
                f"sent over {_HELD_INPUT_LIMIT} bytes of requests while its reply was pending "
                "(one request at a time)",
            )
            return
        self._process(conn)

    def _frame_limit(self, conn: _Conn) -> int:
        """The largest frame ``conn`` may send now: small until its handshake is done."""
        return self.limits.max_frame_size if conn.state == _READY else HANDSHAKE_FRAME_LIMIT

    def _resume_paused(self) -> None:
        while self._paused and self._buffered < self.limits.max_buffered_bytes:
            conn = self._paused.popleft()
            if conn in self._conns and conn.paused:
                conn.paused = False
                self._set_events(conn)

    def _process(self, conn: _Conn) -> None:
        """Handle the whole frames buffered on ``conn``."""
        try:
            self._process_frames(conn)
        finally:
            self._end_hold(conn)
        if conn in self._conns:
            self._set_events(conn)

    def _hello_and_request(self, conn: _Conn, data: bytes) -> bool:
        """A new connection's usual first read, its hello and one whole request, handled
        straight from the received bytes and answered in one send. False, with nothing
        done, for a read of any other shape, or where a token is required (the buffered
        path takes those: it also checks a request against the handshake's frame limit)."""
        start = len(_HELLO_HEAD) + 5  # where the request's frame starts
        size = len(data) - start - 4
        if (
            size <= 0
            or size > self.limits.max_frame_size
            or self._token is not None
            or data[:4] != _HELLO_HEAD
            or U32.unpack_from(data, start)[0] != size
        ):
            return False
        conn.holding = True
        try:
            if self._handle_safely(conn, data[4:start]) and not conn.closing:
                self._handle_safely(conn, data[start + 4 :])  # the hello made it _READY
        finally:
            self._end_hold(conn)
        if conn in self._conns and conn.out:
            self._set_events(conn)
        return True

    def _end_hold(self, conn: _Conn) -> None:
        """Send the hello's answer if it is still held (no reply followed it)."""
        if conn.holding:
            conn.holding = False
            held, conn.hello_answer = conn.hello_answer, b""
            if held and conn in self._conns:
                self._write(conn, held)

    def _process_frames(self, conn: _Conn) -> None:
        buf = conn.rbuf
        pos = 0
        while not conn.closing and len(buf) - pos >= 4:
            size = U32.unpack_from(buf, pos)[0]
            limit = self._frame_limit(conn)  # the handshake may have ended in this batch
            if conn.held():
                # Only pings are answered while a reply is pending; the rest waits.
                ping = size == 1 and len(buf) - pos >= 5 and buf[pos + 4] == PING
                if ping and conn.out_size < _OUT_HIGH_WATER:
                    pos += 5
                    self._send(conn, [bytes([ALIVE])])
                    continue
                break
            if size > limit:
                if conn.state != _READY:
                    self._close(conn, "bad handshake (not an rdzv tcp client?)")
                    return
                if len(buf) - pos < 4 + min(size, 64):
                    break  # wait for the op and the key to name them in the error
                self._oversized(conn, bytes(buf[pos + 4 : pos + 4 + 64]), size)
                # Drop the frame: what is here now, and the rest as it arrives.
                take = min(len(buf) - pos, 4 + size)
                pos += take
                conn.discard = 4 + size - take
                continue
            end = pos + 4 + size
            if len(buf) < end:
                break
            # The payload is a view of the buffer (no copy), released before the buffer
            # may be resized.
            payload = memoryview(buf)[pos + 4 : end]
            pos = end
            # A client's first request may follow its hello: both answers leave in one send.
            if conn.state == _HELLO and len(buf) > end:
                conn.holding = True
            try:
                handled = self._handle_safely(conn, payload)
            finally:
                payload.release()
            if not handled or conn not in self._conns:
                return
        if pos:
            self._buffered -= pos
            if pos == len(buf):
                conn.rbuf = bytearray()  # release the capacity of a big frame
            else:
                del buf[:pos]
            conn.frame_started = time.monotonic() if conn.rbuf or conn.discard else 0.0
            self._resume_paused()

    def _handle_safely(self, conn: _Conn, payload: bytes | memoryview) -> bool:
        """Handle one request; a malformed one, or a bug, costs only its connection.
        False when the connection was closed."""
        try:
            stats = self.stats
            if conn.state != _READY:
                self._handshake(conn, payload)
            elif stats is None:
                lock = self._lock  # (acquire and release cost less than a with block)
                lock.acquire()
                try:
                    reply = self._dispatch(conn, payload)
                finally:
                    lock.release()
                if reply is not None:
                    self._send(conn, reply)
            else:  # counted once the reply is on its way: the client waits for no count
                op, started = payload[0], time.perf_counter()
                with self._lock:
                    reply = self._dispatch(conn, payload)
                elapsed = time.perf_counter() - started
                if reply is not None:
                    self._send(conn, reply)
                stats.request(op, reply, elapsed)
        except ProtocolError as e:
            self._close(conn, f"malformed frame: {e}")
            return False
        except Exception as e:  # a bug must cost one connection, never the server
            log.exception("internal error on a request of %s", conn.peer)
            self._close(conn, f"internal error: {e!r}")
            return False
        return True

    def _oversized(self, conn: _Conn, head: bytes, size: int) -> None:
        """Answer a frame over the limit with an error naming both sizes."""
        limit = self.limits.max_frame_size
        what = "request"
        if head[:1] and head[0] in (SET, CAS, MULTI_SET, GET, ADD):
            try:
                key = Reader(head, 1).field().decode("utf-8", "replace")
                what = f"request for key {key!r}"
            except ProtocolError:
                pass
        message = (
            f"The {what} is {size} bytes, over the TCP store server's limit of {limit} bytes "
            "(max_frame_size)."
        )
        self._send(conn, [bytes([VALUE_ERROR]) + message.encode()])

    def _send(self, conn: _Conn, chunks: list[bytes]) -> None:
        """Queue one reply (its payload in ``chunks``) and send what the socket takes now.

        Most replies are one small chunk: they take the fewest steps, since every step
        between the loop's wake-up and the send delays the reply (measured: a ``sum``, a
        ``map`` and a ``join`` more cost over a microsecond per request here).
        """
        size = len(chunks[0]) if len(chunks) == 1 else sum(map(len, chunks))
        if self.stats is not None:
            self.stats.bytes_out += size + 4
        head = U32.pack(size)
        if conn.holding:
            if not conn.hello_answer:  # held for the reply to come
                conn.hello_answer = head + b"".join(chunks)
                return
            conn.holding = False  # the reply it waited for: both go in one send
            head, conn.hello_answer = conn.hello_answer + head, b""
        if size > _SMALL_REPLY:
            self._queue(conn, [head, *chunks])
        else:
            self._write(conn, head + chunks[0] if len(chunks) == 1 else head + b"".join(chunks))

    def _write(self, conn: _Conn, data: bytes) -> None:
        """Send ``data`` (whole frames) now, queuing what the socket does not take."""
        if conn.out:
            self._queue(conn, [data])
            return
        try:
            sent = conn.sock.send(data, _NO_WAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as e:
            self._close(conn, None if isinstance(e, ConnectionError) else f"send failed: {e}")
            return
        if sent == len(data):
            if conn.closing:
                self._close(conn, None, quiet=True)
            return
        self._queue(conn, [memoryview(data)[sent:]])

    def _queue(self, conn: _Conn, parts: list[bytes | memoryview]) -> None:
        """Append ``parts`` to what ``conn`` has to send, and send what the socket takes."""
        if not conn.out:
            conn.send_progress = time.monotonic()
        for part in parts:
            conn.out.append(part)
            conn.out_size += len(part)
        if len(conn.out) == len(parts):
            self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        out = conn.out
        while out:
            batch = list(itertools.islice(out, _MAX_IOV))
            try:
                if len(batch) > 1:
                    sent = conn.sock.sendmsg(batch, (), _NO_WAIT)
                else:
                    sent = conn.sock.send(batch[0], _NO_WAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self._close(conn, None if isinstance(e, ConnectionError) else f"send failed: {e}")
                return
            conn.send_progress = time.monotonic()
            conn.out_size -= sent
            while sent:
                first = out[0]
                if len(first) <= sent:
                    sent -= len(first)
                    out.popleft()
                else:
                    out[0] = memoryview(first)[sent:]
                    sent = 0
            if out and len(batch) < _MAX_IOV:
                break  # the socket is full
        if not out:
            if conn.closing:
                self._close(conn, None, quiet=True)
                return
            if conn.rbuf and conn.waiter is None:
                self._ready.append(conn)  # requests held back by the high-water mark
        self._set_events(conn)

    def _refuse(self, conn: _Conn, message: str, reason: str) -> None:
        """Answer FAILED with ``message``, then close once it is sent; ``reason`` is what
        the metrics count it under."""
        if self.stats is not None:
            self.stats.refused[reason] += 1
        self._logs.warning("refused %s: %s", conn.peer, message)
        conn.closing = True
        self._send(conn, [bytes([FAILED]) + message.encode()])

    # -- requests --------------------------------------------------------------------------

    def _handshake(self, conn: _Conn, payload: bytes | memoryview) -> None:
        """One step of a connection's handshake: the hello, then the token if required."""
        if conn.state in (_HELLO, _REFUSING):
            if len(payload) != 5 or payload[:4] != MAGIC:
                raise ProtocolError("bad handshake (not an rdzv tcp client?)")
            if conn.state == _REFUSING:
                self._refuse(
                    conn,
                    f"the server is at its connection limit ({self.limits.max_connections} "
                    "clients); try again later or raise max_connections",
                    "connection_limit",
                )
            elif payload[4] not in ACCEPTED_VERSIONS:
                self._refuse(conn, version_refusal(payload[4]), "version")
            elif self._token is None:
                conn.state = _READY
                self._send(
                    conn, [hello_reply(payload[4], self.server_id, self.max_frame_size, None)]
                )
            else:
                conn.state = _AUTH
                conn.nonce = os.urandom(NONCE_SIZE)
                self._send(
                    conn,
                    [hello_reply(payload[4], self.server_id, self.max_frame_size, conn.nonce)],
                )
        else:
            assert self._token is not None
            if verify(self._token, conn.nonce, bytes(payload)):
                conn.state = _READY
                self._send(conn, [b"\x00"])
            else:
                if self.stats is not None:
                    self.stats.auth_failures += 1
                # A client without a token sends its first request where the answer goes.
                wrong = "wrong token" if len(payload) == ANSWER_SIZE else "no token given"
                self._refuse(conn, f"authentication failed: {wrong}", "authentication")

    def _dispatch(self, conn: _Conn | _Local, payload: bytes | memoryview) -> list[bytes] | None:
        """Run one request (under ``_lock``): the reply's chunks, or None when the request
        was parked to be answered later. Waiters the request satisfies are answered here."""
        if not payload:
            raise ProtocolError("empty request")
        op = payload[0]
        keys = self._keys
        if op == GET:
            key, timeout_ms = key_and_int(payload, U64)
            value = keys.get(key)
            if value is not None:
                return _ok(value)
            self._park(conn, GET, [key], timeout_ms)
            return None
        if op == SET:
            key, value = key_and_rest(payload)
            keys.set(key, value)
            return [b"\x00"]
        if op == ADD:
            key, amount = key_and_int(payload, I64)
            try:
                result = keys.add(key, amount)
            except ValueError as e:
                return [bytes([VALUE_ERROR]) + str(e).encode()]
            return [b"\x00" + I64.pack(result)]
        r = Reader(payload, 1)
        if op == CAS:
            key = r.field()
            expected = r.field()
            desired = r.field()
            r.end()
            return _ok(keys.compare_set(key, expected, desired))
        if op in (WAIT, MULTI_GET):
            wanted = r.fields()
            timeout_ms = r.u64()
            r.end()
            if keys.has_all(wanted):
                return self._answer(op, wanted)
            self._park(conn, op, wanted, timeout_ms)
            return None
        if op == CHECK:
            wanted = r.fields()
            r.end()
            return [b"\x00" + (b"\x01" if keys.has_all(wanted) else b"\x00")]
        if op == DELETE:
            key = r.field()
            r.end()
            return [b"\x00" + (b"\x01" if keys.delete(key) else b"\x00")]
        if op == NUM_KEYS:
            r.end()
            return [b"\x00" + U64.pack(len(keys))]
        if op == MULTI_SET:
            names = r.fields()
            values = r.fields()
            r.end()
            if len(names) != len(values):
                raise ProtocolError(f"multi_set with {len(names)} keys but {len(values)} values")
            keys.multi_set(names, values)
            return [b"\x00"]
        if op == PING:
            r.end()
            return [bytes([ALIVE])]
        return self._dispatch_v3(conn, op, r)

    def _dispatch_v3(self, conn: _Conn | _Local, op: int, r: Reader) -> list[bytes] | None:
        """The operations protocol version 3 added."""
        keys = self._keys
        if op == APPEND:
            key = r.field()
            value = r.rest()
            try:
                keys.append(key, value, self.limits.max_frame_size - 5)
            except ValueError as e:
                return [bytes([VALUE_ERROR]) + str(e).encode()]
            return [b"\x00"]
        if op == QUEUE_PUSH:
            queue = r.field()
            keys.push(queue, r.rest())
            return [b"\x00"]
        if op == QUEUE_POP:
            queue = r.field()
            block = r.u8()
            timeout_ms = r.u64()
            r.end()
            item = keys.pop(queue)
            if item is not None:
                return _ok(item)
            if not block:
                return [bytes([TIMEOUT])]
            self._park(conn, QUEUE_POP, [queue], timeout_ms)
            return None
        if op == QUEUE_LEN:
            queue = r.field()
            r.end()
            return [b"\x00" + U64.pack(keys.queue_len(queue))]
        if op == LIST_KEYS:
            r.end()
            names = keys.keys()
            return self._value_list_reply(names, f"list_keys reply ({len(names)} keys)", "")
        raise ProtocolError(f"unknown operation {op}")

    def _answer(self, op: int, keys: list[bytes]) -> list[bytes]:
        """The reply to a wait, get or multi_get whose keys are all present."""
        if op == GET:
            return _ok(self._keys.values(keys)[0])
        if op == MULTI_GET:
            values = self._keys.values(keys)
            return self._value_list_reply(values, "multi_get reply", "; read fewer keys at a time")
        return [b"\x00"]

    def _value_list_reply(self, items: list[bytes], what: str, advice: str) -> list[bytes]:
        """``items`` as a list reply, or a VALUE_ERROR when that would outgrow a frame."""
        size = 5 + sum(4 + len(i) for i in items)
        limit = self.limits.max_frame_size
        if size > limit:
            message = (
                f"The {what} would be {size} bytes, over the TCP store server's limit of "
                f"{limit} bytes (max_frame_size){advice}."
            )
            return [bytes([VALUE_ERROR]) + message.encode()]
        return _value_list(items)

    def _out(self, conn: _Conn | _Local, chunks: list[bytes]) -> None:
        """Answer a parked request of ``conn``: directly for a local caller or from the
        loop thread, else through the outbox (the loop owns every socket)."""
        if isinstance(conn, _Local):
            conn.reply = b"".join(chunks)
            conn.event.set()
        elif threading.get_ident() == self._loop_thread:
            self._send(conn, chunks)
            if conn.rbuf:
                self._ready.append(conn)  # requests that arrived while it was parked
        else:
            self._outbox.append((conn, chunks))
            if len(self._outbox) == 1:
                self._wake()

    def call_local(self, payload: bytes, wait: float | None) -> bytes:
        """Run one request for a store in this process, in the caller's thread.

        ``wait`` bounds a parked read (seconds); the reply is the protocol's reply payload.
        """
        local = _Local()
        with self._lock:
            if self._stopping:
                raise self._stopped_error()
            reply = self._dispatch(local, payload)
        if reply is not None:
            return b"".join(reply)
        local.event.wait(None if wait is None else min(wait, threading.TIMEOUT_MAX))
        with self._lock:
            if local.reply is None:
                waiter = local.waiter
                if waiter is not None and not waiter.done:
                    self._keys.cancel(waiter)
                if self._stopping:
                    raise self._stopped_error()
                return bytes([TIMEOUT])
        return local.reply

    def _stopped_error(self) -> StoreConnectionError:
        if self.failure is not None:
            return StoreConnectionError(
                f"The TCP store server in this process failed: {self.failure!r}"
            )
        return StoreConnectionError("The TCP store server in this process was stopped.")

    # -- parked reads ----------------------------------------------------------------------

    def _park(self, conn: _Conn | _Local, op: int, keys: list[bytes], timeout_ms: int) -> None:
        # A local caller times itself out (call_local); a connection's read expires here.
        deadline = None
        if isinstance(conn, _Conn):
            deadline = time.monotonic() + min(timeout_ms / 1000, MAX_WAIT_SECONDS)
        if op == QUEUE_POP:
            conn.waiter = self._keys.park_pop(conn, op, keys[0], deadline)
        else:
            conn.waiter = self._keys.park(conn, op, keys, deadline)

    def _woken(self, waiter: Waiter) -> None:
        """Answer a parked read whose keys are all set now (called by the keyspace)."""
        conn = waiter.owner
        assert isinstance(conn, (_Conn, _Local))
        if isinstance(conn, _Local) or threading.get_ident() == self._loop_thread:
            conn.waiter = None
        # else the loop thread unparks the connection when it sends the reply, so the
        # connection's later requests cannot overtake it
        if waiter.pops:
            assert waiter.item is not None
            self._out(conn, _ok(waiter.item))
        else:
            self._out(conn, self._answer(waiter.op, waiter.keys))

    def _expire(self, now: float) -> None:
        with self._lock:
            for conn, _ in self._keys.expire(now):
                if isinstance(conn, _Conn) and conn in self._conns:
                    conn.waiter = None
                    self._send(conn, [bytes([TIMEOUT])])
                    self._ready.append(conn)


def _ok(value: bytes) -> list[bytes]:
    """The OK reply carrying ``value``: one chunk when small (a one-chunk reply takes the
    fewest steps to send), else the value apart, never copied."""
    return [b"\x00" + value] if len(value) < _SMALL_REPLY else [b"\x00", value]


def _value_list(values: list[bytes]) -> list[bytes]:
    """A multi_get reply as chunks: small pieces joined, big values by reference."""
    chunks: list[bytes] = []
    pending = bytearray(b"\x00" + U32.pack(len(values)))
    for value in values:
        pending += U32.pack(len(value))
        if len(value) <= _SMALL_REPLY:
            pending += value
        else:
            chunks.append(bytes(pending))
            chunks.append(value)
            pending = bytearray()
    if pending:
        chunks.append(bytes(pending))
    return chunks


# -- servers hosted by stores in this process (multi-tenant) -------------------------------

_hosted: dict[int, list[Any]] = {}  # port -> [server, number of stores using it]
_hosted_lock = threading.Lock()


def _forget_hosted_in_child() -> None:
    # A forked child has copies of the servers but not their threads: never reuse them.
    global _hosted_lock
    _hosted.clear()
    _hosted_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_hosted_in_child)


def share_server(server: StoreServer) -> None:
    """Let stores of this process that host ``server.port`` use ``server`` (in-process
    calls, not a socket): what ``rdzv serve`` does for its metrics and status page."""
    with _hosted_lock:
        _hosted[server.port] = [server, 1]


def acquire_server(
    port: int,
    *,
    bind_host: str | None,
    auth_token: bytes | None,
    limits: ServerLimits | None,
    multi_tenant: bool,
) -> StoreServer:
    """A running server on ``port`` for a hosting store: with ``multi_tenant``, the one
    this process already runs there, if any; otherwise a new one."""
    with _hosted_lock:
        entry = _hosted.get(port) if multi_tenant and port else None
        if entry is not None and entry[0].failure is None:
            entry[1] += 1
            server: StoreServer = entry[0]
            return server
        server = StoreServer(bind_host, port, auth_token=auth_token, limits=limits).start()
        if multi_tenant:
            _hosted[server.port] = [server, 1]
        return server


def release_server(server: StoreServer) -> None:
    """Drop a hosting store's use of ``server``; the last user stops it."""
    with _hosted_lock:
        entry = _hosted.get(server.port)
        if entry is not None and entry[0] is server:
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _hosted[server.port]
    server.stop()
