"""tcp-specific behaviour with real sockets and real child processes."""

from __future__ import annotations

import logging
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import rdzv_plugin_tcp
import rdzv_plugin_tcp.server
from rdzv_plugin_tcp import AuthenticationError, ServerLimits, StoreServer, TCPStore
from rdzv_plugin_tcp.protocol import (
    ADD,
    FAILED,
    GET,
    MAGIC,
    SET,
    VALUE_ERROR,
    VERSION,
    field,
)
from tcp_helpers import Relay, Served, frame, read_frame, wait_until

from rdzv_core import (
    RendezvousConnectionError,
    RendezvousParameters,
    StoreConnectionError,
    StoreError,
    StoreTimeoutError,
    create_backend,
    create_handler,
)
from rdzv_core.params import MAX_SECONDS

MESSAGE = "The connection to the C10d store has failed. See inner exception for details."


def params(endpoint: str, **config: str) -> RendezvousParameters:
    return RendezvousParameters("c10d", endpoint, "run", 1, 1, **config)


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def served() -> Iterator[Served]:
    server = Served()
    yield server
    server.stop(signal.SIGKILL)


# -- create_backend semantics --------------------------------------------------------------


def test_tcp_is_the_default_store_type_and_default_port_is_read_at_call_time(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rdzv_plugin_tcp, "DEFAULT_PORT", port)
    _backend, store = create_backend(params("127.0.0.1"))
    try:
        assert isinstance(store, TCPStore)
        assert store.port == port and store.host == "127.0.0.1"
        assert store.server is not None, "127.0.0.1 is this machine: it should host"
        assert store.timeout == timedelta(seconds=60)
    finally:
        store.close()


def test_two_backends_in_one_process_share_one_server(port: int) -> None:
    _, first = create_backend(params(f"127.0.0.1:{port}"))
    _, second = create_backend(params(f"localhost:{port}"))
    assert isinstance(first, TCPStore) and isinstance(second, TCPStore)
    assert first.server is second.server is not None
    first.set("k", "v")
    first.close()
    assert second.get("k") == b"v", "closing one tenant stopped the shared server"
    second.close()
    assert port_is_free(port), "the last tenant closed but the server still listens"


def test_inferred_host_falls_back_to_client_when_port_is_taken(served: Served) -> None:
    _, store = create_backend(params(f"127.0.0.1:{served.port}"))
    try:
        assert isinstance(store, TCPStore) and store.server is None
        store.set("k", "v")
        assert TCPStore("127.0.0.1", served.port).get("k") == b"v"
    finally:
        store.close()


def test_explicit_host_with_busy_port_is_connection_error(served: Served) -> None:
    start = time.monotonic()
    with pytest.raises(RendezvousConnectionError) as info:
        create_backend(params(f"127.0.0.1:{served.port}", is_host="true"))
    assert str(info.value) == MESSAGE
    assert isinstance(info.value.__cause__, StoreError)
    assert "in use" in str(info.value.__cause__)
    assert time.monotonic() - start < 2


def test_explicit_client_with_no_server_fails_after_read_timeout(port: int) -> None:
    start = time.monotonic()
    with pytest.raises(RendezvousConnectionError) as info:
        create_backend(params(f"127.0.0.1:{port}", is_host="false", read_timeout="1"))
    elapsed = time.monotonic() - start
    assert isinstance(info.value.__cause__, StoreConnectionError)
    assert f"127.0.0.1:{port}" in str(info.value.__cause__)
    assert 0.9 <= elapsed < 3


def test_client_started_before_its_server_connects(port: int) -> None:
    def host_later() -> None:
        time.sleep(0.5)
        hosts.append(TCPStore("127.0.0.1", port, is_master=True))

    hosts: list[TCPStore] = []
    thread = threading.Thread(target=host_later)
    thread.start()
    client = TCPStore("127.0.0.1", port, timeout=timedelta(seconds=10))
    thread.join()
    client.set("k", "v")
    assert hosts[0].get("k") == b"v"
    client.close()
    hosts[0].close()


