"""The wire protocol: length-prefixed binary frames (documented in the package README).

Every message is a frame: a 4-byte big-endian length, then that many bytes. Strings and
values inside a frame are ``u32 length + bytes``; integers are big-endian.
"""

from __future__ import annotations

import importlib.metadata
import re
import struct
from collections.abc import Sequence

MAGIC = b"RDZV"
#: The protocol version this client speaks.
VERSION = 3
#: The client versions this server accepts; any other is refused with
#: :func:`version_refusal`'s message. Version 3 adds append, list_keys and the queue
#: operations to version 2, whose clients are served as before.
ACCEPTED_VERSIONS = frozenset({2, 3})
#: The first rdzv-plugin-tcp release that speaks each protocol version.
FIRST_RELEASE = {1: "0.1.0", 2: "0.2.0", 3: "0.3.0"}
AUTH_CONTEXT = b"rdzv-tcp-auth-v1"
NONCE_SIZE = 32
SERVER_ID_SIZE = 16
#: The largest frame accepted before the handshake completes (hello and auth answer).
HANDSHAKE_FRAME_LIMIT = 64

# Requests: one op byte, then the op's fields.
SET, GET, ADD, CAS, WAIT, CHECK, DELETE, NUM_KEYS, MULTI_GET, MULTI_SET, PING = range(1, 12)
# Version 3:
APPEND, LIST_KEYS, QUEUE_PUSH, QUEUE_POP, QUEUE_LEN = range(12, 17)
OP_NAMES = {
    SET: "set", GET: "get", ADD: "add", CAS: "compare_set", WAIT: "wait", CHECK: "check",
    DELETE: "delete_key", NUM_KEYS: "num_keys", MULTI_GET: "multi_get",
    MULTI_SET: "multi_set", PING: "ping", APPEND: "append", LIST_KEYS: "list_keys",
    QUEUE_PUSH: "queue_push", QUEUE_POP: "queue_pop", QUEUE_LEN: "queue_len",
}  # fmt: skip
PING_FRAME = b"\x00\x00\x00\x01" + bytes([PING])

# Replies: one status byte, then the op's result. ALIVE answers a ping, also while the
# connection waits for a parked read's reply.
OK, TIMEOUT, VALUE_ERROR, FAILED, ALIVE = range(5)

U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
I64 = struct.Struct(">q")
MAX_TIMEOUT_MS = 2**64 - 1
#: Longest wait a server honours (about 31 years); longer timeouts are clamped to it.
MAX_WAIT_SECONDS = 10**9


class ProtocolError(Exception):
    """A frame that does not follow the protocol."""


def frame(payload: bytes) -> bytes:
    """``payload`` with its length prefix."""
    return U32.pack(len(payload)) + payload


def field(data: bytes) -> bytes:
    """One length-prefixed field."""
    return U32.pack(len(data)) + data


def fields(items: Sequence[bytes]) -> bytes:
    """A count followed by that many fields."""
    return U32.pack(len(items)) + b"".join(U32.pack(len(i)) + i for i in items)


_REFUSAL = re.compile(r"unsupported protocol version (\d+); this server speaks (\d+)")


def version_refusal(client_version: int) -> str:
    """The server's refusal of a client speaking ``client_version``. It starts with the
    words every release's server has used (``unsupported protocol version X; this server
    speaks Y``, which :func:`refused_versions` reads back) and says what to upgrade, for a
    client too old to explain it itself."""
    newest = max(ACCEPTED_VERSIONS)
    if client_version < min(ACCEPTED_VERSIONS):
        advice = f"upgrade rdzv-plugin-tcp on the client to {FIRST_RELEASE[newest]} or later"
    else:
        advice = (
            "upgrade rdzv-plugin-tcp where this server runs (rdzv serve or the hosting node) "
            f"to a release that speaks version {client_version}"
        )
    accepted = ", ".join(str(v) for v in sorted(ACCEPTED_VERSIONS))
    return (
        f"unsupported protocol version {client_version}; this server speaks {newest} "
        f"(accepts {accepted}): {advice}"
    )


def refused_versions(message: str) -> tuple[int, int] | None:
    """``(client version, server version)`` when ``message`` is a server's refusal of the
    client's protocol version (from any release), else None."""
    match = _REFUSAL.match(message)
    return (int(match[1]), int(match[2])) if match else None


