"""One symbol's public feed: its L2 levels and top as subscribers see them, and updates to send.

The matching core numbers every trade, level change and quote per symbol (md_seq). A
SymbolFeed follows those events in order, keeps the L2 it implies (so a SNAPSHOT is
exactly the state at its seq), names each update's channel predecessor (prev: the seq of
the previous update of the same kind), encodes each update once per form (text, and JSON
only if some subscriber wants it), and keeps recent trades for REPLAY.
"""

from __future__ import annotations

from collections import deque

import msgspec
import structlog

from exchange.book import Book
from exchange.instruments import Instrument
from protocol import marketdata as M
from protocol.messages import BookLevelChanged, MarketData, Quote, Side, Trade

log = structlog.get_logger("notifier")

RECENT_TRADES = 10_000  # per symbol, served from memory by REPLAY; older ones from the trade log


def feeds_of(books: dict[str, Book], last_trade_seqs: dict[str, int] | None = None) -> dict[str, SymbolFeed]:
    """Each book's feed, as at its current state."""
    last = last_trade_seqs or {}
    return {symbol: SymbolFeed.of_book(book, last.get(symbol, 0)) for symbol, book in books.items()}


class Update(msgspec.Struct, gc=False):
    """One sequenced update; kind is trades | quotes | book. Encoded only when first sent
    (once per form): with nobody subscribed, following the market costs almost nothing.

    Untracked by the collector: recent trades are kept for REPLAY, and tracked they filled
    the young generation under load (~100 ms pauses). It refers to its feed, which holds
    it only while it is recent; feeds live as long as the server."""

    seq: int
    prev: int
    kind: str
    _event: MarketData
    _feed: SymbolFeed
    _text: bytes | None = None
    _json: bytes | None = None

    @property
    def text(self) -> bytes:
        if self._text is None:
            self._text = self._feed.encode(self._event, self.prev, False)
        return self._text

    @property
    def json(self) -> bytes:
        if self._json is None:
            self._json = self._feed.encode(self._event, self.prev, True)
        return self._json


# A feed's state, as a snapshot keeps it (a cluster notifier's, cluster/market_data.py):
# (seq, last seq of each kind {trades, book, quotes}, bids, asks, quote)
FeedState = tuple[int, dict[str, int], list[tuple[int, int]], list[tuple[int, int]], tuple[int | None, int, int | None, int]]


class SymbolFeed:
    def __init__(self, inst: Instrument, state: FeedState) -> None:
        seq, last, bids, asks, quote = state
        self.symbol = inst.symbol
        self.inst = inst
        self.seq = seq
        self.last = dict(last)  # seq of each channel's last update
        self.levels: dict[Side, dict[int, int]] = {Side.BUY: dict(bids), Side.SELL: dict(asks)}
        self.quote = (quote[0], quote[1], quote[2], quote[3])  # (a tuple again when read from a snapshot)
        self.pending: list[Update] = []
        self.recent: deque[Update] = deque(maxlen=RECENT_TRADES)

    @classmethod
    def of_book(cls, book: Book, last_trade_seq: int = 0) -> SymbolFeed:
        """last_trade_seq: the newest trade's seq (from the trade log), so the trades
        channel's prev links across a restart; book and quotes restart at the book's seq."""
        bids, asks = book.depth(10**9)
        return cls(book.instrument, (book.md_seq, {"trades": last_trade_seq, "book": book.md_seq, "quotes": book.md_seq}, bids, asks, book.quote))

    def state(self) -> FeedState:
        """What a snapshot keeps: with it, a restarted feed goes on as if it had not stopped
        (every prev link included)."""
        return self.seq, dict(self.last), list(self.levels[Side.BUY].items()), list(self.levels[Side.SELL].items()), self.quote

    def follow(self, e: MarketData, send: bool = True) -> None:
        """Take one market-data event (in md_seq order) into the state and, to be sent, the
        pending list (send False: nobody subscribes, only trades are kept, for REPLAY)."""
        seq = e.md_seq
        if seq != self.seq + 1:
            log.error("md_sequence_gap", symbol=self.symbol, expected=self.seq + 1, got=seq)
        self.seq = seq
        # type(e) is C, not match: class patterns are isinstance calls, slower on this path.
        last = self.last
        if type(e) is BookLevelChanged:
            if e.qty:
                self.levels[e.side][e.price] = e.qty
            else:
                self.levels[e.side].pop(e.price, None)
            if send:
                self.pending.append(Update(seq, last["book"], "book", e, self))
            last["book"] = seq
        elif type(e) is Trade:
            update = Update(seq, last["trades"], "trades", e, self)
            last["trades"] = seq
            self.recent.append(update)
            if send:
                self.pending.append(update)
        elif type(e) is Quote:
            self.quote = (e.bid, e.bid_qty, e.ask, e.ask_qty)
            if send:
                self.pending.append(Update(seq, last["quotes"], "quotes", e, self))
            last["quotes"] = seq
        else:
            raise TypeError(f"not market data: {e!r}")

    def encode(self, e: MarketData, prev: int, as_json: bool) -> bytes:
        # Enums as ._value_: .value is a descriptor, slow on a path taken for every update.
        inst = self.inst
        if type(e) is BookLevelChanged:
            level = (self.symbol, e.side._value_, inst.format_price(e.price), inst.format_qty(e.qty), prev, e.md_seq)
            return (M.level_json if as_json else M.level_text)(*level)
        if type(e) is Trade:
            trade = (self.symbol, inst.format_qty(e.qty), inst.format_price(e.price), e.aggressor._value_, e.trade_id, prev, e.md_seq)
            return (M.trade_json if as_json else M.trade_text)(*trade)
        assert type(e) is Quote
        quote = self._quote_fields((e.bid, e.bid_qty, e.ask, e.ask_qty), prev, e.md_seq)
        return (M.quote_json if as_json else M.quote_text)(*quote)

    def _quote_fields(self, quote: tuple[int | None, int, int | None, int], prev: int, seq: int) -> tuple[str, str, str, str, str, int, int]:
        bid, bid_qty, ask, ask_qty = quote
        inst = self.inst
        return (
            self.symbol,
            "-" if bid is None else inst.format_price(bid), inst.format_qty(bid_qty) if bid is not None else "-",
            "-" if ask is None else inst.format_price(ask), inst.format_qty(ask_qty) if ask is not None else "-",
            prev, seq,
        )  # fmt: skip

    def snapshot(self, as_json: bool) -> bytes:
        """The full L2 at the current seq (includes updates not yet fanned out)."""
        inst = self.inst
        bids = [(inst.format_price(p), inst.format_qty(q)) for p, q in sorted(self.levels[Side.BUY].items(), reverse=True)]
        asks = [(inst.format_price(p), inst.format_qty(q)) for p, q in sorted(self.levels[Side.SELL].items())]
        return (M.snapshot_json if as_json else M.snapshot_text)(self.symbol, self.seq, bids, asks)

    def current_quote(self, as_json: bool) -> bytes:
        """The top of book as state at the current seq (sent on SUB and after a resume)."""
        return (M.quote_json if as_json else M.quote_text)(*self._quote_fields(self.quote, self.last["quotes"], self.seq))
