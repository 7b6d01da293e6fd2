"""A market-data client (port 7002, JSON) that keeps its own replica of each book.

    async with market_data("127.0.0.1", 7002, ["AAPL"]) as md:
        await md.synced("AAPL")
        book = md.books["AAPL"]
        print(book.best_bid(), book.best_ask(), book.levels(5))
        async for update in md.updates():   # every trade, quote and level change, in order
            ...

Each subscription starts with a SNAPSHOT at a sequence number; every later update names
the seq of the previous update of its kind (prev). An update whose prev is greater than
the last seq seen of that kind means one was lost: the replica subscribes again (a fresh
SNAPSHOT) by itself and counts it in `gaps`. Updates in flight from before the new
subscription are skipped. Prices and quantities stay the exchange's decimal strings;
levels are ordered by their exact decimal value.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import AsyncIterator, Iterable

import msgspec

from client.inbox import MAX_LINE, Inbox, close_stream
from protocol import marketdata as M

Update = M.TradeUpdate | M.QuoteUpdate | M.LevelUpdate
MAX_UPDATES = 100_000  # kept for updates() before the oldest are dropped (counted)
KIND = {M.TradeUpdate: "trades", M.QuoteUpdate: "quotes", M.LevelUpdate: "book"}


class BookReplica:
    """One symbol's L2 book as the feed describes it."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids: dict[str, str] = {}  # price -> total quantity
        self.asks: dict[str, str] = {}
        self.seq = 0  # the last update applied (any kind)
        self.last: dict[str, int] = {}  # kind -> the last seq seen of it
        self.synced = asyncio.Event()  # a snapshot has been applied
        self.resyncing = False

    def load(self, snap: M.Snapshot) -> None:
        self.bids, self.asks = dict(snap.bids), dict(snap.asks)
        self.last["book"] = self.seq = snap.seq
        self.synced.set()

    def apply(self, u: M.LevelUpdate) -> None:
        side = self.bids if u.side == "BUY" else self.asks
        if Decimal(u.qty) == 0:
            side.pop(u.price, None)
        else:
            side[u.price] = u.qty

    def levels(self, n: int = 10) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(bids best first, asks best first), up to n each, as (price, qty) texts."""
        bids = sorted(self.bids.items(), key=lambda level: Decimal(level[0]), reverse=True)[:n]
        asks = sorted(self.asks.items(), key=lambda level: Decimal(level[0]))[:n]
        return bids, asks

    def best_bid(self) -> tuple[str, str] | None:
        bids = self.levels(1)[0]
        return bids[0] if bids else None

    def best_ask(self) -> tuple[str, str] | None:
        asks = self.levels(1)[1]
        return asks[0] if asks else None


class MarketData:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_updates: int = MAX_UPDATES) -> None:
        self._reader, self._writer = reader, writer
        self._decode = msgspec.json.Decoder(M.MdMessage).decode
        self._encode = msgspec.json.Encoder().encode
        self.books: dict[str, BookReplica] = {}
        self.gaps = 0  # losses detected (each answered by a fresh subscription)
        self._updates: Inbox[Update] = Inbox(max_updates)
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._read())

    def subscribe(self, symbol: str) -> BookReplica:
        book = self.books.get(symbol)
        if book is None:
            book = self.books[symbol] = BookReplica(symbol)
        self._send(M.Subscribe(symbol, "all"))
        return book

    async def synced(self, symbol: str, timeout: float = 10.0) -> BookReplica:
        """The symbol's replica, once its snapshot is in."""
        book = self.books[symbol]
        await asyncio.wait_for(book.synced.wait(), timeout)
        return book

    def updates(self) -> AsyncIterator[Update]:
        """Every trade, quote and level change of the subscribed symbols, in order."""
        return aiter(self._updates)

    @property
    def updates_dropped(self) -> int:
        return self._updates.dropped

    def _send(self, request: M.MdRequest) -> None:
        self._writer.write(self._encode(request) + b"\n")

    async def _read(self) -> None:
        try:
            while line := await self._reader.readline():
                if line[:1] == b"{":  # the greeting is a text line
                    self.receive(self._decode(line))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if not self.closed.done():
                self.closed.set_result(None)
            self._updates.end()

    def receive(self, m: M.MdMessage) -> None:
        """One message from the feed (the network's, or a test's)."""
        if isinstance(m, M.Subscribed):
            book = self.books.get(m.symbol)
            if book is not None and m.seq is not None:
                book.last = {"book": m.seq, "trades": m.seq, "quotes": m.seq}
                book.resyncing = False
        elif isinstance(m, M.Snapshot):
            if m.symbol in self.books:
                self.books[m.symbol].load(m)
        elif isinstance(m, (M.TradeUpdate, M.QuoteUpdate, M.LevelUpdate)):
            book = self.books.get(m.symbol)
            if book is None or book.resyncing:
                return  # not ours, or in flight from before a new subscription
            kind = KIND[type(m)]
            if m.prev > book.last.get(kind, 0):
                self._resync(book)
                return
            book.last[kind] = book.seq = m.seq
            if isinstance(m, M.LevelUpdate):
                book.apply(m)
            self._updates.put(m)

    def _resync(self, book: BookReplica) -> None:
        self.gaps += 1
        book.resyncing = True
        book.synced.clear()
        self._send(M.Unsubscribe(book.symbol, "all"))
        self._send(M.Subscribe(book.symbol, "all"))

    async def close(self) -> None:
        await close_stream(self._writer, self._task)


@asynccontextmanager
async def market_data(
    host: str = "127.0.0.1", port: int = 7002, symbols: Iterable[str] = (), *, ssl: ssl_module.SSLContext | None = None,
) -> AsyncIterator[MarketData]:  # fmt: skip
    reader, writer = await asyncio.open_connection(host, port, ssl=ssl, limit=MAX_LINE)
    md = MarketData(reader, writer)
    try:
        for symbol in symbols:
            md.subscribe(symbol)
        yield md
    finally:
        await md.close()
