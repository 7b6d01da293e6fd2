"""The trade log and the order audit log: SQLite in WAL mode, written in batches.

Derived data: every row can be rebuilt from the journal. Trade ids and order ids are
deterministic, both tables key on them, and rows go in with INSERT OR IGNORE, so recovery
(replaying the journal tail after a snapshot) inserts exactly the rows that are missing.

The server only hands over: journal batches (accepted orders), trades from the matching
tasks, refused orders from the gateway. The writer task (`run`) sends what accumulated to
a writer process (journal/tradelog_writer.py) as one msgpack frame every BATCH_WINDOW;
that process builds the rows and commits one transaction per frame. Nothing upstream ever
waits for it, snapshots included. What waits is bounded (`max_rows`); past the bound rows
are dropped and the log is marked behind from the first dropped command. The file records
how far it is whole (`through`); a restart from a snapshot newer than that refills the
rows in between in a process of its own (journal/refill.py) while the server serves
(docs/OPERATIONS.md). Gateway refusals are not journaled; their audit rows are best effort.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import deque
from pathlib import Path
from typing import Callable, Sequence, cast

import msgspec
import structlog

from exchange.instruments import Instrument
from journal.records import encode_batch
from journal.tradelog_writer import LENGTH, UNITS, Frame, Piece, committed_through, first_frame, to_upgrade
from protocol.messages import REPORT_TYPES, Command, Event, Refusal, Report, Trade
from telemetry.probes import raised_at
from telemetry.registry import Telemetry

log = structlog.get_logger("tradelog")

# Seconds between frames: few, large transactions. Each commit rewrites the last page of
# every B-tree it touched (seven) into the WAL: 0.1 s rather than 0.02 took the writer
# from ~33 to ~27 us per request at 10,000 orders/s. Whoever waits for the log (a query,
# shutdown) cuts the window short: it never waits 0.1 s for nothing.
BATCH_WINDOW = 0.1
FRAME_UNITS = 8_000  # rows per frame (one writer transaction): joining its encoded pieces is a copy
# Refusals are encoded together, but never more than this many in one piece: while the
# writer process is behind (its frames wait in drain), a flood of them kept coming and was
# encoded at the next tick as one piece on the event loop: 86,000 of them, 13 MB, stopped
# the loop for 155 ms (and its frame's copy and pipe write for ~50 ms more each).
REFUSALS_PER_PIECE = 500


def split(events: Sequence[Event]) -> tuple[list[Trade], list[Report]]:
    """The trades and the execution reports among a matching step's events."""
    trades = [e for e in events if type(e) is Trade]
    reports = [e for e in events if type(e) in REPORT_TYPES]
    return trades, cast(list[Report], reports)  # filtered by exact type


def replayed_piece(first_seq: int, cmds: list[Command], ts_ns: int, events: list[Event]) -> tuple[int, Piece]:
    """The rows of a replayed journal batch as one hand-over, and the units it counts as
    (recovery hands it to the writer, journal/refill.py writes it itself)."""
    trades, reports = split(events)
    return len(cmds) + len(trades) + len(reports), Piece([(first_seq, encode_batch(first_seq, cmds, ts_ns))], trades, reports)


