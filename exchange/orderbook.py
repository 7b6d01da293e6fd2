"""The order-book contract: what every book (the fast one and the naive reference) offers.

Both implementations are driven by one contract suite (tests/test_book_rules.py and the
property tests run against each), so a rule is written once and checked on both.
"""

from __future__ import annotations

from typing import Iterator, Protocol

from exchange.instruments import Instrument
from protocol.messages import TIF, Command, Event, Side

PriceLevel = tuple[int, int]  # (price in ticks, total open quantity in lots)


class RestingOrder(Protocol):
    """An order on the book, as a reader sees it."""

    @property
    def order_id(self) -> int: ...
    @property
    def side(self) -> Side: ...
    @property
    def price(self) -> int | None: ...
    @property
    def leaves(self) -> int: ...
    @property
    def tif(self) -> TIF: ...
    @property
    def owner(self) -> str: ...
    @property
    def client_id(self) -> str | None: ...


class OrderBook(Protocol):
    """One symbol's book: commands in, events out, deterministic; read-only views."""

    symbol: str
    instrument: Instrument

    def apply(self, seq: int, cmd: Command) -> list[Event]:
        """Apply one command; seq is its journal sequence number (and a new order's id)."""
        ...

    def depth(self, levels: int = 10) -> tuple[list[PriceLevel], list[PriceLevel]]:
        """L2: (bids best first, asks best first), up to `levels` each."""
        ...

    def bbo(self) -> tuple[PriceLevel | None, PriceLevel | None]:
        """Best bid and best offer, None for an empty side."""
        ...

    def resting(self) -> Iterator[RestingOrder]:
        """Every resting order, bids then asks, best price first, each level in time priority."""
        ...

    def pending(self) -> Iterator[RestingOrder]:
        """Every pending stop (off the book until triggered), in the order they were accepted."""
        ...

    def order(self, order_id: int) -> RestingOrder | None:
        """The open order with this id: resting on the book, or a pending stop."""
        ...

    def state_hash(self) -> str:
        """A digest of everything that decides future matching."""
        ...
