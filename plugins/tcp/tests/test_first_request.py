"""A new connection's hello travels with its first request: one round trip, not two.

What the README promises: the request behind a hello runs only once the hello is
accepted; a refused hello (version, connection limit, missing token) leaves it unrun; a
store that waited before its first request still works; the server answers both at once.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from datetime import timedelta

import pytest
from rdzv_plugin_tcp import ServerLimits, StoreServer, TCPStore
from rdzv_plugin_tcp.client import GREET_WITHIN
from rdzv_plugin_tcp.protocol import ADD, FAILED, GET, MAGIC, SET, U64, VERSION, field
from rdzv_plugin_tcp.stats import ServerStats
from tcp_helpers import (
    ChildServer,
    closed_by_server,
    frame,
    raw_client,
    read_frame,
    wait_until,
)

HELLO = frame(MAGIC + bytes([VERSION]))


def add_frame(key: str, amount: int) -> bytes:
    return frame(bytes([ADD]) + field(key.encode()) + struct.pack(">q", amount))


def test_the_answers_to_a_hello_and_a_request_sent_together_come_in_order(port: int) -> None:
    server = StoreServer("127.0.0.1", port).start()
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        big = b"v" * 100_000  # far over the handshake's frame limit, once the hello is done
        sock.sendall(HELLO + frame(bytes([SET]) + field(b"big") + big) + add_frame("n", 2))
        assert read_frame(sock)[:5] == MAGIC + bytes([VERSION])
        assert read_frame(sock) == b"\x00"
        assert read_frame(sock) == b"\x00" + struct.pack(">q", 2)
        sock.sendall(frame(bytes([GET]) + field(b"big") + U64.pack(1000)))
        assert read_frame(sock) == b"\x00" + big
    finally:
        server.stop()


def _data_segments_in(sock: socket.socket) -> int:
    """Segments carrying data this socket has received (Linux ``tcp_info``,
    ``tcpi_data_segs_in``)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int(struct.unpack_from("I", info, 152)[0])


def test_the_hello_answer_and_the_first_reply_leave_in_one_send(port: int) -> None:
    server = StoreServer("127.0.0.1", port).start()
    try:
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(HELLO + add_frame("n", 1))
            read_frame(sock)
            read_frame(sock)
            time.sleep(0.05)  # a second segment would have arrived by now
            assert _data_segments_in(sock) == 1, "the two answers left in two sends"
            sock.close()
    finally:
        server.stop()


@pytest.mark.parametrize("version", [1, 200])
def test_a_request_behind_a_refused_hello_does_not_run(port: int, version: int) -> None:
    server = StoreServer("127.0.0.1", port).start()
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(frame(MAGIC + bytes([version])) + add_frame("n", 1))
        assert read_frame(sock)[:1] == bytes([FAILED])
        assert closed_by_server(sock)
        assert TCPStore("127.0.0.1", port).add("n", 0) == 0
    finally:
        server.stop()


def test_a_request_behind_a_hello_refused_at_the_connection_limit_does_not_run(
    port: int,
) -> None:
    server = StoreServer("127.0.0.1", port, limits=ServerLimits(max_connections=1)).start()
    try:
        first = TCPStore("127.0.0.1", port)
        assert first.add("n", 1) == 1
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(HELLO + add_frame("n", 100))
        assert b"connection limit" in read_frame(sock)
        assert closed_by_server(sock)
        assert first.add("n", 0) == 1
    finally:
        server.stop()


def test_a_request_behind_a_hello_without_the_demanded_token_does_not_run(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    server = StoreServer("127.0.0.1", port, auth_token=b"secret").start()
    try:
        with caplog.at_level(logging.WARNING):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(HELLO + add_frame("n", 1))
            assert read_frame(sock)[5] == 1, "the hello's answer demands a token"
            assert read_frame(sock) == bytes([FAILED]) + b"authentication failed: no token given"
            assert closed_by_server(sock)
        assert "authentication failed: no token given" in caplog.text
        assert TCPStore("127.0.0.1", port, auth_token="secret").add("n", 0) == 0
    finally:
        server.stop()


def test_a_store_used_long_after_it_was_made_works_and_runs_its_request_once() -> None:
    """The server closes a connection silent for its handshake timeout (here 1 s, shorter
    than GREET_WITHIN): a store first used later than that sends its request again on a
    new connection, and it runs once."""
    assert GREET_WITHIN > 2
    child = ChildServer(handshake_timeout=1)
    try:
        waited = TCPStore("127.0.0.1", child.port, timeout=timedelta(seconds=5))
        silent = raw_client(child.port, handshake=False)
        assert closed_by_server(silent, 4), "the server kept a silent connection"
        time.sleep(0.5)
        assert waited.add("n", 1) == 1
        assert waited.add("n", 0) == 1, "the first request ran twice"
        assert "no handshake" not in child.stderr(), "a silent connection was logged"
    finally:
        child.close()


def test_greet_within_outlasts_the_default_handshake_timeout() -> None:
    """A link is replaced before its first request only once a server with the default
    handshake timeout has closed it (at the housekeeping tick after the timeout)."""
    assert ServerLimits().handshake_timeout + 1 < GREET_WITHIN


def test_a_store_first_used_after_greet_within_connects_again_first(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its first connection has waited too long to be trusted (the server may have closed
    it): the first request goes on a new one, and the old one is closed."""
    monkeypatch.setattr("rdzv_plugin_tcp.client.GREET_WITHIN", 1.0)  # not 12 s of test
    server = StoreServer("127.0.0.1", port, stats=ServerStats()).start()
    try:
        prompt = TCPStore("127.0.0.1", port)
        prompt.set("k", "v")
        late = TCPStore("127.0.0.1", port)
        time.sleep(1.2)  # past GREET_WITHIN
        assert late.get("k") == b"v"
        stats = server.stats
        assert stats is not None and stats.accepted == 3, "the late store used its old link"
        assert wait_until(lambda: server.connection_count == 2, 5)
    finally:
        server.stop()


def test_a_store_whose_connection_the_server_closed_still_makes_its_first_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the GREET_WITHIN replacement, the hello meets a closed connection: the
    request, never run, is sent again on a new one."""
    monkeypatch.setattr("rdzv_plugin_tcp.client.GREET_WITHIN", 3600.0)
    child = ChildServer(handshake_timeout=1)
    try:
        store = TCPStore("127.0.0.1", child.port, timeout=timedelta(seconds=5))
        probe = raw_client(child.port, handshake=False)
        assert closed_by_server(probe, 4)  # the store's connection was closed with it
        assert store.add("n", 1) == 1
        assert store.add("n", 0) == 1, "the first request ran twice"
    finally:
        child.close()


def test_stores_first_used_seconds_after_they_were_made_keep_their_connections(
    port: int,
) -> None:
    """Many stores made at once and first used a few seconds later (within the server's
    handshake timeout) send on the connections they have: none connects a second time."""
    server = StoreServer("127.0.0.1", port, stats=ServerStats()).start()
    stores = []
    try:
        stores = [TCPStore("127.0.0.1", port) for _ in range(50)]
        time.sleep(2.5)
        assert [store.add("n", 1) for store in stores] == list(range(1, 51))
        stats = server.stats
        assert stats is not None and stats.accepted == 50, "stores connected again"
    finally:
        for store in stores:
            store.close()
        server.stop()
