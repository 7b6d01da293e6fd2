"""A tiny notation for order-book tests, so that scenarios read like an exchange rulebook.

Commands:  "a BUY 10 @100"  "b SELL 5 @101 IOC"  "c BUY 7 MKT"  "a CANCEL 3"  "a REPLACE 3 4 @99"
           (owner first; prices and quantities in ticks and lots of TEST, tick 1, lot 1)
Events:    "accepted 3"  "rejected bad_qty"  "trade 3-1 5@100 maker=1 taker=3"
           "fill 1 5@100 leaves=0 A"  "canceled 3 leaves=5 expired"  "replaced 3 4@99 lost"
Book:      "BUY 100: 1a:5 2b:3"  one line per level, best first, bids then asks; orders in priority order
"""

from __future__ import annotations

from typing import Callable

from exchange.book import Book
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
    NewOrder,
    Quote,
    Rejected,
    Replace,
    Replaced,
    Side,
    Trade,
)

TEST = Instrument("TEST", InstrumentSpec(tick="1", lot="1", max_qty="1000", min_price="1", max_price="10000"))


def command(text: str) -> Command:
    owner, verb, *rest = text.split()
    verb = verb.upper()
    if verb in ("BUY", "SELL"):
        qty, price_text, *tif = rest
        price = None if price_text == "MKT" else int(price_text.lstrip("@"))
        default = "IOC" if price is None else "GTC"
        return NewOrder("TEST", Side[verb], int(qty), price, TIF[(tif or [default])[0]], owner)
    if verb == "CANCEL":
        return Cancel("TEST", int(rest[0]), owner)
    if verb == "REPLACE":
        price = int(rest[2].lstrip("@")) if len(rest) > 2 else None
        return Replace("TEST", int(rest[0]), int(rest[1]), price, owner)
    raise ValueError(text)


def event(e: Event) -> str:
    if isinstance(e, Accepted):
        return f"accepted {e.order_id}"
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
        levels.setdefault((o.side.value, o.price), []).append(f"{o.order_id}{o.owner}:{o.leaves}")
    return [f"{side} {price}: {' '.join(orders)}" for (side, price), orders in levels.items()]


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
