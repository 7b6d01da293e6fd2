"""A tiny notation for order-book tests, so that scenarios read like an exchange rulebook.

Commands:  "a BUY 10 @100"  "b SELL 5 @101 IOC"  "c BUY 7 MKT"  "a CANCEL 3"  "a REPLACE 3 4 @99"
           "a BUY 5 @101 STOP=100" (a stop)  "a SELL 100 @50 SHOW=10" (an iceberg)
           "a SELL 10 @90 STOP=95 OCO=2" (paired with order 2: one cancels the other)  "a CANCEL ALL" (every open order of a's)  "a CANCEL ALL 1 4" (those)
           (owner first; prices and quantities in ticks and lots of TEST, tick 1, lot 1)
Events:    "accepted 3"  "rejected bad_qty"  "trade 3-1 5@100 maker=1 taker=3"
           "fill 1 5@100 leaves=0 A"  "canceled 3 leaves=5 expired"  "replaced 3 4@99 lost"
           "accepted 3 stop=100"  "triggered 3"
Book:      "BUY 100: 1a:5 2b:3+20"  one line per level, best first, bids then asks; orders in priority order
           (an iceberg: shown+hidden);
           then "STOP BUY 3a:5@101 at 100" per pending stop, in the order they were accepted
"""

from __future__ import annotations

from typing import Callable, cast

from exchange.book import Book, Order
from exchange.instruments import Instrument, InstrumentSpec
from exchange.naive_book import NaiveBook
from exchange.orderbook import OrderBook
from protocol.messages import (
    TIF,
    Accepted,
    BookLevelChanged,
    Cancel,
    Canceled,
    Command,
    Event,
    Fill,
    MassCancel,
    NewOrder,
    Quote,
    Rejected,
    Replace,
    Replaced,
    Side,
    Trade,
    Triggered,
)

TEST = Instrument("TEST", InstrumentSpec(tick="1", lot="1", max_qty="1000", min_price="1", max_price="10000"))


def command(text: str) -> Command:
    owner, verb, *rest = text.split()
    verb = verb.upper()
    if verb in ("BUY", "SELL"):
        qty, price_text, *options = rest
        price = None if price_text == "MKT" else int(price_text.lstrip("@"))
        stop = next((int(o[5:]) for o in options if o.startswith("STOP=")), None)
        show = next((int(o[5:]) for o in options if o.startswith("SHOW=")), None)
        oco = next((int(o[4:]) for o in options if o.startswith("OCO=")), None)
        tif = [o for o in options if "=" not in o] or ["IOC" if price is None else "GTC"]
        return NewOrder("TEST", Side[verb], int(qty), price, TIF[tif[0]], owner, stop=stop, show=show, oco=oco)
    if verb == "CANCEL" and rest[0] == "ALL":
        return MassCancel("TEST", owner, [int(i) for i in rest[1:]] or None)
    if verb == "CANCEL":
        return Cancel("TEST", int(rest[0]), owner)
    if verb == "REPLACE":
        price = int(rest[2].lstrip("@")) if len(rest) > 2 else None
        return Replace("TEST", int(rest[0]), int(rest[1]), price, owner)
    raise ValueError(text)


def event(e: Event) -> str:
    if isinstance(e, Accepted):
        return f"accepted {e.order_id}" + ("" if e.stop is None else f" stop={e.stop}")
    if isinstance(e, Triggered):
        return f"triggered {e.order_id}"
    if isinstance(e, Rejected):
        return f"rejected {e.reason.value}"
    if isinstance(e, Trade):
        return f"trade {e.trade_id} {e.qty}@{e.price} maker={e.maker_order_id} taker={e.taker_order_id}"
    if isinstance(e, Fill):
        return f"fill {e.order_id} {e.qty}@{e.price} leaves={e.leaves} {e.liquidity.value}"
    if isinstance(e, Canceled):
        return f"canceled {e.order_id} leaves={e.leaves} {e.reason.value}"
    if isinstance(e, Replaced):
        return f"replaced {e.order_id} {e.qty}@{e.price} {'kept' if e.priority_kept else 'lost'}"
    if isinstance(e, BookLevelChanged):
        return f"level {e.side.value} {e.price}={e.qty}"
    if isinstance(e, Quote):
        return f"quote {e.bid}x{e.bid_qty} {e.ask}x{e.ask_qty}"
    raise TypeError(e)


def book_lines(book: OrderBook) -> list[str]:
    """The book through its contract (resting orders in priority order), one line per level."""
    levels: dict[tuple[str, int | None], list[str]] = {}
    for o in book.resting():
        hidden = cast(Order, o).hidden
        levels.setdefault((o.side.value, o.price), []).append(f"{o.order_id}{o.owner}:{o.leaves}" + (f"+{hidden}" if hidden else ""))
    lines = [f"{side} {price}: {' '.join(orders)}" for (side, price), orders in levels.items()]
    pending = [cast(Order, o) for o in book.pending()]
    return lines + [f"STOP {o.side.value} {o.order_id}{o.owner}:{o.leaves}@{'MKT' if o.price is None else o.price} at {o.stop}" for o in pending]


BOOKS: dict[str, Callable[[], OrderBook]] = {"fast": lambda: Book(TEST), "naive": lambda: NaiveBook(TEST)}


class Runner:
    """Applies rulebook commands with consecutive sequence numbers (order id = sequence)."""

    def __init__(self, book: OrderBook | None = None) -> None:
        self.book: OrderBook = book or Book(TEST)
        self.seq = 0

    def __call__(self, text: str, levels: bool = False) -> list[str]:
        self.seq += 1
        events = self.book.apply(self.seq, command(text))
        return [event(e) for e in events if levels or not isinstance(e, (BookLevelChanged, Quote))]
