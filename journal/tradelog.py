"""The trade log and the order audit log: SQLite in WAL mode, written in batches.

Derived data: every row can be rebuilt from the journal. Trade ids and order ids are
deterministic, both tables key on them, and rows go in with INSERT OR IGNORE, so recovery
(replaying the journal tail after a snapshot) inserts exactly the rows that are missing.

One writer task (`run`) drains what the matching tasks and the journal hand over: one
transaction per batch, executemany for each table. Nothing upstream ever waits for it.
Its queue is bounded (`max_rows`); past the bound, rows are dropped and the log is marked
behind from the first dropped command: snapshots past that point are held back, so the
next restart replays from an earlier snapshot and fills the gap (see docs/OPERATIONS.md).
Gateway rejections are not journaled; their audit rows are best effort.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import aiosqlite
import structlog

from exchange.instruments import Instrument
from protocol.messages import Command, Event, NewOrder, Side, Trade

log = structlog.get_logger("tradelog")

SCHEMA = """
CREATE TABLE IF NOT EXISTS trades (
    seq            INTEGER NOT NULL,  -- journal sequence of the command that traded
    match_no       INTEGER NOT NULL,  -- n-th match of that command
    trade_id       TEXT    NOT NULL,  -- "<seq>-<match_no>"
    ts             TEXT    NOT NULL,  -- commit time of that command in the journal (UTC)
    symbol         TEXT    NOT NULL,
    qty            TEXT    NOT NULL,  -- exact decimals, as the instrument formats them
    price          TEXT    NOT NULL,
    aggressor      TEXT    NOT NULL,  -- BUY or SELL: the taker's side
    maker_order_id INTEGER NOT NULL,
    taker_order_id INTEGER NOT NULL,
    maker_owner    TEXT    NOT NULL,
    taker_owner    TEXT    NOT NULL,
    md_seq         INTEGER NOT NULL,  -- the symbol's market-data sequence number (REPLAY)
    PRIMARY KEY (seq, match_no)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trades_by_symbol ON trades (symbol, md_seq);
CREATE INDEX IF NOT EXISTS trades_by_ts ON trades (ts);
CREATE TABLE IF NOT EXISTS orders (
    id        INTEGER PRIMARY KEY,  -- row id
    order_id  INTEGER UNIQUE,       -- journal sequence; NULL for orders the gateway refused
    ts        TEXT    NOT NULL,
    owner     TEXT    NOT NULL,
    symbol    TEXT    NOT NULL,
    side      TEXT    NOT NULL,
    qty       TEXT    NOT NULL,
    price     TEXT    NOT NULL,     -- MKT for a market order
    tif       TEXT    NOT NULL,
    client_id TEXT,
    status    TEXT    NOT NULL,     -- accepted | rejected
    reason    TEXT,                 -- reject code
    text      TEXT
);
CREATE INDEX IF NOT EXISTS orders_by_owner ON orders (owner, id);
CREATE INDEX IF NOT EXISTS orders_by_symbol ON orders (symbol, id);
"""

INSERT_TRADE = "INSERT OR IGNORE INTO trades VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
INSERT_ORDER = "INSERT OR IGNORE INTO orders (order_id, ts, owner, symbol, side, qty, price, tif, client_id, status, reason, text) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
MAX_TIMES = 100_000  # commit times remembered to stamp trades (seconds of history)


def iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, timezone.utc).isoformat(timespec="microseconds")


class TradeLog:
    def __init__(self, path: str | Path, instruments: dict[str, Instrument], *, max_rows: int = 500_000) -> None:
        self.path = Path(path)
        self.instruments = instruments
        self.max_rows = max_rows
        self._db: aiosqlite.Connection | None = None
        self._trades: list[Trade] = []
        self._batches: list[tuple[int, list[Command], int]] = []  # journal batches, for order rows
        self._queued_orders = 0
        self._rejects: list[tuple] = []
        self._last_seqs: list[int] = []  # journal commit times, by the last seq of each batch
        self._times: list[int] = []
        self._wake = asyncio.Event()
        self._closing = False
        self.behind_from: int | None = None  # first command whose rows were dropped
        self.queued = 0  # rows handed over so far
        self.committed = 0  # rows committed so far (a snapshot waits for its rows)

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        # WAL: readers (tickline trades, queries) never block the writer. NORMAL: a commit
        # is not fsync'd, which is safe for derived data the journal can rebuild.
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.executescript(SCHEMA)
        await self._db.commit()

    # ------------------------------------------------------------ hand-over (event loop)

    def on_durable(self, first_seq: int, cmds: list[Command], ts_ns: int) -> None:
        """A journal batch is on disk: its new orders are accepted; remember its time."""
        self._last_seqs.append(first_seq + len(cmds) - 1)
        self._times.append(ts_ns)
        if len(self._last_seqs) > MAX_TIMES:
            del self._last_seqs[: MAX_TIMES // 2], self._times[: MAX_TIMES // 2]
        if self._admit(len(cmds), first_seq):
            self._batches.append((first_seq, cmds, ts_ns))
            self._queued_orders += len(cmds)

    def on_events(self, events: list[Event]) -> None:
        """Events from a matching task: keep the trades."""
        trades = [e for e in events if type(e) is Trade]
        if trades and self._admit(len(trades), trades[0].seq):  # type: ignore[union-attr]
            self._trades += trades  # type: ignore[arg-type]

    def on_reject(self, owner: str, symbol: str, side: str, qty: str, price: str | None, tif: str | None, client_id: str | None, reason: str, text: str) -> None:
        """The gateway refused an order (never journaled): an audit row, best effort."""
        if self._admit(1, None):
            row = (None, iso(time.time_ns()), owner, symbol, side, qty, price or "MKT", tif or "", client_id, "rejected", reason, text)
            self._rejects.append(row)

    def _admit(self, rows: int, seq: int | None) -> bool:
        pending = len(self._trades) + self._queued_orders + len(self._rejects)
        if pending + rows > self.max_rows:
            if seq is not None and (self.behind_from is None or seq < self.behind_from):
                if self.behind_from is None:
                    log.warning("tradelog_behind", from_seq=seq, pending=pending, bound=self.max_rows)
                self.behind_from = seq
            return False
        self.queued += rows
        self._wake.set()
        return True

    def _time_of(self, seq: int) -> str:
        i = bisect.bisect_left(self._last_seqs, seq)
        return iso(self._times[i] if i < len(self._times) else time.time_ns())

    # ------------------------------------------------------------ rows (writer thread)

    def _trade_rows(self, trades: list[Trade]) -> Iterable[tuple]:
        for t in trades:
            inst = self.instruments[t.symbol]
            match_no = int(t.trade_id.rsplit("-", 1)[1])
            yield (
                t.seq, match_no, t.trade_id, self._time_of(t.seq), t.symbol, inst.format_qty(t.qty), inst.format_price(t.price),
                t.aggressor.value, t.maker_order_id, t.taker_order_id, t.maker_owner, t.taker_owner, t.md_seq,
            )  # fmt: skip

    def _order_rows(self, batches: list[tuple[int, list[Command], int]]) -> Iterable[tuple]:
        for first_seq, cmds, ts_ns in batches:
            ts = iso(ts_ns)
            for seq, cmd in enumerate(cmds, first_seq):
                if type(cmd) is NewOrder:
                    inst = self.instruments[cmd.symbol]
                    price = "MKT" if cmd.price is None else inst.format_price(cmd.price)
                    yield (
                        seq, ts, cmd.owner, cmd.symbol, cmd.side.value, inst.format_qty(cmd.qty), price, cmd.tif.value,
                        cmd.client_id, "accepted", None, None,
                    )  # fmt: skip

    # ------------------------------------------------------------ the writer

    async def run(self) -> None:
        """The writer: one transaction per batch of whatever was handed over meanwhile."""
        assert self._db is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            trades, batches, rejects = self._trades, self._batches, self._rejects
            rows = len(trades) + self._queued_orders + len(rejects)
            self._trades, self._batches, self._rejects, self._queued_orders = [], [], [], 0
            if rows:
                if trades:
                    await self._db.executemany(INSERT_TRADE, self._trade_rows(trades))
                if batches:
                    await self._db.executemany(INSERT_ORDER, self._order_rows(batches))
                if rejects:
                    await self._db.executemany(INSERT_ORDER, rejects)
                await self._db.commit()
                self.committed += rows
            if self._closing and not (self._trades or self._batches or self._rejects):
                return

    async def flush(self) -> None:
        """Wait until everything handed over so far is committed."""
        target = self.queued
        while self.committed < target:
            self._wake.set()
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        self._closing = True
        self._wake.set()

    async def closed(self) -> None:
        if self._db is not None:
            await self._db.close()

    # ------------------------------------------------------------ recovery

    def recover_batch(self, first_seq: int, cmds: list[Command], ts_ns: int, trades: list[Trade]) -> None:
        """Rows for a replayed journal batch (INSERT OR IGNORE keeps what is already there)."""
        self._last_seqs.append(first_seq + len(cmds) - 1)
        self._times.append(ts_ns)
        self._batches.append((first_seq, cmds, ts_ns))
        self._queued_orders += len(cmds)
        self._trades += trades
        self.queued += len(cmds) + len(trades)
        self._wake.set()
