"""TCPStore: the client of the tcp store type (and, with ``is_master``, its host)."""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Sequence
from datetime import timedelta

from rdzv_core import Store, StoreConnectionError, StoreError
from rdzv_core.storekit import (
    Value,
    as_timeout,
    check_key,
    check_keys,
    check_multi_set,
    queue_empty_error,
    queue_timeout_error,
    resolver_host,
    timeout_error,
    to_bytes,
    wrap_int64,
)

from . import DEFAULT_MAX_FRAME_SIZE
from .auth import AuthenticationError, answer, as_token
from .limits import ServerLimits, with_max_frame_size
from .protocol import (
    ADD,
    ALIVE,
    APPEND,
    CAS,
    CHECK,
    DELETE,
    FAILED,
    GET,
    I64,
    LIST_KEYS,
    MAGIC,
    MAX_TIMEOUT_MS,
    MULTI_GET,
    MULTI_SET,
    NONCE_SIZE,
    NUM_KEYS,
    OK,
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
    VERSION,
    WAIT,
    Reader,
    field,
    fields,
    refused_versions,
    version_mismatch,
)
from .server import StoreServer, acquire_server, release_server
from .spin import SpinPolicy

__all__ = ["TCPStore"]

log = logging.getLogger(__name__)

#: Fewest seconds a request may go unanswered before its link counts as dead.
MIN_LIVENESS = 1.0
_MAX_RETRY_DELAY = 0.5
#: How long a request may busy-poll for its reply before sleeping (seconds).
SPIN_SECONDS = 0.0002
#: A new link sends its hello with its first request; one left unused longer than this
#: (seconds) is replaced first: a server with the default handshake timeout (10 s, closed
#: at its next 1 s tick) has closed it for saying nothing. A younger link is used as it is,
#: and if the server closed it sooner (a shorter timeout), the request, never run, goes
#: again on a new one. Replacing younger links would open a second connection for every
#: store used a few seconds after it was made, all at once where thousands are.
GREET_WITHIN = 12.0
#: A store keeps one idle link; extra links (left by concurrent calls) close once they
#: have gone unused this long (seconds), so a burst does not pin descriptors on the server.
SPARE_LINK_SECONDS = 30.0

_SEND_FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL  # never block, never SIGPIPE
_SMALL_READ = 16 * 1024
_LARGE_READ = 1024 * 1024
_TIMEVAL = struct.Struct("@ll")  # struct timeval for SO_RCVTIMEO / SO_SNDTIMEO
_pack_u32 = U32.pack
_unpack_u32 = U32.unpack_from
_pack_i64 = I64.pack
_unpack_i64 = I64.unpack_from
_INT64_MIN, _INT64_END = -(2**63), 2**63
_ALIVE = bytes([ALIVE])
_VALUE_ERROR, _FAILED = bytes([VALUE_ERROR]), bytes([FAILED])
_PING = bytes([PING])
_HELLO_FRAME = _pack_u32(len(MAGIC) + 1) + MAGIC + bytes([VERSION])
_SET, _GET, _ADD, _CAS, _WAIT, _CHECK, _DELETE, _NUM_KEYS, _MULTI_GET, _MULTI_SET = (
    bytes([op]) for op in (SET, GET, ADD, CAS, WAIT, CHECK, DELETE, NUM_KEYS, MULTI_GET, MULTI_SET)
)
_APPEND, _LIST_KEYS, _QUEUE_PUSH, _QUEUE_POP, _QUEUE_LEN = (
    bytes([op]) for op in (APPEND, LIST_KEYS, QUEUE_PUSH, QUEUE_POP, QUEUE_LEN)
)


def _timeval(seconds: float) -> bytes:
    """A struct timeval for SO_RCVTIMEO / SO_SNDTIMEO (at least 1 ms: zero means never)."""
    whole = int(seconds)
    micros = max(1000, int((seconds - whole) * 1e6)) if whole == 0 else 0
    return _TIMEVAL.pack(whole, micros)