class TradeLog:
    def __init__(
        self, path: str | Path, instruments: dict[str, Instrument], *, max_rows: int = 500_000, telemetry: Telemetry | None = None, held: bool = False
    ) -> None:
        self.path = Path(path)
        # held: nothing goes to the writer process until release() (or until something waits
        # for it): a restart's replayed rows then wait until the server listens, instead of
        # taking CPU from rebuilding the books on a machine with few cores.
        self._released = asyncio.Event()
        if not held:
            self._released.set()
        self.instruments = instruments
        self.max_rows = max_rows
        self._proc: asyncio.subprocess.Process | None = None
        self._acks: asyncio.Task[None] | None = None
        # What waits for the writer, already encoded (one Piece per hand-over): bytes are not
        # objects the garbage collector traces, however far behind the writer falls, and no
        # frame is ever encoded whole on the event loop. (units, first journal seq, piece)
        self._queue: deque[tuple[int, int | None, bytes]] = deque()
        self._refusals: list[tuple[int, Refusal]] = []  # at most REFUSALS_PER_PIECE
        self._unencodable: Exception | None = None  # a piece failed to encode: run() raises it
        self._pending = 0  # units waiting to be sent
        self._wake = asyncio.Event()
        self._hurry = asyncio.Event()  # someone waits for the log: send now, not at the window's end
        self._closing = False
        self._encode = msgspec.msgpack.Encoder().encode
        self.behind_from: int | None = None  # first command whose rows were dropped
        self.failed: str | None = None  # run() raised (a bug): what, for whoever waits for the log
        self.queued = 0  # units handed over so far (a command or a trade or a refusal each)
        self.committed = 0  # units the writer process has committed (a snapshot waits for these)
        t = telemetry or Telemetry()
        self._h_commit = t.histogram("tradelog_frame_us", "a frame sent -> the writer process committed it")
        self._h_frame = t.histogram("tradelog_frame_rows", "rows per writer transaction")
        t.gauge("tradelog_backlog_rows", lambda: self.queued - self.committed, "rows handed to the trade log, not yet committed")
        self._trades = t.counter("trades_total", "trades matched")
        self._sent_at: deque[tuple[float, int]] = deque()  # (when, its through) of each frame not yet acknowledged
        self.recorded_through = 0  # read at open: every command up to it has its rows in the file
        self.committed_through = 0  # the same, as the writer acknowledges frames (a snapshot is kept at or before it)
        self.capped_at: int | None = None  # a refill of the rows after this seq is under way: `through` stays here
        self._fed_through = 0  # recovery's hand-over so far
        # The journal seq up to which every command's rows have been handed over (the server
        # sets it: durable and matched); each burst of frames records it with its last frame.
        self.handed_through: Callable[[], int] = lambda: self._fed_through

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Tables first (~10 ms): a REPLAY or REPORTS may read the file before the writer
        # process is up (it was seen: "no such table: trades" right after a start).
        upgrading, started = await asyncio.to_thread(to_upgrade, self.path), time.perf_counter()
        self.recorded_through = await asyncio.to_thread(committed_through, self.path)  # (and the tables)
        if upgrading:  # a log written by an older version (docs/OPERATIONS.md): once, ~4 s per million commands
            log.info("trade_log_upgraded", tables=",".join(upgrading), seconds=round(time.perf_counter() - started, 2))
        self.committed_through = self.recorded_through
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "journal.tradelog_writer", str(self.path),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        assert self._proc.stdin is not None and self._proc.stdout is not None
        first = self._encode(first_frame(self.instruments))
        self._proc.stdin.write(LENGTH.pack(len(first)) + first)
        # Its answer: the writer is ready, and a log from before candles has them (a query
        # right after the start must not find them missing).
        await self._proc.stdout.readexactly(UNITS.size)
        self._acks = asyncio.get_running_loop().create_task(self._read_acks(), name="tradelog-acks")

    # ------------------------------------------------------------ hand-over (event loop)

    def on_durable(self, first_seq: int, count: int, record: bytes) -> None:
        """A journal batch is on disk: audit rows for its commands (and times for its trades).
        It is handed over as the journal wrote it: its commands are not encoded twice."""
        if self._admit(count, first_seq):
            self._put(count, first_seq, Piece(records=[(first_seq, record)]))

    def on_events(self, events: Sequence[Event]) -> None:
        """Events from a matching step: trades, and the execution reports (REPORTS, audit outcomes)."""
        trades, reports = split(events)
        units = len(trades) + len(reports)
        if trades:
            self._trades.inc(len(trades))
        if not units:
            return
        first = trades[0].seq if trades else reports[0].seq
        if self._pending + units > self.max_rows:  # dropped: where the log is behind from must be the lowest
            first = min(e.seq for e in (*trades, *reports))  # (one step's events hold every symbol's, each in order)
        if self._admit(units, first):
            self._put(units, first, Piece(trades=trades, reports=reports))

    def on_refusal(self, r: Refusal) -> None:
        """The gateway refused a request (never journaled): an audit row, best effort.
        Refusals come one at a time: they are encoded together, at the writer's tick or
        when REFUSALS_PER_PIECE have come, whichever is first."""
        if self._admit(1, None):
            self._refusals.append((time.time_ns(), r))
            if len(self._refusals) >= REFUSALS_PER_PIECE:
                self._put_refusals()

    def _put_refusals(self) -> None:
        refusals, self._refusals = self._refusals, []
        self._put(len(refusals), None, Piece(refusals=refusals))

    def recover_batch(self, first_seq: int, cmds: list[Command], ts_ns: int, events: list[Event]) -> None:
        """Rows for a replayed journal batch (INSERT OR IGNORE keeps what is already there)."""
        units, piece = replayed_piece(first_seq, cmds, ts_ns, events)
        self._pending += units
        self.queued += units
        self._put(units, first_seq, piece)
        self._fed_through = first_seq + len(cmds) - 1

    def skip_batch(self, first_seq: int, count: int) -> None:
        """A replayed batch whose rows the file has (up to recorded_through): nothing to hand over."""
        self._fed_through = first_seq + count - 1

    def _put(self, units: int, first_seq: int | None, piece: Piece) -> None:
        """Encoded where it is handed over (the gateway, matching); one that cannot be is
        the log's bug, not its caller's: the log stops (run() raises it) and trading goes on."""
        if self._unencodable is None:
            try:
                self._queue.append((units, first_seq, self._encode(piece)))
            except Exception as exc:
                self._unencodable = exc
        self._wake.set()

    def _admit(self, units: int, seq: int | None) -> bool:
        if self._pending + units > self.max_rows:
            if seq is not None and (self.behind_from is None or seq < self.behind_from):
                if self.behind_from is None:
                    log.warning("tradelog_behind", from_seq=seq, pending=self._pending, bound=self.max_rows)
                self.behind_from = seq
            return False
        self._pending += units
        self.queued += units
        self._wake.set()
        return True

    # ------------------------------------------------------------ the writer task

    def _next_frame(self) -> tuple[Frame, int | None]:
        """Pieces up to FRAME_UNITS rows (at least one): a frame is one transaction in the
        writer, and the writer acknowledges it whole. Returns it with its first journal seq."""
        queue, units, first = self._queue, 0, None
        pieces: list[msgspec.Raw] = []
        while queue and (units < FRAME_UNITS or not pieces):
            n, seq, data = queue.popleft()
            pieces.append(msgspec.Raw(data))
            units += n
            if first is None:
                first = seq
        self._pending -= units
        return Frame(units, pieces), first

    def release(self) -> None:
        self._released.set()

    async def run(self) -> None:
        """Every BATCH_WINDOW, what was handed over goes to the writer process, in frames.

        A bug here stops the log loudly, never silently: queries that wait for the log
        answer an error instead of waiting forever, the exchange trades on, and the next
        start refills the rows from the journal (the file's `through` stays where it was)."""
        try:
            await self._run()
        except Exception as exc:
            self.failed = repr(exc)[:300]
            log.critical("tradelog_failed", error=self.failed, at=raised_at(exc), consequence="no trade-log rows until restarted")
            await self._stop_writer()

    async def _stop_writer(self) -> None:
        """Close the writer's input: it commits what it has and exits."""
        assert self._proc is not None and self._proc.stdin is not None
        if not self._proc.stdin.is_closing():
            self._proc.stdin.close()
        await self._proc.wait()
        if self._acks is not None:
            await self._acks

    async def _run(self) -> None:
        await self._released.wait()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._refusals:
                self._put_refusals()
            if self._unencodable is not None:
                raise self._unencodable
            through = self.handed_through() if self._queue else 0  # (before popping: what is queued covers it)
            if self.behind_from is not None:
                through = min(through, self.behind_from - 1)
            if self.capped_at is not None:
                through = min(through, self.capped_at)
            while self._queue:
                frame, first = self._next_frame()
                if not self._queue:
                    frame.through = max(through, 0)
                try:
                    await self._send(frame)
                except (BrokenPipeError, ConnectionResetError, RuntimeError) as exc:
                    # The writer process died: the rows are in the journal; the next
                    # restart refills them (journal/refill.py).
                    if self.behind_from is None:
                        log.error("tradelog_writer_died", error=repr(exc))
                        self.behind_from = first or 1
                    self._pending = 0
                    self._queue.clear()
            if self._closing and not self._queue and not self._refusals:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), BATCH_WINDOW)
            self._hurry.clear()
        await self._stop_writer()

    async def _send(self, frame: Frame) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        if self._proc.returncode is not None or self._proc.stdin.is_closing():
            raise BrokenPipeError(f"the trade log writer exited ({self._proc.returncode})")
        payload = self._encode(frame)
        self._sent_at.append((time.perf_counter(), frame.through))
        self._h_frame.record(frame.units)
        self._proc.stdin.write(LENGTH.pack(len(payload)) + payload)
        await self._proc.stdin.drain()  # only this task waits on a slow writer process

    async def _read_acks(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while True:
            try:
                data = await self._proc.stdout.readexactly(UNITS.size)
            except asyncio.IncompleteReadError:
                return
            self.committed += UNITS.unpack(data)[0]
            if self._sent_at:
                sent, through = self._sent_at.popleft()
                self._h_commit.record(int((time.perf_counter() - sent) * 1e6))
                self.committed_through = max(self.committed_through, through)

    @property
    def healthy(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def whole_through(self, seq: int) -> int:
        """seq, or less: the last command whose rows the log will have once what was handed
        over is committed (not past rows dropped at the bound, nor a refill under way)."""
        if self.behind_from is not None:
            seq = min(seq, self.behind_from - 1)
        if self.capped_at is not None:
            seq = min(seq, self.capped_at)
        return seq

    async def wait_committed(self) -> None:
        """Wait until everything handed over so far is committed."""
        target = self.queued
        self.release()
        while self.committed < target:
            if self.failed is not None:
                raise RuntimeError(f"the trade log stopped: {self.failed}")
            if self._proc is not None and self._proc.returncode is not None:
                raise RuntimeError(f"the trade log writer exited with {self._proc.returncode}")
            self._wake.set()
            self._hurry.set()
            await asyncio.sleep(0.005)

    async def refill(self, data_dir: Path, instruments_file: Path | None, to: int) -> None:
        """Rebuild the rows after what the file has whole up to seq `to` (a snapshot newer
        than the log), in a process of its own (journal/refill.py); meanwhile the file's
        `through` stays where it was. A refill that fails leaves it there: the next restart
        tries again."""
        through = self.capped_at = self.recorded_through  # (recovery capped it already: rows after it were handed over)
        log.info("tradelog_refill_started", through=through, to=to)
        # (absolute: it runs from the project's root, the server perhaps not)
        args = [str(data_dir.resolve()), str(through), str(to), *([str(instruments_file.resolve())] if instruments_file else [])]
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "journal.refill", *args, cwd=Path(__file__).resolve().parent.parent)
        try:
            code = await proc.wait()
        except asyncio.CancelledError:
            proc.kill()  # shutting down: what it committed stays, the next restart refills the rest
            await proc.wait()
            raise
        if code == 0:
            self.capped_at = None
            self.committed_through = max(self.committed_through, to)
            self._wake.set()
            log.info("tradelog_refilled", through=through, to=to)
        else:
            log.error("tradelog_refill_failed", through=through, to=to, exit_code=code)

    async def close(self) -> None:
        """Send what is left; run() then ends the writer process."""
        self._closing = True
        self._wake.set()
        self._hurry.set()
        self.release()
