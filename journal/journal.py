"""The order journal: every accepted command is on disk (fsync'd) before its ACK.

Group commit: append() only queues the command and returns its sequence number; once per
loop iteration what was queued goes as one record (journal/records.py) to the writer
process (journal/journal_writer.py), which writes everything that has arrived with one
write and one fdatasync and says so; then the batches go to on_durable on the event loop.
Commands that arrive while an fsync is in flight go into the next one, so one fsync
serves them all.

Files: <dir>/seg-<first seq, 20 digits>.tlj, rotated by size. On open, a torn last record
(a crash mid-write) is detected by its checksum and cut off; since a write is not ACKed
before its fsync, nothing cut there was ever acknowledged.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Callable, Iterator, cast

import structlog

from journal.journal_writer import REPLY
from journal.layout import first_seq_of, fsync_dir, segment_path, segment_paths
from journal.records import HEADER, MAX_BATCH, MAX_PAYLOAD, decode_records, encode_batch
from protocol.messages import Command
from telemetry.registry import Telemetry

log = structlog.get_logger("journal")

# (first seq, commands, commit time ns of the last, the records as written), now on disk
OnDurable = Callable[[int, list[Command], int, bytes], None]
# A torn tail is at most the last unsynced write; more undecodable bytes than this at the
# end of a segment means damage in the middle, and we refuse to guess.
MAX_TORN_TAIL = 64 * 1024 * 1024
# Commands that go to the writer at once without waiting for the end of the loop step: under
# overload a step is long (many clients' input), and the disk need not wait for all of it.
SEND_AT = 256


class JournalCorrupt(Exception):
    pass


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


Batch = tuple[int, list[Command], int]  # (first seq, commands, commit time ns)


class JournalTail:
    """Follows the journal while its writer appends: the batches after `after`, in order, as
    they are written (not necessarily synced: sync() makes what was read durable). The
    snapshot replica reads it (journal/snapshot_replica.py).

    The writer only ever appends whole records, and makes the next segment (named by its
    first seq) after its last write to the one before: a partial record at the end is one
    being written, and once the next segment exists, what this one holds is final."""

    CHUNK = 8 * 1024 * 1024  # read at most this much per call: a long tail comes in pieces

    def __init__(self, directory: Path, after: int) -> None:
        self.directory = directory
        self.after = after  # records wholly at or before it are checksummed, not decoded
        self.fd: int | None = None
        self.name = ""
        self.expect = 0  # the first seq of the next record
        self.pending = b""  # read, not yet a whole record

    def read(self) -> list[Batch]:
        """Whole batches written since the last call (at most CHUNK bytes of them); [] if none."""
        if self.fd is None:
            segments = [p for p in segment_paths(self.directory) if first_seq_of(p) <= self.after + 1]
            if not segments:
                return []
            self._open(segments[-1])
        assert self.fd is not None
        chunk = os.read(self.fd, self.CHUNK)
        if not chunk:
            following = segment_path(self.directory, self.expect)
            if not following.exists():
                return []
            chunk = os.read(self.fd, self.CHUNK)  # what was written just before it was made
            if not chunk:
                if self.pending:
                    raise JournalCorrupt(f"{self.name}: {len(self.pending)} undecodable bytes at the end, and {following.name} follows")
                self._open(following)
                return self.read()
        return self._decode(self.pending + chunk if self.pending else chunk)

    def sync(self) -> None:
        """Everything read so far is on disk (the writer synced the segments before this one)."""
        if self.fd is not None:
            os.fdatasync(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _open(self, path: Path) -> None:
        self.close()
        self.fd = os.open(path, os.O_RDONLY)
        self.name, self.expect, self.pending = path.name, first_seq_of(path), b""

    def _decode(self, data: bytes) -> list[Batch]:
        out: list[Batch] = []
        end = 0
        for first_seq, count, cmds, ts_ns, end in decode_records(data, self.expect, skip_through=self.after):  # noqa: B007 (end is read after the loop)
            self.expect = first_seq + count
            if cmds is not None:
                out.append((first_seq, cmds, ts_ns))
        self.pending = data[end:]
        if len(self.pending) > MAX_PAYLOAD + HEADER.size:
            raise JournalCorrupt(f"{self.name}: undecodable bytes before seq {self.expect}")
        return out


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
    """Append-only, group-committed journal, written by its own process.

    The event loop appends (no I/O); once per loop step (or every SEND_AT commands) what was appended is
    encoded as one record and sent down a pipe to the writer process
    (journal/journal_writer.py), which writes whatever has arrived with one write and
    one fdatasync and answers how many records are now durable. That answer arrives as
    an ordinary read on the loop: the batches it covers go to on_durable, in order.
    Nothing here waits for the disk, and no thread of ours competes for the GIL.

    Commit pacing lives in the writer: a commit cycle costs the loop a read and a
    release of replies (~0.1-0.3 ms), so at high rates the writer lets a cycle start at
    most once per interval, growing with the arrival rate (journal_writer.Pacing).
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        segment_bytes: int = 256 * 1024 * 1024,
        on_failure: Callable[[BaseException], None] | None = None,
        telemetry: Telemetry | None = None,
        inherit_fds: tuple[int, ...] = (),
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.on_durable: OnDurable | None = None
        self.on_failure = on_failure
        self.segment_bytes = segment_bytes
        # Kept open by the writer for its whole life: the data directory's lock, so that no
        # new server can start while a dying one's writer still appends.
        self.inherit_fds = inherit_fds
        self.next_seq = repair(self.directory)
        segments = segment_paths(self.directory)
        self.durable_seq = self.next_seq - 1
        self._path = segments[-1] if segments else segment_path(self.directory, self.next_seq)
        if not segments:
            self._path.touch()
            fsync_dir(self.directory)
        self._pending: list[Command] = []
        self._first_at = 0.0  # when the oldest pending command was appended
        # Sent and not yet durable, oldest first: (records sent through this batch, first seq, commands, time, record, sent at)
        self._inflight: deque[tuple[int, int, list[Command], int, bytes, float]] = deque()
        self._records_sent = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.SubprocessTransport | None = None
        self._pipe: asyncio.WriteTransport | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._closing = False
        self.commits = 0  # fsyncs done, for the benchmark report
        # The commit cycle, step by step (docs/PERFORMANCE.md).
        t = telemetry or Telemetry()
        self._h_queued = t.histogram("journal_queued_us", "first append of a batch -> sent to the writer")
        self._h_commit = t.histogram("journal_commit_us", "sent to the writer -> durable, back on the loop")
        self._h_write = t.histogram("journal_write_us", "one write (in the writer)")
        self._h_sync = t.histogram("journal_fdatasync_us", "one fdatasync (in the writer)")
        self._h_durable = t.histogram("journal_on_durable_us", "the event loop's work on a durable batch")
        self._h_batch = t.histogram("journal_batch_orders", "commands per fsync")
        t.gauge("journal_backlog_orders", lambda: self.next_seq - 1 - self.durable_seq)

    def append(self, cmd: Command) -> int:
        """Queue a command for the next group commit; return its sequence number."""
        seq = self.next_seq
        self.next_seq = seq + 1
        pending = self._pending
        if not pending:
            self._first_at = time.perf_counter()
            if self._loop is not None:
                self._loop.call_soon(self._send)  # once this loop iteration's reads are in
        pending.append(cmd)
        if len(pending) >= SEND_AT:
            self._send()
        return seq

    async def start(self, on_durable: OnDurable) -> None:
        """Start the writer process; each durable batch goes to on_durable, on the event loop."""
        self.on_durable = on_durable
        self._loop = loop = asyncio.get_running_loop()
        self._stopped = loop.create_future()
        self._transport, _ = await loop.subprocess_exec(
            lambda: _WriterPipes(self), sys.executable, "-m", "journal.journal_writer",
            str(self._path), str(self._path.stat().st_size), str(self.segment_bytes),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, pass_fds=self.inherit_fds,
            cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        self._pipe = cast(asyncio.WriteTransport, self._transport.get_pipe_transport(0))
        if self._pending:
            self._send()

    def _send(self) -> None:
        """Everything appended since the last send, as one record, down the pipe."""
        batch = self._pending
        if not batch or self._pipe is None or self._pipe.is_closing():
            return
        self._pending = []
        first_seq = self.next_seq - len(batch)
        now = time.perf_counter()
        self._h_queued.record(int((now - self._first_at) * 1e6))
        ts_ns = time.time_ns()
        record = encode_batch(first_seq, batch, ts_ns)
        self._records_sent += -(-len(batch) // MAX_BATCH)  # encode_batch splits at MAX_BATCH
        self._inflight.append((self._records_sent, first_seq, batch, ts_ns, record, now))
        self._pipe.write(record)

    def _durable(self, reply: bytes) -> None:
        """The writer's answers: every batch they cover goes to on_durable in one call (the
        loop's work per durable batch, releasing replies and writing to every waiting
        session, is then done once per answer, not once per record sent)."""
        now = time.perf_counter()
        inflight = self._inflight
        cmds: list[Command] = []
        records: list[bytes] = []
        first_seq = ts_ns = 0
        for durable, _, write_us, sync_us in REPLY.iter_unpack(reply):
            self.commits += 1
            self._h_write.record(write_us)
            self._h_sync.record(sync_us)
            commands = len(cmds)
            while inflight and inflight[0][0] <= durable:
                _, seq, batch, ts_ns, record, sent_at = inflight.popleft()
                self._h_commit.record(int((now - sent_at) * 1e6))
                if not cmds:
                    first_seq = seq
                cmds += batch
                records.append(record)
            self._h_batch.record(len(cmds) - commands)
        if cmds:
            self.durable_seq = first_seq + len(cmds) - 1
            assert self.on_durable is not None
            self.on_durable(first_seq, cmds, ts_ns, records[0] if len(records) == 1 else b"".join(records))
        self._h_durable.record(int((time.perf_counter() - now) * 1e6))

    def _exited(self, code: int | None) -> None:
        """The writer process ended: after close() that is the plan; otherwise the disk (or
        the process) failed and nothing more can be acknowledged."""
        if not self._closing or self._inflight:
            exc = RuntimeError(f"the journal writer exited ({code}) with {len(self._inflight)} batches not durable")
            log.critical("journal_write_failed", error=str(exc))
            if self.on_failure is not None:
                self.on_failure(exc)
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    async def close(self) -> None:
        """Commit everything appended so far, then stop the writer."""
        self._closing = True
        self._send()
        if self._pipe is not None and not self._pipe.is_closing():
            self._pipe.close()  # the writer commits what it has, then sees the end
        if self._stopped is not None:
            await self._stopped
        if self._transport is not None:
            self._transport.close()


class _WriterPipes(asyncio.SubprocessProtocol):
    """The writer process's stdout (replies) and its exit, to the Journal."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.partial = b""

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        data = self.partial + data if self.partial else data
        whole = len(data) - len(data) % REPLY.size
        self.partial = data[whole:]
        if whole:
            self.journal._durable(data[:whole])

    def process_exited(self) -> None:
        transport = self.journal._transport
        self.journal._exited(transport.get_returncode() if transport is not None else None)
