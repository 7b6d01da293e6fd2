"""The order journal: every accepted command is on disk (fsync'd) before its ACK.

Group commit: append() only queues the command and returns its sequence number; the
commit loop (`_commit_loop`) encodes everything queued as one record (journal/records.py),
writes it with one write and one fdatasync in a worker thread, then hands the whole batch
to on_durable. Commands that arrive while an fsync is in flight go into the next one, so
one fsync serves them all.

Files: <dir>/seg-<first seq, 20 digits>.tlj, rotated by size. On open, a torn last record
(a crash mid-write) is detected by its checksum and cut off; since a write is not ACKed
before its fsync, nothing cut there was ever acknowledged.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import structlog

from journal.records import decode_records, encode_batch
from protocol.messages import Command

log = structlog.get_logger("journal")

OnDurable = Callable[[int, list[Command]], None]  # (first seq, commands), all now on disk
# A torn tail is at most the last unsynced write; more undecodable bytes than this at the
# end of a segment means damage in the middle, and we refuse to guess.
MAX_TORN_TAIL = 64 * 1024 * 1024


class JournalCorrupt(Exception):
    pass


def segment_paths(directory: Path) -> list[Path]:
    return sorted(directory.glob("seg-*.tlj"))


def _first_seq(path: Path) -> int:
    return int(path.stem.removeprefix("seg-"))


def read_journal(directory: Path, after: int = 0) -> Iterator[tuple[int, Command]]:
    """Every valid command with seq > after, in order, across segments (read-only).

    Only the last segment may end in an undecodable tail (a torn write, cut off when the
    Journal opens); a gap or damage anywhere else raises JournalCorrupt.
    """
    paths = segment_paths(directory)
    expect: int | None = None
    for i, path in enumerate(paths):
        first = _first_seq(path)
        if expect is not None and first != expect:
            raise JournalCorrupt(f"{path.name}: starts at {first}, expected {expect}")
        expect = first
        if i + 1 < len(paths) and _first_seq(paths[i + 1]) <= after + 1:
            expect = _first_seq(paths[i + 1])  # wholly covered: skip without reading
            continue
        data = path.read_bytes()
        end = 0
        for first_seq, cmds, end in decode_records(data, first):
            expect = first_seq + len(cmds)
            if expect - 1 > after:
                for i, cmd in enumerate(cmds):
                    if first_seq + i > after:
                        yield first_seq + i, cmd
        if end != len(data) and i + 1 < len(paths):
            raise JournalCorrupt(f"{path.name}: undecodable bytes at offset {end}")


def _recover_segment(path: Path) -> int:
    """Cut a torn tail off the last segment; return the next sequence number."""
    data = path.read_bytes()
    next_seq, good = _first_seq(path), 0
    for first_seq, cmds, end in decode_records(data, next_seq):
        next_seq, good = first_seq + len(cmds), end
    torn = len(data) - good
    if torn > MAX_TORN_TAIL:
        raise JournalCorrupt(f"{path}: {torn} undecodable bytes after offset {good}")
    if torn:
        log.warning("journal_torn_tail_dropped", segment=path.name, offset=good, dropped_bytes=torn)
        with open(path, "r+b") as f:
            f.truncate(good)
            os.fsync(f.fileno())
    return next_seq


def repair(directory: Path) -> int:
    """Cut a torn tail off the newest segment (if any); return the next sequence number."""
    segments = segment_paths(directory)
    return _recover_segment(segments[-1]) if segments else 1


class Journal:
    def __init__(
        self,
        directory: str | Path,
        on_durable: OnDurable,
        *,
        segment_bytes: int = 256 * 1024 * 1024,
        fsync: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.on_durable = on_durable
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.next_seq = repair(self.directory)
        segments = segment_paths(self.directory)
        self.durable_seq = self.next_seq - 1
        self._path = segments[-1] if segments else self._segment_path(self.next_seq)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(self._fd).st_size
        if not segments:
            _fsync_dir(self.directory)
        self._batch: list[Command] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        # One thread: writes must land in order, and the event loop must not block on fsync.
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self.commits = 0  # fsyncs done, for the benchmark report

    def _segment_path(self, first_seq: int) -> Path:
        return self.directory / f"seg-{first_seq:020d}.tlj"

    @property
    def pending(self) -> int:
        """Commands appended but not yet durable."""
        return self.next_seq - 1 - self.durable_seq

    def append(self, cmd: Command) -> int:
        """Queue a command for the next group commit; return its sequence number."""
        seq = self.next_seq
        self.next_seq = seq + 1
        self._batch.append(cmd)
        self._wake.set()
        return seq

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.get_running_loop().create_task(self._commit_loop(), name="journal-commit")
        return self._task

    async def _commit_loop(self) -> None:
        """The group commit: one write + one fsync for everything buffered, then ACK it all."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._batch:
                if self._closing:
                    return
                continue
            batch, first_seq = self._batch, self.durable_seq + 1
            self._batch = []
            await loop.run_in_executor(self._io, self._write, encode_batch(first_seq, batch), first_seq)
            self.commits += 1
            self.durable_seq = first_seq + len(batch) - 1
            self.on_durable(first_seq, batch)
            if self._batch or self._closing:
                self._wake.set()

    def _write(self, buf: bytes, first_seq: int) -> None:
        """Worker thread: append and sync; rotate to a new segment first if this one is full."""
        if self._size >= self.segment_bytes:
            os.close(self._fd)
            self._path = self._segment_path(first_seq)
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._size = 0
            _fsync_dir(self.directory)
        view = memoryview(buf)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if self.fsync:
            os.fdatasync(self._fd)
        self._size += len(buf)

    async def close(self) -> None:
        """Commit everything appended so far, then stop the commit loop and close the file."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        os.close(self._fd)
        self._io.shutdown(wait=True)


def _fsync_dir(directory: Path) -> None:
    """Make a new file's directory entry durable too."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
