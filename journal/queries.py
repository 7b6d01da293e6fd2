"""Read the trade log and the order audit (plain sqlite3: for the command line and tests)."""

from __future__ import annotations

import heapq
import itertools
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, cast

import msgspec

from exchange.instruments import Asset, Instrument, InstrumentSpec
from journal.records import decode_records
from journal.tradelog_writer import LAYOUT, PART_BITS, create_tables, iso
from protocol.messages import Cancel, Canceled, Command, Fill, MassCancel, NewOrder, OrderCommand, Refusal, Rejected, Replace, Replaced, Report, Transfer, Triggered


class NoTradeLog(Exception):
    """The data directory has no trade log (no server has run there)."""


def connect_readonly(db: Path) -> sqlite3.Connection:
    if not db.exists():
        raise NoTradeLog(f"no trade log at {db}: is --data-dir (or TICKLINE_DATA) the server's data directory?")
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    if conn.execute("PRAGMA user_version").fetchone()[0] < LAYOUT:  # an older layout: upgrade it first
        conn.close()
        create_tables(db).close()
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def _parts(first_seq: int, last_seq: int) -> tuple[str, list[int]]:
    """A WITH clause naming the parts (tradelog_writer.PART_BITS) from first_seq's to
    last_seq's: joined to an owner-keyed table, one seek per part."""
    sql = "WITH RECURSIVE parts(p) AS (SELECT ? UNION ALL SELECT p + 1 FROM parts WHERE p < ?) "
    return sql, [max(first_seq, 0) >> PART_BITS, max(last_seq, 0) >> PART_BITS]


