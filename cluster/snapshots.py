"""Snapshots of a cluster role's state at one stream sequence: a restarted role loads the
newest valid one and reads its input from the message after it, instead of from the
stream's first message (docs/SCALING.md).

A shard's or a gateway's (RoleSnapshots) are `tickline serve`'s files (journal/snapshots.py:
books and balances, checksummed, their state hash checked on load, written atomically),
named by the stream sequence they cover, in <cluster dir>/snapshots/<role>-<index>/. A
role's own counters (a risk shard's ids given and settlements seen) go in snap-<seq>.json
beside it, written first: a snapshot without its counters is not used. Beside the roles'
directories, `dropped-through` says how far `tickline cluster compact` dropped the stream
(cluster/retention.py): a role whose snapshots do not reach it refuses to start.

A role that keeps no books has a small state (StateSnapshots): a notifier its feeds, the
trade log only how far it has read. Those are `<kind>-<seq>.msgpack`, a crc32 of the body
then the body (msgpack), written the same way.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Any, Awaitable, Callable

import msgspec
import structlog

from exchange.book import Book
from exchange.engine import Engine
from exchange.instruments import Instrument
from exchange.risk import Risk
from journal import forked
from journal.snapshots import Captured, capture, newest_valid, path_for, prune, seq_of, snapshot_paths, write_snapshot

log = structlog.get_logger("cluster")
CRC = struct.Struct(">I")
KEEP = 2  # snapshots kept per role (the newest may be the one a crash cut short)

DROPPED = "dropped-through"  # in <cluster dir>/snapshots/: the stream sequence dropped through


class StreamCompacted(Exception):
    """A role's snapshots do not reach what was dropped from the stream."""


def counters_path(directory: Path, seq: int) -> Path:
    """A role's counters for its snapshot at seq (written before it: without it, not used)."""
    return path_for(directory, seq).with_suffix(".json")


def kept_snapshots(directory: Path) -> list[int]:
    """The stream sequences of a role's usable snapshots (those with their counters file;
    a role without books: its state's)."""
    books = [seq for seq in map(seq_of, snapshot_paths(directory)) if counters_path(directory, seq).exists()]
    return books + list(map(state_snapshot_seq, state_snapshot_paths(directory)))


def state_snapshot_paths(directory: Path) -> list[Path]:
    """A role's small-state snapshots (<kind>-<seq>.msgpack), newest first."""
    return sorted(directory.glob("*.msgpack"), key=state_snapshot_seq, reverse=True) if directory.exists() else []


def state_snapshot_seq(path: Path) -> int:
    return int(path.stem.rsplit("-", 1)[1])


def dropped_through(snapshots_root: Path) -> int:
    path = snapshots_root / DROPPED
    return int(json.loads(path.read_text())["through"]) if path.exists() else 0


def check_covered(snapshots_root: Path, role: str, loaded: int) -> None:
    """Raise unless a role starting from stream sequence `loaded` (0: no snapshot) has its
    whole input in the stream."""
    through = dropped_through(snapshots_root)
    if loaded < through:
        raise StreamCompacted(
            f"{role}: the stream's messages through {through} were dropped (tickline cluster compact) and this role's "
            f"snapshot covers {'nothing' if loaded == 0 else f'only through {loaded}'}: copy the newest snapshot of another "
            f"role of the same kind (an engine shard's: the same shard's) into {snapshots_root / role}"
        )


def record_dropped(snapshots_root: Path, through: int) -> None:
    snapshots_root.mkdir(parents=True, exist_ok=True)
    _write_json(snapshots_root / DROPPED, {"through": through})


def write_whole(path: Path, data: bytes) -> None:
    """Written to a temporary name, fsync'd, renamed: whole or not there."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_whole(path, json.dumps(data).encode())


class Cadence:
    """When a role's next snapshot is due: once `every` units (commands; a notifier's
    market-data updates) are applied since the last one (0: never), one write at a time."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.since = 0  # units applied since the last snapshot (or the start)
        self.writing: asyncio.Task[None] | None = None

    def applied(self, units: int) -> None:
        self.since += units

    def due(self) -> bool:
        return self.every > 0 and self.since >= self.every and (self.writing is None or self.writing.done())

    async def close(self) -> None:
        if self.writing is not None and not self.writing.done():
            await self.writing


