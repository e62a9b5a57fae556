"""The wire protocol's version policy, both ways: a client that meets a server speaking
another version (older or newer) fails at once with one line naming both versions and what
to upgrade, and the server tells a client it does not accept the same.

The other releases' servers and clients are played by raw sockets that send, byte for byte,
what those releases send (0.1.0's server refused a version-2 client with exactly
``unsupported protocol version 2; this server speaks 1``, and 0.2.0's server a version-3
client with ``unsupported protocol version 3; this server speaks 2 (accepts 2): ...``)."""

from __future__ import annotations

import importlib.metadata
import socket
import struct
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from rdzv_plugin_tcp import StoreServer, TCPStore
from rdzv_plugin_tcp.protocol import FAILED, MAGIC, VERSION
from tcp_helpers import closed_by_server, raw_client

from rdzv_core import (
    RendezvousConnectionError,
    RendezvousParameters,
    StoreConnectionError,
    create_backend,
)

RELEASE = importlib.metadata.version("rdzv-plugin-tcp")


class OtherRelease:
    """A server of another release: reads each client's hello and answers with
    ``refusal`` (a FAILED frame), then closes, as every release's server does."""

    def __init__(self, refusal: str) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.refusal = refusal
        self.hellos: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                self.hellos.append(conn.recv(64))
                reply = bytes([FAILED]) + self.refusal.encode()
                conn.sendall(struct.pack(">I", len(reply)) + reply)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def oldest_server() -> Iterator[OtherRelease]:
    server = OtherRelease(f"unsupported protocol version {VERSION}; this server speaks 1")
    yield server
    server.close()


@pytest.fixture
def old_server() -> Iterator[OtherRelease]:
    server = OtherRelease(
        f"unsupported protocol version {VERSION}; this server speaks 2 (accepts 2): upgrade "
        "rdzv-plugin-tcp where this server runs (rdzv serve or the hosting node) to a release "
        f"that speaks version {VERSION}"
    )
    yield server
    server.close()


@pytest.fixture
def new_server() -> Iterator[OtherRelease]:
    server = OtherRelease(
        f"unsupported protocol version {VERSION}; this server speaks 9 (accepts 9): upgrade "
        "rdzv-plugin-tcp on the client to 0.9.0 or later"
    )
    yield server
    server.close()


def refusal_for(port: int, version: int) -> str:
    """What our server answers a client speaking ``version``."""
    sock = raw_client(port, handshake=False)
    sock.sendall(struct.pack(">I", 5) + MAGIC + bytes([version]))
    header = sock.recv(4, socket.MSG_WAITALL)
    body = sock.recv(struct.unpack(">I", header)[0], socket.MSG_WAITALL)
    assert body[:1] == bytes([FAILED]), body
    assert closed_by_server(sock), "the server kept a refused connection open"
    return body[1:].decode()


def test_a_client_meeting_an_older_server_is_told_to_upgrade_the_server(
    old_server: OtherRelease,
) -> None:
    started = time.monotonic()
    store = TCPStore("127.0.0.1", old_server.port, timeout=timedelta(seconds=30))
    with pytest.raises(StoreConnectionError) as caught:
        store.add("k", 1)  # the hello goes with the first request
    assert time.monotonic() - started < 5, "a version mismatch was retried until the timeout"
    assert str(caught.value) == (
        f"The TCP store at 127.0.0.1:{old_server.port} speaks protocol version 2 and this "
        f"client (rdzv-plugin-tcp {RELEASE}) speaks version {VERSION}: upgrade rdzv-plugin-tcp "
        "where the server runs (rdzv serve or the hosting node) to 0.3.0 or later."
    )
    assert len(old_server.hellos) == 1
    assert old_server.hellos[0].startswith(struct.pack(">I", 5) + MAGIC + bytes([VERSION]))


