"""The order journal: every accepted command is on disk (fsync'd) before its ACK.

Group commit: append() only queues the command and returns its sequence number; the
commit loop (`Journal._commit_loop`, a thread) encodes everything queued as one record
(journal/records.py), writes it with one write and one fdatasync, then hands the whole
batch to on_durable on the event loop. Commands that arrive while an fsync is in flight
go into the next one, so one fsync serves them all.

Files: <dir>/seg-<first seq, 20 digits>.tlj, rotated by size. On open, a torn last record
(a crash mid-write) is detected by its checksum and cut off; since a write is not ACKed
before its fsync, nothing cut there was ever acknowledged.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import structlog

from journal.records import decode_records, encode_batch
from protocol.messages import Command

log = structlog.get_logger("journal")

# (first seq, commands, commit time ns, the record bytes as written), now on disk
OnDurable = Callable[[int, list[Command], int, bytes], None]
# A torn tail is at most the last unsynced write; more undecodable bytes than this at the
# end of a segment means damage in the middle, and we refuse to guess.
MAX_TORN_TAIL = 64 * 1024 * 1024


class JournalCorrupt(Exception):
    pass


def segment_paths(directory: Path) -> list[Path]:
    return sorted(directory.glob("seg-*.tlj"))


def first_seq_of(segment: Path) -> int:
    return int(segment.stem.removeprefix("seg-"))


def read_batches(directory: Path, after: int = 0) -> Iterator[tuple[int, list[Command], int]]:
    """(first seq, commands, commit time ns) of every record holding a seq > after, in order.

    Only the last segment may end in an undecodable tail (a torn write, cut off when the
    Journal opens); a gap or damage anywhere else raises JournalCorrupt. The first batch
    may start at or before `after`: callers skip what they have.
    """
    paths = segment_paths(directory)
    expect: int | None = None
    for i, path in enumerate(paths):
        first = first_seq_of(path)
        if expect is not None and first != expect:
            raise JournalCorrupt(f"{path.name}: starts at {first}, expected {expect}")
        expect = first
        if i + 1 < len(paths) and first_seq_of(paths[i + 1]) <= after + 1:
            expect = first_seq_of(paths[i + 1])  # wholly covered: skip without reading
            continue
        data = path.read_bytes()
        end = 0
        for first_seq, count, cmds, ts_ns, end in decode_records(data, first, skip_through=after):  # noqa: B007 (end is read after the loop)
            expect = first_seq + count
            if cmds is not None:
                yield first_seq, cmds, ts_ns
        if end != len(data) and i + 1 < len(paths):
            raise JournalCorrupt(f"{path.name}: undecodable bytes at offset {end}")


def read_journal(directory: Path, after: int = 0) -> Iterator[tuple[int, Command]]:
    """Every command with seq > after, in order, with its sequence number."""
    for first_seq, cmds, _ in read_batches(directory, after):
        for seq, cmd in enumerate(cmds, first_seq):
            if seq > after:
                yield seq, cmd


def _recover_segment(path: Path) -> int:
    """Cut a torn tail off the last segment; return the next sequence number."""
    data = path.read_bytes()
    next_seq, good = first_seq_of(path), 0
    for first_seq, count, _, _, end in decode_records(data, next_seq, skip_through=1 << 62):
        next_seq, good = first_seq + count, end
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
    """Append-only, group-committed journal; `_commit_loop` runs in its own thread.

    The event loop only appends (no I/O); the writer thread waits for work, takes
    everything appended so far, encodes it as one record, writes it, fdatasyncs once and
    hands the batch back to the loop (on_durable).

    Commit pacing: a commit cycle (fsync, thread hand-offs, waking the matching tasks,
    one write per session) costs ~0.3 ms of CPU on these VMs whatever its size. Commits
    start at most once per interval, and the interval grows with the arrival rate
    (rate / RATE_PER_MS_OF_INTERVAL, between min_interval and max_interval): at 10,000
    orders/s about every 0.25 ms (latency first, CPU is plentiful), at 100,000/s every
    2 ms (~200 orders per fsync, so the cycles take ~15% of a core, not all of it).
    """

    RATE_PER_MS_OF_INTERVAL = 50_000

    def __init__(
        self,
        directory: str | Path,
        *,
        segment_bytes: int = 256 * 1024 * 1024,
        min_interval: float = 0.00025,
        max_interval: float = 0.002,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.on_durable: OnDurable | None = None
        self.on_failure = on_failure
        self.segment_bytes = segment_bytes
        self.min_interval, self.max_interval = min_interval, max_interval
        self.interval = min_interval  # the current pacing, adapted after every commit
        self.next_seq = repair(self.directory)
        segments = segment_paths(self.directory)
        self.durable_seq = self.next_seq - 1
        self._path = segments[-1] if segments else self._segment_path(self.next_seq)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(self._fd).st_size
        if not segments:
            _fsync_dir(self.directory)
        self._lock = threading.Lock()  # guards _pending between the loop and the writer
        self._pending: list[Command] = []
        self._work = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self.commits = 0  # fsyncs done, for the benchmark report

    def _segment_path(self, first_seq: int) -> Path:
        return self.directory / f"seg-{first_seq:020d}.tlj"

    def append(self, cmd: Command) -> int:
        """Queue a command for the next group commit; return its sequence number."""
        with self._lock:
            seq = self.next_seq
            self.next_seq = seq + 1
            self._pending.append(cmd)
        if not self._work.is_set():
            self._work.set()
        return seq

    def start(self, on_durable: OnDurable) -> None:
        """Start committing; each durable batch goes to on_durable, on the event loop."""
        self.on_durable = on_durable
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        self._thread = threading.Thread(target=self._commit_loop, name="journal-commit", daemon=True)
        self._thread.start()

    def _commit_loop(self) -> None:
        """The group commit: one write + one fsync for everything appended, then ACK it all."""
        loop, stopped = self._loop, self._stopped
        assert loop is not None and stopped is not None
        last_start = 0.0
        rate = 0.0  # commands per second, smoothed over recent commits
        try:
            while True:
                if not self._closing:
                    self._work.wait()
                wait = last_start + self.interval - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)  # let more arrive: fewer, larger commits
                with self._lock:
                    self._work.clear()
                    batch, self._pending = self._pending, []
                    first_seq = self.next_seq - len(batch)
                if not batch:
                    if self._closing:
                        break
                    continue
                now = time.perf_counter()
                rate += 0.2 * (len(batch) / max(now - last_start, self.min_interval) - rate)
                self.interval = min(max(rate / self.RATE_PER_MS_OF_INTERVAL / 1000, self.min_interval), self.max_interval)
                last_start = now
                ts_ns = time.time_ns()
                record = encode_batch(first_seq, batch, ts_ns)
                self._write(record, first_seq)
                self.commits += 1
                loop.call_soon_threadsafe(self._durable, first_seq, batch, ts_ns, record)
        except BaseException as exc:  # the disk failed: nothing more can be acknowledged
            log.critical("journal_write_failed", error=repr(exc))
            if self.on_failure is not None:
                loop.call_soon_threadsafe(self.on_failure, exc)
        finally:
            loop.call_soon_threadsafe(stopped.set_result, None)

    def _durable(self, first_seq: int, batch: list[Command], ts_ns: int, record: bytes) -> None:
        self.durable_seq = first_seq + len(batch) - 1
        assert self.on_durable is not None
        self.on_durable(first_seq, batch, ts_ns, record)

    def _write(self, buf: bytes, first_seq: int) -> None:
        """Append and sync; rotate to a new segment first if this one is full."""
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
        os.fdatasync(self._fd)
        self._size += len(buf)

    async def close(self) -> None:
        """Commit everything appended so far, then stop the writer and close the file."""
        self._closing = True
        self._work.set()
        if self._stopped is not None:
            await self._stopped
        os.close(self._fd)


def _fsync_dir(directory: Path) -> None:
    """Make a new file's directory entry durable too."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
