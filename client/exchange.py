"""An asyncio client for the order-entry port (7001), in its JSON form.

    async with connect("127.0.0.1", 7001, account="alice", password="alice") as ex:
        ack = await ex.buy("AAPL", "10", "150.25", tif="IOC")
        acks = await asyncio.gather(*[ex.sell("AAPL", "1", f"{151 + i}.00") for i in range(100)])  # pipelined
        await ex.cancel(acks[0].order_id)
        async for report in ex.reports():  # fills, cancels, replaces, rejects, as they come
            ...

How replies are matched to requests: every order this client sends carries a client order
id of its own (`id=`), so its ACK or REJ is found by that id; a cancel or replace is
answered by the CANCELED / REPLACED / REJ naming its order id; a query (BOOK, ORDERS,
TICKER, ...) gets the next reply that is not about an order, since the server answers
queries in request order (docs/PROTOCOL.md). The replies are protocol/replies.py's Structs.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import ssl as ssl_module
from collections import deque
from contextlib import asynccontextmanager
from typing import AsyncIterator, TypeVar

import msgspec

from client.inbox import MAX_LINE, Inbox, close_stream
from protocol import replies as R
from protocol import requests as Q
from protocol.text import MAX_LINE as LINE_LIMIT

Report = R.FillReport | R.CanceledReport | R.ReplacedReport | R.TriggeredReport | R.Reject
MAX_REPORTS = 100_000  # reports kept for reports() before the oldest are dropped (counted)
T = TypeVar("T")


class OrderRejected(Exception):
    """The exchange refused an order, a cancel or a replace: its REJ."""

    def __init__(self, reject: R.Reject) -> None:
        super().__init__(f"{reject.reason}: {reject.text}")
        self.reject = reject
        self.reason = reject.reason


class RequestFailed(Exception):
    """A query was answered with ERR (or the connection ended first), or a request would
    have been (raised as it is made: see Exchange._send)."""


class Exchange:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_reports: int = MAX_REPORTS) -> None:
        self._reader, self._writer = reader, writer
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder(R.Reply).decode
        self._check = msgspec.json.Decoder(Q.Request).decode  # the server's own decoding of a request
        self.unexpected_lines = 0  # lines that did not decode as a reply: skipped
        self._prefix = secrets.token_hex(3)  # client order ids unique across this account's connections
        self._ids = itertools.count(1)
        self._orders: dict[str, asyncio.Future[R.Ack]] = {}  # client order id -> its ACK
        # order id -> the cancels and replaces sent about it and not yet answered, in order
        self._by_order: dict[int, deque[tuple[type, asyncio.Future]]] = {}
        self._queries: deque[asyncio.Future[R.Reply]] = deque()  # in request order
        self._reports: Inbox[Report] = Inbox(max_reports)
        self.account: str | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._read())

    # ------------------------------------------------------------ orders (pipelined: these do not wait)

    def buy(self, symbol: str, qty: str, price: str | None = None, **options: str | None) -> asyncio.Future[R.Ack]:
        """Send a BUY now; the future is its ACK (or raises OrderRejected). No price: market.
        Options (keywords): tif=; id= (a client order id; one is made up if not given);
        stop= (a stop: off the book until a trade reaches that price, then a TRIGGERED
        report); show= (an iceberg's slice); oco= (the client id of an open order of yours
        to pair with: one cancels the other)."""
        return self._order(Q.Buy, symbol, qty, price, **options)

    def sell(self, symbol: str, qty: str, price: str | None = None, **options: str | None) -> asyncio.Future[R.Ack]:
        return self._order(Q.Sell, symbol, qty, price, **options)

    def _order(
        self, kind: type[Q.Buy] | type[Q.Sell], symbol: str, qty: str, price: str | None, *, tif: str | None = None, id: str | None = None,
        stop: str | None = None, show: str | None = None, oco: str | None = None,
    ) -> asyncio.Future[R.Ack]:  # fmt: skip
        cid = id or f"{self._prefix}-{next(self._ids)}"
        self._send(kind(symbol, qty, price, tif, cid, stop, show, oco))  # (its answer is read by a later callback)
        future: asyncio.Future[R.Ack] = asyncio.get_running_loop().create_future()
        self._orders[cid] = future
        return future

    async def cancel_all(self, symbol: str | None = None) -> int:
        """CANCEL ALL: every open order of the account (in that symbol), each with its
        CANCELED report; how many."""
        return (await self._query(Q.CancelAll(symbol), R.CanceledAll)).count

    def cancel(self, order_id: int) -> asyncio.Future[R.CanceledReport]:
        """Cancel an open order; the future is its CANCELED (or raises OrderRejected)."""
        return self._about(order_id, Q.CancelOrder(order_id), R.CanceledReport)

    def replace(self, order_id: int, qty: str, price: str | None = None) -> asyncio.Future[R.ReplacedReport]:
        """New open quantity and/or price; the future is its REPLACED (or raises OrderRejected)."""
        return self._about(order_id, Q.ReplaceOrder(qty, order_id, price), R.ReplacedReport)

    def _about(self, order_id: int, request: Q.Request, answer: type) -> asyncio.Future:
        self._send(request)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._by_order.setdefault(order_id, deque()).append((answer, future))
        return future

    async def drain(self) -> None:
        """Wait while the socket's send buffer is full (pipelining thousands: call it now and then)."""
        await self._writer.drain()

    # ------------------------------------------------------------ queries (answered in order)

    async def login(self, name: str, password: str) -> R.LoggedIn:
        reply = await self._query(Q.Login(name, password), R.LoggedIn)
        self.account = reply.account
        return reply

    async def book(self, symbol: str, levels: int = 10) -> R.BookReply:
        return await self._query(Q.BookQuery(symbol, levels), R.BookReply)

    async def orders(self, symbol: str | None = None, limit: int = 1000, after: int = 0) -> R.OrdersReply:
        """A page of open orders (reply.next: ask again with after=reply.next for more)."""
        return await self._query(Q.OrdersQuery(symbol and symbol.upper(), limit, after), R.OrdersReply)

    async def balances(self) -> R.BalancesReply:
        return await self._query(Q.BalancesQuery(), R.BalancesReply)

    async def symbols(self) -> R.SymbolsReply:
        return await self._query(Q.SymbolsQuery(), R.SymbolsReply)

    async def ticker(self, symbol: str) -> R.TickerReply:
        return await self._query(Q.TickerQuery(symbol), R.TickerReply)

    async def klines(self, symbol: str, interval: str, *, start: str | None = None, end: str | None = None, limit: int = 500) -> R.KlinesReply:
        return await self._query(Q.KlinesQuery(symbol, interval, start, end, limit), R.KlinesReply)

    async def trades(self, symbol: str, limit: int = 50, before: str | None = None) -> R.TradesReply:
        return await self._query(Q.TradesQuery(symbol, limit, before), R.TradesReply)

    async def stats(self) -> dict[str, int]:
        return (await self._query(Q.StatsQuery(), R.StatsReply)).figures

    async def reports_since(self, since: int) -> R.ReportsReply:
        """Execution reports caused by commands after journal seq `since` (after a reconnect),
        a page at a time: while the reply's `more` is true, ask again from its `through`."""
        return await self._query(Q.ReportsQuery(since), R.ReportsReply)

    async def ping(self) -> None:
        await self._query(Q.Ping(), R.Pong)

    async def _query(self, request: Q.Request, expected: type[T]) -> T:
        self._send(request)
        future: asyncio.Future[R.Reply] = asyncio.get_running_loop().create_future()
        self._queries.append(future)
        reply = await future
        if isinstance(reply, R.Reject):
            raise OrderRejected(reply)
        if not isinstance(reply, expected):
            raise RequestFailed(f"{type(request).__name__} was answered {reply!r}")
        return reply

    # ------------------------------------------------------------ execution reports

    def reports(self) -> AsyncIterator[Report]:
        """Every FILL, CANCELED, REPLACED and REJ about this account's orders, in order."""
        return aiter(self._reports)

    @property
    def reports_dropped(self) -> int:
        """Reports pushed out of a full reports() inbox."""
        return self._reports.dropped

    # ------------------------------------------------------------ the wire

    def _send(self, request: Q.Request) -> None:
        """Send a request, or raise RequestFailed with the ERR the server would answer: a
        request it cannot decode (a quantity given as a number, an order id past 18 digits)
        gets an ERR that names no order, which no future waiting here could claim."""
        if self.closed.done():
            raise ConnectionError("the connection to the exchange is closed")
        line = self._encode(request)
        try:
            self._check(line)
        except msgspec.ValidationError as exc:
            raise RequestFailed(f"bad_request: {exc}") from None
        if len(line) > LINE_LIMIT:
            raise RequestFailed(f"line_too_long: a line may be at most {LINE_LIMIT} bytes")
        self._writer.write(line + b"\n")

    async def _read(self) -> None:
        error: BaseException = ConnectionError("the exchange closed the connection")
        try:
            await self._reader.readline()  # the HELLO greeting (text)
            while line := await self._reader.readline():
                self._line(line)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            error = exc
        finally:
            about = [future for waiting in self._by_order.values() for _, future in waiting]
            for future in [*self._orders.values(), *about, *self._queries]:
                if not future.done():
                    future.set_exception(ConnectionError(str(error)))
            self._orders.clear()
            self._by_order.clear()
            self._queries.clear()
            if not self.closed.done():
                self.closed.set_result(None)
            self._reports.end()

    def _line(self, line: bytes) -> None:
        """One line from the exchange. One that does not decode (a text line, a reply of a
        newer server) is counted and skipped: the connection and what waits on it go on."""
        try:
            reply = self._decode(line)
        except msgspec.DecodeError:
            self.unexpected_lines += 1
            return
        self._route(reply)

    def _route(self, reply: R.Reply) -> None:
        if isinstance(reply, R.Ack):
            future = self._orders.pop(reply.id or "", None)
            if future is not None and not future.done():
                future.set_result(reply)
        elif isinstance(reply, R.Reject) and reply.id is None and reply.order_id is None:
            self._answer(reply)  # about no order: a query's answer (BOOK of an unknown symbol, a LOGIN refused)
        elif isinstance(reply, R.Reject) and reply.order_id is None:
            future = self._orders.pop(reply.id or "", None)  # a new order refused
            if future is not None:
                self._settle(future, reply)
        elif isinstance(reply, (R.FillReport, R.CanceledReport, R.ReplacedReport, R.TriggeredReport, R.Reject)):
            if not isinstance(reply, (R.FillReport, R.TriggeredReport)) and reply.order_id is not None:
                self._answered(reply.order_id, reply)
            self._reports.put(reply)
        else:
            self._answer(reply)

    def _answer(self, reply: R.Reply) -> None:
        if not self._queries:
            return  # nothing asked (an ERR about a line this client did not send)
        future = self._queries.popleft()
        if future.done():
            return
        if isinstance(reply, R.Error):
            future.set_exception(RequestFailed(f"{reply.code}: {reply.text}"))
        else:
            future.set_result(reply)

    def _answered(self, order_id: int, reply: R.CanceledReport | R.ReplacedReport | R.Reject) -> None:
        """The first cancel or replace of that order waiting for this kind of answer (a REJ
        answers the first of either; a CANCELED not asked for, an IOC's say, answers none)."""
        waiting = self._by_order.get(order_id)
        if not waiting:
            return
        for i, (answer, future) in enumerate(waiting):
            if isinstance(reply, (answer, R.Reject)) and not (isinstance(reply, R.CanceledReport) and reply.reason != "user"):
                del waiting[i]
                self._settle(future, reply)
                break
        if not waiting:
            del self._by_order[order_id]

    @staticmethod
    def _settle(future: asyncio.Future, reply: R.Reply) -> None:
        if future.done():
            return
        if isinstance(reply, R.Reject):
            future.set_exception(OrderRejected(reply))
        else:
            future.set_result(reply)

    async def close(self) -> None:
        await close_stream(self._writer, self._task)


@asynccontextmanager
async def connect(
    host: str = "127.0.0.1", port: int = 7001, *, account: str | None = None, password: str | None = None,
    ssl: ssl_module.SSLContext | None = None, max_reports: int = MAX_REPORTS,
) -> AsyncIterator[Exchange]:  # fmt: skip
    """A connection to the order-entry port, logged in if given an account."""
    reader, writer = await asyncio.open_connection(host, port, ssl=ssl, limit=MAX_LINE)
    ex = Exchange(reader, writer, max_reports)
    try:
        if account is not None:
            await ex.login(account, password or "")
        yield ex
    finally:
        await ex.close()