def _literal_family(host: str) -> int | None:
    """The address family of ``host`` when it is a numeric address (no scope), else None."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return family
    return None


def _key_field(key: str) -> bytes:
    """``key`` as a request's length-prefixed field (a key that is not a str is a
    TypeError)."""
    if not isinstance(key, str):
        check_key(key)
    data = key.encode()
    return _pack_u32(len(data)) + data


def _millis(timeout: timedelta) -> int:
    return min(max(0, round(timeout.total_seconds() * 1000)), MAX_TIMEOUT_MS)


def _timing_of(timeout: timedelta) -> tuple[timedelta, float, bytes]:
    return timeout, max(MIN_LIVENESS, timeout.total_seconds()), U64.pack(_millis(timeout))


class _Restarted(StoreConnectionError):
    """A different server instance answers where the store's server was."""


class _OtherVersion(StoreConnectionError):
    """The server speaks another protocol version: retrying cannot help."""


class _Refused(StoreConnectionError):
    """The server turned the connection away (at its connection limit): worth retrying."""


class _Silent(Exception):
    """The server stopped answering a link (frozen, partitioned or overloaded)."""


#: The spin policy of this process's TCP stores (see :class:`SpinPolicy`): one for every
#: store of the process (a node is one process), because what decides it is whether this
#: process's requests get their replies fast. Reads that may wait for a key (get, wait,
#: multi_get) never spin: their reply comes when another client writes.
spin_policy = SpinPolicy()