def version_mismatch(where: str, server_version: int) -> str:
    """One line for a server that speaks another protocol version: both versions, and
    which side to upgrade."""
    try:
        mine = f"rdzv-plugin-tcp {importlib.metadata.version('rdzv-plugin-tcp')}"
    except importlib.metadata.PackageNotFoundError:
        mine = "rdzv-plugin-tcp"
    if server_version < VERSION:
        advice = (
            "upgrade rdzv-plugin-tcp where the server runs (rdzv serve or the hosting node) "
            f"to {FIRST_RELEASE[VERSION]} or later"
        )
    else:
        first = FIRST_RELEASE.get(server_version)
        advice = "upgrade rdzv-plugin-tcp on this client" + (
            f" to {first} or later" if first else ""
        )
    return (
        f"The TCP store at {where} speaks protocol version {server_version} and this client "
        f"({mine}) speaks version {VERSION}: {advice}."
    )


def hello_reply(version: int, server_id: bytes, max_frame_size: int, nonce: bytes | None) -> bytes:
    """The server's handshake reply payload: ``"RDZV" u8 version u8 auth`` then the
    16-byte server instance id, the u32 frame limit and, with auth, the 32-byte nonce. The
    version is the client's own (every accepted client checks that it is)."""
    auth = bytes([version, 1 if nonce else 0])
    return MAGIC + auth + server_id + U32.pack(max_frame_size) + (nonce or b"")


def key_and_int(payload: bytes | memoryview, number: struct.Struct) -> tuple[bytes, int]:
    """``(key, integer)`` of a request that is exactly an op byte, a key field and one
    ``number``: the hot requests (get, add) parsed in one step. Anything else is a
    ProtocolError."""
    try:
        end = 5 + U32.unpack_from(payload, 1)[0]
        value: int = number.unpack_from(payload, end)[0]
    except struct.error:
        raise ProtocolError(f"frame truncated: a {len(payload)}-byte request") from None
    if end + number.size != len(payload):
        raise ProtocolError(f"{len(payload) - end - number.size} unexpected trailing bytes")
    return bytes(payload[5:end]), value


def key_and_rest(payload: bytes | memoryview) -> tuple[bytes, bytes]:
    """``(key, the bytes after it)`` of a request that is an op byte, a key field and a
    value (set)."""
    try:
        end = 5 + U32.unpack_from(payload, 1)[0]
    except struct.error:
        raise ProtocolError(f"frame truncated: a {len(payload)}-byte request") from None
    if end > len(payload):
        raise ProtocolError(f"frame truncated: needed {end} bytes, have {len(payload)}")
    return bytes(payload[5:end]), bytes(payload[end:])


class Reader:
    """Reads fields from one frame's payload; any overrun is a ProtocolError.

    The payload may be a memoryview of a receive buffer: every field comes back as its own
    ``bytes`` (one copy), so nothing read keeps the buffer pinned.
    """

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | memoryview, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def _truncated(self, end: int) -> ProtocolError:
        return ProtocolError(f"frame truncated: needed {end} bytes, have {len(self.data)}")

    def _take(self, size: int) -> bytes:
        start = self.pos
        end = start + size
        if end > len(self.data):
            raise self._truncated(end)
        self.pos = end
        return bytes(self.data[start:end])

    def _unpack(self, fmt: struct.Struct) -> int:
        pos = self.pos
        try:
            value: int = fmt.unpack_from(self.data, pos)[0]
        except struct.error:
            raise self._truncated(pos + fmt.size) from None
        self.pos = pos + fmt.size
        return value

    def u32(self) -> int:
        return self._unpack(U32)

    def u64(self) -> int:
        return self._unpack(U64)

    def i64(self) -> int:
        return self._unpack(I64)

    def u8(self) -> int:
        pos = self.pos
        if pos >= len(self.data):
            raise self._truncated(pos + 1)
        self.pos = pos + 1
        return self.data[pos]

    def field(self) -> bytes:
        return self._take(self._unpack(U32))

    def fields(self) -> list[bytes]:
        count = self.u32()
        if count > (len(self.data) - self.pos) // 4:
            raise ProtocolError(f"field count {count} exceeds the frame")
        return [self.field() for _ in range(count)]

    def rest(self) -> bytes:
        return self._take(len(self.data) - self.pos)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolError(f"{len(self.data) - self.pos} unexpected trailing bytes")
