"""The exchange-core benchmark mix as a seeded command stream (see ../shared/REFERENCE.md).

One symbol; 9% new GTC limit, 3% IOC/market, 6% cancel, 82% move (replace price);
about 1,000 resting orders over about 750 price levels; 1,000 owners; a few percent
of commands trade. With order_types, 10% of commands are stops (triggers a few ticks from
the last trade, a third of them stop-market) and 10% icebergs (a fifth of the quantity
shown), the other 80% the mix above. The stream is generated against a live Book so that cancels and
moves name orders that are really open; timing runs then replay it on fresh books.
"""

from __future__ import annotations

import random

from exchange.book import Book
from exchange.instruments import Instrument, InstrumentSpec
from protocol.messages import TIF, Cancel, Canceled, Command, Fill, NewOrder, Replace, Side

BENCH_INSTRUMENT = Instrument("BENCH", InstrumentSpec(tick="0.01", lot="1"))
MID = 100_000  # ticks
HALF_SPREAD = 750  # resting prices within MID +- this: ~750 distinct levels for ~1,000 orders
TARGET_RESTING = 1_000


def generate(n: int, seed: int = 1, owners: int = 1_000, order_types: bool = False) -> list[tuple[int, Command]]:
    """n (sequence, command) pairs; sequences start at 1 like the journal's."""
    rng = random.Random(seed)
    book = Book(BENCH_INSTRUMENT)
    symbol = BENCH_INSTRUMENT.symbol
    names = [f"u{i}" for i in range(owners)]
    live: list[int] = []  # open order ids, for picking cancel/move targets in O(1)
    where: dict[int, int] = {}  # order id -> index in live
    stream: list[tuple[int, Command]] = []

    def forget(order_id: int) -> None:
        i = where.pop(order_id)
        last = live.pop()
        if last != order_id:
            live[i] = last
            where[last] = i

    for seq in range(1, n + 1):
        roll = rng.random()
        kind = rng.random() if order_types else 1.0
        cmd: Command
        price: int | None
        if kind < 0.1:  # a stop, a few ticks beyond the last trade
            side = Side.BUY if rng.random() < 0.5 else Side.SELL
            last = book.last or MID
            stop = last + rng.randint(1, 30) if side is Side.BUY else last - rng.randint(1, 30)
            price = None if rng.random() < 0.33 else stop + (5 if side is Side.BUY else -5)
            cmd = book.budgeted(NewOrder(symbol, side, rng.randint(1, 100), price, TIF.GTC if price else TIF.IOC, rng.choice(names), stop=stop))
        elif kind < 0.2:  # an iceberg resting around the mid
            side = Side.BUY if rng.random() < 0.5 else Side.SELL
            price = MID - rng.randint(1, HALF_SPREAD) if side is Side.BUY else MID + rng.randint(1, HALF_SPREAD)
            qty = rng.randint(5, 100)
            cmd = NewOrder(symbol, side, qty, price, TIF.GTC, rng.choice(names), show=qty // 5)
        else:
            cmd = _plain(rng, roll, book, live, names)
        stream.append((seq, cmd))
        for event in book.apply(seq, cmd):
            if type(event) is Fill and event.leaves == 0 and event.order_id in where:
                forget(event.order_id)
            elif type(event) is Canceled and event.order_id in where:
                forget(event.order_id)
        if type(cmd) is NewOrder and seq in book.orders and seq not in where:
            where[seq] = len(live)
            live.append(seq)
    return stream


def _plain(rng: random.Random, roll: float, book: Book, live: list[int], names: list[str]) -> Command:
    """One command of the exchange-core mix."""
    symbol = book.symbol
    if not live:
        roll = 0.0
    elif len(live) < TARGET_RESTING * 0.9:
        roll = min(roll, 0.08) if rng.random() < 0.5 else roll
    elif len(live) > TARGET_RESTING * 1.1:
        roll = 0.13 if roll < 0.09 else roll  # turn new orders into cancels
    cmd: Command
    price: int | None
    if roll < 0.09:  # new GTC limit, resting around the mid
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        offset = rng.randint(1, HALF_SPREAD)
        price = MID - offset if side is Side.BUY else MID + offset
        cmd = NewOrder(symbol, side, rng.randint(1, 100), price, TIF.GTC, rng.choice(names))
    elif roll < 0.12:  # IOC or market, taking near the top of the book
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        price = None if rng.random() < 0.3 else (MID + 20 if side is Side.BUY else MID - 20)
        cmd = NewOrder(symbol, side, rng.randint(1, 50), price, TIF.IOC, rng.choice(names))
    elif roll < 0.18:  # cancel
        order = book.orders[live[rng.randrange(len(live))]]
        cmd = Cancel(symbol, order.order_id, order.owner)
    else:  # move: replace the price, keep the quantity
        order = book.orders[live[rng.randrange(len(live))]]
        if rng.random() < 0.07:  # an aggressive move across the mid: it may trade
            price = MID + 10 if order.side is Side.BUY else MID - 10
        else:
            price = max(1, (order.price or MID) + (rng.randint(-8, 8) or 1))  # (a resting order has a price)
        # Drift back towards the mid so the book keeps its shape over a million moves.
        if order.side is Side.BUY and MID - 1 <= price < MID + 10:
            price = MID - rng.randint(1, HALF_SPREAD)
        elif order.side is Side.SELL and MID - 10 < price <= MID + 1:
            price = MID + rng.randint(1, HALF_SPREAD)
        cmd = Replace(symbol, order.order_id, order.leaves + order.hidden, price, order.owner)
    return cmd