class _Link:
    """One connection to the server; used by one thread at a time.

    The socket blocks, with kernel timeouts (``SO_RCVTIMEO``/``SO_SNDTIMEO``) as the
    deadlines, so a reply costs one ``recv``. (A send timeout is set only once a send cannot
    go out at once.) Before sleeping in ``recv``, a request may busy-poll for its reply, as
    :class:`SpinPolicy` decides. ``greeting`` is True until the handshake is done: the
    hello then goes out with the link's first request (see :meth:`TCPStore._greet`).
    """

    __slots__ = (
        "buf", "greeting", "idle_since", "liveness", "max_frame", "opened", "poller", "sock",
        "where",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, where: str) -> None:
        self.sock = sock
        self.where = where
        self.buf = bytearray()
        self.max_frame = 2**32 - 1
        self.greeting = True
        self.opened = self.idle_since = time.monotonic()
        self.liveness = -1.0  # what SO_RCVTIMEO is set for (half of it)
        self.poller: select.poll | None = None  # made by the first spin

    def _set_liveness(self, liveness: float) -> None:
        """The kernel's receive timeout for ``liveness``: half of it (a quiet period; two
        in a row mean the server is silent)."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(liveness / 2))
        self.liveness = liveness

    def exchange(self, payload: bytes, liveness: float, parked: bool) -> bytes:
        """Send one request and return its reply (see :meth:`receive`). The common case,
        one whole reply in the first read, is handled here in as few steps as possible.
        A ``parked`` request (a read that may wait for keys) never spins."""
        self.send(payload, liveness)
        if liveness != self.liveness:
            self._set_liveness(liveness)
        if not parked and spin_policy.should_spin():
            spin_policy.spun(self._spin())
        if not self.buf:
            try:
                chunk = self.sock.recv(_SMALL_READ)
            except BlockingIOError:  # a quiet period passed
                if parked:
                    self.send(_PING, liveness)
                return self.receive(liveness, parked, silences=1)
            size = len(chunk) - 4
            if size > 0 and _unpack_u32(chunk)[0] == size and chunk[4] != ALIVE:
                return chunk[4:]
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            self.buf += chunk
        return self.receive(liveness, parked)

    def send(self, payload: bytes, liveness: float, ahead: bytes = b"") -> None:
        """Send one frame carrying ``payload`` (after the whole frames in ``ahead``, in the
        same ``send``); the server must take it within ``liveness`` seconds."""
        data = ahead + _pack_u32(len(payload)) + payload
        try:
            sent = self.sock.send(data, _SEND_FLAGS)
        except BlockingIOError:  # the socket buffer is full
            sent = 0
        if sent != len(data):
            self._send_rest(data[sent:], liveness)

    def _send_rest(self, data: bytes, liveness: float) -> None:
        """What the non-blocking send left, sent within ``liveness`` seconds in all: the
        kernel's send timeout is set to the time left before each ``send``, so a server
        that takes the data in trickles (frozen, its kernel opening the window a little at
        a time) cannot stretch it."""
        deadline = time.monotonic() + liveness
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(left))
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:  # SO_SNDTIMEO passed with nothing taken
                break
        if view:
            raise _Silent(f"it did not take the request within {liveness:.1f} s")

    def _spin(self) -> bool:
        """Busy-poll for the reply for up to :data:`SPIN_SECONDS`; whether it came."""
        if self.poller is None:
            self.poller = select.poll()
            self.poller.register(self.sock, select.POLLIN)
        poll = self.poller.poll
        spin_until = time.perf_counter() + SPIN_SECONDS
        while not poll(0):
            if time.perf_counter() >= spin_until:
                return False
        return True

    def _frame(self) -> bytes | None:
        buf = self.buf
        if len(buf) < 4:
            return None
        size = U32.unpack_from(buf, 0)[0]
        if size > self.max_frame + 64:
            raise StoreConnectionError(
                f"The TCP store at {self.where} sent a {size}-byte frame, over its own limit."
            )
        if len(buf) < 4 + size:
            return None
        payload = bytes(buf[4 : 4 + size])
        del buf[: 4 + size]
        return payload

    def _want(self) -> int:
        """How much to ask ``recv`` for: a small read unless a big frame is arriving (a
        large request size costs an allocation as large on every call)."""
        buf = self.buf
        if len(buf) >= 4:
            missing: int = 4 + U32.unpack_from(buf, 0)[0] - len(buf)
            return max(_SMALL_READ, min(missing, _LARGE_READ))
        return _SMALL_READ

    def receive_by(self, deadline: float) -> bytes:
        """The next frame, which must arrive by ``deadline`` (``time.monotonic()``): the
        handshake's bound, shorter than a request's, kept with the kernel's receive
        timeout (a request sets its own again)."""
        while (payload := self._frame()) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Silent("no answer to the handshake in time")
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(remaining))
            self.liveness = -1.0
            try:
                chunk = self.sock.recv(self._want())
            except BlockingIOError:  # SO_RCVTIMEO passed
                raise _Silent("no answer to the handshake in time") from None
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            self.buf += chunk
        return payload

    def receive(self, liveness: float, parked: bool = False, silences: int = 0) -> bytes:
        """The next reply. A plain request must be answered within ``liveness`` seconds.
        A ``parked`` read may wait as long as the server says; while it waits, the link
        is pinged after ``liveness / 2`` s of silence and must answer within as long again.
        ``silences`` counts the quiet periods already passed.
        """
        if liveness != self.liveness:
            self._set_liveness(liveness)
        buf = self.buf
        while True:
            payload = self._frame()
            if payload is not None:
                if payload[:1] == _ALIVE:
                    # A ping's answer (no other reply starts so), also one that crossed
                    # the reply of an earlier parked read on the wire.
                    silences = 0
                    continue
                return payload
            try:
                chunk = self.sock.recv(self._want())
            except BlockingIOError:  # SO_RCVTIMEO passed in silence
                silences += 1
                if silences >= 2:
                    raise _Silent(f"no reply within {liveness:.1f} s") from None
                if parked:
                    self.send(_PING, liveness)
                continue
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            buf += chunk
            if not parked:
                silences = 0

    def close(self) -> None:
        self.sock.close()


class TCPStore(Store):
    """A client of a TCP store server at ``host:port``.

    With ``is_master`` it first hosts the server in this process (listening on every
    interface unless ``bind_host`` narrows it; with ``multi_tenant``, stores hosting the
    same port share one server, which stops when the last of them closes). The client
    connects (retrying until ``timeout``). Without ``auth_token`` its hello goes with its
    first request, so a server that refuses this client (protocol version, connection
    limit, a token it demands) is reported by the first operation; with one, the handshake
    and authentication are done here. One TCPStore may be shared by threads: each
    concurrent operation gets its own connection from a small pool, so a blocked ``get``
    holds up nobody; the pool keeps one connection, and closes the others after
    :data:`SPARE_LINK_SECONDS` unused.

    Failure is final: once a link to the server is lost, or a server that answered before
    refuses new connections, or a different server instance answers (a restart), every
    pending and later operation raises :class:`~rdzv_core.StoreConnectionError`. A server
    that stops answering (frozen host, partition) is noticed within ``timeout``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        is_master: bool = False,
        timeout: timedelta = timedelta(seconds=60),
        multi_tenant: bool = True,
        auth_token: str | bytes | None = None,
        bind_host: str | None = None,
        limits: ServerLimits | None = None,
        max_frame_size: int | None = None,
    ) -> None:
        super().__init__(timeout)
        if max_frame_size is not None:
            limits = with_max_frame_size(limits, max_frame_size, "TCPStore")
        if not 0 <= port <= 65535:
            raise ValueError(f"The port must be between 0 and 65535, got {port}.")
        if not is_master and port == 0:
            raise ValueError("A client needs the server's port; port 0 only works with is_master.")
        self.host = host
        self._address = resolver_host(host)
        self._family = _literal_family(host)
        self._token = as_token(auth_token)
        self._idle: list[_Link] = []
        self._busy: set[_Link] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._lost: str | None = None
        self._server_id: bytes | None = None
        self._max_frame = DEFAULT_MAX_FRAME_SIZE
        self._timing_cache = _timing_of(self._timeout)
        self._server: StoreServer | None = None
        if is_master:
            self._resolve()  # the other nodes will need this name: fail now if it has none
            self._server = acquire_server(
                port,
                bind_host=bind_host,
                auth_token=self._token,
                limits=limits,
                multi_tenant=multi_tenant,
            )
            port = self._server.port
            self._server_id = self._server.server_id
            self._max_frame = self._server.max_frame_size
        self.port = port
        self.where = f"{host}:{port}"
        if self._server is None:
            try:
                self._idle.append(self._connect())
            except BaseException:
                self.close()
                raise

    @property
    def server(self) -> StoreServer | None:
        """The server this store hosts, if it is the master."""
        return self._server

    @property
    def is_host(self) -> bool:
        """True when this store hosts the server the other clients use."""
        return self._server is not None

    @property
    def server_id(self) -> bytes | None:
        """The random identity of the server instance this store talks to (None until it
        first heard from the server: its first operation, without a token)."""
        return self._server_id

    def __repr__(self) -> str:
        role = "master" if self._server else "client"
        return f"TCPStore({self.host!r}, {self.port}, {role})"

    def _timing(self) -> tuple[timedelta, float, bytes]:
        """``(timeout, liveness in seconds, the timeout as a request's wait field)``, worked
        out again only when the timeout changed."""
        timing = self._timing_cache
        if timing[0] is not self._timeout:
            timing = self._timing_cache = _timing_of(self._timeout)  # one tuple: atomic
        return timing

    # -- connections -----------------------------------------------------------------------

    def _resolve(self) -> None:
        try:
            socket.getaddrinfo(self._address, None, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise StoreConnectionError(
                f"Cannot resolve the TCP store host {self.host!r}: {e.strerror}."
            ) from e

    def _connect(self, deadline: float | None = None) -> _Link:
        """A new link, connected by ``deadline`` (``time.monotonic()``; by default the
        timeout from now). Before the store first reached its server it retries (the
        server may still be starting); after that a refusal means the server is gone.
        Without a token the link's handshake waits for its first request (see
        :meth:`_greet`); with one it is done here, as the token answers the server's
        challenge."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout.total_seconds()
        delay = 0.01
        while True:
            remaining = deadline - time.monotonic()
            try:
                sock = self._open(max(0.05, min(remaining, 5.0)))
            except socket.gaierror as e:
                if e.errno == socket.EAI_NONAME:
                    raise StoreConnectionError(
                        f"Cannot resolve the TCP store host {self.host!r}: {e.strerror}."
                    ) from e
                last: Exception = e
            except OSError as e:
                if self._server_id is not None:
                    raise self._lose(f"the server no longer accepts connections ({e})") from e
                last = e
            else:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                link = _Link(sock, self.where)
                if self._token is None:
                    return link
                try:
                    self._handshake(link, max(1.0, min(remaining, 10.0)))
                    return link
                except (AuthenticationError, _Restarted, _OtherVersion):
                    link.close()
                    raise
                except (OSError, StoreConnectionError, _Silent) as e:
                    link.close()
                    last = e
            delay = self._pause_to_retry(deadline, delay, last)

    def _pause_to_retry(self, deadline: float, delay: float, failure: Exception) -> float:
        """Sleep ``delay`` seconds (at most until ``deadline``) before another attempt to
        connect, and return the next delay; past the deadline, raise the error that ends
        the attempts, naming ``failure``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StoreConnectionError(
                f"Could not connect to the TCP store at {self.where} within "
                f"{self.timeout.total_seconds():g} s: {failure}"
            ) from failure
        time.sleep(min(delay, remaining))
        return min(delay * 2, _MAX_RETRY_DELAY)

    def _open(self, timeout: float) -> socket.socket:
        """A blocking socket connected to the server within ``timeout`` seconds.

        A numeric address is connected to directly, the kernel's send timeout bounding
        ``connect`` (Linux): one system call that releases the interpreter lock, where
        ``socket.create_connection`` makes three (look-up, ``connect``, ``poll``), each a
        turn in the queue for the lock when hundreds of client threads share a process.
        A host name goes through the resolver, trying each of its addresses.
        """
        if self._family is None:
            sock = socket.create_connection(
                (self._address, self.port),  # type: ignore[arg-type]  # to getaddrinfo
                timeout,
            )
            sock.settimeout(None)
            return sock
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        if sock.gettimeout() is not None:  # socket.setdefaulttimeout() was called
            sock.settimeout(None)  # the kernel's timeouts are the deadlines
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(timeout))
            try:
                sock.connect((self._address, self.port))
            except BlockingIOError:  # SO_SNDTIMEO passed before the server answered
                raise TimeoutError("timed out") from None
        except BaseException:
            sock.close()
            raise
        return sock

    def _handshake(self, link: _Link, timeout: float) -> None:
        """The whole handshake, answering the server's challenge with the token, within
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        link.send(MAGIC + bytes([VERSION]), timeout)
        nonce = self._check_hello(link, link.receive_by(deadline))
        link.greeting = False
        if nonce is None:
            return
        assert self._token is not None
        link.send(answer(self._token, nonce), timeout)
        failure: Exception | None = None
        try:
            reply = link.receive_by(deadline)
        except (OSError, _Silent) as e:  # the server closes the link on a wrong token
            reply, failure = b"", e
        if reply[:1] != bytes([OK]):
            raise AuthenticationError(
                f"Authentication failed for the TCP store at {link.where}: the server rejected "
                "the token."
            ) from failure

    def _check_hello(self, link: _Link, hello: bytes) -> bytes | None:
        """Check the server's answer to the hello; the nonce to answer when it demands a
        token. A refusal raises: :class:`_OtherVersion`, :class:`_Refused` (worth
        retrying), :class:`AuthenticationError` (a token is demanded and this store has
        none), :class:`_Restarted` (another server instance than before)."""
        if hello[:1] == bytes([FAILED]):
            reason = hello[1:].decode(errors="replace")
            versions = refused_versions(reason)
            if versions is not None:
                raise _OtherVersion(version_mismatch(link.where, versions[1]))
            raise _Refused(f"The TCP store at {link.where} refused the connection: {reason}")
        head = 6 + SERVER_ID_SIZE + 4
        if len(hello) < head or hello[:4] != MAGIC or hello[4] != VERSION:
            raise StoreError(f"{link.where} did not answer like an rdzv TCP store server.")
        server_id = hello[6 : 6 + SERVER_ID_SIZE]
        if self._server_id is None:
            self._server_id = server_id
            self._max_frame = U32.unpack_from(hello, 6 + SERVER_ID_SIZE)[0]
        elif server_id != self._server_id:
            raise self._lose(
                "it was restarted: a different server instance answers now, and the data "
                "this store held is gone",
                _Restarted,
            )
        link.max_frame = self._max_frame
        if not hello[5]:
            return None
        if self._token is None:
            raise AuthenticationError(
                f"Authentication failed for the TCP store at {link.where}: the server requires "
                "a token and none was given (auth_token, auth_token_file or RDZV_TCP_AUTH_TOKEN)."
            )
        return hello[head : head + NONCE_SIZE]

    def _greet(
        self, link: _Link, payload: bytes, liveness: float, parked: bool
    ) -> tuple[_Link, bytes]:
        """Make a new link's first request: hello and request leave in one ``send``, and
        the hello's answer is checked before the request's reply is read. ``(the link,
        the reply)``.

        The server runs a connection's requests only once it has accepted its hello, and
        answers both together; it closes a connection before that (a refusal, its
        handshake timeout), never between running a request and sending its reply. So a
        link turned away at the connection limit, or closed or reset before any answer
        came, has not run the request: it is replaced and the request sent again, until
        the timeout. (Silence is noticed only after ``liveness``, the whole timeout: it is
        never retried.) The new link is in the busy set as the old one was.
        """
        now = time.monotonic()
        deadline = now + self.timeout.total_seconds()
        delay = 0.01
        try:
            if now - link.opened > GREET_WITHIN:
                link = self._replace(link, deadline)
            while True:
                try:
                    link.send(payload, liveness, _HELLO_FRAME)
                    self._check_hello(link, link.receive(liveness))
                except (OSError, _Silent) as e:
                    if isinstance(e, StoreError) and not isinstance(e, _Refused):
                        raise  # a refusal retrying cannot help
                    failure: Exception = e
                else:
                    link.greeting = False
                    return link, link.receive(liveness, parked)
                delay = self._pause_to_retry(deadline, delay, failure)
                link = self._replace(link, deadline)
        except BaseException:
            self._busy.discard(link)  # the caller closes the link it gave, not this one
            link.close()
            raise

    def _replace(self, link: _Link, deadline: float) -> _Link:
        """Close ``link`` and return a new one in its place in the busy set."""
        self._busy.discard(link)
        link.close()
        link = self._connect(deadline)
        self._busy.add(link)
        return link

    def _lose(
        self, reason: str, kind: type[StoreConnectionError] = StoreConnectionError
    ) -> StoreConnectionError:
        """Mark the store lost for good (first reason wins); wake every pending call."""
        with self._lock:
            if self._lost is None:
                self._lost = reason
            busy = self._busy.copy()
        for link in busy:
            try:
                link.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return kind(f"Lost the TCP store at {self.where}: {self._lost}.")

    def _malformed(self, reply: bytes) -> StoreError:
        return StoreError(
            f"The TCP store at {self.where} sent a malformed reply ({len(reply)} bytes)."
        )

    def _request(self, payload: bytes, wait: float | None = None, what: str = "request") -> bytes:
        """Send ``payload`` and return the reply (its status byte first, never an error
        status). ``wait`` marks a blocking read and bounds it (seconds)."""
        if self._closed:
            raise StoreError("This TCPStore is closed.")
        if self._lost is not None:
            raise StoreConnectionError(f"Lost the TCP store at {self.where}: {self._lost}.")
        if len(payload) > self._max_frame:
            raise ValueError(
                f"The {what} is {len(payload)} bytes, over the TCP store server's limit of "
                f"{self._max_frame} bytes (max_frame_size)."
            )
        if self._server is not None:
            reply = self._server.call_local(payload, wait)
        else:
            reply = self._remote(payload, wait is not None)
        if not reply or reply[0] > TIMEOUT:
            self._raise_for(reply)
        return reply

    def _raise_for(self, reply: bytes) -> None:
        """Raise the error an error status stands for (an unknown one is malformed)."""
        status = reply[:1]
        if status == _VALUE_ERROR:
            raise ValueError(reply[1:].decode(errors="replace"))
        if status == _FAILED:
            raise StoreError(reply[1:].decode(errors="replace"))
        raise self._malformed(reply)

    def _remote(self, payload: bytes, parked: bool) -> bytes:
        # The pool needs no lock: list.pop and .append are atomic, so each idle link is
        # taken by exactly one caller, and only idle links are ever closed.
        try:
            link = self._idle.pop()
        except IndexError:
            link = self._connect()
        self._busy.add(link)  # set.add and .discard are atomic under the GIL
        timing = self._timing_cache
        liveness = (timing if timing[0] is self._timeout else self._timing())[1]
        greeting = link.greeting
        try:
            if greeting:
                link, reply = self._greet(link, payload, liveness, parked)
            else:
                reply = link.exchange(payload, liveness, parked)
        except (OSError, _Silent) as e:
            link.close()
            if greeting and isinstance(e, StoreError):
                raise  # the handshake failed: the store never lost a link it had
            if isinstance(e, _Silent):
                reason = f"it stopped answering ({e}; is its host frozen or cut off?)"
            else:
                reason = f"the connection broke ({e})"
            raise self._lose(reason) from e
        except BaseException:
            link.close()
            raise
        finally:
            self._busy.discard(link)
        link.idle_since = now = time.monotonic()
        idle = self._idle
        idle.append(link)  # the most recently used is taken first
        if self._closed or self._lost is not None:
            self._close_idle()  # close() or _lose() may have emptied the pool before this
        elif len(idle) > 1 and now - idle[0].idle_since > SPARE_LINK_SECONDS:
            try:
                spare = idle.pop(0)
            except IndexError:  # another caller took it meanwhile
                pass
            else:
                spare.close()
        return reply

    def _close_idle(self) -> None:
        idle = self._idle
        while True:
            try:
                link = idle.pop()
            except IndexError:
                return
            link.close()

    # -- the store contract ----------------------------------------------------------------

    def set(self, key: str, value: Value) -> None:
        self._request(
            _SET + _key_field(key) + to_bytes(value),
            what=f"set of key {key!r}",
        )

    def get(self, key: str) -> bytes:
        timeout, _, wait_field = self._timing()
        reply = self._request(_GET + _key_field(key) + wait_field, timeout.total_seconds())
        if reply[0] == TIMEOUT:
            raise timeout_error([key], timeout)
        return reply[1:]

    def add(self, key: str, amount: int) -> int:
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise TypeError(f"The amount to add must be an int, not {type(amount).__name__}.")
        if not _INT64_MIN <= amount < _INT64_END:
            amount = wrap_int64(amount)
        reply = self._request(_ADD + _key_field(key) + _pack_i64(amount))
        if len(reply) != 9:
            raise self._malformed(reply)
        result: int = _unpack_i64(reply, 1)[0]
        return result

    def compare_set(self, key: str, expected: Value, desired: Value) -> bytes:
        payload = _CAS + _key_field(key) + field(to_bytes(expected)) + field(to_bytes(desired))
        return self._request(payload, what=f"compare_set of key {key!r}")[1:]

    def wait(self, keys: Sequence[str], timeout: timedelta | float | None = None) -> None:
        names = check_keys(keys)
        limit = as_timeout(timeout, self.timeout)
        if not names:
            return
        reply = self._request(
            _WAIT + fields([k.encode() for k in names]) + U64.pack(_millis(limit)),
            limit.total_seconds(),
        )
        if reply[0] == TIMEOUT:
            raise timeout_error(names, limit)

    def check(self, keys: Sequence[str]) -> bool:
        names = check_keys(keys)
        return Reader(self._request(_CHECK + fields([k.encode() for k in names])), 1).u8() == 1

    def delete_key(self, key: str) -> bool:
        return Reader(self._request(_DELETE + _key_field(key)), 1).u8() == 1

    def num_keys(self) -> int:
        return Reader(self._request(_NUM_KEYS), 1).u64()

    def multi_get(self, keys: Sequence[str]) -> list[bytes]:
        names = check_keys(keys)
        if not names:
            return []
        timeout, _, wait_field = self._timing()
        reply = self._request(
            _MULTI_GET + fields([k.encode() for k in names]) + wait_field,
            timeout.total_seconds(),
        )
        if reply[0] == TIMEOUT:
            raise timeout_error(names, timeout)
        return Reader(reply, 1).fields()

    def multi_set(self, keys: Sequence[str], values: Sequence[Value]) -> None:
        names, raws = check_multi_set(keys, values)
        if names:
            self._request(
                _MULTI_SET + fields([k.encode() for k in names]) + fields(raws),
                what=f"multi_set of {len(names)} keys",
            )

    def append(self, key: str, value: Value) -> None:
        self._request(
            _APPEND + _key_field(key) + to_bytes(value),
            what=f"append to key {key!r}",
        )

    def list_keys(self) -> list[str]:
        return [k.decode() for k in Reader(self._request(_LIST_KEYS), 1).fields()]

    def queue_push(self, key: str, value: Value) -> None:
        self._request(
            _QUEUE_PUSH + _key_field(key) + to_bytes(value),
            what=f"queue_push to queue {key!r}",
        )

    def queue_pop(
        self, key: str, block: bool = True, timeout: timedelta | float | None = None
    ) -> bytes:
        limit = as_timeout(timeout, self.timeout)
        payload = (
            _QUEUE_POP
            + _key_field(key)
            + (b"\x01" if block else b"\x00")
            + U64.pack(_millis(limit))
        )
        reply = self._request(payload, limit.total_seconds() if block else None)
        if reply[0] == TIMEOUT:
            raise queue_timeout_error(key, limit) if block else queue_empty_error(key)
        return reply[1:]

    def queue_len(self, key: str) -> int:
        return Reader(self._request(_QUEUE_LEN + _key_field(key)), 1).u64()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._close_idle()  # links in use are closed by their callers when they finish
        if self._server is not None:
            release_server(self._server)
