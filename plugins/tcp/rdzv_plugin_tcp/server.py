"""StoreServer: the TCP store's server, one selector loop in a background thread.

Blocking reads (get, wait, multi_get) park the connection on the keys they need and are
answered when a write sets the last of them or their deadline passes; nothing polls.
Every connection has its own buffers, so a client that misbehaves or stops reading only
ever affects itself: bad frames close that connection with a logged reason.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import os
import selectors
import socket
import threading
import time
from typing import Any

from rdzv_core import StoreConnectionError, StoreError
from rdzv_core.store import add_to_value

from . import DEFAULT_MAX_FRAME_SIZE
from .auth import verify
from .protocol import (
    ADD,
    CAS,
    CHECK,
    DELETE,
    FAILED,
    GET,
    I64,
    MAGIC,
    MULTI_GET,
    MULTI_SET,
    NONCE_SIZE,
    NUM_KEYS,
    OK,
    PING,
    SET,
    TIMEOUT,
    U32,
    U64,
    VALUE_ERROR,
    VERSION,
    WAIT,
    ProtocolError,
    Reader,
    fields,
)

__all__ = ["StoreServer", "acquire_server", "release_server"]

log = logging.getLogger(__name__)

_HELLO, _AUTH, _READY = range(3)
_RECV_SIZE = 256 * 1024
_OUT_HIGH_WATER = 4 * 1024 * 1024  # stop taking requests while this much is unsent
_IN_PARKED_LIMIT = 1024 * 1024  # unread input kept for a connection parked on a wait


class _Waiter:
    __slots__ = ("conn", "deadline", "done", "keys", "on", "op")

    def __init__(self, conn: _Conn | _Local, op: int, keys: list[bytes], deadline: float) -> None:
        self.conn = conn
        self.op = op
        self.keys = keys
        self.deadline = deadline
        self.done = False
        self.on: bytes | None = None


class _Conn:
    __slots__ = ("closing", "events", "nonce", "peer", "rbuf", "sock", "state", "waiter", "wbuf")

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.state = _HELLO
        self.nonce = b""
        self.waiter: _Waiter | None = None
        self.events = selectors.EVENT_READ
        self.closing = False


class _Local:
    """A request made by a store in the server's own process: no socket involved."""

    __slots__ = ("event", "reply", "waiter")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reply: bytes | None = None
        self.waiter: _Waiter | None = None


