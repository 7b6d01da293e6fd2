"""A tiny market maker on tickline's Python client: one bid and one ask around the mid.

    python examples/market_maker.py --account alice --password alice --symbol AAPL --duration 30

It keeps a replica of the book from the market-data port, and every --every seconds
quotes --qty on each side, --spread ticks apart around the mid (the reference price when
a side is empty), moving its quotes with REPLACE. Fills print as they come. At the end
it cancels what is left and prints what it did.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from client import OrderRejected, connect, market_data  # noqa: E402
from client.exchange import Exchange  # noqa: E402
from protocol.replies import FillReport  # noqa: E402


def on_tick(price: Decimal, tick: Decimal, rounding: str) -> Decimal:
    return (price / tick).to_integral_value(rounding) * tick


class Maker:
    def __init__(self, ex: Exchange, symbol: str, tick: Decimal, qty: str, spread: int) -> None:
        self.ex, self.symbol, self.tick, self.qty, self.spread = ex, symbol, tick, qty, spread
        self.quotes: dict[str, tuple[int, Decimal] | None] = {"BUY": None, "SELL": None}  # side -> (order id, price)
        self.fills = 0

    def targets(self, mid: Decimal) -> dict[str, Decimal]:
        half = self.tick * self.spread / 2
        return {"BUY": on_tick(mid - half, self.tick, ROUND_FLOOR), "SELL": on_tick(mid + half, self.tick, ROUND_CEILING)}

    async def quote(self, mid: Decimal) -> None:
        for side, price in self.targets(mid).items():
            current = self.quotes[side]
            try:
                if current is None:
                    send = self.ex.buy if side == "BUY" else self.ex.sell
                    ack = await send(self.symbol, self.qty, str(price))
                    self.quotes[side] = (ack.order_id, price)
                elif current[1] != price:
                    await self.ex.replace(current[0], self.qty, str(price))
                    self.quotes[side] = (current[0], price)
            except OrderRejected as rej:  # filled meanwhile (unknown_order), or no funds: quote anew next time
                print(f"{side} not quoted: {rej}", flush=True)
                self.quotes[side] = None

    async def watch_fills(self) -> None:
        async for report in self.ex.reports():
            if isinstance(report, FillReport):
                self.fills += 1
                print(f"FILL {report.side} {report.qty} @ {report.price} leaves={report.leaves}", flush=True)
                if Decimal(report.leaves) == 0:
                    self.quotes[report.side] = None  # filled: quote that side anew

    def own_prices(self) -> set[Decimal]:
        return {q[1] for q in self.quotes.values() if q is not None}

    async def cancel_all(self) -> None:
        for side, current in self.quotes.items():
            if current is not None:
                try:
                    await self.ex.cancel(current[0])
                except OrderRejected:
                    pass  # filled in the meantime
                self.quotes[side] = None


async def run(args: argparse.Namespace) -> int:
    async with (
        connect(args.host, args.port, account=args.account, password=args.password) as ex,
        market_data(args.host, args.md_port, [args.symbol]) as md,
    ):
        symbols = {s.symbol: s for s in (await ex.symbols()).symbols}
        tick = Decimal(symbols[args.symbol].tick)
        book = await md.synced(args.symbol)
        maker = Maker(ex, args.symbol, tick, args.qty, args.spread)
        fills = asyncio.create_task(maker.watch_fills())
        loop = asyncio.get_running_loop()
        end = loop.time() + args.duration
        while loop.time() < end:
            # The mid of what others quote (own quotes left out), or the reference price.
            own = maker.own_prices()
            bids = [Decimal(p) for p, _ in book.levels(50)[0] if Decimal(p) not in own]
            asks = [Decimal(p) for p, _ in book.levels(50)[1] if Decimal(p) not in own]
            mid = (bids[0] + asks[0]) / 2 if bids and asks else Decimal(args.reference)
            await maker.quote(mid)
            quoted = {side: str(q[1]) if q else "-" for side, q in maker.quotes.items()}
            print(f"quoting {args.symbol} mid={mid} bid={quoted['BUY']} ask={quoted['SELL']}", flush=True)
            await asyncio.sleep(args.every)
        await maker.cancel_all()
        fills.cancel()
        print(f"done: {maker.fills} fills, {md.gaps} gaps in the feed", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7001)
    parser.add_argument("--md-port", type=int, default=7002)
    parser.add_argument("--account", default="alice")
    parser.add_argument("--password", default="alice")
    parser.add_argument("--symbol", default="AAPL")
    parser.add_argument("--qty", default="10")
    parser.add_argument("--spread", type=int, default=10, help="ticks between bid and ask")
    parser.add_argument("--reference", default="150.00", help="the mid while a side is empty")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between requotes")
    parser.add_argument("--duration", type=float, default=60.0)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