def test_a_client_meeting_a_0_1_server_is_told_to_upgrade_the_server(
    oldest_server: OtherRelease,
) -> None:
    store = TCPStore("127.0.0.1", oldest_server.port, timeout=timedelta(seconds=30))
    with pytest.raises(StoreConnectionError) as caught:
        store.get("k")
    assert "speaks protocol version 1" in str(caught.value)
    assert str(caught.value).endswith("to 0.3.0 or later.")


def test_a_client_meeting_a_newer_server_is_told_to_upgrade_itself(
    new_server: OtherRelease,
) -> None:
    store = TCPStore("127.0.0.1", new_server.port)
    with pytest.raises(StoreConnectionError) as caught:
        store.set("k", "v")
    assert str(caught.value) == (
        f"The TCP store at 127.0.0.1:{new_server.port} speaks protocol version 9 and this "
        f"client (rdzv-plugin-tcp {RELEASE}) speaks version {VERSION}: upgrade rdzv-plugin-tcp "
        "on this client."
    )


def test_create_backend_reports_the_mismatch_as_the_cause(old_server: OtherRelease) -> None:
    params = RendezvousParameters(
        "c10d", f"127.0.0.1:{old_server.port}", "job", 1, 1, is_host="false"
    )
    with pytest.raises(RendezvousConnectionError) as caught:
        create_backend(params)
    cause = caught.value.__cause__
    assert isinstance(cause, StoreConnectionError) and "speaks protocol version 2" in str(cause)
    assert "\n" not in str(cause), "the mismatch is one line"


def test_the_server_tells_an_older_client_to_upgrade_the_client(port: int) -> None:
    server = StoreServer("127.0.0.1", port).start()
    try:
        refusal = refusal_for(port, 1)
    finally:
        server.stop()
    # 0.1.0's client shows this after "The TCP store at HOST:PORT refused the connection: ".
    assert refusal == (
        f"unsupported protocol version 1; this server speaks {VERSION} (accepts 2, {VERSION}): "
        "upgrade rdzv-plugin-tcp on the client to 0.3.0 or later"
    )


def test_the_server_tells_a_newer_client_to_upgrade_the_server(port: int) -> None:
    server = StoreServer("127.0.0.1", port).start()
    try:
        refusal = refusal_for(port, VERSION + 1)
    finally:
        server.stop()
    assert refusal == (
        f"unsupported protocol version {VERSION + 1}; this server speaks {VERSION} "
        f"(accepts 2, {VERSION}): upgrade rdzv-plugin-tcp where this server runs (rdzv serve or "
        f"the hosting node) to a release that speaks version {VERSION + 1}"
    )


def test_a_version_2_client_is_still_served(port: int) -> None:
    """0.2.0's client sends version 2, checks that the hello answers version 2, and uses
    only version 2's operations: a newer server serves it as before."""
    from rdzv_plugin_tcp.protocol import GET, SET, U64, field, frame

    server = StoreServer("127.0.0.1", port).start()
    try:
        sock = raw_client(port, handshake=False)
        sock.sendall(frame(MAGIC + bytes([2])))
        size = struct.unpack(">I", sock.recv(4, socket.MSG_WAITALL))[0]
        hello = sock.recv(size, socket.MSG_WAITALL)
        assert hello[:5] == MAGIC + bytes([2]), "the hello must answer in the client's version"
        sock.sendall(frame(bytes([SET]) + field(b"k") + b"v"))
        assert sock.recv(5, socket.MSG_WAITALL) == frame(b"\x00")
        sock.sendall(frame(bytes([GET]) + field(b"k") + U64.pack(1000)))
        assert sock.recv(6, socket.MSG_WAITALL) == frame(b"\x00v")
        sock.close()
    finally:
        server.stop()


def test_our_refusal_is_read_back_by_our_client_as_a_mismatch(port: int) -> None:
    """The refusal keeps the words older releases' clients and ours parse."""
    from rdzv_plugin_tcp.protocol import refused_versions, version_refusal

    assert refused_versions(version_refusal(1)) == (1, VERSION)
    assert refused_versions(version_refusal(VERSION + 5)) == (VERSION + 5, VERSION)
    assert refused_versions("the server is at its connection limit") is None
