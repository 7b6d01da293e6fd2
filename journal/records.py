"""The journal's record format: framed, sequenced, checksummed msgpack commands. No I/O.

    record = header(length u32, crc32 u32, seq u64) + payload (msgpack of a Command)

The checksum covers the sequence number and the payload, so a torn or overwritten record
is detected, never misread. Records are read until the first one that does not verify.
"""

from __future__ import annotations

import struct
import zlib
from typing import Iterator

import msgspec

from protocol.messages import Command

HEADER = struct.Struct("<IIQ")
SEQ = struct.Struct("<Q")
MAX_PAYLOAD = 64 * 1024  # a command is ~100 bytes; anything bigger is corruption

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Command).decode


def checksum(seq: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(SEQ.pack(seq)))


def encode_record(seq: int, cmd: Command) -> bytes:
    payload = _encode(cmd)
    return HEADER.pack(len(payload), checksum(seq, payload), seq) + payload


def decode_records(data: bytes | memoryview, expect_seq: int | None = None) -> Iterator[tuple[int, Command, int]]:
    """Yield (seq, command, end offset) for each valid record from the start of data.

    Stops silently at the first incomplete or invalid record (or one out of sequence);
    the caller compares the last end offset with len(data) to see what was dropped.
    """
    view = memoryview(data)
    offset, size = 0, len(view)
    while offset + HEADER.size <= size:
        length, crc, seq = HEADER.unpack_from(view, offset)
        start = offset + HEADER.size
        if length > MAX_PAYLOAD or start + length > size:
            return
        payload = view[start : start + length]
        if checksum(seq, payload) != crc or (expect_seq is not None and seq != expect_seq):
            return
        try:
            cmd = _decode(payload)
        except msgspec.DecodeError:
            return
        offset = start + length
        yield seq, cmd, offset
        if expect_seq is not None:
            expect_seq += 1