class RoleSnapshots(Cadence):
    """One role's snapshots: load() at start, then due() and take() after its batches."""

    def __init__(self, directory: Path, instruments: dict[str, Instrument], every: int) -> None:
        super().__init__(every)
        self.directory, self.instruments = directory, instruments

    def load(self) -> tuple[int, Engine, dict[str, Any]] | None:
        """The newest valid snapshot: (the stream sequence it covers, its books and
        balances, the role's counters), or None (then the role reads from the start).
        Raises StreamCompacted if the stream no longer holds every message after it."""
        started = time.monotonic()
        for snap, engine in newest_valid(self.directory, self.instruments):
            extra = counters_path(self.directory, snap.seq)
            if not extra.exists():
                log.warning("snapshot_skipped", seq=snap.seq, why="its counters file is missing")
                continue
            check_covered(self.directory.parent, self.directory.name, snap.seq)
            log.info("snapshot_loaded", seq=snap.seq, directory=str(self.directory), seconds=round(time.monotonic() - started, 3))
            return snap.seq, engine, json.loads(extra.read_text())
        check_covered(self.directory.parent, self.directory.name, 0)
        return None

    def take(self, seq: int, books: dict[str, Book], risk: Risk | None, extra: dict[str, Any]) -> None:
        """Every message up to seq applied, none after: captured and written by a forked child,
        which sees the role's memory as it is now (copy-on-write). The loop pauses for the
        fork, not for the capture: that is ~1 us per resting order or hold (a risk shard's
        holds 0.9 s, a book's orders 1.0 s with a million), and every ACK behind it waited.
        Where the system cannot fork: captured here, written in a thread."""
        self.since = 0
        counters = json.dumps(extra).encode()  # (now: the dict goes on changing)
        started = time.monotonic()
        written = forked.elsewhere(lambda: capture(books, risk, seq, all_holds=True), lambda captured: self._write_files(captured, counters))
        self.writing = asyncio.create_task(self._wait(written, seq, started, time.monotonic() - started))

    async def _wait(self, written: Awaitable[int], seq: int, started: float, paused: float) -> None:
        if (code := await written) == 0:
            log.info("snapshot_written", seq=seq, seconds=round(time.monotonic() - started, 3), loop_paused_ms=round(paused * 1000, 1))
        else:  # (the next one is due after as many commands again)
            log.warning("snapshot_failed", seq=seq, exit_code=code)

    def _write_files(self, captured: Captured, extra: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_whole(counters_path(self.directory, captured[0]), extra)
        write_snapshot(self.directory, captured)
        kept = {counters_path(self.directory, seq_of(p)) for p in prune(self.directory, KEEP)}
        for old in self.directory.glob("snap-*.json"):
            if old not in kept:
                old.unlink(missing_ok=True)


class StateSnapshots(Cadence):
    """The snapshots of a role that keeps no books: load() at start, take() every `every`
    units (0: never). kind names the files: feeds (a notifier), through (the trade log)."""

    def __init__(self, directory: Path, every: int, kind: str) -> None:
        super().__init__(every)
        self.directory, self.kind = directory, kind

    def load(self) -> tuple[int, Any] | None:
        """The newest valid snapshot: (the stream sequence it covers, the state), or None.
        Raises StreamCompacted if the stream no longer holds what follows it."""
        for path in state_snapshot_paths(self.directory):
            data = path.read_bytes()
            if len(data) < CRC.size or CRC.unpack_from(data)[0] != zlib.crc32(data[CRC.size :]):
                log.warning("snapshot_skipped", file=path.name, why="truncated or damaged")
                continue
            seq = state_snapshot_seq(path)
            check_covered(self.directory.parent, self.directory.name, seq)
            log.info("snapshot_loaded", seq=seq, directory=str(self.directory))
            return seq, msgspec.msgpack.decode(data[CRC.size :])
        check_covered(self.directory.parent, self.directory.name, 0)
        return None

    def take(self, seq: int, state: Any, before_write: Callable[[], Awaitable[None]] | None = None) -> None:
        """state: captured now (every message up to seq applied); written in a thread, after
        before_write() (the trade log: once its rows up to seq are committed)."""
        self.since = 0
        body = msgspec.msgpack.encode(state)
        self.writing = asyncio.create_task(self._write(seq, CRC.pack(zlib.crc32(body)) + body, before_write))

    async def _write(self, seq: int, data: bytes, before_write: Callable[[], Awaitable[None]] | None) -> None:
        if before_write is not None:
            await before_write()
        await asyncio.to_thread(self._write_file, seq, data)

    def _write_file(self, seq: int, data: bytes) -> None:
        started = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        write_whole(self.directory / f"{self.kind}-{seq:020d}.msgpack", data)
        for old in state_snapshot_paths(self.directory)[KEEP:]:
            old.unlink(missing_ok=True)
        log.info("snapshot_written", seq=seq, bytes=len(data), seconds=round(time.monotonic() - started, 3))