@pytest.mark.parametrize("is_host", ["true", "false"])
def test_unresolvable_endpoint_fails_fast(port: int, is_host: str) -> None:
    start = time.monotonic()
    with pytest.raises(RendezvousConnectionError) as info:
        create_backend(params(f"no-such-host.invalid:{port}", is_host=is_host, read_timeout="30"))
    assert "resolve" in str(info.value.__cause__)
    assert time.monotonic() - start < 10
    assert port_is_free(port), "a server started for the failed store was left running"


def test_bind_host_narrows_the_listener(port: int) -> None:
    _, store = create_backend(params(f"127.0.0.1:{port}", bind_host="127.0.0.1"))
    try:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.2", port)) != 0
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) == 0
    finally:
        store.close()


def test_default_listener_takes_every_interface(port: int) -> None:
    host = TCPStore("127.0.0.1", port, is_master=True)
    try:
        # An IPv4 and an IPv6 address are connected to directly, a name through the
        # resolver.
        for address in ("127.0.0.2", "::1", "localhost"):
            assert TCPStore(address, port).num_keys() == 0
    finally:
        host.close()


def test_bad_is_host_value(port: int) -> None:
    with pytest.raises(ValueError, match="'is_host'"):
        create_backend(params(f"127.0.0.1:{port}", is_host="perhaps"))


# -- rdzv serve ----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_rdzv_serve_serves_logs_and_exits_cleanly(sig: int) -> None:
    served = Served()
    client = TCPStore("127.0.0.1", served.port)
    client.set("k", "v")
    assert client.get("k") == b"v"
    client.close()
    time.sleep(0.2)
    assert served.stop(sig) == 0
    log = served.stderr()
    assert "connected" in log and "disconnected" in log and "shutting down" in log


def test_every_timeout_at_its_longest_allowed_value_works(port: int) -> None:
    longest = str(MAX_SECONDS)
    handler = create_handler(
        params(
            f"127.0.0.1:{port}",
            is_host="true",
            **dict.fromkeys(
                [
                    "read_timeout",
                    "join_timeout",
                    "last_call_timeout",
                    "close_timeout",
                    "heartbeat_timeout",
                    "keep_alive_interval",
                ],
                longest,
            ),
            keep_alive_max_attempt="1",  # the liveness window is interval x attempts
        )
    )
    info = handler.next_rendezvous()
    info.store.set("k", "v")
    assert (info.rank, info.world_size, info.store.get("k")) == (0, 1, b"v")
    assert handler.shutdown()


def test_a_refused_local_address_leaves_no_server_running(port: int) -> None:
    with pytest.raises(ValueError, match="The local address 'a..b' must be"):
        create_handler(
            RendezvousParameters("c10d", f"127.0.0.1:{port}", "run", 1, 1, "a..b", is_host="true")
        )
    assert port_is_free(port), "the store hosted for the refused handler was left running"


@pytest.mark.parametrize("host", ["a..b", "x" * 64 + ".example"])
def test_a_malformed_host_name_cannot_be_resolved(host: str) -> None:
    with pytest.raises(StoreConnectionError, match=f"Cannot resolve the TCP store host '{host}'"):
        TCPStore(host, 29400, timeout=timedelta(seconds=5))
    with pytest.raises(StoreConnectionError, match=f"Cannot resolve the TCP store host '{host}'"):
        TCPStore(host, 0, is_master=True)
    with pytest.raises(StoreError, match=f"cannot listen on {host}:0: Name or service not"):
        TCPStore("localhost", 0, is_master=True, bind_host=host)


def test_a_non_ascii_host_name_without_an_idna_form_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="The host name 'bü..x' is not valid"):
        TCPStore("bü..x", 29400)
    with pytest.raises(StoreError, match="cannot listen on bü..x:0: The host name 'bü..x'"):
        TCPStore("localhost", 0, is_master=True, bind_host="bü..x")


def test_rdzv_serve_reports_a_host_it_cannot_resolve() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rdzv_core", "serve", "--host", "a..b", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "rdzv serve: The TCP store server cannot listen on a..b:0: Name or service not known"
    )