def _listen(host: str | None, port: int, backlog: int) -> socket.socket:
    if host:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family = infos[0][0]
        return socket.create_server((host, port), family=family, backlog=backlog)
    if socket.has_dualstack_ipv6():
        try:
            return socket.create_server(
                ("::", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=backlog
            )
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise
    return socket.create_server(("0.0.0.0", port), backlog=backlog)


class StoreServer:
    """A TCP store server. It listens as soon as it is constructed (so a busy port fails
    here, not later); :meth:`start` runs it in a daemon thread, :meth:`serve_forever` in
    the calling thread, and :meth:`stop` ends it and closes every connection.

    ``host`` None listens on every interface (IPv6 and IPv4); a name or address narrows it.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int = 0,
        *,
        auth_token: bytes | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        backlog: int = 4096,
    ) -> None:
        if max_frame_size < 1024:
            raise ValueError(f"max_frame_size must be at least 1024 bytes, got {max_frame_size}.")
        try:
            self._listener = _listen(host, port, backlog)
        except OSError as e:
            where = f"{host}:{port}" if host else f"port {port}"
            raise StoreError(
                f"The TCP store server cannot listen on {where}: {e.strerror or e}"
            ) from e
        self._listener.setblocking(False)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self.max_frame_size = max_frame_size
        self._token = auth_token
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._data: dict[bytes, bytes] = {}
        self._waiters: dict[bytes, list[_Waiter]] = {}
        self._timers: list[tuple[float, int, _Waiter]] = []
        self._seq = itertools.count()
        self._conns: set[_Conn] = set()
        self._ready: list[_Conn] = []
        # Requests from stores in this process run in their own thread under this lock;
        # replies they owe to socket clients go through the outbox to the loop thread.
        self._lock = threading.RLock()
        self._outbox: list[tuple[_Conn, bytes]] = []
        self._loop_thread: int | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------

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
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        elif self._thread is None and not self._stopped.is_set():
            self._close_all()

    def __enter__(self) -> StoreServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Run the loop in this thread until :meth:`stop`."""
        sel = self._selector
        self._loop_thread = threading.get_ident()
        sel.register(self._listener, selectors.EVENT_READ, None)
        sel.register(self._wake_r, selectors.EVENT_READ, self._wake_r)
        try:
            while not self._stopping:
                timeout = None
                if self._timers:
                    timeout = max(0.0, self._timers[0][0] - time.monotonic())
                for key, mask in sel.select(timeout):
                    data = key.data
                    if data is None:
                        self._accept()
                    elif data is self._wake_r:
                        self._drain_wake()
                    else:
                        if mask & selectors.EVENT_WRITE:
                            self._flush(data)
                        if mask & selectors.EVENT_READ and data in self._conns:
                            self._read(data)
                if self._timers:
                    self._expire()
                if self._outbox:
                    self._flush_outbox()
                while self._ready:
                    ready, self._ready = self._ready, []
                    for conn in ready:
                        if conn in self._conns:
                            self._process(conn)
        finally:
            self._close_all()

    def _flush_outbox(self) -> None:
        with self._lock:
            outbox, self._outbox = self._outbox, []
        for conn, payload in outbox:
            if conn in self._conns:
                conn.waiter = None
                self._send(conn, payload)
                self._ready.append(conn)

    def _close_all(self) -> None:
        with self._lock:
            self._stopping = True
            for waiters in self._waiters.values():
                for waiter in waiters:
                    if isinstance(waiter.conn, _Local) and not waiter.done:
                        waiter.done = True
                        waiter.conn.event.set()
        for conn in list(self._conns):
            self._close(conn, None, quiet=True)
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()
        self._stopped.set()

    def _drain_wake(self) -> None:
        try:
            self._wake_r.recv(4096)
        except OSError:
            pass

    # -- connections -----------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # Out of file descriptors, say: keep serving the connections we have.
                log.warning("accept failed: %s", e)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = f"{address[0]}:{address[1]}"
            conn = _Conn(sock, peer)
            self._conns.add(conn)
            self._selector.register(sock, selectors.EVENT_READ, conn)
            log.info("client %s connected (%d connected)", peer, len(self._conns))

    def _close(self, conn: _Conn, reason: str | None, quiet: bool = False) -> None:
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        if conn.waiter is not None:
            with self._lock:
                self._drop_waiter(conn.waiter)
            conn.waiter = None
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        if reason:
            log.warning("closed connection of %s: %s", conn.peer, reason)
        elif not quiet:
            log.info("client %s disconnected (%d connected)", conn.peer, len(self._conns))
        conn.sock.close()

    def _set_events(self, conn: _Conn) -> None:
        want = 0
        if conn.wbuf:
            want |= selectors.EVENT_WRITE
        parked = conn.waiter is not None or len(conn.wbuf) >= _OUT_HIGH_WATER
        if not conn.closing and (not parked or len(conn.rbuf) < _IN_PARKED_LIMIT):
            want |= selectors.EVENT_READ
        if want != conn.events:
            if not conn.events:
                self._selector.register(conn.sock, want, conn)
            elif not want:
                self._selector.unregister(conn.sock)
            else:
                self._selector.modify(conn.sock, want, conn)
            conn.events = want

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._close(conn, f"receive failed: {e}")
            return
        if not data:
            if conn.rbuf and conn.waiter is None:
                self._close(conn, f"connection closed inside a frame ({len(conn.rbuf)} bytes)")
            else:
                self._close(conn, None)
            return
        conn.rbuf += data
        self._process(conn)

    def _process(self, conn: _Conn) -> None:
        buf = conn.rbuf
        pos = 0
        limit = self.max_frame_size
        while conn.waiter is None and not conn.closing and len(conn.wbuf) < _OUT_HIGH_WATER:
            if len(buf) - pos < 4:
                break
            size = U32.unpack_from(buf, pos)[0]
            if conn.state == _HELLO and size != 5:
                self._close(conn, "bad handshake (not an rdzv tcp client?)")
                return
            if size > limit:
                self._close(conn, f"frame of {size} bytes exceeds the limit of {limit} bytes")
                return
            end = pos + 4 + size
            if len(buf) < end:
                break
            payload = bytes(buf[pos + 4 : end])
            pos = end
            try:
                self._handle(conn, payload)
            except ProtocolError as e:
                self._close(conn, f"malformed frame: {e}")
                return
            if conn not in self._conns:
                return
        if pos:
            del buf[:pos]
        self._set_events(conn)

    def _send(self, conn: _Conn, payload: bytes) -> None:
        data = U32.pack(len(payload)) + payload
        if conn.wbuf:
            conn.wbuf += data
            return
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as e:
            self._close(conn, f"send failed: {e}")
            return
        if sent < len(data):
            conn.wbuf += data[sent:]
            self._set_events(conn)
        elif conn.closing:
            self._close(conn, None, quiet=True)

    def _flush(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.wbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._close(conn, f"send failed: {e}")
            return
        del conn.wbuf[:sent]
        if not conn.wbuf and conn.closing:
            self._close(conn, None, quiet=True)
            return
        if len(conn.wbuf) < _OUT_HIGH_WATER:
            self._ready.append(conn)
        self._set_events(conn)

    def _refuse(self, conn: _Conn, message: str) -> None:
        """Answer FAILED with ``message``, then close once it is sent."""
        log.warning("refused %s: %s", conn.peer, message)
        conn.closing = True
        self._send(conn, bytes([FAILED]) + message.encode())

    # -- requests --------------------------------------------------------------------------

    def _handle(self, conn: _Conn, payload: bytes) -> None:
        if conn.state == _READY:
            with self._lock:
                self._dispatch(conn, payload)
        elif conn.state == _HELLO:
            if len(payload) != 5 or payload[:4] != MAGIC:
                raise ProtocolError("bad handshake (not an rdzv tcp client?)")
            if payload[4] != VERSION:
                self._refuse(
                    conn, f"unsupported protocol version {payload[4]}; this server speaks {VERSION}"
                )
                return
            if self._token is None:
                conn.state = _READY
                self._send(conn, MAGIC + bytes([VERSION, 0]))
            else:
                conn.state = _AUTH
                conn.nonce = os.urandom(NONCE_SIZE)
                self._send(conn, MAGIC + bytes([VERSION, 1]) + conn.nonce)
        else:
            assert self._token is not None
            if verify(self._token, conn.nonce, payload):
                conn.state = _READY
                self._send(conn, bytes([OK]))
            else:
                self._refuse(conn, "authentication failed: wrong token")

    def _dispatch(self, conn: _Conn | _Local, payload: bytes) -> None:
        if not payload:
            raise ProtocolError("empty request")
        op = payload[0]
        r = Reader(payload, 1)
        data = self._data
        if op == GET:
            key = r.field()
            timeout_ms = r.u64()
            r.end()
            value = data.get(key)
            if value is not None:
                self._out(conn, b"\x00" + value)
            else:
                self._park(conn, GET, [key], timeout_ms)
        elif op == SET:
            key = r.field()
            value = r.rest()
            data[key] = value
            self._out(conn, b"\x00")
            self._notify(key)
        elif op == ADD:
            key = r.field()
            amount = r.i64()
            r.end()
            try:
                result = add_to_value(key.decode("utf-8", "replace"), data.get(key), amount)
            except ValueError as e:
                self._out(conn, bytes([VALUE_ERROR]) + str(e).encode())
                return
            data[key] = str(result).encode()
            self._out(conn, b"\x00" + I64.pack(result))
            self._notify(key)
        elif op == CAS:
            key = r.field()
            expected = r.field()
            desired = r.field()
            r.end()
            current = data.get(key)
            if current is None and expected:
                self._out(conn, b"\x00" + expected)
            elif current is None or current == expected:
                data[key] = desired
                self._out(conn, b"\x00" + desired)
                self._notify(key)
            else:
                self._out(conn, b"\x00" + current)
        elif op in (WAIT, MULTI_GET):
            keys = r.fields()
            timeout_ms = r.u64()
            r.end()
            if all(k in data for k in keys):
                self._answer(conn, op, keys)
            else:
                self._park(conn, op, keys, timeout_ms)
        elif op == CHECK:
            keys = r.fields()
            r.end()
            self._out(conn, b"\x00" + (b"\x01" if all(k in data for k in keys) else b"\x00"))
        elif op == DELETE:
            key = r.field()
            r.end()
            self._out(conn, b"\x00" + (b"\x01" if data.pop(key, None) is not None else b"\x00"))
        elif op == NUM_KEYS:
            r.end()
            self._out(conn, b"\x00" + U64.pack(len(data)))
        elif op == MULTI_SET:
            keys = r.fields()
            values = r.fields()
            r.end()
            if len(keys) != len(values):
                raise ProtocolError(f"multi_set with {len(keys)} keys but {len(values)} values")
            data.update(zip(keys, values))
            self._out(conn, b"\x00")
            for key in keys:
                self._notify(key)
        elif op == PING:
            r.end()
            self._out(conn, b"\x00")
        else:
            raise ProtocolError(f"unknown operation {op}")

    def _answer(
        self, conn: _Conn | _Local, op: int, keys: list[bytes], resume: bool = False
    ) -> None:
        if op == GET:
            self._out(conn, b"\x00" + self._data[keys[0]], resume)
        elif op == MULTI_GET:
            self._out(conn, b"\x00" + fields([self._data[k] for k in keys]), resume)
        else:
            self._out(conn, b"\x00", resume)

    def _out(self, conn: _Conn | _Local, payload: bytes, resume: bool = False) -> None:
        """Reply to ``conn``: directly for a local caller or from the loop thread, else
        through the outbox (the loop owns every socket)."""
        if isinstance(conn, _Local):
            conn.reply = payload
            conn.event.set()
        elif threading.get_ident() == self._loop_thread:
            self._send(conn, payload)
            if resume:
                self._ready.append(conn)
        else:
            self._outbox.append((conn, payload))
            if len(self._outbox) == 1:
                try:
                    self._wake_w.send(b"x")
                except OSError:
                    pass

    def call_local(self, payload: bytes, wait: float | None) -> bytes:
        """Run one request for a store in this process, in the caller's thread.

        ``wait`` bounds a parked read (seconds); the reply is the protocol's reply payload.
        """
        local = _Local()
        with self._lock:
            if self._stopping:
                raise StoreConnectionError("The TCP store server in this process was stopped.")
            self._dispatch(local, payload)
        if local.reply is None:
            local.event.wait(wait)
            with self._lock:
                if local.reply is None:
                    waiter = local.waiter
                    if waiter is not None and not waiter.done:
                        self._drop_waiter(waiter)
                    if self._stopping:
                        raise StoreConnectionError(
                            "The TCP store server in this process was stopped."
                        )
                    return bytes([TIMEOUT])
        return local.reply

    # -- parked reads ----------------------------------------------------------------------

    def _park(self, conn: _Conn | _Local, op: int, keys: list[bytes], timeout_ms: int) -> None:
        deadline = time.monotonic() + min(timeout_ms, 10**12) / 1000
        waiter = _Waiter(conn, op, keys, deadline)
        conn.waiter = waiter
        self._watch(waiter)
        if isinstance(conn, _Conn):  # a local caller times itself out
            heapq.heappush(self._timers, (deadline, next(self._seq), waiter))

    def _watch(self, waiter: _Waiter) -> bool:
        """Park ``waiter`` on its first missing key; False if none is missing."""
        for key in waiter.keys:
            if key not in self._data:
                waiter.on = key
                self._waiters.setdefault(key, []).append(waiter)
                return True
        return False

    def _notify(self, key: bytes) -> None:
        waiters = self._waiters.pop(key, None)
        if not waiters:
            return
        for waiter in waiters:
            if waiter.done or self._watch(waiter):
                continue
            waiter.done = True
            conn = waiter.conn
            if isinstance(conn, _Local) or threading.get_ident() == self._loop_thread:
                conn.waiter = None
            # else the loop thread unparks the connection when it sends the reply, so the
            # connection's later requests cannot overtake it
            self._answer(conn, waiter.op, waiter.keys, resume=True)

    def _drop_waiter(self, waiter: _Waiter) -> None:
        waiter.done = True
        if waiter.on is not None:
            parked = self._waiters.get(waiter.on)
            if parked is not None:
                try:
                    parked.remove(waiter)
                except ValueError:
                    pass
                if not parked:
                    del self._waiters[waiter.on]

    def _expire(self) -> None:
        now = time.monotonic()
        timers = self._timers
        with self._lock:
            while timers and timers[0][0] <= now:
                waiter = heapq.heappop(timers)[2]
                if waiter.done:
                    continue
                self._drop_waiter(waiter)
                conn = waiter.conn
                conn.waiter = None
                if isinstance(conn, _Conn) and conn in self._conns:
                    self._send(conn, bytes([TIMEOUT]))
                    self._ready.append(conn)


# -- servers hosted by stores in this process (multi-tenant) -------------------------------

_hosted: dict[int, list[Any]] = {}  # port -> [server, number of stores using it]
_hosted_lock = threading.Lock()


def _forget_hosted_in_child() -> None:
    # A forked child has copies of the servers but not their threads: never reuse them.
    global _hosted_lock
    _hosted.clear()
    _hosted_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_hosted_in_child)


def acquire_server(
    port: int,
    *,
    bind_host: str | None,
    auth_token: bytes | None,
    max_frame_size: int,
    multi_tenant: bool,
) -> StoreServer:
    """A running server on ``port`` for a hosting store: with ``multi_tenant``, the one
    this process already runs there, if any; otherwise a new one."""
    with _hosted_lock:
        entry = _hosted.get(port) if multi_tenant and port else None
        if entry is not None:
            entry[1] += 1
            server: StoreServer = entry[0]
            return server
        server = StoreServer(
            bind_host, port, auth_token=auth_token, max_frame_size=max_frame_size
        ).start()
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