def since_value(text: str) -> str:
    """--since as the log compares it: a journal sequence number, or an ISO-8601 time (UTC
    unless it says otherwise) in the log's own form; ValueError for anything else."""
    if text.isdigit():
        return text
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text[:40]!r} is neither a sequence number nor an ISO-8601 time (e.g. 2026-12-03 or 2026-12-03T14:05:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _since(value: str | None) -> tuple[str, list]:
    """--since: a journal sequence number, or an ISO-8601 time."""
    if value is None:
        return "", []
    value = since_value(value)
    if value.isdigit():
        return " AND seq >= ?", [int(value)]
    return " AND ts >= ?", [value]


def trades(db: Path, symbol: str | None = None, since: str | None = None, limit: int | None = None) -> Iterator[sqlite3.Row]:
    where, args = "WHERE 1=1", []
    if symbol:
        where, args = where + " AND symbol = ?", [symbol.upper()]
    clause, more = _since(since)
    sql = f"SELECT * FROM trades {where}{clause} ORDER BY seq, match_no"
    if limit:
        sql += f" LIMIT {int(limit)}"
    with connect_readonly(db) as conn:
        yield from conn.execute(sql, args + more)


def orders(
    db: Path, owner: str | None = None, symbol: str | None = None, status: str | None = None, since: str | None = None, limit: int | None = None
) -> Iterator[dict]:
    """Audit rows, oldest first, each with its outcome ("result"): the journaled commands'
    rows, made from their batches' records, merged with the refused requests' rows (and the
    journaled ones of logs written before audit_batches) by time."""
    with connect_readonly(db) as conn:
        instruments = stored_instruments(conn)
        stored = _table_rows(conn, owner, symbol, status, since)
        journaled = _journaled_rows(conn, instruments, owner, symbol, since) if status in (None, "accepted") else iter(())
        refused = _refused_rows(conn, owner, symbol, since) if status in (None, "rejected") else iter(())
        merged = heapq.merge(
            ((r["ts"], 0, r["order_id"], r) for r in journaled), ((r["ts"], 1, r["id"], r) for r in stored), ((r["ts"], 2, n, r) for n, r in enumerate(refused))
        )
        outcome = Outcomes(conn, instruments)
        for _, _, _, row in itertools.islice(merged, limit or None):
            result = outcome(row["order_id"], row["owner"], row["target"]) if row["order_id"] is not None else ""
            yield {**row, "result": result}


def _table_rows(conn: sqlite3.Connection, owner: str | None, symbol: str | None, status: str | None, since: str | None) -> Iterator[dict]:
    where, args = "WHERE 1=1", []
    for column, value in (("owner", owner), ("symbol", symbol and symbol.upper()), ("status", status)):
        if value:
            where += f" AND {column} = ?"
            args.append(value)
    clause, more = _since(since)
    clause = clause.replace("seq", "order_id")
    for row in conn.execute(f"SELECT * FROM orders {where}{clause} ORDER BY ts, id", args + more):
        yield dict(row)


_decode_refusals = msgspec.msgpack.Decoder(list[tuple[int, Refusal]]).decode


def _refused_rows(conn: sqlite3.Connection, owner: str | None, symbol: str | None, since: str | None) -> Iterator[dict]:
    """An audit row for every refused request (status rejected), in time order, from the
    records in refusal_batches. A refusal has no journal seq: --since <seq> lists none."""
    value = since_value(since) if since is not None else None
    if value is not None and value.isdigit():
        return
    sql, args = "SELECT b.record FROM refusal_batches b", cast(list[object], [])
    if owner:
        sql, args = sql + " JOIN refusal_owners o ON o.batch = b.id AND o.owner = ?", [owner]
    if value is not None:  # from the batch holding that time on (a batch's refusals all come before the next one's)
        sql, args = sql + " WHERE b.id >= (SELECT coalesce(max(id), 0) FROM refusal_batches WHERE ts < ?)", args + [value]
    for (record,) in conn.execute(sql + " ORDER BY b.id", args):
        for ts_ns, r in _decode_refusals(record):
            if owner and r.owner != owner or symbol and r.symbol != symbol.upper():
                continue
            price = r.price or ("MKT" if r.kind == "new" else "")
            ts = iso(ts_ns)
            if value is not None and ts < value:
                continue
            yield {
                "id": None, "order_id": None, "ts": ts, "owner": r.owner, "symbol": r.symbol, "side": r.side, "qty": r.qty, "price": price, "tif": r.tif or "",
                "client_id": r.client_id, "status": "rejected", "reason": r.reason, "text": r.text, "kind": r.kind, "target": r.target,
            }  # fmt: skip


def _journaled_rows(conn: sqlite3.Connection, instruments: dict[str, Instrument], owner: str | None, symbol: str | None, since: str | None) -> Iterator[dict]:
    """An audit row for every journaled command (status accepted: it reached matching), in
    the order of its batch's time, from the records in audit_batches."""
    assets = {name: Asset(name, unit) for name, unit in conn.execute("SELECT name, unit FROM assets")}
    value = since_value(since) if since is not None else None
    sql, args = "SELECT b.first_seq, b.ts, b.record FROM audit_batches b", cast(list[object], [])
    first = 0  # the first batch that may hold a row to list
    if value is not None and value.isdigit():  # from the batch holding that seq on
        first = conn.execute("SELECT coalesce(max(first_seq), 0) FROM audit_batches WHERE first_seq <= ?", (int(value),)).fetchone()[0]
    if owner:
        last = conn.execute("SELECT coalesce(max(first_seq), 0) FROM audit_batches").fetchone()[0]
        with_parts, bounds = _parts(first, last)
        sql = with_parts + "SELECT b.first_seq, b.ts, b.record FROM parts JOIN audit_owner_groups o ON o.part = parts.p AND o.owner = ?"
        sql, args = sql + " JOIN json_each(o.batches) j JOIN audit_batches b ON b.first_seq = j.value", [*bounds, owner]
    if value is not None and value.isdigit():
        sql, args = sql + " WHERE b.first_seq >= ?", args + [first]
    elif value is not None:
        sql, args = sql + " WHERE b.ts >= ?", args + [value]
    # A log from before audit_batches has its journaled rows in orders: a batch recovery
    # handed over again after the upgrade must not list them twice.
    old = conn.execute("SELECT max(order_id) FROM orders").fetchone()[0] or 0
    listed = 0  # (a batch two groups name, after a refill, comes twice in a row)
    for first_seq, ts, record in conn.execute(sql + " ORDER BY b.ts, b.first_seq", args):
        if first_seq == listed:
            continue
        listed = first_seq
        for batch_seq, _, cmds, _, _ in decode_records(record, first_seq):
            for seq, cmd in enumerate(cmds or [], batch_seq):
                row = audit_row(seq, ts, cmd, instruments, assets)
                if owner and row["owner"] != owner or symbol and row["symbol"] != symbol.upper():
                    continue
                if value is not None and value.isdigit() and seq < int(value):
                    continue
                if seq <= old and conn.execute("SELECT 1 FROM orders WHERE order_id = ?", (seq,)).fetchone():
                    continue
                yield row


def audit_row(seq: int, ts: str, cmd: Command, instruments: dict[str, Instrument], assets: dict[str, Asset]) -> dict:
    """A journaled command as an audit row (the columns of the orders table)."""
    row = {"id": None, "order_id": seq, "ts": ts, "client_id": None, "status": "accepted", "reason": None, "text": None, "target": None}
    if type(cmd) is Transfer:  # the asset in the symbol column, the ref as the client id
        asset = assets.get(cmd.asset)
        amount = asset.format(abs(cmd.amount)) if asset is not None else str(abs(cmd.amount))
        kind = "deposit" if cmd.amount > 0 else "withdrawal"
        return row | {"owner": cmd.account, "symbol": cmd.asset, "side": "", "qty": amount, "price": "", "tif": "", "client_id": cmd.ref, "kind": kind}
    order = cast(OrderCommand, cmd)
    inst = instruments[order.symbol]
    row |= {"owner": order.owner, "symbol": order.symbol, "side": "", "qty": "", "price": "", "tif": ""}
    if type(cmd) is NewOrder:
        price = "MKT" if cmd.price is None else inst.format_price(cmd.price)
        row |= {"side": cmd.side.value, "qty": inst.format_qty(cmd.qty), "price": price, "tif": cmd.tif.value, "client_id": cmd.client_id, "kind": "new"}
        if cmd.stop is not None:
            row["stop"] = inst.format_price(cmd.stop)
        if cmd.show is not None:
            row["show"] = inst.format_qty(cmd.show)
        if cmd.oco is not None:
            row["oco"] = cmd.oco
        return row
    if type(cmd) is Cancel:
        return row | {"kind": "cancel", "target": cmd.order_id}
    if type(cmd) is MassCancel:  # its order ids: the orders it canceled (the reports say)
        return row | {"kind": "cancel_all"}
    assert type(cmd) is Replace
    price = "" if cmd.price is None else inst.format_price(cmd.price)
    return row | {"qty": inst.format_qty(cmd.qty), "price": price, "kind": "replace", "target": cmd.order_id}


def trade_line(row: sqlite3.Row) -> str:
    return (
        f"TRADE {row['trade_id']} {row['ts']} {row['symbol']} {row['qty']} {row['price']} aggressor={row['aggressor']} "
        f"maker={row['maker_order_id']} taker={row['taker_order_id']}"
    )


def order_line(row: dict) -> str:
    """One audited request: what it asked, whether it was journaled, and what matching made of it."""
    kind = row["kind"]
    head = f"{kind.upper() if kind != 'new' else 'ORDER'} {row['order_id'] if row['order_id'] is not None else '-'} {row['ts']} {row['status']}"
    target = row["target"] if row["target"] is not None else "-"  # (a cancel by an unknown client id names no order)
    if kind == "cancel":
        body = f"{row['symbol']} order={target}"
    elif kind == "replace":
        body = f"{row['symbol']} order={target} qty={row['qty']}" + (f" price={row['price']}" if row["price"] else "")
    elif kind == "cancel_all":  # one per symbol the owner had open orders in: which ones, the outcome says
        body = row["symbol"]
    elif kind in ("deposit", "withdrawal"):  # the asset, the amount, the operator's ref
        return f"{head} {row['symbol']} {row['qty']} account={row['owner']} ref={row['client_id']}"
    else:
        body = f"{row['side']} {row['symbol']} {row['qty']} {row['price']} {row['tif'] or '-'}"
        body += "".join(f" {key}={row[key]}" for key in ("stop", "show", "oco") if row.get(key) is not None)  # (journaled: from the command)
    cid = f" id={row['client_id']}" if row["client_id"] else ""
    why = f" reason={row['reason']} {row['text']}" if row["reason"] else ""
    outcome = f" -> {row['result']}" if row["result"] else ""
    return f"{head} {body} owner={row['owner']}{cid}{why}{outcome}"


_decode_reports = msgspec.msgpack.Decoder(list[Report]).decode


MAX_REPORTS_PAGE = 10_000  # REPORTS answers at most this many (and the whole of its first command's)
_GROUPS_SQL = (
    "SELECT g.first_seq, g.reports FROM parts JOIN report_groups g ON g.part = parts.p AND g.owner = ? "
    "WHERE g.last_seq > ? AND g.first_seq <= ? ORDER BY g.first_seq, g.last_seq, g.digest"
)


def _reports(conn: sqlite3.Connection, owner: str, since: int, through: int) -> Iterator[tuple[int, Report]]:
    """(seq, report) of an owner's reports with since < seq <= through, in seq order and, for
    one seq, in the order matching made them. A refill may have stored a command's reports
    in a second group: the first group that holds the command is the one read."""
    with_parts, args = _parts(since + 1, through)
    pending: list[tuple[int, int, int, Report]] = []  # (seq, group, position, report): a heap
    holder: dict[int, int] = {}  # seq -> the group its reports are taken from
    for group, (first_seq, blob) in enumerate(conn.execute(with_parts + _GROUPS_SQL, [*args, owner, since, through])):
        while pending and pending[0][0] < first_seq:  # no later group holds a seq below its first
            seq, *_, r = heapq.heappop(pending)
            holder.pop(seq, None)
            yield seq, r
        for position, r in enumerate(_decode_reports(blob)):
            if since < r.seq <= through and holder.setdefault(r.seq, group) == group:
                heapq.heappush(pending, (r.seq, group, position, r))
    while pending:
        seq, *_, r = heapq.heappop(pending)
        yield seq, r


def reports_of(db: Path, owner: str, since: int, through: int) -> list[Report]:
    """An owner's execution reports caused by commands with since < seq <= through, in order."""
    return reports_page(db, owner, since, through, None)[0]


def reports_page(db: Path, owner: str, since: int, through: int, limit: int | None = MAX_REPORTS_PAGE) -> tuple[list[Report], int, bool]:
    """Up to `limit` of those reports, whole commands: (the reports, the seq they run through,
    whether there are more after it). A command whose reports alone are more than a page
    comes whole (one sweep's fills: as many as the book had orders)."""
    if not db.exists():
        return [], through, False
    with connect_readonly(db) as conn:
        found = _reports(conn, owner, since, through)
        rows = list(found if limit is None else itertools.islice(found, limit + 1))
        if limit is None or len(rows) <= limit:
            return [r for _, r in rows], through, False
        cut = rows[limit][0]  # the command of the first report left out
        if rows[0][0] != cut:
            return [r for seq, r in rows[:limit] if seq < cut], cut - 1, True
        # One command fills the page: all of its reports, and whether any come after it.
        whole = [r for _, r in rows]
        for seq, r in found:
            if seq != cut:
                return whole, cut, True
            whole.append(r)
        return whole, cut, False


class Outcomes:
    """What a command's reports to its owner said, e.g. "fill 4@150.25, canceled expired";
    a report about another of the owner's orders (a resting order canceled by self-trade
    prevention) names it: "canceled self_trade order=28". An audit asks for one command
    after another of the same groups: the last ones read are kept decoded."""

    KEPT = 64  # decoded groups

    def __init__(self, conn: sqlite3.Connection, instruments: dict[str, Instrument]) -> None:
        self.conn, self.instruments = conn, instruments
        self.groups: dict[tuple[str, int, int, int], dict[int, list[Report]]] = {}  # (owner, first seq, last seq, digest) -> seq -> its reports

    def __call__(self, seq: int, owner: str, target: int | None = None) -> str:
        parts = []
        for r in self.reports(seq, owner):
            said = _said(r, self.instruments)
            parts.append(f"{said} order={r.order_id}" if r.order_id not in (seq, target, None) else said)
        return ", ".join(parts)

    def reports(self, seq: int, owner: str) -> list[Report]:
        sql = (
            "SELECT first_seq, last_seq, digest FROM report_groups WHERE part = ? AND owner = ? AND first_seq <= ? AND last_seq >= ?"
            " ORDER BY first_seq, last_seq, digest"
        )
        for first_seq, last_seq, digest in self.conn.execute(sql, (seq >> PART_BITS, owner, seq, seq)):
            key = (owner, first_seq, last_seq, digest)
            by_seq = self.groups.get(key)
            if by_seq is None:
                if len(self.groups) >= self.KEPT:
                    self.groups.clear()
                sql = "SELECT reports FROM report_groups WHERE part = ? AND owner = ? AND first_seq = ? AND last_seq = ? AND digest = ?"
                by_seq = self.groups[key] = {}
                for r in _decode_reports(self.conn.execute(sql, (seq >> PART_BITS, *key)).fetchone()[0]):
                    by_seq.setdefault(r.seq, []).append(r)
            if seq in by_seq:  # the first group that holds the command
                return by_seq[seq]
        return []


def _said(r: Report, instruments: dict[str, Instrument]) -> str:
    if type(r) is Fill:
        inst = instruments[r.symbol]
        return f"fill {inst.format_qty(r.qty)}@{inst.format_price(r.price)}"
    if type(r) is Replaced:
        inst = instruments[r.symbol]
        return f"replaced {inst.format_qty(r.qty)}@{inst.format_price(r.price)}"
    if type(r) is Canceled:
        return f"canceled {r.reason.value}"
    if type(r) is Triggered:
        return f"triggered at stop {instruments[r.symbol].format_price(r.stop)}"
    assert type(r) is Rejected
    return f"rejected {r.reason.value}"


def stored_instruments(conn: sqlite3.Connection) -> dict[str, Instrument]:
    """The tick and lot of each symbol, as the writer recorded them."""
    return {s: Instrument(s, InstrumentSpec(tick, lot)) for s, tick, lot in conn.execute("SELECT symbol, tick, lot FROM instruments")}


TradeRow = tuple[int, str, str, str, str, int]  # (md_seq, qty, price, aggressor, trade_id, prev)


def trades_from(db: Path, symbol: str, md_seq: int, limit: int = 100_000) -> list[TradeRow]:
    """A symbol's trades from a market-data seq on, each with the seq of the trade before it."""
    if not db.exists():
        return []
    with connect_readonly(db) as conn:
        before = conn.execute("SELECT MAX(md_seq) FROM trades WHERE symbol = ? AND md_seq < ?", (symbol, md_seq)).fetchone()[0]
        rows = conn.execute(
            "SELECT md_seq, qty, price, aggressor, trade_id FROM trades WHERE symbol = ? AND md_seq >= ? ORDER BY md_seq LIMIT ?",
            (symbol, md_seq, limit),
        )
        out: list[TradeRow] = []
        prev = before or 0
        for r in rows:
            out.append((r[0], r[1], r[2], r[3], r[4], prev))
            prev = r[0]
        return out


def last_trade_seqs(db: Path) -> dict[str, int]:
    """Each symbol's newest trade seq: where its trades channel goes on after a restart."""
    if not db.exists():
        return {}
    with connect_readonly(db) as conn:
        return {r[0]: r[1] for r in conn.execute("SELECT symbol, MAX(md_seq) FROM trades GROUP BY symbol")}
