"""The trade log's writer process: frames of journal batches, trades and reports in, SQLite rows out.

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
import itertools
import math
import os
import sqlite3
import struct
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, cast
from zlib import crc32

import msgspec

from exchange.instruments import Asset, Instrument, InstrumentSpec, assets_of
from journal.records import decode_records
from protocol.messages import Command, OrderCommand, Refusal, Report, Trade, Transfer

LENGTH = struct.Struct("<I")
UNITS = struct.Struct("<Q")

# The two tables of groups, an owner's rows of one frame each. A frame need not hold every
# command between its first and last seq (a cluster's engine shards, or two symbols'
# matching queues, hand their output over each in its own order), so a refill, its frames
# cut elsewhere, can make a group with the same first and last seq and more in it: the
# digest of its content tells them apart (the same content again is still one row).
OWNER_GROUPS = """
CREATE TABLE IF NOT EXISTS audit_owner_groups (  -- the batches that hold an owner's commands (a transfer's: its account's), a row per owner and part per frame
    part      INTEGER NOT NULL,     -- first_seq >> PART_BITS (see report_groups)
    owner     TEXT    NOT NULL,
    first_seq INTEGER NOT NULL,     -- the first and the last of those batches (their first_seq)
    last_seq  INTEGER NOT NULL,
    digest    INTEGER NOT NULL,     -- of batches: its length, its CRC (group_digest; 0 in a row from layout 3 or before)
    batches   TEXT    NOT NULL,     -- JSON array of the batches' first_seq, ascending (read with json_each)
    PRIMARY KEY (part, owner, first_seq, last_seq, digest)
) WITHOUT ROWID;                    -- a refill may name a batch again in another group: readers take each batch once
"""
REPORT_GROUPS = """
CREATE TABLE IF NOT EXISTS report_groups (  -- execution reports (REPORTS since=<seq>, audit outcomes): an owner's in one frame together
    part      INTEGER NOT NULL,     -- first_seq >> PART_BITS: each commit inserts into the newest parts only (a group never spans two)
    owner     TEXT    NOT NULL,
    first_seq INTEGER NOT NULL,     -- the lowest and highest journal sequence of the commands that caused them
    last_seq  INTEGER NOT NULL,
    digest    INTEGER NOT NULL,     -- of reports: its length, its CRC (group_digest; 0 in a row from layout 3 or before)
    reports   BLOB    NOT NULL,     -- msgpack array of the events (Fill, Canceled, ...), in the order matching made them: formatted when read
    PRIMARY KEY (part, owner, first_seq, last_seq, digest)  -- an owner's reports: one seek per part (journal/queries.py)
) WITHOUT ROWID;                    -- a refill may store a command's reports again in another group: readers take the first group's
"""
GROUP_TABLES = {"report_groups": (REPORT_GROUPS, "reports"), "audit_owner_groups": (OWNER_GROUPS, "batches")}  # table: (its CREATE, its content)
SCHEMA = f"""
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
CREATE TABLE IF NOT EXISTS audit_batches (  -- the audit of journaled commands: each journal batch as written
    first_seq INTEGER PRIMARY KEY,  -- journal sequence of its first command (a new order's id; the next one's is +1)
    ts        TEXT    NOT NULL,     -- its commit time in the journal (UTC)
    record    BLOB    NOT NULL      -- the journal record (journal/records.py): its rows are made when read (journal/queries.py)
);
{OWNER_GROUPS}CREATE TABLE IF NOT EXISTS assets (name TEXT PRIMARY KEY, unit TEXT NOT NULL);  -- to format a transfer's amount
CREATE TABLE IF NOT EXISTS refusal_batches (  -- the audit of refused requests: those of one writer transaction together
    id        INTEGER PRIMARY KEY,
    ts        TEXT    NOT NULL,     -- the first one's time (UTC)
    record    BLOB    NOT NULL      -- msgpack [[time ns, Refusal], ...]: its rows are made when read (journal/queries.py)
);
CREATE TABLE IF NOT EXISTS refusal_owners (  -- the refusal batches that hold an owner's requests
    owner     TEXT    NOT NULL,
    batch     INTEGER NOT NULL,
    PRIMARY KEY (owner, batch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS orders (  -- the audit, as logs written before refusal_batches (refusals) and audit_batches (journaled commands) have it
    id        INTEGER PRIMARY KEY,  -- row id
    order_id  INTEGER UNIQUE,       -- journal sequence (a new order's id); NULL for requests the gateway refused (no rows are added now)
    ts        TEXT    NOT NULL,
    owner     TEXT    NOT NULL,     -- the session's identity (owner id)
    symbol    TEXT    NOT NULL,
    side      TEXT    NOT NULL,     -- "" for a cancel
    qty       TEXT    NOT NULL,     -- a replace: the new open quantity; "" for a cancel
    price     TEXT    NOT NULL,     -- MKT for a market order; "" for a cancel or a replace keeping its price
    tif       TEXT    NOT NULL,
    client_id TEXT,
    status    TEXT    NOT NULL,     -- accepted (journaled) | rejected (refused by the gateway)
    reason    TEXT,                 -- reject code
    text      TEXT,
    kind      TEXT    NOT NULL DEFAULT 'new',  -- new | cancel | replace
    target    INTEGER               -- the order a cancel or replace names
);                                  -- the outcome: the reports of the same seq and owner (journal/queries.py)
CREATE INDEX IF NOT EXISTS orders_by_owner ON orders (owner, id);
{REPORT_GROUPS}CREATE TABLE IF NOT EXISTS instruments (symbol TEXT PRIMARY KEY, tick TEXT NOT NULL, lot TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);  -- 'through': every command up to it has all its rows
CREATE TABLE IF NOT EXISTS candles (  -- OHLCV per symbol and interval, kept as trades are committed (KLINES, TICKER)
    symbol    TEXT    NOT NULL,
    interval  INTEGER NOT NULL,     -- seconds: 60, 300, 900, 3600, 86400
    start     INTEGER NOT NULL,     -- unix seconds, a multiple of interval (UTC)
    open      INTEGER NOT NULL,     -- ticks
    high      INTEGER NOT NULL,
    low       INTEGER NOT NULL,
    close     INTEGER NOT NULL,
    volume    TEXT    NOT NULL,     -- lots, an integer in decimal: sums outgrow SQLite's 64 bits
    quote     TEXT    NOT NULL,     -- sum of lots x ticks, likewise (the instrument prices it in its quote asset)
    trades    INTEGER NOT NULL,
    first_key INTEGER NOT NULL,     -- (seq << 20 | match_no) of the open and the close trade: a
    last_key  INTEGER NOT NULL,     -- trade filled in late (recovery) still lands in its place
    PRIMARY KEY (symbol, interval, start)
) WITHOUT ROWID;
"""
# Candle intervals in seconds, as KLINES names them.
INTERVALS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400}
FINEST = min(INTERVALS.values())
COARSER = sorted(set(INTERVALS.values()) - {FINEST})  # each a multiple of FINEST: its candles fold into theirs
# report_groups and audit_owner_groups are read by owner but written in seq order. Keyed by owner alone,
# each commit inserted at one place per owner all over the table (a dirty page each, and a
# page read back once the table outgrew the cache); keyed by (part, owner), it inserts into
# the newest part's few pages, and an owner's rows are one seek per part away (bench.writer,
# 1,000,000 commands of 1,000 owners: 14.7/15.8 us per command keyed by owner, 7.2/7.8 so).
PART_BITS = 12
# The tables' layout, as PRAGMA user_version (0: a log from before it was kept): a reader
# of an older one has create_tables bring it up to date first.
LAYOUT = 4  # 1: reports and audit_owners by part, refusal_batches; 2: report_groups; 3: audit_owner_groups; 4: their digest
MATCH_BITS = 20  # a trade's key: seq << MATCH_BITS | match_no (match_no < 2**20: a command matches fewer orders)
INSERT_CANDLE = "INSERT OR REPLACE INTO candles VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
SELECT_CANDLE = "SELECT open, high, low, close, volume, quote, trades, first_key, last_key FROM candles WHERE symbol = ? AND interval = ? AND start = ?"
# Columns added after the first release: a log made before gets them on open.
ADDED_COLUMNS = {"orders": ["kind TEXT NOT NULL DEFAULT 'new'", "target INTEGER"]}
INSERT_TRADE = "INSERT OR IGNORE INTO trades VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
INSERT_REFUSALS = "INSERT INTO refusal_batches (ts, record) VALUES (?,?)"
INSERT_REFUSAL_OWNER = "INSERT INTO refusal_owners VALUES (?,?)"
INSERT_REPORTS = "INSERT OR IGNORE INTO report_groups VALUES (?,?,?,?,?,?)"
INSERT_BATCH = "INSERT OR IGNORE INTO audit_batches VALUES (?,?,?)"
INSERT_OWNERS = "INSERT OR IGNORE INTO audit_owner_groups VALUES (?,?,?,?,?,?)"
# A log of layout 0-2 has a row per batch and owner (keyed by owner alone before parts: both
# have these columns); create_tables groups them, one row per owner and part.
GROUP_OLD_OWNERS = (
    "INSERT OR IGNORE INTO audit_owner_groups SELECT first_seq >> {bits} AS p, owner, min(first_seq), max(first_seq), 0, json_group_array(first_seq)"
    " FROM (SELECT owner, first_seq FROM audit_owners ORDER BY owner, first_seq) GROUP BY owner, p"
).format(bits=PART_BITS)
MAX_TIMES = 100_000  # journal batch times remembered to stamp trades


class Piece(msgspec.Struct, array_like=True):
    """One hand-over from the server, encoded when it was handed over."""

    records: list[tuple[int, bytes]] = []  # (first seq, journal records as written: journal/records.py)
    trades: list[Trade] = []
    reports: list[Report] = []  # execution reports, in the order matching made them
    refusals: list[tuple[int, Refusal]] = []  # (time ns, request) the gateway refused: audit rows


class Frame(msgspec.Struct, array_like=True):
    """What the writer commits in one transaction: pieces, still encoded (msgspec.Raw)."""

    units: int  # what the server counts this frame as; echoed back once committed
    pieces: list[msgspec.Raw]
    instruments: dict[str, tuple[str, str]] | None = None  # symbol -> (tick, lot): first frame
    assets: dict[str, str] | None = None  # asset -> its unit: first frame
    through: int = 0  # every journaled command up to this seq has all its rows in this frame or an earlier one


def first_frame(instruments: dict[str, Instrument]) -> Frame:
    """The frame the writer gets first: every instrument's tick and lot, every asset's unit."""
    specs = {s: (i.tick.text, i.lot.text) for s, i in instruments.items()}
    return Frame(0, [], specs, {a.name: a.unit.text for a in assets_of(instruments).values()})


def iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, timezone.utc).isoformat(timespec="microseconds")


class IsoClock:
    """iso() for many times in a row: the text up to the second is made once per second.

    The microseconds are rounded as datetime.fromtimestamp rounds the float iso() gives it
    (half to even after modf), so both give the same text for every time."""

    __slots__ = ("_sec", "_head")

    def __init__(self) -> None:
        self._sec: int | None = None
        self._head = ""

    def __call__(self, ts_ns: int) -> str:
        frac, whole = math.modf(ts_ns / 1e9)
        us = round(frac * 1e6)
        sec = int(whole)
        if us >= 1_000_000:
            sec, us = sec + 1, us - 1_000_000
        if sec != self._sec:
            self._sec, self._head = sec, datetime.fromtimestamp(sec, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._head}.{us:06d}+00:00"


def iso_ns(text: str) -> int:
    """iso()'s text back to nanoseconds (microsecond precision)."""
    moment = datetime.fromisoformat(text)
    return (int(moment.timestamp()) * 1_000_000 + moment.microsecond) * 1000


def match_no(t: Trade) -> int:
    return int(t.trade_id.rsplit("-", 1)[1])


Stamped = tuple[Trade, int, int]  # a trade, its match number, its journal batch's commit time (ns)
Candle = list[int]  # open, high, low, close (ticks), volume (lots), quote (lots x ticks), trades, first key, last key


def fold_candles(trades: Iterable[tuple[str, int, int, int, int]]) -> dict[tuple[str, int, int], Candle]:
    """Candles of every interval for trades given as (symbol, key, time ns, price, qty),
    by (symbol, interval, start). Keys order the trades, whatever order they come in.

    Each trade goes into its one-minute candle; the longer intervals are folded from those
    (a few per frame), not from every trade again: five merges per trade were a tenth of
    this process's time at 10,000 orders/s."""
    minute: dict[tuple[str, int, int], Candle] = {}
    for symbol, key, ts_ns, price, qty in trades:
        sec = ts_ns // 1_000_000_000
        at = (symbol, FINEST, sec - sec % FINEST)
        c = minute.get(at)
        if c is None:
            minute[at] = [price, price, price, price, qty, price * qty, 1, key, key]
            continue
        if key < c[7]:
            c[0], c[7] = price, key
        if key > c[8]:
            c[3], c[8] = price, key
        if price > c[1]:
            c[1] = price
        elif price < c[2]:
            c[2] = price
        c[4] += qty
        c[5] += price * qty
        c[6] += 1
    acc = dict(minute)
    for interval in COARSER:
        for (symbol, _, start), c in minute.items():
            at = (symbol, interval, start - start % interval)
            have = acc.get(at)
            if have is None:
                acc[at] = list(c)
            else:
                merge_candle(have, c)
    return acc


def merge_candle(c: Candle, other: Candle) -> None:
    """Fold other into c."""
    if other[7] < c[7]:
        c[0], c[7] = other[0], other[7]
    if other[8] > c[8]:
        c[3], c[8] = other[3], other[8]
    c[1] = max(c[1], other[1])
    c[2] = min(c[2], other[2])
    c[4] += other[4]
    c[5] += other[5]
    c[6] += other[6]


SET_THROUGH = "INSERT INTO meta VALUES ('through', ?) ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)"


def committed_through(db: str | Path) -> int:
    """The journal seq up to which every command's rows are committed (0: none known, e.g. a
    log written before this was kept): a restart refills only the rows after it."""
    conn = create_tables(db)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'through'").fetchone()
        return 0 if row is None else int(row[0])
    finally:
        conn.close()


def create_tables(db: str | Path) -> sqlite3.Connection:
    """The trade log's file and tables (idempotent). The server calls it before it starts
    the writer, so that no reader (REPLAY, REPORTS) can open a file without its tables."""
    conn = sqlite3.connect(db, isolation_level=None)
    # WAL: readers (tickline trades, queries) never block the writer. NORMAL: a commit
    # is not fsync'd, which is safe for derived data the journal can rebuild.
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    # An older log's rows are grouped in the same transaction that creates the new tables
    # (a second process that waited for it finds nothing left to group).
    conn.executescript(f"BEGIN IMMEDIATE; {SCHEMA}")
    try:
        for table in groups_without_digest(conn):  # layout 2 or 3: keyed anew, digest 0
            create, content = GROUP_TABLES[table]
            conn.execute(f"ALTER TABLE {table} RENAME TO {table}_3")
            conn.execute(create)
            conn.execute(f"INSERT INTO {table} SELECT part, owner, first_seq, last_seq, 0, {content} FROM {table}_3")
            conn.execute(f"DROP TABLE {table}_3")
        if row_per_report(conn):  # grouped as the writer groups them now
            conn.executemany(INSERT_REPORTS, grouped_reports(conn.execute("SELECT seq, owner, report FROM reports ORDER BY owner, seq, n")))
            conn.execute("DROP TABLE reports")
        if row_per_batch_owner(conn):
            conn.execute(GROUP_OLD_OWNERS)
            conn.execute("DROP TABLE audit_owners")
        conn.execute(f"PRAGMA user_version = {LAYOUT}")
        conn.execute("COMMIT")  # (not in executescript: it commits what is pending first)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    for table, columns in ADDED_COLUMNS.items():
        have = columns_of(conn, table)
        for column in columns:
            if column.split()[0] not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
    return conn


def grouped_reports(rows: Iterable[tuple[int, str, bytes]]) -> Iterator[tuple[int, str, int, int, int, bytes]]:
    """report_groups rows from a row per report (seq, owner, the report as msgpack), in
    owner and seq order: one per owner and part."""
    for (owner, part), run in itertools.groupby(rows, key=lambda row: (row[1], row[0] >> PART_BITS)):
        found = list(run)
        yield part, owner, found[0][0], found[-1][0], 0, msgspec.msgpack.encode([msgspec.Raw(blob) for _, _, blob in found])


def group_digest(content: bytes) -> int:
    """A group's rows, digested: part of its key (see OWNER_GROUPS). Its length, then its
    CRC-32: a refill's group with more in it is always another key, and two of the same
    length differ in their CRC. (Computing it and the wider key cost the writer 3.0% and
    1.8% more instructions over bench.writer's 1,000-owner mix.)"""
    return len(content) << 32 | crc32(content)


def row_per_report(conn: sqlite3.Connection) -> bool:
    """A log of layout 0 or 1: a row per report (`reports`), which create_tables groups."""
    return bool(columns_of(conn, "reports"))


def row_per_batch_owner(conn: sqlite3.Connection) -> bool:
    """A log of layout 0-2: a row per batch and owner (`audit_owners`), which create_tables groups."""
    return bool(columns_of(conn, "audit_owners"))


def groups_without_digest(conn: sqlite3.Connection) -> list[str]:
    """The group tables of a log of layout 2 or 3 (keyed without a digest), which create_tables keys anew."""
    return [table for table in GROUP_TABLES if (columns := columns_of(conn, table)) and "digest" not in columns]


def columns_of(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def to_upgrade(db: str | Path) -> list[str]:
    """The tables create_tables will group (a row per report, a row per batch and owner) or
    key anew (groups without a digest)."""
    conn = sqlite3.connect(db)
    try:
        return (["reports"] if row_per_report(conn) else []) + (["audit_owners"] if row_per_batch_owner(conn) else []) + groups_without_digest(conn)
    finally:
        conn.close()


CACHE_KIB = 65_536  # the writer's page cache (SQLite's default is 2 MiB)


class Writer:
    def __init__(self, db: str) -> None:
        self.conn = create_tables(db)
        # Each commit descends every index: past a few million rows the default 2 MiB no
        # longer held their pages, and inserts read them back from the OS (measured while
        # reports and audit_owners were keyed by owner, bench.writer's mix, 1,000,000
        # commands of 1,000 owners: 26.3/23.7 us per command with 2 MiB, 18.6/18.2 with this).
        self.conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self.instruments: dict[str, Instrument] = {}
        self.assets: dict[str, Asset] = {}
        self.last_seqs: list[int] = []
        self.times: list[int] = []
        self.encode = msgspec.msgpack.Encoder().encode
        self.decode_piece = msgspec.msgpack.Decoder(Piece).decode
        self.iso = IsoClock()

    def write(self, frame: Frame) -> None:
        batches: list[tuple[int, list[Command], int]] = []  # (first seq, commands, commit time ns)
        records: list[bytes] = []  # each batch's journal record, as written
        piece = Piece([], [], [], [])
        for raw in frame.pieces:
            p = self.decode_piece(raw)
            for first_seq, data in p.records:
                start = 0
                for seq, _, cmds, ts_ns, end in decode_records(data, first_seq):
                    if cmds is not None:
                        batches.append((seq, cmds, ts_ns))
                        records.append(data[start:end])
                    start = end
            piece.trades += p.trades
            piece.reports += p.reports
            piece.refusals += p.refusals
        if frame.instruments:
            self.instruments = {s: Instrument(s, InstrumentSpec(tick, lot)) for s, (tick, lot) in frame.instruments.items()}
            self.assets = {name: Asset(name, unit) for name, unit in (frame.assets or {}).items()}
            rows = [(s, tick, lot) for s, (tick, lot) in frame.instruments.items()]
            self.conn.executemany("INSERT OR REPLACE INTO instruments VALUES (?,?,?)", rows)
            self.conn.executemany("INSERT OR REPLACE INTO assets VALUES (?,?)", (frame.assets or {}).items())
        for first_seq, cmds, ts_ns in batches:
            self.last_seqs.append(first_seq + len(cmds) - 1)
            self.times.append(ts_ns)
        if len(self.last_seqs) > MAX_TIMES:
            del self.last_seqs[: MAX_TIMES // 2], self.times[: MAX_TIMES // 2]
        self.conn.execute("BEGIN IMMEDIATE")  # the write lock first: a refill (journal/refill.py) may write too
        if frame.instruments and not self.conn.execute("SELECT 1 FROM candles LIMIT 1").fetchone():
            self.rebuild_candles()  # a trade log from before candles were kept
        trades = self.stamped(piece.trades)
        self.add_candles(fold_candles(self.candle_trades(self.new_trades(trades))))
        self.conn.executemany(INSERT_TRADE, self.trade_rows(trades))
        self.conn.executemany(INSERT_BATCH, self.batch_rows(batches, records))
        self.conn.executemany(INSERT_OWNERS, self.owner_rows(batches))
        if piece.refusals:
            self.add_refusals(piece.refusals)
        self.conn.executemany(INSERT_REPORTS, self.report_rows(piece.reports))
        if frame.through:
            self.conn.execute(SET_THROUGH, (frame.through,))
        self.conn.execute("COMMIT")

    def ns_of(self, seq: int) -> int:
        """The commit time of the journal batch that holds seq."""
        i = bisect.bisect_left(self.last_seqs, seq)
        return self.times[i] if i < len(self.times) else time.time_ns()

    def stamped(self, trades: list[Trade]) -> list[Stamped]:
        """Each trade with its match number and time, worked out once (a command's trades
        come together: one time for all of them)."""
        out: list[Stamped] = []
        seq, ns = -1, 0
        for t in trades:
            if t.seq != seq:
                seq, ns = t.seq, self.ns_of(t.seq)
            out.append((t, match_no(t), ns))
        return out

    def new_trades(self, trades: list[Stamped]) -> list[Stamped]:
        """The trades not in the log yet: only those count in the candles (recovery hands
        over a journal tail whose trades may be there already)."""
        if not trades:
            return trades
        seqs = [t.seq for t, _, _ in trades]
        have = set(self.conn.execute("SELECT seq, match_no FROM trades WHERE seq BETWEEN ? AND ?", (min(seqs), max(seqs))))
        return [s for s in trades if (s[0].seq, s[1]) not in have] if have else trades

    @staticmethod
    def candle_trades(trades: list[Stamped]) -> Iterable[tuple[str, int, int, int, int]]:
        for t, n, ns in trades:
            yield t.symbol, t.seq << MATCH_BITS | n, ns, t.price, t.qty

    def rebuild_candles(self) -> None:
        """Candles from every trade already in the log (once, for a log made before them)."""
        rows = self.conn.execute("SELECT symbol, seq, match_no, ts, price, qty FROM trades ORDER BY seq, match_no")
        found = (
            (sym, seq << MATCH_BITS | n, iso_ns(ts), self.instruments[sym].tick.count(price), self.instruments[sym].lot.count(qty))
            for sym, seq, n, ts, price, qty in rows
            if sym in self.instruments
        )
        self.add_candles(fold_candles(cast(Iterable[tuple[str, int, int, int, int]], found)))

    def add_candles(self, folded: dict[tuple[str, int, int], list[int]]) -> None:
        """Merge a frame's candles into the table's (a handful of rows per symbol)."""
        rows = []
        for key, c in folded.items():
            old = self.conn.execute(SELECT_CANDLE, key).fetchone()
            if old is not None:
                merge_candle(c, [old[0], old[1], old[2], old[3], int(old[4]), int(old[5]), old[6], old[7], old[8]])
            rows.append((*key, c[0], c[1], c[2], c[3], str(c[4]), str(c[5]), c[6], c[7], c[8]))
        self.conn.executemany(INSERT_CANDLE, rows)

    def trade_rows(self, trades: list[Stamped]) -> Iterable[tuple]:
        last_ns, ts = -1, ""
        for t, n, ns in trades:
            if ns != last_ns:
                last_ns, ts = ns, self.iso(ns)
            inst = self.instruments[t.symbol]
            yield (
                t.seq, n, t.trade_id, ts, t.symbol,
                inst.format_qty(t.qty), inst.format_price(t.price), t.aggressor._value_,
                t.maker_order_id, t.taker_order_id, t.maker_owner, t.taker_owner, t.md_seq,
            )  # fmt: skip

    def batch_rows(self, batches: list[tuple[int, list[Command], int]], records: list[bytes]) -> Iterable[tuple]:
        """The audit of journaled commands: a row per journal batch, its record as written
        (rows per command, formatted here, were a third of this process's time)."""
        iso = self.iso
        for (first_seq, _, ts_ns), record in zip(batches, records, strict=True):
            yield first_seq, iso(ts_ns), record

    @staticmethod
    def owner_rows(batches: list[tuple[int, list[Command], int]]) -> Iterable[tuple[int, str, int, int, int, str]]:
        """(part, owner, first and last batch, digest, the batches as a JSON array): a row per owner
        and part in a frame. A row per batch and owner was a fifth of this process's time."""
        groups: dict[tuple[int, str], list[int]] = {}
        for first_seq, cmds, _ in batches:
            part = first_seq >> PART_BITS
            for owner in {cmd.account if type(cmd) is Transfer else cast(OrderCommand, cmd).owner for cmd in cmds}:
                group = groups.get((part, owner))
                if group is None:
                    groups[part, owner] = [first_seq]
                else:
                    group.append(first_seq)
        for (part, owner), seqs in groups.items():
            listed = f"[{','.join(map(str, seqs))}]"
            yield part, owner, seqs[0], seqs[-1], group_digest(listed.encode()), listed

    def report_rows(self, reports: list[Report]) -> Iterable[tuple]:
        """(part, owner, first seq, last seq, digest, the reports as msgpack): a row per owner and
        part in a frame, kept raw. A row per report was a fifth of this process's time."""
        groups: dict[tuple[int, str], list[Report]] = {}
        for r in reports:
            key = (r.seq >> PART_BITS, r.owner)
            group = groups.get(key)
            if group is None:
                groups[key] = [r]
            else:
                group.append(r)
        encode = self.encode
        for (part, owner), group in groups.items():
            seqs = [r.seq for r in group]
            blob = encode(group)
            yield part, owner, min(seqs), max(seqs), group_digest(blob), blob

    def add_refusals(self, refusals: list[tuple[int, Refusal]]) -> None:
        """The frame's refused requests as one row (a flood of them costs the writer one
        encode, not a row each), and one per owner that names it."""
        batch = self.conn.execute(INSERT_REFUSALS, (self.iso(refusals[0][0]), self.encode(refusals))).lastrowid
        self.conn.executemany(INSERT_REFUSAL_OWNER, ((owner, batch) for owner in sorted({r.owner for _, r in refusals})))


def read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    return data if data is not None and len(data) == n else None


def main(argv: list[str]) -> int:
    # Derived data, bounded backlog: when the cores are busy, matching and ACKs go first.
    os.nice(19)
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
