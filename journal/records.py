"""The journal's record format: framed, checksummed batches of msgpack commands. No I/O.

    record = header(length u32, crc32 u32, first seq u64, count u32, time ns u64) + payload

The payload is a msgpack array of `count` commands with sequence numbers first_seq,
first_seq + 1, ...: one record per group commit (split at MAX_BATCH), encoded in one
call. The time is the wall clock of the commit: the exchange's timestamp for those
commands (and their trades), so replay reproduces timestamps too; matching never reads it. The checksum covers the header's sequence fields and the payload, so a torn or
overwritten record is detected, never misread. Reading stops at the first record that
does not verify.
"""

from __future__ import annotations

import struct
import zlib
from typing import Iterator, Sequence

import msgspec

from protocol.messages import Command

HEADER = struct.Struct("<IIQIQ")
SEQS = struct.Struct("<QIQ")
MAX_BATCH = 4096  # commands per record
MAX_PAYLOAD = 16 * 1024 * 1024  # MAX_BATCH commands are ~0.5 MiB; anything bigger is corruption

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[Command]).decode


def checksum(first_seq: int, count: int, ts_ns: int, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(SEQS.pack(first_seq, count, ts_ns)))


def encode_batch(first_seq: int, cmds: Sequence[Command], ts_ns: int) -> bytes:
    """Records for commands numbered first_seq..., MAX_BATCH commands per record."""
    out = []
    for i in range(0, len(cmds), MAX_BATCH):
        chunk = cmds[i : i + MAX_BATCH]
        payload = _encode(chunk)
        seq = first_seq + i
        out.append(HEADER.pack(len(payload), checksum(seq, len(chunk), ts_ns, payload), seq, len(chunk), ts_ns))
        out.append(payload)
    return b"".join(out)


def record_spans(buf: bytes | bytearray) -> list[tuple[int, int, int, int]]:
    """(offset, end, first seq, count) of each whole record at the start of buf, by their
    headers alone (no checksum, no decoding): where a writer may cut a stream of records."""
    out, offset = [], 0
    while len(buf) - offset >= HEADER.size:
        length, _, first_seq, count, _ = HEADER.unpack_from(buf, offset)
        end = offset + HEADER.size + length
        if end > len(buf):
            break
        out.append((offset, end, first_seq, count))
        offset = end
    return out


def decode_records(
    data: bytes | memoryview, expect_seq: int, skip_through: int = 0
) -> Iterator[tuple[int, int, list[Command] | None, int, int]]:
    """Yield (first seq, count, commands, time ns, end offset) for each valid record.

    Records wholly at or before `skip_through` are checksummed but not decoded (commands
    None): a restart from a snapshot reads past what the snapshot covers at disk speed.

    Stops silently at the first incomplete, invalid or out-of-sequence record; the caller
    compares the last end offset with len(data) to see what was left.
    """
    view = memoryview(data)
    offset, size = 0, len(view)
    while offset + HEADER.size <= size:
        length, crc, first_seq, count, ts_ns = HEADER.unpack_from(view, offset)
        start = offset + HEADER.size
        if length > MAX_PAYLOAD or start + length > size or first_seq != expect_seq:
            return
        payload = view[start : start + length]
        if checksum(first_seq, count, ts_ns, payload) != crc:
            return
        cmds = None
        if first_seq + count - 1 > skip_through:
            try:
                cmds = _decode(payload)
            except msgspec.DecodeError:
                return
            if len(cmds) != count:
                return
        offset = start + length
        yield first_seq, count, cmds, ts_ns, offset
        expect_seq += count
