"""Market history queries over a big trade log: KLINES, TICKER, TRADES.

    python -m bench.queries [--trades 1000000] [--days 30] [--without-candles]

Writes a trade log of N trades on one symbol spread over D days (a random walk, one
journal batch of 100 orders per 100 trades) through the trade log's own writer
(journal/tradelog_writer.py), which keeps the candles as it commits; prints how fast it
wrote, then times each query as the server runs it (journal/market.py, aiosqlite, one
read-only connection): median and worst of 30 runs. The target: KLINES under 50 ms.
--without-candles writes the same log without keeping candles (the writer's cost of them).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import msgspec

from exchange.instruments import Instrument, InstrumentSpec
from journal.market import Market
from journal.records import encode_batch
from journal.tradelog_writer import Frame, Piece, Writer
from protocol import replies as R
from protocol.messages import TIF, NewOrder, Side, Trade
from protocol.requests import KlinesQuery, TickerQuery, TradesQuery

SYMBOL = "BENCH"
INSTRUMENT = Instrument(SYMBOL, InstrumentSpec(tick="0.01", lot="1"))
BATCH = 100  # trades (and orders) per journal batch and per writer frame piece
FRAME = 8_000  # trades per writer transaction, as the server's frames


def write_log(path: Path, trades: int, days: float, keep_candles: bool) -> float:
    """The trade log; returns seconds the writer took."""
    rng = random.Random(1)
    writer = Writer(str(path))
    if not keep_candles:
        writer.add_candles = lambda folded: None  # type: ignore[method-assign]
    encode = msgspec.msgpack.Encoder().encode
    writer.write(Frame(0, [], {SYMBOL: ("0.01", "1")}, {"BENCH": "1", "USD": "0.01"}))
    start_ns = int((time.time() - days * 86_400) * 1e9)
    step_ns = int(days * 86_400e9 / trades)
    price, seq, md_seq, spent = 10_000, 1, 0, 0.0
    pieces: list[msgspec.Raw] = []
    for first in range(0, trades, BATCH):
        cmds = [NewOrder(SYMBOL, Side.BUY, rng.randint(1, 50), price, TIF.IOC, "bench") for _ in range(BATCH)]
        batch_trades = []
        for i, cmd in enumerate(cmds):
            price = max(100, price + rng.choice((-2, -1, 0, 0, 1, 2)))
            md_seq += 1
            batch_trades.append(Trade(md_seq, f"{seq + i}-1", seq + i, SYMBOL, cmd.qty, price, Side.BUY, seq + i - 1, seq + i, "maker", "bench"))
        record = encode_batch(seq, cmds, start_ns + (first + BATCH) * step_ns)
        pieces.append(msgspec.Raw(encode(Piece(records=[(seq, record)], trades=batch_trades))))
        seq += BATCH
        if len(pieces) * BATCH >= FRAME or first + BATCH >= trades:
            frame = msgspec.msgpack.decode(encode(Frame(len(pieces) * BATCH * 2, pieces)), type=Frame)
            t0 = time.perf_counter()
            writer.write(frame)
            spent += time.perf_counter() - t0
            pieces = []
    writer.conn.close()
    return spent


async def time_queries(path: Path, runs: int, trades: int) -> list[tuple[str, float, float, int]]:
    market = Market(path, {SYMBOL: INSTRUMENT}, lambda symbol: (None, None))
    await market.open()
    assert market.db is not None
    oldest = (await (await market.db.execute("SELECT MIN(ts) FROM trades")).fetchone())[0]  # type: ignore[index]
    start = datetime.fromisoformat(oldest).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    middle_id = (await (await market.db.execute("SELECT trade_id FROM trades ORDER BY md_seq LIMIT 1 OFFSET ?", (trades // 2,))).fetchone())[0]  # type: ignore[index]
    cases: list[tuple[str, object]] = [
        *[(f"KLINES {i} (newest 500)", KlinesQuery(SYMBOL, i)) for i in ("1m", "5m", "15m", "1h", "1d")],
        ("KLINES 1m from=<oldest> limit=1000", KlinesQuery(SYMBOL, "1m", start, None, 1000)),
        ("TICKER (24 h of 1m candles)", TickerQuery(SYMBOL)),
        ("TRADES (newest 50)", TradesQuery(SYMBOL)),
        ("TRADES before=<a middle trade> limit=1000", TradesQuery(SYMBOL, 1000, middle_id)),
    ]
    out = []
    for name, query in cases:
        times, size = [], 0
        for _ in range(runs):
            t0 = time.perf_counter()
            reply = await market.answer(query)  # type: ignore[arg-type]
            times.append((time.perf_counter() - t0) * 1000)
            rows = reply.candles if isinstance(reply, R.KlinesReply) else reply.trades if isinstance(reply, R.TradesReply) else [reply]
            size = len(rows)
        out.append((name, statistics.median(times), max(times), size))
    await market.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--without-candles", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trades.sqlite"
        spent = write_log(path, args.trades, args.days, not args.without_candles)
        size = path.stat().st_size + (path.with_name("trades.sqlite-wal").stat().st_size if path.with_name("trades.sqlite-wal").exists() else 0)
        candles = "without candles" if args.without_candles else "with candles"
        print(f"trade log: {args.trades:,} trades over {args.days:g} days, {candles}: writer {spent:.1f} s = {args.trades / spent:,.0f} trades/s, {size / 2**20:.0f} MiB")
        if args.without_candles:
            return
        print(f"{'query':44} {'p50 ms':>8} {'max ms':>8} {'rows':>6}")
        for name, p50, worst, rows in asyncio.run(time_queries(path, args.runs, args.trades)):
            print(f"{name:44} {p50:8.2f} {worst:8.2f} {rows:6}")


if __name__ == "__main__":
    main()
