"""Takes snapshots while the exchange runs: every `every` commands or `interval` seconds
(whichever comes first, if anything happened), and at shutdown. Together they bound the
journal tail a restart after kill -9 must replay, and so the time to restart.

A snapshot must show the books after exactly the commands up to some seq. The periodic
ones come from the snapshot replica (journal/snapshot_replica.py), a process that follows
the journal with its own copy of the books, so that the server neither pauses nor shares
its memory for them. The server takes one itself when every matching task has drained its
queue (then everything durable is applied): the first after a start and the one at
shutdown copied on the loop and written in a thread (as all are where fork is missing);
periodic ones by a forked child that encodes and writes (fsync'd, renamed) its
copy-on-write view of that moment while the event loop goes on (journal/forked.py), until
the replica has caught up, while it lags, if it stops, and with `--snapshots-by fork`. It never waits for the trade log: the newest
snapshot at or before what the log has whole is kept too, so that a restart can refill
the log's missing rows by replaying from it (journal/refill.py). Older snapshots beyond
`keep` are deleted; with retention "delete", journal segments that snapshot covers too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Awaitable, Callable, Sequence

import structlog

from exchange.book import Book
from exchange.risk import Risk
from journal import forked
from journal.layout import DataDir, first_seq_of, segment_paths
from journal.snapshots import capture, path_for, prune, seq_of, write_snapshot
from journal.tradelog import TradeLog
from telemetry.registry import Telemetry

log = structlog.get_logger("snapshots")

# Seconds a snapshot waits for matching to drain before it stops order intake: under
# sustained overload (clients sending more than matching can take) the queues never
# empty by themselves, and without snapshots a restart would replay without bound.
QUIESCE_PATIENCE = 0.2
# A restart that replayed at least this many commands takes a snapshot at once.
AFTER_RESTART = 10_000
# Periods (`every` commands) the newest snapshot may be behind the journal before the server
# takes one itself although the replica follows: it runs below the server's priority, and a
# client streaming flat out can starve it (the restart's tail must stay bounded).
REPLICA_LAG = 2


class Snapshotter:
    def __init__(
        self,
        data_dir: Path,
        books: dict[str, Book],
        risk: Risk,
        durable_seq: Callable[[], int],
        quiescent: Callable[[], bool],
        tradelog: TradeLog,
        *,
        every: int = 50_000,
        interval: float = 10.0,
        keep: int = 3,
        retention: str = "keep",
        last_seq: int = 0,
        telemetry: Telemetry | None = None,
        hold_intake: Callable[[bool], None] = lambda on: None,
        replica: Sequence[str] | None = None,
    ) -> None:
        self.directory = DataDir(data_dir).snapshots
        self.journal_dir = DataDir(data_dir).journal
        self.books = books
        self.risk = risk
        self.durable_seq = durable_seq
        self.quiescent = quiescent  # every matching task has applied everything durable
        self.tradelog = tradelog
        self.every = every
        self.interval = interval
        self.keep = keep
        self.retention = retention
        self.last_seq = last_seq
        self.hold_intake = hold_intake  # stop reading new commands while matching catches up
        self.replica = replica  # the command that starts the snapshot replica; None: forked children
        self.replica_ready = False  # it has caught up with the journal: the periodic snapshots are its
        # The snapshot being written (by a thread or a forked child), in a task of its own: a
        # cancel of run() at shutdown must not leave it writing the very file that the
        # shutdown's snapshot (the same seq) writes too.
        self.writing: asyncio.Task[Path | None] | None = None
        t = telemetry or Telemetry()
        self._h_capture = t.histogram("snapshot_capture_us", "the event loop's pause for one: a fork (where fork is missing: copying the books and balances)")
        self._h_write = t.histogram("snapshot_write_us", "capturing, hashing, encoding and writing one: in the replica, or in a forked child (or hashing and writing in a thread)")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        last_time = loop.time()
        every = min(self.every, AFTER_RESTART)  # at once on start: a restart that replayed a tail snapshots now,
        first = True  # so that in a crash loop no restart replays what the one before it did
        following: asyncio.Task[None] | None = None  # the replica's
        try:
            while True:
                if not first and self.replica is not None and following is None:
                    following = asyncio.create_task(self._follow_replica())
                if following is not None and following.done():  # it stopped: forked children from now on
                    if not following.cancelled() and (exc := following.exception()) is not None:
                        log.error("snapshot_replica_failed", error=repr(exc)[:300], then="snapshots by forked children")
                    following = self.replica = None
                behind = self.durable_seq() - self.last_seq
                # Until the replica has caught up (a restart's tail, in a crash loop too), and
                # while it lags a whole period behind (starved: overload), forked children.
                due = behind >= every or (behind > 0 and loop.time() - last_time >= self.interval)
                if (due and not self.replica_ready) or behind >= REPLICA_LAG * self.every:
                    # The first on the loop: a forked child copies every page it touches (~5 us
                    # each here), so with a big book it takes seconds, and a server killed every
                    # few seconds never completed one. Right after a restart a pause costs little.
                    if await self.take(fork=not first) is not None:
                        last_time = loop.time()
                        first = False
                    else:  # it failed (logged): not again at once (a fork each time)
                        await asyncio.sleep(self.interval)
                every = self.every
                await asyncio.sleep(min(0.1, self.interval))  # (a second at 40,000 commands/s was most of a restart's tail)
        finally:
            if following is not None:  # shutting down: the replica is stopped before the last snapshot is taken
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)

    async def take(self, fork: bool = False) -> Path | None:
        """Snapshot now: captured on the loop, or (fork) by a forked child. One being written
        (its take canceled) is let finish first."""
        if self.writing is not None and not self.writing.done():
            await asyncio.wait([self.writing])
        started = time.perf_counter()
        try:
            while not self.quiescent():
                if time.perf_counter() - started > QUIESCE_PATIENCE:
                    self.hold_intake(True)  # overloaded: matching never catches up otherwise
                await asyncio.sleep(0.001)
            return await self._take(fork)
        finally:
            self.hold_intake(False)

    async def _take(self, fork: bool) -> Path | None:
        seq = self.durable_seq()
        if seq <= self.last_seq:
            return None  # nothing new since the last one
        started = time.perf_counter()
        orders = sum(len(book.orders) for book in self.books.values())
        written = forked.elsewhere(lambda: capture(self.books, self.risk, seq), lambda captured: write_snapshot(self.directory, captured), fork)
        self.risk.forget_transfers(seq)
        self.hold_intake(False)  # captured: the books may move on
        self._h_capture.record(int((time.perf_counter() - started) * 1e6))
        self.writing = asyncio.ensure_future(self._write(seq, orders, written))
        return await asyncio.shield(self.writing)

    async def _write(self, seq: int, orders: int, written: Awaitable[int]) -> Path | None:
        """Wait for the thread or the child that writes it, then prune."""
        started = time.perf_counter()
        if (code := await written) != 0:
            log.error("snapshot_failed", seq=seq, exit_code=code)
            return None
        self._h_write.record(int((time.perf_counter() - started) * 1e6))
        path = path_for(self.directory, seq)
        self._written(seq, path, orders)
        return path

    async def _follow_replica(self) -> None:
        """The replica process (journal/snapshot_replica.py): a line once it has caught up
        with the journal, then one per snapshot it wrote; until it stops (logged) or this is
        canceled (then it is stopped)."""
        assert self.replica is not None
        proc = await asyncio.create_subprocess_exec(*self.replica, stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).resolve().parent.parent)
        log.info("snapshot_replica_started", pid=proc.pid)
        assert proc.stdout is not None
        try:
            while line := await proc.stdout.readline():
                words = line.split()
                if words[0] == b"ready":
                    self.replica_ready = True
                    log.info("snapshot_replica_ready", seq=int(words[1]))
                    continue
                seq, orders, took = (int(word) for word in words)
                if self.writing is not None and not self.writing.done():
                    await asyncio.wait([self.writing])  # a forked child's, from before it caught up: its prune first
                self._h_write.record(took)
                self.risk.forget_transfers(seq)
                self._written(seq, path_for(self.directory, seq), orders)
        except BaseException:  # canceled (shutting down), or a line it should not have sent
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # (not once its output ended: a kill polls, and reaps it before asyncio can)
            await proc.wait()
            raise
        finally:
            self.replica_ready = False
        code = await proc.wait()
        log.error("snapshot_replica_stopped", exit_code=code, then="snapshots by forked children")

    def _written(self, seq: int, path: Path, orders: int) -> None:
        """A snapshot at seq is on disk: prune the older ones, and the journal they cover."""
        self.last_seq = max(self.last_seq, seq)
        whole = self.tradelog.committed_through
        kept = prune(self.directory, self.keep, anchor_at_most=whole)
        log.info("snapshot_written", seq=seq, file=path.name, orders=orders)
        anchors = [seq_of(p) for p in kept if seq_of(p) <= whole]
        if self.retention == "delete" and len(kept) >= self.keep and anchors:
            self._delete_covered(min(anchors))

    def _delete_covered(self, covered: int) -> None:
        """Delete journal segments wholly at or before `covered` (the oldest kept snapshot
        that a trade log refill could start from)."""
        segments = segment_paths(self.journal_dir)
        for seg, nxt in zip(segments, segments[1:], strict=False):
            if first_seq_of(nxt) - 1 <= covered:
                seg.unlink()
                log.info("journal_segment_deleted", segment=seg.name, covered_by=covered)
