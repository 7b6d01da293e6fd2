"""The trade log's writer process: frames of journal batches and trades in, SQLite rows out.

    python -m journal.tradelog_writer <db path>      (started by journal.tradelog.TradeLog)

Why a process: row building and parameter binding are Python work under the GIL; in a
thread of the server they took turns with the event loop and showed up in every ACK's
latency. Here they run on the other core. The server sends each batch as one msgpack
frame (encoded in one C call); this process answers each committed frame with the
number of units it covered.

stdin:  u32 length + msgpack Frame, repeatedly; the first frame carries the instruments.
stdout: u64 units, once per committed frame.
"""

from __future__ import annotations

import bisect
import sqlite3
import struct
import sys
import time
from datetime import datetime, timezone
from typing import BinaryIO, Iterable

import msgspec

from exchange.instruments import Instrument, InstrumentSpec
from protocol.messages import Command, NewOrder, Trade

LENGTH = struct.Struct("<I")
UNITS = struct.Struct("<Q")

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
INSERT_ORDER = (
    "INSERT OR IGNORE INTO orders (order_id, ts, owner, symbol, side, qty, price, tif, client_id, status, reason, text) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
MAX_TIMES = 100_000  # journal batch times remembered to stamp trades


class Frame(msgspec.Struct, array_like=True):
    units: int  # what the server counts this frame as; echoed back once committed
    batches: list[tuple[int, list[Command], int]]  # (first seq, commands, commit time ns)
    trades: list[Trade]
    rejects: list[tuple]  # order audit rows the gateway made for refused orders
    instruments: dict[str, tuple[str, str]] | None = None  # symbol -> (tick, lot): first frame


def iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, timezone.utc).isoformat(timespec="microseconds")


class Writer:
    def __init__(self, db: str) -> None:
        self.conn = sqlite3.connect(db, isolation_level=None)
        # WAL: readers (tickline trades, queries) never block the writer. NORMAL: a commit
        # is not fsync'd, which is safe for derived data the journal can rebuild.
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        self.instruments: dict[str, Instrument] = {}
        self.last_seqs: list[int] = []
        self.times: list[int] = []

    def write(self, frame: Frame) -> None:
        if frame.instruments:
            self.instruments = {s: Instrument(s, InstrumentSpec(tick, lot)) for s, (tick, lot) in frame.instruments.items()}
        for first_seq, cmds, ts_ns in frame.batches:
            self.last_seqs.append(first_seq + len(cmds) - 1)
            self.times.append(ts_ns)
        if len(self.last_seqs) > MAX_TIMES:
            del self.last_seqs[: MAX_TIMES // 2], self.times[: MAX_TIMES // 2]
        self.conn.execute("BEGIN")
        self.conn.executemany(INSERT_TRADE, self.trade_rows(frame.trades))
        self.conn.executemany(INSERT_ORDER, self.order_rows(frame.batches))
        self.conn.executemany(INSERT_ORDER, frame.rejects)
        self.conn.execute("COMMIT")

    def time_of(self, seq: int) -> str:
        i = bisect.bisect_left(self.last_seqs, seq)
        return iso(self.times[i] if i < len(self.times) else time.time_ns())

    def trade_rows(self, trades: list[Trade]) -> Iterable[tuple]:
        for t in trades:
            inst = self.instruments[t.symbol]
            yield (
                t.seq, int(t.trade_id.rsplit("-", 1)[1]), t.trade_id, self.time_of(t.seq), t.symbol,
                inst.format_qty(t.qty), inst.format_price(t.price), t.aggressor.value,
                t.maker_order_id, t.taker_order_id, t.maker_owner, t.taker_owner, t.md_seq,
            )  # fmt: skip

    def order_rows(self, batches: list[tuple[int, list[Command], int]]) -> Iterable[tuple]:
        for first_seq, cmds, ts_ns in batches:
            ts = iso(ts_ns)
            for seq, cmd in enumerate(cmds, first_seq):
                if type(cmd) is NewOrder:
                    inst = self.instruments[cmd.symbol]
                    price = "MKT" if cmd.price is None else inst.format_price(cmd.price)
                    yield (
                        seq, ts, cmd.owner, cmd.symbol, cmd.side.value, inst.format_qty(cmd.qty), price,
                        cmd.tif.value, cmd.client_id, "accepted", None, None,
                    )  # fmt: skip


def read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    return data if data is not None and len(data) == n else None


def main(argv: list[str]) -> int:
    writer = Writer(argv[0])
    decode = msgspec.msgpack.Decoder(Frame).decode
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = read_exactly(stdin, LENGTH.size)
        if head is None:
            return 0  # the server closed the pipe: everything sent is committed
        payload = read_exactly(stdin, LENGTH.unpack(head)[0])
        if payload is None:
            return 0
        frame = decode(payload)
        writer.write(frame)
        try:
            stdout.write(UNITS.pack(frame.units))
            stdout.flush()
        except BrokenPipeError:
            return 0  # the server is gone (killed): what it sent is committed; its restart refills the rest


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
