"""A seeded, realistic order-entry mix over several symbols, pre-encoded as text lines.

Per connection: new limit orders around a mean-reverting mid (most rest, some cross),
IOC and market orders that take, cancels and replaces of the connection's own earlier
orders (by client order id, so the generator needs no reply to build its next line).
Every new order carries id=c<i>, i its index in the connection's stream, which is how
replies are matched to planned send times.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from exchange.instruments import Instrument, load_instruments


@dataclass(frozen=True)
class SymbolMix:
    symbol: str
    weight: float
    center: int  # ticks
    qty_lots: tuple[int, int]


MIXES = [
    SymbolMix("AAPL", 0.4, 15_000, (1, 100)),  # 150.00
    SymbolMix("BTC-USD", 0.2, 6_400_000, (1_000, 100_000)),  # 64000.00, 0.01-1 BTC
    SymbolMix("ES", 0.2, 18_000, (1, 10)),  # 4500.00
    SymbolMix("EUR-USD", 0.2, 108_000, (1, 100)),  # 1.08000, 1k-100k EUR
]


@dataclass
class Stream:
    lines: list[bytes]  # one request each, LF-terminated
    new_order_at: list[int]  # indexes (= client id numbers) of the lines that are new orders
    takes: bytearray  # 1 at the index of an IOC or market order: its fill latency is measured


def make_stream(n: int, seed: int, conn: int, instruments: dict[str, Instrument] | None = None) -> Stream:
    instruments = instruments or load_instruments()
    rng = random.Random(seed * 1_000_003 + conn)
    mixes, weights = MIXES, [m.weight for m in MIXES]
    mids = {m.symbol: m.center for m in mixes}
    live: list[tuple[int, SymbolMix, str]] = []  # (client id number, mix, side) of GTC orders sent
    lines: list[bytes] = []
    new_at: list[int] = []
    takes = bytearray(n)
    for i in range(n):
        mix = rng.choices(mixes, weights)[0]
        inst = instruments[mix.symbol]
        # Mean-reverting random walk of the mid, within +-60 ticks of the centre.
        mid = mids[mix.symbol] + rng.choice((-1, 0, 1)) + (1 if mids[mix.symbol] < mix.center - 60 else 0) - (1 if mids[mix.symbol] > mix.center + 60 else 0)
        mids[mix.symbol] = mid
        qty = inst.format_qty(rng.randint(*mix.qty_lots))
        roll = rng.random()
        if roll < 0.25 and live:  # cancel one of ours (it may have filled: then a REJ)
            cid, _, _ = live.pop(rng.randrange(len(live)))
            lines.append(f"CANCEL id=c{cid}\n".encode())
        elif roll < 0.42 and live:  # replace: a new price near the mid, same side of it
            cid, lmix, side = live[rng.randrange(len(live))]
            lmid = mids[lmix.symbol]
            price = lmid - rng.randint(1, 20) if side == "BUY" else lmid + rng.randint(1, 20)
            lqty = instruments[lmix.symbol].format_qty(rng.randint(*lmix.qty_lots))
            lines.append(f"REPLACE id=c{cid} {lqty} {instruments[lmix.symbol].format_price(price)}\n".encode())
        else:
            side = "BUY" if rng.random() < 0.5 else "SELL"
            sign = 1 if side == "BUY" else -1
            kind = rng.random()
            if kind < 0.78:  # a resting limit order, a little away from the mid
                price = mid - sign * rng.randint(1, 20)
                lines.append(f"{side} {mix.symbol} {qty} {inst.format_price(price)} id=c{i}\n".encode())
                live.append((i, mix, side))
            elif kind < 0.95:  # a marketable IOC limit: takes what rests near the mid
                price = mid + sign * rng.randint(0, 10)
                lines.append(f"{side} {mix.symbol} {qty} {inst.format_price(price)} IOC id=c{i}\n".encode())
                takes[i] = 1
            else:  # a market order
                lines.append(f"{side} {mix.symbol} {qty} id=c{i}\n".encode())
                takes[i] = 1
            new_at.append(i)
    return Stream(lines, new_at, takes)
