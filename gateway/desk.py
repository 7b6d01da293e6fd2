"""The order desk: what every order-entry connection shares, and nothing about sockets.

It holds the instruments, the open orders, the journal's append, read-only books for
queries, and turns matching events into execution reports for their owners. A
Connection (gateway/connection.py) talks to it through the `Desk` protocol declared
there; tests drive both without a network.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Awaitable, Callable, Coroutine, cast

import structlog

from exchange.book import Book
from exchange.instruments import Instrument
from exchange.risk import Risk
from exchange.rules import check_oco, check_trigger
from gateway.intake import Decision, Intake
from gateway.logins import LoginThrottle
from netio.plumbing import address_of
from protocol import replies as R
from protocol.messages import Canceled, Command, Event, Fill, Liquidity, NewOrder, Problem, Reason, Refusal, Rejected, Replaced, Report, Side, Triggered
from protocol.reply_text import canceled_text, fill_text, reject_text, replaced_text, triggered_text
from protocol.requests import BalancesQuery, BookQuery, KlinesQuery, Login, MarketQuery, OrdersQuery, ReportsQuery, Request, StatsQuery, SymbolsQuery, TickerQuery, TradesQuery
from protocol.text import clip
from telemetry.registry import Telemetry

log = structlog.get_logger("gateway")
ADDED = Liquidity.ADDED
# REPORTS: (owner, since) -> (the owner's report events after since, the seq they run through)
ReportsSource = Callable[[str, int], Awaitable[tuple[list[Report], int, bool]]]  # a page: reports, through, more
MAX_BOOK_LEVELS = 1000
ALL_ORDERS = OrdersQuery()  # the first page, every symbol
MAX_ORDERS_PAGE = 10_000
MAX_LOGINS_WAITING = 200  # password checks queued (one hasher thread, ~70 ms each): beyond, "busy"
PasswordCheck = Callable[[str, str], Awaitable[bool]]
# (account) -> its (asset, available, locked) rows, from its risk shard (a cluster)
BalancesSource = Callable[[str], Awaitable[list[tuple[str, int, int]]]]
# TICKER, KLINES, TRADES: the trade log's answer (journal/market.py, through tickline/app.py)
MarketSource = Callable[[MarketQuery], Awaitable[R.Reply]]


CANCELS_KEPT = 10_000  # cancelling commands whose count is kept for CANCEL ALL's reply



# Seconds REPORTS, TRADES, TICKER or KLINES waits for the trade log to have written what the
# asker may have seen, before ERR unavailable (SourceUnavailable), in both modes: its writer
# (nice 19 in serve, a role of its own in a cluster) may be starved or down for longer, and
# the connection's later requests wait behind the answer.
LOGGED_WAIT = 3.0


class SourceUnavailable(Exception):
    """A lookup's source (a cluster's risk shard) is not answering: said to the client as
    ERR unavailable with this text."""

class OrderDesk:
    def __init__(
        self,
        instruments: dict[str, Instrument],
        books: dict[str, Book],
        risk: Risk,
        intake: Intake,
        *,
        version: str,
        refused: Callable[[Refusal], None] | None = None,
        reports_source: ReportsSource | None = None,
        check_password: PasswordCheck | None = None,
        market_source: MarketSource | None = None,
        balances_source: BalancesSource | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.instruments = instruments
        self.books = books  # read-only here: BOOK replies and the live state of open orders
        self.risk = risk  # balances (BALANCES), unless they are elsewhere (balances_source)
        self.intake = intake  # where commands go and their decisions come from (gateway/intake.py)
        self.submit_to = intake.submit
        self.check_password = check_password  # LOGIN (async: a database read and a slow hash)
        self.throttle = LoginThrottle()  # what a wrong password costs (gateway/logins.py)
        self._logins_waiting = 0
        self.version = version
        self.refused = refused  # the order audit's row for an order refused here
        self.reports_source = reports_source  # REPORTS: the trade log's report rows (async)
        self.market_source = market_source
        self.balances_source = balances_source  # a cluster's: the account's risk shard
        if balances_source is not None:
            self.fetched = (*self.fetched, BalancesQuery)
        self.telemetry = t = telemetry or Telemetry()  # STATS prints its figures
        self._orders = t.counter("orders_total", "new orders accepted (journaled)")
        self.rejects = t.counter("rejects_total", "orders, cancels and replaces refused, by reason", label="reason")
        self.orders = intake.orders  # accepted orders join it as the intake hears of them
        self.closing = False  # shutting down: no new commands
        self._fetches: set[asyncio.Task[None]] = set()
        # seq of a command -> orders it canceled (recent ones), oldest first. Not a dict: the
        # oldest key of a dict that loses its first ones is found by scanning past the holes
        # they leave (next(iter(d)): ~3.8 us per CANCELED at 10,000 kept; py-spy put 1.6% of the
        # closed loop's main thread on that line).
        self._canceled_by: OrderedDict[int, int] = OrderedDict()
        for book in books.values():
            self.orders.restore(book)

    # ------------------------------------------------------------------ sequencing

    fetched: tuple[type, ...] = (ReportsQuery, Login, TickerQuery, KlinesQuery, TradesQuery)

    def submit(self, cmd: Command) -> tuple[int, Decision | None]:
        """To the intake: (its ticket, its decision if made now). A market BUY is given a
        budget first: what the visible book would cost now (its owner's funds are held for it)."""
        if type(cmd) is not NewOrder:
            return self.submit_to(cmd)
        if cmd.price is None:
            cmd = self.books[cmd.symbol].budgeted(cmd)
        outcome = self.submit_to(cmd)
        if type(outcome[1]) is not Problem:
            self._orders.inc()
        return outcome

    def fetch_balances(self, owner: str, done: Callable[[R.Reply], None]) -> None:
        """BALANCES where the balances are elsewhere (a cluster's risk shard), off the loop."""
        source = self.balances_source
        if source is None:
            done(self.balances_reply(owner))
            return

        async def fetch() -> R.Reply:
            rows = await source(owner)
            assets = self.risk.assets
            return R.BalancesReply(owner, [R.Balance(a, assets[a].format(avail), assets[a].format(locked)) for a, avail, locked in rows])

        self._lookup(fetch(), done, "balances", owner, "the balances")

    # ------------------------------------------------------------------ queries

    def orders_reply(self, owner: str, query: OrdersQuery = ALL_ORDERS) -> R.Reply:
        """A page of the owner's open orders (a whole list could be megabytes: one page at a time)."""
        symbol, limit, after = query.symbol, query.limit, query.after
        if not 1 <= limit <= MAX_ORDERS_PAGE:
            return R.Error("bad_request", f"limit must be 1..{MAX_ORDERS_PAGE}")
        if symbol is not None and symbol not in self.instruments:
            return R.Reject(Reason.UNKNOWN_SYMBOL.value, f"no such symbol {clip(symbol)}; type SYMBOLS")
        rows: list[R.OpenOrder] = []
        for order_id, order_symbol in self.orders.of_owner(owner).items():
            if order_id <= after or (symbol is not None and order_symbol != symbol):
                continue
            if len(rows) == limit:
                return R.OrdersReply(rows, rows[-1].order_id)
            cmd = self.orders.get(order_id)
            assert cmd is not None  # (open: of_owner says so)
            inst = self.instruments[cmd.symbol]
            qty, price = self.open_qty_price(order_id, cmd)
            price_text = "MKT" if price is None else inst.format_price(price)
            stop = None if cmd.stop is None else inst.format_price(cmd.stop)
            show = None if cmd.show is None else inst.format_qty(cmd.show)
            live = self.books[cmd.symbol].order(order_id)
            oco = None if live is None else live.oco
            rows.append(R.OpenOrder(order_id, cmd.side.value, cmd.symbol, inst.format_qty(qty), price_text, cmd.tif.value, cmd.client_id, stop, show, oco))
        return R.OrdersReply(rows)

    def canceled_by(self, seqs: list[int]) -> int:
        """How many orders the commands with these seqs canceled (CANCEL ALL's count; asked
        once they are matched, so the last CANCELS_KEPT cancelling commands suffice)."""
        return sum(self._canceled_by.pop(seq, 0) for seq in seqs)

    def oco_partner(self, inst: Instrument, owner: str, cid: str) -> int | Problem:
        """The id of the owner's open order named by client id `cid`, to pair a new order
        with: open, in the same symbol, in no pair, untouched (the book checks again)."""
        order_id = self.orders.find_client_id(owner, cid)
        if order_id is None:
            return Problem(Reason.BAD_OCO, f"no open order has id {clip(cid)}")
        other = self.orders.get(order_id)
        assert other is not None  # (its owner's client id names it: open)
        other_symbol = other.symbol
        if other_symbol != inst.symbol:
            return Problem(Reason.BAD_OCO, f"order {order_id} trades {other_symbol}: an OCO pair is in one symbol")
        live = self.books[inst.symbol].order(order_id)  # (None: accepted, not matched yet: the book decides)
        problem = None if live is None else check_oco(order_id, (live.owner, live.oco, live.touched), owner)
        return order_id if problem is None else problem

    def stop_reached(self, inst: Instrument, side: Side, stop: int) -> Problem | None:
        """A stop the last trade has reached already is refused before it is journaled
        (the book applies the same rule to what comes after this look)."""
        return check_trigger(inst, side is Side.BUY, stop, self.books[inst.symbol].last)

    def open_qty_price(self, order_id: int, cmd: NewOrder) -> tuple[int, int | None]:
        """An open order's quantity and price now: the book's, or as sent if not matched yet."""
        live = self.books[cmd.symbol].order(order_id)
        return (cmd.qty, cmd.price) if live is None else (live.leaves + live.hidden, live.price)

    def book_reply(self, symbol: str, levels: int) -> R.Reply:
        book = self.books.get(symbol.upper())
        if book is None:
            return R.Reject(Reason.UNKNOWN_SYMBOL.value, f"no such symbol {clip(symbol)}; type SYMBOLS")
        if not 1 <= levels <= MAX_BOOK_LEVELS:
            return R.Error("bad_request", f"levels must be 1..{MAX_BOOK_LEVELS}")
        inst = book.instrument
        bids, asks = book.depth(levels)
        return R.BookReply(
            book.symbol,
            [(inst.format_price(p), inst.format_qty(q)) for p, q in bids],
            [(inst.format_price(p), inst.format_qty(q)) for p, q in asks],
        )

    def symbols_reply(self) -> R.SymbolsReply:
        return R.SymbolsReply(
            [
                R.SymbolInfo(
                    s, i.tick.text, i.lot.text, i.format_qty(i.min_qty), i.format_qty(i.max_qty),
                    i.format_price(i.min_price), i.format_price(i.max_price),
                )  # fmt: skip
                for s, i in self.instruments.items()
            ]
        )

    def balances_reply(self, account: str) -> R.BalancesReply:
        assets = self.risk.assets
        rows = [R.Balance(a, assets[a].format(avail), assets[a].format(locked)) for a, avail, locked in self.risk.of(account)]
        return R.BalancesReply(account, rows)

    def login(self, name: str, password: str, peer: str, done: Callable[[R.Reply, str | None], None]) -> None:
        check = self.check_password
        if check is None:
            done(R.Error("unavailable", "this server has no accounts"), None)
            return
        account, address = name[:40], address_of(peer)
        throttle = self.throttle
        delay = None if self._logins_waiting >= MAX_LOGINS_WAITING else throttle.wait(account, address, time.monotonic())  # gateway/logins.py
        if delay is None:
            done(R.Error("busy", "too many logins in progress for this account or server; try again later"), None)
            return
        self._logins_waiting += 1

        async def attempt() -> None:
            try:
                if delay:
                    await asyncio.sleep(delay)
                ok = await check(name, password)
            except Exception as exc:
                log.error("login_failed", error=repr(exc))
                done(R.Error("internal", "the account store could not be read; try again"), None)
                return
            finally:
                self._logins_waiting -= 1
                if delay:
                    throttle.done_waiting(account)
            if ok:
                throttle.succeeded(account, address)
                log.info("login", account=name, peer=peer)
                done(R.LoggedIn(name, self.orders.count(name)), name)  # (of_owner may sort them: not for a count)
                return
            throttle.failed(account, address, time.monotonic())
            log.info("login_refused", account=clip(name), peer=peer, delayed=round(delay, 3))
            done(R.Reject(Reason.BAD_LOGIN.value, "wrong name or password"), None)

        self._spawn(attempt())

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._fetches.add(task)  # keep a reference until it is done
        task.add_done_callback(self._fetches.discard)

    def fetch_reports(self, owner: str, since: int, done: Callable[[R.Reply], None]) -> None:
        """REPORTS: the owner's reports caused by commands after `since`, from the trade log."""
        source = self.reports_source
        if source is None:
            done(R.Error("unavailable", "this server keeps no report log"))
            return

        async def fetch() -> R.Reply:
            events, through, more = await source(owner, since)
            structs = []
            for e in events:
                _, struct, fields = report_fields(e, self.instruments)
                structs.append(cast(R.ReportStruct, struct(*fields)))
            return R.ReportsReply(since, through, structs, more)

        self._lookup(fetch(), done, "reports", owner)

    def fetch_market(self, query: MarketQuery, done: Callable[[R.Reply], None]) -> None:
        """TICKER, KLINES, TRADES: from the trade log."""
        if self.market_source is None:
            done(R.Error("unavailable", "this server keeps no trade log"))
            return
        self._lookup(self.market_source(query), done, "market", repr(query)[:120])

    def _lookup(self, work: Awaitable[R.Reply], done: Callable[[R.Reply], None], what: str, about: str, source: str = "the trade log") -> None:
        """Run a lookup (the trade log's, a cluster's risk shard's) off the event loop; done
        gets its reply, or an ERR if the source could not be read (the session goes on)."""

        async def run() -> None:
            try:
                reply = await work
            except SourceUnavailable as exc:
                reply = R.Error("unavailable", str(exc))
            except Exception as exc:
                log.error(f"{what}_query_failed", about=about, error=repr(exc))
                reply = R.Error("internal", f"{source} could not be read; try again")
            done(reply)

        self._spawn(run())

    async def answer_public(self, query: Request) -> R.Reply:
        """What anyone may ask without an account (the web dashboard's endpoints)."""
        if isinstance(query, BookQuery):
            return self.book_reply(query.symbol, query.levels)
        if isinstance(query, SymbolsQuery):
            return self.symbols_reply()
        if isinstance(query, StatsQuery):
            return self.stats_reply()
        if isinstance(query, (TickerQuery, KlinesQuery, TradesQuery)):
            answered: asyncio.Future[R.Reply] = asyncio.get_running_loop().create_future()
            self.fetch_market(query, answered.set_result)
            return await answered
        return R.Error("bad_request", f"{type(query).__name__} is not a public query")

    def stats_reply(self) -> R.Reply:
        return R.StatsReply(self.telemetry.figures())

    # ------------------------------------------------------------------ reports

    def reports(self, events: list[Event]) -> list[Report]:
        """The execution reports among a matching batch's events, in order, once the open
        orders have followed every event (the server formats them, report_fields, only for
        owners with a session: a cluster gateway sees every owner's)."""
        orders = self.orders
        out: list[Report] = []
        for e in events:
            if type(e) is Fill:
                if not e.leaves:
                    orders.remove(e.order_id, e.owner, e.client_id)
            elif type(e) is Canceled:
                orders.remove(e.order_id, e.owner, e.client_id)
                canceled = self._canceled_by
                canceled[e.seq] = canceled.get(e.seq, 0) + 1
                if len(canceled) > CANCELS_KEPT:
                    canceled.popitem(last=False)
            elif type(e) is Triggered:
                orders.fired(e.order_id)  # open still: a limit or market order from now on
            elif type(e) is Rejected:
                self.rejects.inc_by(e.reason._value_)
                # The engine refused a command the gateway let through: a cancel or replace
                # that lost the race with a fill, or (never expected) a new order.
                entry = orders.get(e.order_id) if e.order_id is not None else None
                if entry is not None and e.order_id is not None and self.books[entry.symbol].order(e.order_id) is None:
                    orders.remove(e.order_id, entry.owner, entry.client_id)
            elif type(e) is not Replaced:
                continue
            out.append(e)
        return out


def report_fields(e: Report, instruments: dict[str, Instrument]) -> tuple[Callable[..., bytes], type[R.Reply], tuple]:
    """(text formatter, reply Struct, fields) of one report: live, and for REPORTS from the log.
    Hot path: enums are read as ._value_ (.value is a slow descriptor)."""
    if type(e) is Fill:
        inst = instruments[e.symbol]
        fields: tuple = (
            e.order_id, e.symbol, e.side._value_, inst.format_qty(e.qty), inst.format_price(e.price), inst.format_qty(e.leaves),
            e.trade_id, "A" if e.liquidity is ADDED else "R", e.client_id,
        )  # fmt: skip
        return fill_text, R.FillReport, fields
    if type(e) is Canceled:
        return canceled_text, R.CanceledReport, (e.order_id, instruments[e.symbol].format_qty(e.leaves), e.reason._value_, e.client_id)
    if type(e) is Replaced:
        inst = instruments[e.symbol]
        priority = "kept" if e.priority_kept else "lost"
        return replaced_text, R.ReplacedReport, (e.order_id, inst.format_qty(e.qty), inst.format_price(e.price), priority, e.client_id)
    if type(e) is Triggered:
        inst = instruments[e.symbol]
        price = "MKT" if e.price is None else inst.format_price(e.price)
        return triggered_text, R.TriggeredReport, (e.order_id, e.symbol, e.side._value_, inst.format_qty(e.qty), price, inst.format_price(e.stop), e.client_id)
    assert type(e) is Rejected
    return reject_text, R.Reject, (e.reason._value_, e.text, e.client_id, e.order_id)
