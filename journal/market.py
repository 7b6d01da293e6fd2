"""TICKER, KLINES and TRADES: market history read from the trade log, off the event loop.

One read-only aiosqlite connection (its own thread): a query never blocks matching, and
WAL lets it read while the writer process commits. The trade log's writer keeps candles
for every interval as it commits trades (journal/tradelog_writer.py), so KLINES reads
at most `limit` rows of one index and TICKER at most 1,440 one-minute candles.

How fresh: the caller (tickline/app.py) waits until everything made durable before the
query is matched and committed to the trade log, so an answer includes every trade of
every order ACKed before the query was read.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Callable

import aiosqlite

from exchange.instruments import Instrument
from journal.tradelog_writer import INTERVALS
from protocol import replies as R
from protocol.messages import Reason
from protocol.requests import KlinesQuery, MarketQuery, TickerQuery, TradesQuery, is_number

MAX_LIMIT = 1000  # candles or trades in one answer
LIMIT_ERROR = R.Error("bad_request", f"limit must be 1..{MAX_LIMIT}")
DAY = 86_400
# The best bid and ask of a symbol now, each (ticks, lots) or None: Book.bbo.
BestPrices = Callable[[str], tuple[tuple[int, int] | None, tuple[int, int] | None]]


def utc(seconds: float) -> str:
    """A time as the replies print it: ISO-8601, UTC, 'Z'."""
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{moment.microsecond:06d}Z" if moment.microsecond else "Z")


def parse_time(text: str) -> int | None:
    """from= / to=: unix milliseconds, or ISO-8601 (UTC unless an offset is given); unix seconds back."""
    if is_number(text):  # (more digits: not a time SQLite's 64-bit integers hold)
        return int(text) // 1000
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp())


class Market:
    def __init__(self, path: Path, instruments: dict[str, Instrument], best: BestPrices) -> None:
        self.path = path
        self.instruments = instruments
        self.best = best
        self.db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        # Read-only: this connection can never take the writer's lock.
        self.db = await aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True)

    async def close(self) -> None:
        if self.db is not None:
            await self.db.close()
            self.db = None

    async def answer(self, q: MarketQuery) -> R.Reply:
        inst = self.instruments.get(q.symbol.upper())
        if inst is None:
            return R.Reject("unknown_symbol", f"no such symbol {q.symbol[:16]!r}; type SYMBOLS")
        if isinstance(q, TickerQuery):
            return await self.ticker(inst, time.time())
        if isinstance(q, KlinesQuery):
            return await self.klines(inst, q)
        return await self.trades(inst, q)

    async def _rows(self, sql: str, args: tuple) -> list[tuple]:
        assert self.db is not None, "Market.open() first"
        async with self.db.execute(sql, args) as cursor:
            return [tuple(row) for row in await cursor.fetchall()]

    async def ticker(self, inst: Instrument, now: float) -> R.TickerReply:
        """The window is the last 1,440 one-minute candles, the current one included."""
        since = int(now) - int(now) % 60 - (DAY - 60)
        rows = await self._rows(
            "SELECT open, high, low, close, volume, quote, trades, start FROM candles WHERE symbol = ? AND interval = 60 AND start >= ? ORDER BY start",
            (inst.symbol, since),
        )
        last = await self._rows("SELECT close FROM candles WHERE symbol = ? AND interval = ? ORDER BY start DESC LIMIT 1", (inst.symbol, DAY))
        bid, ask = self.best(inst.symbol)
        price, qty = inst.format_price, inst.format_qty
        volume = sum(int(r[4]) for r in rows)
        quote = sum(int(r[5]) for r in rows)
        opened, last_price = (rows[0][0] if rows else None), (last[0][0] if last else None)
        change = change_pct = None
        if opened is not None and last_price is not None:
            diff = last_price - opened
            change = ("+" if diff >= 0 else "-") + price(abs(diff)) if diff else price(0)
            pct = (Decimal(diff) * 100 / Decimal(opened)).quantize(Decimal("0.01"), ROUND_HALF_EVEN)
            change_pct = f"{pct:+.2f}" if pct else "0.00"
        vwap = None
        if volume:  # ticks per lot, to two more decimals than the tick
            vwap_ticks = Decimal(quote) / Decimal(volume)
            digits = Decimal(1).scaleb(-(inst.tick.decimals + 2))
            vwap = str((vwap_ticks * Decimal(inst.tick.text)).quantize(digits, ROUND_HALF_EVEN))
        return R.TickerReply(
            inst.symbol, utc(int(now)), utc(since),
            None if last_price is None else price(last_price),
            None if opened is None else price(opened),
            price(max(r[1] for r in rows)) if rows else None,
            price(min(r[2] for r in rows)) if rows else None,
            change, change_pct, qty(volume), inst.quote_asset.format(quote * inst.quote_per_lot_tick), vwap, sum(r[6] for r in rows),
            None if bid is None else price(bid[0]), None if bid is None else qty(bid[1]),
            None if ask is None else price(ask[0]), None if ask is None else qty(ask[1]),
        )  # fmt: skip

    async def klines(self, inst: Instrument, q: KlinesQuery) -> R.Reply:
        if not 1 <= q.limit <= MAX_LIMIT:
            return LIMIT_ERROR
        interval = INTERVALS.get(q.interval)
        if interval is None:
            return R.Error("bad_request", f"interval {q.interval[:8]!r} is not one of " + " ".join(INTERVALS))
        bounds = []
        for name, text in (("from", q.from_), ("to", q.to)):
            seconds = None if text is None else parse_time(text)
            if text is not None and seconds is None:
                return R.Error("bad_request", f"{name}={text[:32]} is not a time: ISO-8601 (UTC) or unix milliseconds")
            bounds.append(seconds)
        start, end = bounds
        where, args = "symbol = ? AND interval = ?", [inst.symbol, interval]
        if start is not None:  # the candle holding `from` is included
            where, args = where + " AND start >= ?", [*args, start - start % interval]
        if end is not None:
            where, args = where + " AND start <= ?", [*args, end]
        # Without from=, the newest `limit` candles; with it, the first `limit` from there.
        order = "ASC" if start is not None else "DESC"
        rows = await self._rows(
            f"SELECT start, open, high, low, close, volume, quote, trades FROM candles WHERE {where} ORDER BY start {order} LIMIT ?", (*args, q.limit)
        )
        if order == "DESC":
            rows.reverse()
        price, qty, quote = inst.format_price, inst.format_qty, inst.quote_asset.format
        candles = [
            R.Candle(utc(t), price(o), price(h), price(lo), price(c), qty(int(v)), quote(int(qv) * inst.quote_per_lot_tick), n)
            for t, o, h, lo, c, v, qv, n in rows
        ]
        return R.KlinesReply(inst.symbol, q.interval, candles)

    async def trades(self, inst: Instrument, q: TradesQuery) -> R.Reply:
        if not 1 <= q.limit <= MAX_LIMIT:
            return LIMIT_ERROR
        where, args = "symbol = ?", [inst.symbol]
        if q.before is not None:
            seq, _, match_no = q.before.partition("-")
            if not (is_number(seq) and is_number(match_no)):
                return R.Error("bad_request", f"before={q.before[:40]} is not a trade id (<seq>-<n>, as TRADES prints them)")
            found = await self._rows("SELECT md_seq FROM trades WHERE seq = ? AND match_no = ? AND symbol = ?", (int(seq), int(match_no), inst.symbol))
            if not found:
                return R.Reject(Reason.UNKNOWN_TRADE.value, f"no {inst.symbol} trade {q.before}")
            where, args = where + " AND md_seq < ?", [*args, found[0][0]]
        rows = await self._rows(f"SELECT trade_id, ts, qty, price, aggressor FROM trades WHERE {where} ORDER BY md_seq DESC LIMIT ?", (*args, q.limit))
        return R.TradesReply(inst.symbol, [R.PublicTrade(tid, _z(ts), qty, price, aggressor) for tid, ts, qty, price, aggressor in rows])


def _z(iso: str) -> str:
    """The trade log's times end in +00:00; replies say Z."""
    return iso[:-6] + "Z" if iso.endswith("+00:00") else iso

