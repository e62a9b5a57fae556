"""Property-based fuzzing of the frame parser and of a live server over real sockets."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rdzv_plugin_tcp import StoreServer, TCPStore
from rdzv_plugin_tcp.protocol import (
    I64,
    MAGIC,
    OP_NAMES,
    U64,
    VERSION,
    ProtocolError,
    Reader,
    field,
    fields,
    key_and_int,
    key_and_rest,
)
from tcp_helpers import ChildServer, frame, raw_client, wait_until

OPS = sorted(OP_NAMES)

small_bytes = st.binary(max_size=64)
u64 = st.integers(min_value=0, max_value=2**64 - 1).map(lambda n: struct.pack(">Q", n))
i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1).map(lambda n: struct.pack(">q", n))
parts = st.one_of(
    small_bytes.map(field),
    st.lists(small_bytes, max_size=5).map(fields),
    u64,
    i64,
    small_bytes,
    st.integers(min_value=0, max_value=2**32 - 1).map(lambda n: struct.pack(">I", n)),
)
#: A request payload: a real or bogus op followed by plausible and implausible fields.
payloads = st.builds(
    lambda op, rest: bytes([op]) + b"".join(rest),
    st.one_of(st.sampled_from(OPS), st.integers(min_value=0, max_value=255)),
    st.lists(parts, max_size=5),
)


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=200), reads=st.lists(st.sampled_from(
    ["u8", "u32", "u64", "i64", "field", "fields", "rest", "end"]), max_size=8))  # fmt: skip
def test_reader_only_ever_raises_protocol_error(data: bytes, reads: list[str]) -> None:
    reader = Reader(data)
    for name in reads:
        try:
            getattr(reader, name)()
        except ProtocolError:
            return
        assert 0 <= reader.pos <= len(data)


def _by_reader(payload: bytes, read: str) -> object:
    reader = Reader(payload, 1)
    key = reader.field()
    if read == "rest":
        return key, reader.rest()
    value = getattr(reader, read)()
    reader.end()
    return key, value


@settings(max_examples=600, deadline=None)
@given(payload=payloads)
def test_one_step_parsers_agree_with_the_reader(payload: bytes) -> None:
    """The hot requests' one-step parsers accept exactly what the Reader accepts."""
    for read, parse in (
        ("u64", lambda p: key_and_int(p, U64)),
        ("i64", lambda p: key_and_int(p, I64)),
        ("rest", key_and_rest),
    ):
        for data in (payload, memoryview(payload)):
            try:
                expected = _by_reader(payload, read)
            except ProtocolError:
                with pytest.raises(ProtocolError):
                    parse(data)
            else:
                assert parse(data) == expected, (read, payload)


@pytest.fixture(scope="module")
def parser_server() -> Iterator[StoreServer]:
    server = StoreServer("127.0.0.1", 0)  # not started: requests run in the caller
    yield server
    server.stop()


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=payloads)
def test_any_request_payload_gets_a_reply_or_a_protocol_error(
    parser_server: StoreServer, payload: bytes
) -> None:
    try:
        reply = parser_server.call_local(payload, 0.0)
    except ProtocolError:
        return
    except ValueError as e:  # only a compare_set/add on values is a ValueError by design
        pytest.fail(f"unexpected ValueError for {payload!r}: {e}")
    assert reply[0] in (0, 1, 2, 4), reply


@pytest.fixture(scope="module")
def live() -> Iterator[ChildServer]:
    child = ChildServer(max_frame_size=64 * 1024, handshake_timeout=2, frame_timeout=2)
    child.baseline_fds = child.fds()  # type: ignore[attr-defined]
    yield child
    child.close()


streams = st.lists(
    st.one_of(payloads.map(frame), st.binary(min_size=1, max_size=100)), min_size=1, max_size=6
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stream=streams, hello=st.sampled_from(["answered first", "in the first write", "none"]))
def test_live_server_survives_any_byte_stream(
    live: ChildServer, stream: list[bytes], hello: str
) -> None:
    """``hello``: the handshake done before the stream, sent in the same write as its first
    chunk (a new connection's first-read path), or not sent at all."""
    sock = raw_client(live.port, handshake=hello == "answered first")
    sock.settimeout(0.2)
    if hello == "in the first write":
        stream = [frame(MAGIC + bytes([VERSION])) + stream[0], *stream[1:]]
    try:
        for chunk in stream:
            sock.sendall(chunk)
        try:
            while sock.recv(65536):
                pass
        except (TimeoutError, ConnectionError):
            pass
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed the connection: fine, it is allowed to
    finally:
        sock.close()
    assert live.alive(), live.stderr()[-2000:]
    good = TCPStore("127.0.0.1", live.port, timeout=timedelta(seconds=5))
    try:
        good.set("probe", "ok")
        assert good.get("probe") == b"ok"
    finally:
        good.close()


def test_live_server_after_fuzzing_returns_to_its_descriptor_baseline(live: ChildServer) -> None:
    """Runs after the fuzzing above (file order): every fuzzed connection was released,
    including those left inside a frame (closed by the 2 s frame timeout)."""
    baseline = live.baseline_fds  # type: ignore[attr-defined]
    assert wait_until(lambda: live.fds() == baseline, 6), f"{live.fds()} fds, {baseline} at start"
