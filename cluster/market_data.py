"""A notifier's input: the market data the engine shards publish (md.>), and snapshots of
what the notifier keeps of it.

A notifier keeps no books. Each symbol's feed (notifier/feed.py) is the L2 and the top
that the symbol's trades, level changes and quotes imply, with the seq of each kind's last
update (the prev links), so following md.> from a snapshot of the feeds gives exactly the
lines `tickline serve` sends, after any restart.

The snapshots are the feeds' states at a stream sequence, one file each,
`feeds-<seq>.msgpack` in <cluster dir>/snapshots/notifier-<n>/: a crc32 of the body, then
the body (msgpack: symbol -> state), written to a temporary name, fsync'd and renamed. The
newest two are kept, and the newest whose checksum holds is loaded.
"""

from __future__ import annotations

import asyncio
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import msgspec
import structlog

from cluster.snapshots import FEEDS, KEEP, Cadence, check_covered, feed_snapshot_paths, feed_snapshot_seq, write_whole
from cluster.stream import Tail
from cluster.wire import decode_market_updates
from protocol.messages import MarketData

log = structlog.get_logger("cluster")
CRC = struct.Struct(">I")


class MarketDataTail(Tail):
    """md.>: every engine shard's market data, in the stream's order (each symbol's is in
    its seq order: one engine shard publishes it)."""

    def __init__(self, js: Any, snapshots: FeedSnapshots) -> None:
        super().__init__(js, "md.>")
        self.snapshots = snapshots

    async def updates(self) -> list[MarketData]:
        """The updates of every message that has arrived (at least one message)."""
        out: list[MarketData] = []
        for inp in await self.batch():
            events = decode_market_updates(inp.data).events
            out += events
            self.mark(inp.seq, len(events))
            self.snapshots.applied(len(events))
        return out


class FeedSnapshots(Cadence):
    """A notifier's snapshots: load() at start, take() every `every` updates (0: never)."""

    def __init__(self, directory: Path, every: int) -> None:
        super().__init__(every)
        self.directory = directory

    def load(self) -> tuple[int, dict[str, Any]] | None:
        """The newest valid snapshot: (the stream sequence it covers, symbol -> feed state),
        or None. Raises StreamCompacted if the stream no longer holds what follows it."""
        for path in feed_snapshot_paths(self.directory):
            data = path.read_bytes()
            if len(data) < CRC.size or CRC.unpack_from(data)[0] != zlib.crc32(data[CRC.size :]):
                log.warning("snapshot_skipped", file=path.name, why="truncated or damaged")
                continue
            seq = feed_snapshot_seq(path)
            check_covered(self.directory.parent, self.directory.name, seq)
            log.info("snapshot_loaded", seq=seq, directory=str(self.directory))
            return seq, msgspec.msgpack.decode(data[CRC.size :])
        check_covered(self.directory.parent, self.directory.name, 0)
        return None

    def take(self, seq: int, states: dict[str, Any]) -> None:
        """states: each feed's, captured now (every message up to seq applied); written in a thread."""
        self.since = 0
        body = msgspec.msgpack.encode(states)
        self.writing = asyncio.create_task(asyncio.to_thread(self._write, seq, CRC.pack(zlib.crc32(body)) + body))

    def _write(self, seq: int, data: bytes) -> None:
        started = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        write_whole(self.directory / f"{FEEDS}{seq:020d}.msgpack", data)
        for old in feed_snapshot_paths(self.directory)[KEEP:]:
            old.unlink(missing_ok=True)
        log.info("snapshot_written", seq=seq, bytes=len(data), seconds=round(time.monotonic() - started, 3))