def test_a_process_that_connects_loads_no_idna_codec(served: Served) -> None:
    """Python loads its IDNA codec (about a millisecond and 0.6 MiB) for a host name given
    to the resolver as str; a client passes ASCII names as bytes."""
    code = (
        "import sys\n"
        "from rdzv_plugin_tcp import TCPStore\n"
        "for host in ('127.0.0.1', 'localhost'):\n"
        f"    store = TCPStore(host, {served.port})\n"
        "    store.set('k', 'v')\n"
        "    assert store.get('k') == b'v'\n"
        "print(sorted(m for m in ('encodings.idna', 'unicodedata') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_rdzv_serve_reports_a_busy_port(served: Served) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rdzv_core", "serve", "--port", str(served.port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "cannot listen" in result.stderr and "in use" in result.stderr


def test_server_killed_under_a_blocked_get_fails_promptly(served: Served) -> None:
    client = TCPStore("127.0.0.1", served.port, timeout=timedelta(seconds=60))
    errors: list[BaseException] = []

    def blocked() -> None:
        try:
            client.get("never")
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=blocked)
    thread.start()
    time.sleep(0.3)
    served.proc.kill()
    start = time.monotonic()
    thread.join(10)
    assert not thread.is_alive(), "the client hung after its server died"
    assert time.monotonic() - start < 2
    assert isinstance(errors[0], StoreConnectionError)
    start = time.monotonic()
    with pytest.raises(StoreConnectionError, match="Lost the TCP store"):
        client.set("k", "v")  # no reconnect attempts: the data lived in the dead server
    assert time.monotonic() - start < 0.5


# -- authentication ------------------------------------------------------------------------


def test_auth_accepts_the_right_token_and_the_secret_never_crosses_the_wire(port: int) -> None:
    secret = "correct horse battery staple"
    host = TCPStore("127.0.0.1", port, is_master=True, auth_token=secret)
    relay = Relay(port)
    try:
        client = TCPStore("127.0.0.1", relay.port, auth_token=secret)
        client.set("k", "v")
        assert host.get("k") == b"v"
        client.close()
        assert relay.seen and secret.encode() not in relay.seen
    finally:
        relay.close()
        host.close()


def test_auth_rejects_a_wrong_or_missing_token(port: int, caplog: pytest.LogCaptureFixture) -> None:
    host = TCPStore("127.0.0.1", port, is_master=True, auth_token="right")
    try:
        with caplog.at_level(logging.WARNING), pytest.raises(AuthenticationError) as info:
            TCPStore("127.0.0.1", port, auth_token="wrong", timeout=timedelta(seconds=2))
        assert "authentication failed" in str(info.value).lower()
        assert "authentication failed" in caplog.text
        tokenless = TCPStore("127.0.0.1", port, timeout=timedelta(seconds=2))
        with (
            caplog.at_level(logging.WARNING),
            pytest.raises(AuthenticationError, match="requires a token"),
        ):
            tokenless.set("k", "v")  # its handshake goes with its first request
        assert not host.check(["k"]), "the request sent with the hello was run"
        assert wait_until(lambda: "authentication failed: no token given" in caplog.text, 5)
        host.set("still", "serving")
        assert TCPStore("127.0.0.1", port, auth_token="right").get("still") == b"serving"
    finally:
        host.close()


def test_auth_through_create_backend_config_file_and_env(
    port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    _, host = create_backend(params(f"127.0.0.1:{port}", auth_token_file=str(token_file)))
    try:
        _, inline = create_backend(
            params(f"127.0.0.1:{port}", auth_token="s3cret", is_host="false")
        )
        inline.close()
        monkeypatch.setenv("RDZV_TCP_AUTH_TOKEN", "s3cret")
        _, from_env = create_backend(params(f"127.0.0.1:{port}", is_host="false"))
        from_env.close()
        # The file's token lost its newline; so does text given any other way.
        monkeypatch.setenv("RDZV_TCP_AUTH_TOKEN", " s3cret\n")
        _, padded = create_backend(params(f"127.0.0.1:{port}", is_host="false"))
        padded.close()
        TCPStore("127.0.0.1", port, auth_token="s3cret\n").close()
        monkeypatch.setenv("RDZV_TCP_AUTH_TOKEN", " \n")
        with pytest.raises(ValueError, match=r"token \(\$RDZV_TCP_AUTH_TOKEN\) is only whitespace"):
            create_backend(params(f"127.0.0.1:{port}", is_host="false"))
        with pytest.raises(ValueError, match=r"token \(auth_token\) is only whitespace"):
            create_backend(params(f"127.0.0.1:{port}", is_host="false", auth_token="  "))
        monkeypatch.setenv("RDZV_TCP_AUTH_TOKEN", "wrong")
        with pytest.raises(RendezvousConnectionError) as info:
            create_backend(params(f"127.0.0.1:{port}", is_host="false", read_timeout="2"))
        assert isinstance(info.value.__cause__, AuthenticationError)
        with pytest.raises(ValueError, match="not both"):
            create_backend(params(f"127.0.0.1:{port}", auth_token="a", auth_token_file="b"))
    finally:
        host.close()


def test_auth_token_for_rdzv_serve_from_env() -> None:
    served = Served(env={"RDZV_TCP_AUTH_TOKEN": "envtoken\n"})
    try:
        with pytest.raises(AuthenticationError):
            TCPStore("127.0.0.1", served.port, timeout=timedelta(seconds=2)).set("k", "v")
        TCPStore("127.0.0.1", served.port, auth_token="envtoken").set("k", "v")
    finally:
        served.stop()
    result = subprocess.run(
        [sys.executable, "-m", "rdzv_core", "serve", "--port", "0"],
        env={**os.environ, "RDZV_TCP_AUTH_TOKEN": "  "},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "rdzv serve: The TCP store token ($RDZV_TCP_AUTH_TOKEN) is only whitespace."
    )


# -- framing -------------------------------------------------------------------------------


@pytest.mark.parametrize("delivery", ["whole", "byte by byte", "all in one write"])
def test_requests_get_the_same_replies_however_their_bytes_arrive(port: int, delivery: str) -> None:
    """A request alone in one read takes the server's direct path; one in pieces, or several
    in one read, take the buffered path: the replies are the same, in order."""
    server = StoreServer("127.0.0.1", port).start()
    try:
        count = struct.pack(">q", 5), struct.pack(">q", -2)
        requests = [
            frame(bytes([SET]) + field(b"k") + b"value"),
            frame(bytes([ADD]) + field(b"n") + count[0]),
            frame(bytes([GET]) + field(b"k") + struct.pack(">Q", 1000)),
            frame(bytes([ADD]) + field(b"n") + count[1]),
        ]
        expected = [b"\x00", b"\x00" + count[0], b"\x00value", b"\x00" + struct.pack(">q", 3)]
        sock = raw_client(port)
        if delivery == "all in one write":
            sock.sendall(b"".join(requests))
            replies = [read_frame(sock) for _ in requests]
        else:
            replies = []
            for request in requests:
                if delivery == "whole":
                    sock.sendall(request)
                else:
                    for i in range(len(request)):
                        sock.sendall(request[i : i + 1])
                        time.sleep(0.002)  # each byte its own segment
                replies.append(read_frame(sock))
        assert replies == expected
        sock.close()
    finally:
        server.stop()


FIRST_REQUESTS = {
    "add": frame(bytes([ADD]) + field(b"n") + struct.pack(">q", 5)),
    "oversized set": frame(bytes([SET]) + field(b"k") + bytes(2000)),
    "parked get": frame(bytes([GET]) + field(b"later") + struct.pack(">Q", 30_000)),
    "no token given": frame(bytes([ADD]) + field(b"n") + struct.pack(">q", 5)),
    "bad handshake": frame(bytes(100)),
    "unknown version": frame(bytes([ADD]) + field(b"n") + struct.pack(">q", 5)),
}


@pytest.mark.parametrize("delivery", ["one write", "apart"])
@pytest.mark.parametrize("case", list(FIRST_REQUESTS))
def test_a_first_request_right_behind_the_hello(
    port: int, case: str, delivery: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client may send its first request in the same write as its hello: a server without
    a token takes both straight from that read and answers both in one send (one with a
    token buffers them). Sent apart, each takes the usual path. The answers are the same
    either way, refusals and errors included."""
    token = b"secret" if case in ("no token given", "bad handshake") else None
    limits = ServerLimits(max_frame_size=1024) if case == "oversized set" else None
    version = 99 if case == "unknown version" else VERSION
    server = StoreServer("127.0.0.1", port, auth_token=token, limits=limits).start()
    try:
        hello, request = frame(MAGIC + bytes([version])), FIRST_REQUESTS[case]
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
            caplog.at_level(logging.WARNING, logger="rdzv_plugin_tcp.server"),
        ):
            if delivery == "one write":
                sock.sendall(hello + request)
            else:
                sock.sendall(hello)
                time.sleep(0.05)  # read by the server on its own
                sock.sendall(request)
            if case == "bad handshake":
                assert closed_by_server(sock)
                assert "bad handshake" in caplog.text
                return
            answer = read_frame(sock)
            if case == "unknown version":
                assert answer[:1] == bytes([FAILED]) and b"protocol version 99" in answer
                assert closed_by_server(sock)
                return
            assert answer[:4] == MAGIC and answer[5] == (token is not None)
            if case == "parked get":  # the hello's answer did not wait for the get's
                setter = TCPStore("127.0.0.1", port)
                setter.set("later", "now")
                setter.close()
                assert read_frame(sock) == b"\x00now"
            elif case == "no token given":
                assert (
                    read_frame(sock) == bytes([FAILED]) + b"authentication failed: no token given"
                )
                assert closed_by_server(sock)
                return
            elif case == "oversized set":
                reply = read_frame(sock)
                assert reply[:1] == bytes([VALUE_ERROR]) and b"limit of 1024 bytes" in reply
            else:
                assert read_frame(sock) == b"\x00" + struct.pack(">q", 5)
            sock.sendall(FIRST_REQUESTS["add"])  # the connection is still usable
            assert read_frame(sock)[:1] == b"\x00"
    finally:
        server.stop()


# -- hostile clients -----------------------------------------------------------------------


def raw_client(port: int, handshake: bool = True) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if handshake:
        payload = MAGIC + bytes([VERSION])
        sock.sendall(struct.pack(">I", len(payload)) + payload)
        reply = sock.recv(64)
        assert reply[4:8] == MAGIC
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(5)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


HOSTILE = {
    "malformed": struct.pack(">I", 3) + bytes([GET, 0, 0]),
    "unknown op": struct.pack(">I", 1) + bytes([99]),
    "trailing bytes": struct.pack(">I", 15) + bytes([GET]) + field(b"k") + b"\x00" * 9,
    "field overrun": struct.pack(">I", 5) + bytes([SET]) + struct.pack(">I", 1000),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_frames_close_only_that_connection(
    case: str, port: int, caplog: pytest.LogCaptureFixture
) -> None:
    server = StoreServer("127.0.0.1", port).start()
    try:
        good = TCPStore("127.0.0.1", port)
        good.set("k", "v")
        with caplog.at_level(logging.WARNING, logger="rdzv_plugin_tcp.server"):
            bad = raw_client(port)
            bad.sendall(HOSTILE[case])
            assert closed_by_server(bad), f"{case}: the server kept the connection"
            bad.close()
        assert "closed connection" in caplog.text
        assert good.get("k") == b"v" and good.add("n", 1) == 1
        assert TCPStore("127.0.0.1", port).get("k") == b"v"
    finally:
        server.stop()


def test_garbage_handshake_and_truncated_frame(port: int, caplog: pytest.LogCaptureFixture) -> None:
    server = StoreServer("127.0.0.1", port).start()
    try:
        good = TCPStore("127.0.0.1", port)
        with caplog.at_level(logging.WARNING, logger="rdzv_plugin_tcp.server"):
            bad = raw_client(port, handshake=False)
            bad.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert closed_by_server(bad)
            half = raw_client(port)
            half.sendall(struct.pack(">I", 100) + b"only part of it")
            half.close()
            time.sleep(0.2)
        assert "bad handshake" in caplog.text and "inside a frame" in caplog.text
        good.set("k", "v")
        assert good.get("k") == b"v"
    finally:
        server.stop()


def test_version_mismatch_is_refused_with_a_message(port: int) -> None:
    server = StoreServer("127.0.0.1", port).start()
    try:
        sock = raw_client(port, handshake=False)
        sock.sendall(struct.pack(">I", 5) + MAGIC + bytes([VERSION + 1]))
        data = sock.recv(4096)
        assert b"unsupported protocol version" in data
        assert closed_by_server(sock)
    finally:
        server.stop()


def test_frame_limit_is_configurable(port: int) -> None:
    _, host = create_backend(params(f"127.0.0.1:{port}", max_frame_size="4096"))
    try:
        client = TCPStore("127.0.0.1", port)
        with pytest.raises(ValueError, match=r"'big' is 10008 bytes, over .* limit of 4096"):
            client.set("big", b"x" * 10_000)
        client.set("small", b"x" * 1000)  # the same client, still usable
        assert host.get("small") == b"x" * 1000
    finally:
        host.close()


@pytest.mark.parametrize("size", [0, 16 * 1024 - 2, 16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1])
def test_values_either_side_of_the_one_chunk_reply_size_arrive_whole(port: int, size: int) -> None:
    """The server copies a small value into its reply and sends a big one apart: from a
    get, a compare_set, a woken get and a queue pop, the value arrives whole either way."""
    with StoreServer("127.0.0.1", port).start() as server:
        writer, reader = TCPStore("127.0.0.1", port), TCPStore("127.0.0.1", port)
        value = os.urandom(size)
        writer.set("v", value)
        assert reader.get("v") == value
        assert reader.compare_set("v", b"not it", b"ignored") == value
        writer.queue_push("q", value)
        assert reader.queue_pop("q") == value

        def woken_by(read: Callable[[], bytes], write: Callable[[], object]) -> list[bytes]:
            got: list[bytes] = []
            waiter = threading.Thread(target=lambda: got.append(read()))
            waiter.start()
            assert wait_until(lambda: server.keyspace_sizes()[2] == 1, 10)
            write()
            waiter.join(10)
            return got

        got = woken_by(lambda: reader.get("later"), lambda: writer.set("later", value))
        assert got == [value]
        popped = woken_by(lambda: reader.queue_pop("q"), lambda: writer.queue_push("q", value))
        assert popped == [value]
        writer.close()
        reader.close()


@pytest.mark.parametrize("default_timeout", [None, 30.0])
def test_a_client_that_stops_reading_does_not_stall_others(
    port: int, default_timeout: float | None
) -> None:
    """Also in a process that set a default socket timeout (which every socket made
    after it gets, the server's and the client's alike)."""
    socket.setdefaulttimeout(default_timeout)
    try:
        server = StoreServer("127.0.0.1", port).start()
    finally:
        socket.setdefaulttimeout(None)
    socket.setdefaulttimeout(default_timeout)
    try:
        good = TCPStore("127.0.0.1", port)
        good.set("big", os.urandom(1024 * 1024))
        hog = raw_client(port)
        request = bytes([GET]) + field(b"big") + struct.pack(">Q", 1000)
        hog.setblocking(False)
        frame = struct.pack(">I", len(request)) + request
        sent = 0
        for _ in range(2000):  # ask for 2 GB of replies and never read one
            try:
                sent += hog.send(frame)
            except BlockingIOError:
                break
        start = time.monotonic()
        for i in range(200):
            good.set(f"k{i}", "v")
            assert good.get(f"k{i}") == b"v"
        assert time.monotonic() - start < 5
        hog.close()
    finally:
        socket.setdefaulttimeout(None)
        server.stop()


def test_two_thousand_concurrent_connections() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4500:  # this process holds the 2,000 client ends (rdzv serve raises its own)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4500, hard), hard))
    served = Served()
    sockets: list[socket.socket] = []
    try:
        for _ in range(2000):
            sockets.append(raw_client(served.port))
        store = TCPStore("127.0.0.1", served.port)
        store.set("k", "v")
        request = bytes([GET]) + field(b"k") + struct.pack(">Q", 1000)
        for sock in sockets[::100]:
            sock.sendall(struct.pack(">I", len(request)) + request)
            assert sock.recv(64)[4:] == b"\x00v"
        assert store.add("n", 1) == 1
    finally:
        for sock in sockets:
            sock.close()
        served.stop()


@pytest.mark.parametrize("queue_known", [True, False], ids=["linux-queue-length", "no-tcp-info"])
def test_one_wake_up_accepts_every_waiting_connection_up_to_256(
    monkeypatch: pytest.MonkeyPatch, queue_known: bool
) -> None:
    if not queue_known:  # as where TCP_INFO does not give a listener's queue
        monkeypatch.setattr(rdzv_plugin_tcp.server, "_TCP_INFO", None)
    server = StoreServer("127.0.0.1", 0)  # not started: its accepts are driven here
    clients = []
    try:
        server._accept()  # nobody waits: nothing happens
        assert server.connection_count == 0
        clients += [socket.create_connection(("127.0.0.1", server.port)) for _ in range(300)]
        server._accept()
        assert server.connection_count == 256  # the rest wait for the next wake-up
        server._accept()
        assert server.connection_count == 300
        clients.append(socket.create_connection(("127.0.0.1", server.port)))
        server._accept()  # one alone
        assert server.connection_count == 301
    finally:
        for client in clients:
            client.close()
        server.stop()


def test_without_epoll_the_server_waits_with_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    # Systems without epoll (macOS, the BSDs) get poll(2), which takes milliseconds.
    monkeypatch.delattr(select, "epoll")
    server = StoreServer("127.0.0.1", 0).start()
    try:
        store = TCPStore("127.0.0.1", server.port, timeout=timedelta(seconds=5))
        other = TCPStore("127.0.0.1", server.port, timeout=timedelta(seconds=5))
        assert store.add("n", 2) == 2
        began = time.monotonic()
        with pytest.raises(StoreTimeoutError):
            store.wait(["never"], timeout=0.3)
        assert 0.25 < time.monotonic() - began < 2.0  # woken by its deadline, not a tick
        threading.Timer(0.2, other.set, ("late", "v")).start()
        assert store.get("late") == b"v"  # a parked read woken by another client's write
        store.close()
        other.close()
    finally:
        server.stop()


def test_closed_store_and_bad_arguments(port: int) -> None:
    with pytest.raises(ValueError, match="port 0"):
        TCPStore("127.0.0.1", 0)
    with pytest.raises(ValueError, match="65535"):
        TCPStore("127.0.0.1", 70000)
    store = TCPStore("127.0.0.1", port, is_master=True)
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get("k")
    assert port_is_free(port)


# -- the rendezvous when the store host dies -----------------------------------------------


def test_store_host_dying_gives_every_node_a_clear_error(served: Served) -> None:
    from rdzv_core.testing.rendezvous_suite import _Cluster

    cluster = _Cluster("tcp", f"127.0.0.1:{served.port}", 3, 3, host=False)
    try:
        waiting = cluster.start(2, "read_timeout=5")  # one short of min: blocked in the store
        cluster.wait_joined(2)
        time.sleep(0.3)  # from their slots to the blocking read
        start = time.monotonic()
        served.proc.kill()
        for node in waiting:
            error = node.next("error", timeout=30)["error"]
            assert error.startswith("RendezvousConnectionError"), error
            assert node.proc.wait(10) == 1
        assert time.monotonic() - start < 5 + 3, "a node hung past its read timeout"
    finally:
        cluster.close()


# -- descriptors: one connection per node ---------------------------------------------------


def test_a_node_holds_one_connection_while_waiting_and_after(port: int) -> None:
    """A node blocked in next_rendezvous keeps heartbeating over its single connection,
    and after the round its heartbeat thread reuses that connection."""
    from rdzv_core.rendezvous import HandlerSettings, RendezvousHandler

    server = StoreServer(port=port).start()
    settings = HandlerSettings(keep_alive_interval=timedelta(seconds=0.2))
    handlers: list[RendezvousHandler] = []
    results: list[int] = []

    def node() -> None:
        backend, store = create_backend(params(f"127.0.0.1:{port}", is_host="false"))
        handler = RendezvousHandler("run", store, backend, 2, 2, settings=settings)
        handlers.append(handler)
        results.append(handler.next_rendezvous().rank)

    try:
        first = threading.Thread(target=node)
        first.start()
        assert wait_until(lambda: server.connection_count == 1 and handlers, 10)
        probe = TCPStore("127.0.0.1", port)
        beat_key = f"rdzv.run/hb/{handlers[0].node_id}"
        before = probe.add(beat_key, 0)
        time.sleep(1.5)  # about seven heartbeat intervals, blocked waiting for the second node
        assert probe.add(beat_key, 0) >= before + 4, "the waiting node stopped heartbeating"
        assert server.connection_count == 2  # the waiting node and the probe
        second = threading.Thread(target=node)
        second.start()
        first.join(30)
        second.join(30)
        assert sorted(results) == [0, 1]
        time.sleep(1.0)  # heartbeats and successor watching after the round
        assert server.connection_count == 3, "a node opened a second connection"
        beat_key = f"rdzv.run/hb/{handlers[1].node_id}"
        before = probe.add(beat_key, 0)
        time.sleep(0.6)
        assert probe.add(beat_key, 0) >= before + 2
        probe.close()
    finally:
        for handler in handlers:
            handler.close()
        server.stop()


def test_spare_connections_close_after_going_unused(
    port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rdzv_plugin_tcp.client, "SPARE_LINK_SECONDS", 0.3)
    server = StoreServer(port=port).start()
    store = TCPStore("127.0.0.1", port)
    try:
        waiting = [threading.Thread(target=store.wait, args=([f"k{i}"],)) for i in range(3)]
        for thread in waiting:
            thread.start()
        assert wait_until(lambda: server.connection_count == 3, 5)
        store.multi_set(["k0", "k1", "k2"], ["v", "v", "v"])  # a fourth link for this call
        for thread in waiting:
            thread.join(5)
        assert server.connection_count == 4  # a burst leaves spares behind...
        time.sleep(0.4)
        for _ in range(4):
            store.check(["k0"])  # ...which close once they sat unused long enough
        assert wait_until(lambda: server.connection_count == 1, 5)
        assert store.get("k1") == b"v"
    finally:
        store.close()
        server.stop()


def _serve_replies(listener: socket.socket, replies: list[bytes]) -> None:
    """A server that shakes hands like ours, then answers each request with the next of
    ``replies`` (raw frame payloads), right or wrong."""
    from rdzv_plugin_tcp.protocol import VERSION, hello_reply

    def request() -> bytes:  # one whole frame (the first request follows the hello at once)
        header = conn.recv(4, socket.MSG_WAITALL)
        if len(header) < 4:
            return b""
        return conn.recv(struct.unpack(">I", header)[0], socket.MSG_WAITALL)

    conn, _ = listener.accept()
    with conn:
        request()  # the hello
        hello = hello_reply(VERSION, os.urandom(16), 1 << 20, None)
        conn.sendall(struct.pack(">I", len(hello)) + hello)
        for reply in replies:
            if not request():
                return
            conn.sendall(struct.pack(">I", len(reply)) + reply)
        request()


def test_a_malformed_reply_is_a_store_error_not_a_wrong_answer() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        short_add, long_add = b"\x00\x00\x01", b"\x00" + struct.pack(">q", 7) + b"extra"
        unknown_status = b"\x09value"
        server = threading.Thread(
            target=_serve_replies,
            args=(listener, [short_add, long_add, unknown_status, b"", b"\x00value"]),
        )
        server.start()
        store = TCPStore("127.0.0.1", listener.getsockname()[1], timeout=timedelta(seconds=5))
        try:
            with pytest.raises(StoreError, match="malformed reply \\(3 bytes\\)"):
                store.add("counter", 1)
            with pytest.raises(StoreError, match="malformed reply \\(14 bytes\\)"):
                store.add("counter", 1)
            with pytest.raises(StoreError, match="malformed reply \\(6 bytes\\)"):
                store.get("key")  # not returned as a value
            with pytest.raises(StoreError, match="malformed reply \\(0 bytes\\)"):
                store.get("key")
            assert store.get("key") == b"value"  # the link is still in step
        finally:
            store.close()
            server.join(10)
