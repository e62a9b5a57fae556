"""The on-disk format: a header, then checksummed records appended under an exclusive lock.

File = ``HEADER`` + record*. Record = u32 payload length, u32 CRC-32 of the payload, payload.
Payload = u32 entry count, then per entry: u8 kind (SET or DELETE), u32 key length, key
(UTF-8), u32 value length, value. A record is all-or-nothing: a multi-key write is one record.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

from rdzv_core import StoreError

HEADER = b"RDZVFILE1\n"
SET, DELETE = 1, 2

_RECORD = struct.Struct(">II")
_U32 = struct.Struct(">I")
_ENTRY = struct.Struct(">BI")

Entry = tuple[int, bytes, bytes]


def encode(entries: Iterable[Entry]) -> bytes:
    """One record holding ``entries`` (kind, key, value)."""
    parts: list[bytes] = []
    count = 0
    for kind, key, value in entries:
        parts += [_ENTRY.pack(kind, len(key)), key, _U32.pack(len(value)), value]
        count += 1
    payload = _U32.pack(count) + b"".join(parts)
    return _RECORD.pack(len(payload), zlib.crc32(payload)) + payload


class Corrupt(StoreError):
    """A record in the middle of the file fails its checksum: the file was damaged."""


def decode(data: bytes, path: str, base: int) -> tuple[list[Entry], int]:
    """The entries of the complete records in ``data`` (file offset ``base``) and how many
    bytes they span. An incomplete or failing record at the very end is a torn write and
    ends the scan; a failing record followed by more data raises :class:`Corrupt`."""
    entries: list[Entry] = []
    pos = 0
    end = len(data)
    while end - pos >= _RECORD.size:
        size, crc = _RECORD.unpack_from(data, pos)
        start = pos + _RECORD.size
        stop = start + size
        if stop > end:
            break  # torn: the record was cut short
        payload = data[start:stop]
        if zlib.crc32(payload) != crc:
            if stop == end:
                break  # torn: the last record's bytes were not all written
            raise Corrupt(
                f"The file store {path!r} is damaged: the record at byte {base + pos} fails its "
                "checksum and more records follow it."
            )
        entries.extend(_entries(payload, path, base + pos))
        pos = stop
    return entries, pos


def _entries(payload: bytes, path: str, offset: int) -> list[Entry]:
    try:
        (count,) = _U32.unpack_from(payload, 0)
        pos = 4
        out = []
        for _ in range(count):
            kind, key_size = _ENTRY.unpack_from(payload, pos)
            pos += _ENTRY.size
            key = payload[pos : pos + key_size]
            pos += key_size
            (value_size,) = _U32.unpack_from(payload, pos)
            pos += 4
            value = payload[pos : pos + value_size]
            pos += value_size
            if kind not in (SET, DELETE) or len(value) != value_size or len(key) != key_size:
                raise ValueError("bad entry")
            out.append((kind, key, value))
        if pos != len(payload):
            raise ValueError("trailing bytes")
        return out
    except (struct.error, ValueError) as e:
        raise Corrupt(
            f"The file store {path!r} is damaged: the record at byte {offset} passes its "
            f"checksum but does not parse ({e})."
        ) from e
