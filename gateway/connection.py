"""One order-entry connection as a state machine: bytes in, bytes out, no I/O.

Shaped like h11's Connection: the asyncio side (gateway/server.py) only moves bytes. It
calls `receive(data)` with what the socket read, `eof()` when the peer half-closes,
`durable(seq)` when the journal has synced up to seq, `settle()` when matching has made
progress, `report(data)` for an execution report; each returns the bytes to write now.
What to do next is read off the state: `waiting` (replies held for the journal or for
matching), `over_inflight` (stop reading: too many commands not yet on disk), `done`
(write what was returned, then close).

Replies keep request order:
- a reply to a command (ACK, or nothing for a CANCEL/REPLACE whose report comes from
  matching) is held until the command is durable;
- a query (ORDERS, BOOK, SYMBOLS, PING, HELP) answers only once everything this
  connection sent before it has been matched, so a client reads its own writes;
- everything after a held reply queues behind it.
After QUIT (BYE) or an EOF (no BYE) the connection finishes once every reply and report
for what it sent before is out.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Callable, Protocol, Sequence, cast

import structlog

from exchange.instruments import Instrument
from exchange.rules import check_not_pending, check_owned, order_terms, replace_terms, show_terms, stop_terms
from gateway.intake import Decision, Intake
from gateway.orders import OpenOrders
from gateway.queries import CancelAllDone
from protocol import replies as R
from protocol.messages import Cancel, Command, MassCancel, NewOrder, Problem, Reason, Refusal, Replace, Side
from protocol.reply_text import ack_text
from protocol.requests import (
    BadRequest,
    BalancesQuery,
    BookQuery,
    Buy,
    CancelAll,
    CancelOrder,
    Help,
    KlinesQuery,
    Login,
    MarketQuery,
    OrdersQuery,
    Ping,
    Quit,
    ReplaceOrder,
    ReportsQuery,
    Request,
    Sell,
    StatsQuery,
    SymbolsQuery,
    TickerQuery,
    TradesQuery,
    decode_json,
)
from protocol.text import HELP_LINES, TOO_LONG, LineSplitter, clip, parse_line
from telemetry.registry import Counter

log = structlog.get_logger("gateway")

CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,32}", re.ASCII)
BAD_CLIENT_ID = "a client order id is 1-32 of A-Z a-z 0-9 . _ : -"
# Commands a client may have waiting for the disk before we stop reading from it.
MAX_INFLIGHT = 20_000


class Desk(Protocol):
    """What a connection needs of the exchange (gateway/desk.py is the real one)."""

    instruments: dict[str, Instrument]
    orders: OpenOrders
    closing: bool
    version: str

    refused: Callable[[Refusal], None] | None  # the order audit's row for a refused order
    rejects: Counter  # refusals by reason (STATS, /metrics)

    intake: Intake  # tickets' decisions, released() and settled() (gateway/intake.py)
    fetched: tuple[type, ...]  # queries answered by a lookup off the event loop (each waits at the head of the held replies)

    def submit(self, cmd: Command) -> tuple[int, Decision | None]:
        """To the intake: (its ticket, its decision if made now; None: intake.decision later)."""
    def stop_reached(self, inst: Instrument, side: Side, stop: int) -> Problem | None: ...
    def oco_partner(self, inst: Instrument, owner: str, cid: str) -> int | Problem: ...
    def canceled_by(self, seqs: list[int]) -> int: ...
    def open_qty_price(self, order_id: int, cmd: NewOrder) -> tuple[int, int | None]: ...
    def orders_reply(self, owner: str, query: OrdersQuery) -> R.Reply: ...
    def book_reply(self, symbol: str, levels: int) -> R.Reply: ...
    def symbols_reply(self) -> R.SymbolsReply: ...
    def balances_reply(self, account: str) -> R.BalancesReply: ...
    def login(self, name: str, password: str, peer: str, done: Callable[[R.Reply, str | None], None]) -> None:
        """Check a password (off the event loop, slowed after failures); call done with the
        reply and the account (None: refused) later."""
    def fetch_reports(self, owner: str, since: int, done: Callable[[R.Reply], None]) -> None:
        """Look the owner's reports up (off the event loop); call done with them later."""
    def fetch_market(self, query: MarketQuery, done: Callable[[R.Reply], None]) -> None:
        """TICKER, KLINES, TRADES from the trade log (off the event loop); call done later."""
    def fetch_balances(self, owner: str, done: Callable[[R.Reply], None]) -> None:
        """BALANCES where the balances are elsewhere (a cluster's risk shard)."""
    def stats_reply(self) -> R.Reply: ...


def encode(reply: R.Reply, json: bool) -> bytes:
    """A reply in the form of the request it answers."""
    return R.to_json(reply) if json else R.to_text(reply)


Query = (
    OrdersQuery | BookQuery | SymbolsQuery | Ping | Help | ReportsQuery | BalancesQuery | Login | BadRequest
    | TickerQuery | KlinesQuery | TradesQuery | StatsQuery | CancelAllDone
)  # fmt: skip
FetchedQuery = ReportsQuery | Login | MarketQuery | BalancesQuery


class Pending:
    """The reply (ACK or REJ) of a command decided after submit, made once it is released."""

    __slots__ = ("render",)

    def __init__(self, render: Callable[[], bytes]) -> None:
        self.render = render

NOT_LOGGED_IN = R.Reject(Reason.NOT_LOGGED_IN.value, "log in first: LOGIN <name> <password>")


class Held:
    """Replies waiting, in request order, for `seq` to be durable (or, if `settle`, matched).

    `items` are bytes, or a query (with its form) to answer when released. A query that
    needs a lookup off the event loop (REPORTS) keeps its entry at the head, `fetching`,
    until the answer comes back."""

    __slots__ = ("seq", "settle", "items", "fetching")

    def __init__(self, seq: int, settle: bool) -> None:
        self.seq, self.settle = seq, settle
        self.items: list[bytes | Pending | tuple[Query, bool]] = []
        self.fetching = False


class Connection:
    def __init__(self, desk: Desk, *, max_inflight: int = MAX_INFLIGHT, peer: str = "?") -> None:
        self.desk = desk
        self.fetched = desk.fetched
        self.max_inflight = max_inflight
        self.peer = peer  # for slowing down repeated failed logins from one address
        self.owner = ""  # the account, once logged in; orders need one
        self.json_mode = False  # the form of the last request: for reports with no order to go by
        self.splitter = LineSplitter()
        self.held: deque[Held] = deque()
        self.inflight = 0  # commands journaled and not yet durable
        self._inflight_seqs: deque[tuple[int, int]] = deque()  # (last seq, count) per call that journaled
        self.last_seq = 0  # the last command this connection journaled
        self.quitting = False  # QUIT read: BYE once everything before it is out
        self.input_closed = False  # EOF read: close once everything before it is out
        self.done = False  # nothing more to send after what the last call returned
        # Lines read after a query that is waiting; None: no query waits. (An empty list is a
        # query that was the last line of its read: what the next read brings waits too.)
        self.backlog: list[bytes | None] | None = None
        self.on_ready: Callable[[], None] = lambda: None  # a lookup came back: call settle() again
        self.cancel_on_disconnect = False  # LOGIN ... cancel_on_disconnect: orders entered here go when it closes
        self.entered: list[int] = []  # those orders' ids (some closed since)

    # ------------------------------------------------------------------ state

    @property
    def waiting(self) -> bool:
        """Replies held, commands in flight, or a QUIT/EOF to finish: call durable/settle."""
        return bool(self.held or self._inflight_seqs) or ((self.quitting or self.input_closed) and not self.done)

    @property
    def needs_settle(self) -> bool:
        """Something waits for matching (a query, a QUIT or an EOF), not only for the disk."""
        held = self.held
        return bool(held) and held[0].settle or ((self.quitting or self.input_closed) and not self.done)

    @property
    def over_inflight(self) -> bool:
        """Stop reading: too many commands wait for the disk, or lines wait behind a query."""
        return self.inflight > self.max_inflight or bool(self.backlog)

    def hello(self) -> bytes:
        return R.to_text(R.Hello(self.desk.version))

    # ------------------------------------------------------------------ events in

    def receive(self, data: bytes) -> bytes:
        """Bytes from the peer: the replies to write now (others are held)."""
        if self.quitting or self.input_closed or self.done:
            return b""
        lines = self.splitter.feed(data)
        if self.backlog is not None:  # a query is waiting: what comes after it waits too
            self.backlog.extend(lines)
            return b""
        return self._process(lines)

    def _process(self, lines: Sequence[bytes | None]) -> bytes:
        """Handle lines in order until a query must wait; the rest go to the backlog."""
        held = self.held
        items: list[bytes | Pending] = []  # this call's replies, in request order
        need = count = 0  # the last command this call journaled (its replies wait for it), how many
        rest = iter(lines)  # what is left of it becomes the backlog if a query must wait
        sent = b""  # replies before a query that must wait, free to go now
        for line in rest:
            reply: bytes | Pending | tuple[Query, bool] | None
            if line is TOO_LONG:
                error = R.Error("line_too_long", f"a line may be at most {self.splitter.limit} bytes; discarded up to its end")
                reply, seq = R.to_text(error), 0
            else:
                is_json = line[:1] == b"{"
                request = decode_json(line) if is_json else parse_line(line)
                if request is None:
                    continue
                self.json_mode = is_json
                try:
                    if type(request) is Buy or type(request) is Sell:  # most lines: straight there
                        reply, seq = self._new_order(request, is_json)
                    else:
                        reply, seq = self._handle(request, is_json)
                except Exception:  # a bug must cost one request, never the session or the server
                    log.exception("request_failed", owner=self.owner, line=b"<a LOGIN>" if type(request) is Login else line[:200])
                    error = R.Error("internal", "the request failed inside the server; it was not executed")
                    reply, seq = R.to_text(error), 0
            if seq:
                need = seq
                count += 1
                if reply is not None:
                    items.append(reply)  # type: ignore[arg-type]
            elif isinstance(reply, tuple):
                # A query reads state: it answers once everything before it has been matched
                # and before anything after it is journaled (that waits in the backlog).
                if not held and not need and not isinstance(reply[0], self.fetched) and self.desk.intake.settled(self.last_seq):
                    items.append(self._answer(*reply))
                    continue
                sent = self._hold(items, need, count)  # what went before it, if nothing held it
                items, need, count = [], 0, 0
                waiting = Held(self.last_seq, True)
                waiting.items.append(reply)
                held.append(waiting)
                self.backlog = list(rest)
                break
            elif reply is not None:  # an immediate reply (an error, a refusal): in its place
                items.append(reply)
            if self.quitting:
                self.backlog = None
                break
        out = sent + self._hold(items, need, count)
        if held and held[0].settle and not held[0].fetching and self.desk.intake.settled(held[0].seq):
            out += self._release(self.desk.intake.released())  # a REPORTS lookup can start now
        if self.backlog is None and self.input_closed and self.splitter.pending:
            out += self._incomplete_line()
        if self.quitting or self.input_closed:
            out += self._finish()
        return out

    def _hold(self, items: list[bytes | Pending], need: int, count: int) -> bytes:
        """Replies of one call: held behind what is held already, or until `need` (the last of
        `count` commands) is durable; returned to send now if neither."""
        if need:
            self.inflight += count
            self._inflight_seqs.append((need, count))
        elif not self.held:
            return b"".join(items)  # type: ignore[arg-type]  # nothing deferred without a seq
        elif not items:
            return b""
        h = Held(need or self.last_seq, False)  # seq <= durable: ready right after what is before it
        h.items = items  # type: ignore[assignment]
        self.held.append(h)
        return b""

    def eof(self) -> bytes:
        """The peer will send no more. An unfinished last line is refused, not guessed at;
        replies and reports for everything before it still go out, then the connection closes."""
        if self.input_closed or self.done:
            return b""
        self.input_closed = True
        if self.backlog is not None:
            return b""  # the backlog's end says it (see _process)
        return (self._incomplete_line() if self.splitter.pending else b"") + self._finish()

    def _incomplete_line(self) -> bytes:
        self.splitter = LineSplitter()  # said once
        if self.quitting:
            return b""
        err = R.Error("incomplete_line", "the connection closed in the middle of a line; it was not executed")
        return self._hold([encode(err, self.json_mode)], 0, 0)

    def released(self, through: int) -> bytes:
        """Every ticket up to through is decided and durable: release those replies."""
        seqs = self._inflight_seqs
        while seqs and seqs[0][0] <= through:
            self.inflight -= seqs.popleft()[1]
        return self._release(through)

    def settle(self) -> bytes:
        """Matching has made progress: release queries (and a QUIT/EOF) that waited for it."""
        return self._release(self.desk.intake.released())

    def report(self, data: bytes) -> bytes:
        """An execution report for this connection's owner: sent as it comes (not a reply)."""
        return b"" if self.done else data

    def goodbye(self, text: str) -> bytes:
        """The server is closing: everything held for durable commands (all of them, unless
        the journal failed: then nothing after the first that is not), then BYE."""
        out = self._release(self.desk.intake.released(), force=True)
        self.done = True
        bye = R.Bye(text)
        return out + encode(bye, self.json_mode)

    # ------------------------------------------------------------------ release

    def _release(self, durable_seq: int, force: bool = False) -> bytes:
        held = self.held
        out: list[bytes] = []
        while held:
            h = held[0]
            if h.seq > durable_seq:
                break  # never an ACK (or anything after it) for a command not on disk
            if not force:
                if h.fetching or (h.settle and not self.desk.intake.settled(h.seq)):
                    break
                first = h.items[0] if h.items else None
                if isinstance(first, tuple) and isinstance(first[0], self.fetched) and not self._fetch(h, cast(FetchedQuery, first[0]), first[1]):
                    break  # answered later: on_ready
            held.popleft()
            for item in h.items:
                out.append(item if isinstance(item, bytes) else item.render() if type(item) is Pending else self._answer(*item))  # type: ignore[misc]
            if not held and self.backlog is not None:  # the query that stopped reading has answered
                backlog, self.backlog = self.backlog, None
                out.append(self._process(backlog))
        if not held and (self.quitting or self.input_closed) and not self.done:
            out.append(self._finish())
        return b"".join(out)

    def _fetch(self, h: Held, req: FetchedQuery, is_json: bool) -> bool:
        """Start a lookup; its entry stays first (replies keep their order) until done.
        True if it was answered at once (a refusal): the caller goes on releasing, in order
        (calling back into the session from here put that answer after later replies)."""
        h.fetching = True
        starting = True

        def done(reply: R.Reply, account: str | None = None) -> None:
            if account is not None:  # lines after LOGIN act as the account
                self.owner = account
                self.cancel_on_disconnect = type(req) is Login and req.cancel_on_disconnect
            h.items = [encode(reply, is_json)]
            h.fetching = False
            if not starting:
                self.on_ready()

        if type(req) is Login:
            self.desk.login(req.name, req.password, self.peer, done)
        elif type(req) is not ReportsQuery and type(req) is not BalancesQuery:  # market history: public
            self.desk.fetch_market(cast(MarketQuery, req), done)
        elif not self.owner:
            done(NOT_LOGGED_IN)
        elif type(req) is BalancesQuery:
            self.desk.fetch_balances(self.owner, done)
        else:
            self.desk.fetch_reports(self.owner, cast(ReportsQuery, req).since, done)
        starting = False
        return not h.fetching

    def _finish(self) -> bytes:
        """After QUIT or EOF: done once nothing is held and every command is matched."""
        if self.held or self.backlog is not None or self.done or not self.desk.intake.settled(self.last_seq):
            return b""
        self.done = True
        if not self.quitting:
            return b""
        bye = R.Bye("goodbye")
        return encode(bye, self.json_mode)

    # ------------------------------------------------------------------ requests

    def _handle(self, req: Request | BadRequest, is_json: bool) -> tuple[bytes | Pending | tuple[Query, bool] | None, int]:
        """(immediate reply, a query to answer in order, or None; the seq journaled or 0)."""
        match req:
            case ReplaceOrder():
                reject, seq = self._replace(req, is_json)
            case CancelOrder():
                reject, seq = self._cancel(req, is_json)
            case CancelAll():
                return self._cancel_all(req, is_json), 0
            case Buy() | Sell():
                return self._new_order(req, is_json)
            case Quit():
                self.quitting = True
                return None, 0
            case _:
                return (req, is_json), 0
        if reject is None or type(reject) is Pending:
            return reject, seq
        return encode(cast(R.Reject, reject), is_json), seq

    def _cancel_all(self, req: CancelAll, is_json: bool) -> bytes | tuple[Query, bool]:
        """One MassCancel per symbol the caller has open orders in (or the one named); the
        reply, CANCELED_ALL <n>, waits until they are matched (after their CANCELED lines)."""
        desk = self.desk
        problem = None if self.owner else Problem(Reason.NOT_LOGGED_IN, NOT_LOGGED_IN.text)
        if problem is None and req.symbol is not None and req.symbol not in desk.instruments:
            problem = Problem(Reason.UNKNOWN_SYMBOL, f"no such symbol {clip(req.symbol)}; type SYMBOLS")
        if problem is None and desk.closing:
            problem = Problem(Reason.SHUTTING_DOWN, "the exchange is shutting down")
        if problem is not None:
            return encode(R.Reject(problem.reason.value, problem.text), is_json)
        symbols = [s for s in desk.orders.symbols_of(self.owner) if req.symbol in (None, s)]
        return CancelAllDone([self._submit(MassCancel(symbol, self.owner))[0] for symbol in symbols]), is_json

    def closed(self) -> None:
        """The connection is gone (for any reason): with cancel_on_disconnect, the orders
        entered on it that are still open are canceled, one MassCancel per symbol."""
        desk = self.desk
        if not self.cancel_on_disconnect or desk.closing:  # (shutting down: the restart cancels them)
            return
        by_symbol: dict[str, list[int]] = {}
        for order_id in self.entered:
            cmd = desk.orders.get(order_id)
            if cmd is not None and cmd.owner == self.owner:
                by_symbol.setdefault(cmd.symbol, []).append(order_id)
        for symbol, ids in sorted(by_symbol.items()):
            self._submit(MassCancel(symbol, self.owner, sorted(ids), Reason.DISCONNECT))

    def _entered(self, order_id: int) -> None:
        """An order entered here (cancel_on_disconnect): remembered, the closed ones forgotten now and then."""
        entered = self.entered
        entered.append(order_id)
        if len(entered) > 64 and len(entered) > 2 * self.desk.orders.count(self.owner):
            is_open = self.desk.orders.is_open
            self.entered = [i for i in entered if is_open(i)]

    def _submit(self, cmd: Command) -> tuple[int, Decision | None]:
        ticket, decision = outcome = self.desk.submit(cmd)
        if ticket:
            self.last_seq = ticket
        return outcome

    def _new_order(self, req: Buy | Sell, is_json: bool) -> tuple[bytes | Pending, int]:
        """Validate, journal and ACK a new order (the ACK goes out once it is durable).

        The first rule broken answers: the client id's form, the symbol, the rulebook's
        (exchange/rules.py), then the desk's (a duplicate client id, shutting down).
        """
        desk, cid = self.desk, req.id
        side = Side.BUY if type(req) is Buy else Side.SELL
        if not self.owner:
            return self._refuse(req, side, Problem(Reason.NOT_LOGGED_IN, NOT_LOGGED_IN.text), is_json), 0
        if cid is not None and not CLIENT_ID.fullmatch(cid):
            return self._refuse(req, side, Problem(Reason.BAD_ID, BAD_CLIENT_ID), is_json), 0
        inst = desk.instruments.get(req.symbol.upper())
        if inst is None:
            return self._refuse(req, side, Problem(Reason.UNKNOWN_SYMBOL, f"no such symbol {clip(req.symbol)}; type SYMBOLS"), is_json), 0
        terms = order_terms(inst, req.qty, req.price, req.tif)
        if isinstance(terms, Problem):
            return self._refuse(req, side, terms, is_json), 0
        stop = None if req.stop is None else stop_terms(inst, req.stop)
        if isinstance(stop, Problem):
            return self._refuse(req, side, stop, is_json), 0
        show = None if req.show is None else show_terms(inst, req.show, terms[1])
        if isinstance(show, Problem):
            return self._refuse(req, side, show, is_json), 0
        oco = None if req.oco is None else desk.oco_partner(inst, self.owner, req.oco)
        if isinstance(oco, Problem):
            return self._refuse(req, side, oco, is_json), 0
        if stop is not None and (reached := desk.stop_reached(inst, side, stop)) is not None:
            return self._refuse(req, side, reached, is_json), 0
        if cid is not None and desk.orders.find_client_id(self.owner, cid) is not None:
            return self._refuse(req, side, Problem(Reason.DUPLICATE_ID, f"an open order already has id {cid}"), is_json), 0
        if desk.closing:
            return self._refuse(req, side, Problem(Reason.SHUTTING_DOWN, "the exchange is shutting down"), is_json), 0
        qty, price, tif = terms
        cmd = NewOrder(inst.symbol, side, qty, price, tif, self.owner, cid, None, stop, self.cancel_on_disconnect, show, oco)
        ticket, decision = self._submit(cmd)
        if type(decision) is int:  # accepted now (serve): the ACK waits for the disk
            if self.cancel_on_disconnect:
                self._entered(decision)
            return self._ack(decision, side, inst, qty, price, tif._value_, cid, is_json, stop, show, oco), ticket
        if decision is not None:  # refused now: its owner cannot pay for it
            return self._refuse(req, side, cast(Problem, decision), is_json), 0
        intake = desk.intake  # decided later (a cluster's risk shard): the order id comes with it

        def render() -> bytes:
            later = intake.decision(ticket)
            if type(later) is int:
                if cmd.cod:
                    self._entered(later)
                return self._ack(later, side, inst, qty, price, tif._value_, cid, is_json, stop, show, oco)
            return self._refuse(req, side, cast(Problem, later), is_json)

        return Pending(render), ticket

    @staticmethod
    def _ack(
        order_id: int, side: Side, inst: Instrument, qty: int, price: int | None, tif: str, cid: str | None, is_json: bool,
        stop: int | None = None, show: int | None = None, oco: int | None = None,
    ) -> bytes:  # fmt: skip
        # Enum._value_, not .value: .value is a descriptor costing ~0.5 us a read, on every order.
        fields = (order_id, side._value_, inst.symbol, inst.format_qty(qty), "MKT" if price is None else inst.format_price(price), tif, cid)
        stop_text = None if stop is None else inst.format_price(stop)
        show_text = None if show is None else inst.format_qty(show)
        return R.to_json(R.Ack(*fields, stop_text, show_text, oco)) if is_json else ack_text(*fields, stop_text, show_text, oco)

    def _refuse(self, req: Buy | Sell, side: Side, problem: Problem, is_json: bool) -> bytes:
        """REJ for an order that is not journaled, and its row in the order audit."""
        cid = req.id if req.id is not None and CLIENT_ID.fullmatch(req.id) else None
        reason = problem.reason.value
        self.desk.rejects.inc_by(reason)
        if self.desk.refused is not None and self.owner:  # no audit rows for anonymous noise
            price = req.price and req.price[:32]
            self.desk.refused(Refusal(self.owner, req.symbol[:16], side.value, req.qty[:32], price, req.tif, cid, reason, problem.text))
        reject = R.Reject(reason, problem.text, cid)
        return encode(reject, is_json)

    def _audit_refusal(
        self, kind: str, order_id: int | None, cid: str | None, qty: str, price: str | None, reject: R.Reject | None, symbol: str = ""
    ) -> None:
        """The audit row of a cancel or replace refused before journaling."""
        if reject is not None:
            self.desk.rejects.inc_by(reject.reason)
        if self.desk.refused is not None and reject is not None:
            cid = cid if cid is not None and CLIENT_ID.fullmatch(cid) else None
            refusal = Refusal(self.owner, symbol, "", qty[:32], price and price[:32], None, cid, reject.reason, reject.text, kind, order_id)
            self.desk.refused(refusal)

    def _owned(self, order_id: int | None, cid: str | None) -> tuple[int, NewOrder | None, R.Reject | None]:
        """The open order a cancel or replace names, if it is this connection's owner's."""
        desk = self.desk
        if not self.owner:
            return 0, None, NOT_LOGGED_IN
        if order_id is None:
            if cid is None:
                return 0, None, R.Reject(Reason.UNKNOWN_ORDER.value, "name the order: an order id or id=<client-order-id>")
            if not CLIENT_ID.fullmatch(cid):
                return 0, None, R.Reject(Reason.BAD_ID.value, BAD_CLIENT_ID)
            order_id = desk.orders.find_client_id(self.owner, cid)
            if order_id is None:
                return 0, None, R.Reject(Reason.UNKNOWN_ORDER.value, f"no open order has id {cid}", cid)
        order = desk.orders.get(order_id)
        problem = check_owned(None if order is None else order.owner, order_id, self.owner)
        if problem is not None:
            return 0, None, R.Reject(problem.reason.value, problem.text, cid, order_id)
        assert order is not None
        if desk.closing:
            return 0, None, R.Reject(Reason.SHUTTING_DOWN.value, "the exchange is shutting down", cid, order_id)
        return order_id, order, None

    def _cancel(self, req: CancelOrder, is_json: bool) -> tuple[R.Reject | None, int]:
        order_id, order, reject = self._owned(req.order_id, req.id)
        if order is None:
            self._audit_refusal("cancel", req.order_id, req.id, "", None, reject)
            return reject, 0
        # The CANCELED (or a REJ if it filled first) comes back from matching.
        ticket, decision = self._submit(Cancel(order.symbol, order_id, self.owner))
        assert type(decision) is not Problem  # a cancel costs nothing
        return None, ticket

    def _replace(self, req: ReplaceOrder, is_json: bool) -> tuple[R.Reject | Pending | None, int]:
        order_id, order, reject = self._owned(req.order_id, req.id)
        if order is None:
            self._audit_refusal("replace", req.order_id, req.id, req.qty, req.price, reject)
            return reject, 0
        inst = self.desk.instruments[order.symbol]
        open_qty, current = self.desk.open_qty_price(order_id, order)
        terms = check_not_pending(order_id, order.stop) or replace_terms(inst, req.qty, req.price, current if req.price is None else None)
        if not isinstance(terms, Problem):
            qty, price = terms
            # A decrease at the same price locks nothing (a shrink); anything else locks its
            # whole new order, with the price spelled out (see exchange/risk.py).
            shrink = (price is None or price == current) and qty <= open_qty and current is not None
            ticket, decision = self._submit(Replace(order.symbol, order_id, qty, None if shrink else price if price is not None else current, self.owner, shrink))
            if decision is None:  # decided later: a REJ if its owner cannot pay for it
                return self._replace_outcome(ticket, order_id, order, req, is_json), ticket
            if type(decision) is int:
                return None, ticket
            terms = cast(Problem, decision)
        reject = R.Reject(terms.reason.value, terms.text, order.client_id, order_id)
        self._audit_refusal("replace", order_id, order.client_id, req.qty, req.price, reject, order.symbol)
        return reject, 0

    def _replace_outcome(self, ticket: int, order_id: int, order: NewOrder, req: ReplaceOrder, is_json: bool) -> Pending:
        """A replace decided later: nothing to say (REPLACED comes from matching) unless refused."""

        def render() -> bytes:
            outcome = self.desk.intake.decision(ticket)
            if not isinstance(outcome, Problem):
                return b""
            reject = R.Reject(outcome.reason.value, outcome.text, order.client_id, order_id)
            self._audit_refusal("replace", order_id, order.client_id, req.qty, req.price, reject, order.symbol)
            return encode(reject, is_json)

        return Pending(render)

    def _answer(self, req: Query, is_json: bool) -> bytes:
        """A query's reply, computed now (when everything before it has taken effect)."""
        reply: R.Reply
        match req:
            case BadRequest(code=code, text=text):
                reply = R.Error(code, text)
            case Ping():
                reply = R.Pong()
            case BookQuery(symbol=symbol, levels=levels):
                reply = self.desk.book_reply(symbol, levels)
            case OrdersQuery():
                reply = self.desk.orders_reply(self.owner, req) if self.owner else NOT_LOGGED_IN
            case BalancesQuery():
                reply = self.desk.balances_reply(self.owner) if self.owner else NOT_LOGGED_IN
            case SymbolsQuery():
                reply = self.desk.symbols_reply()
            case Help():
                reply = R.HelpReply(HELP_LINES)
            case StatsQuery():
                reply = self.desk.stats_reply()
            case CancelAllDone(tickets=tickets):
                intake = self.desk.intake
                reply = R.CanceledAll(self.desk.canceled_by([cast(int, intake.decision(t)) for t in tickets]))
            case ReportsQuery() | Login() | TickerQuery() | KlinesQuery() | TradesQuery():  # only at shutdown: the lookup cannot come back any more
                reply = R.Error(Reason.SHUTTING_DOWN.value, "the exchange is shutting down; ask again after it restarts")
            case _:
                raise TypeError(f"not a query: {req!r}")
        return encode(reply, is_json)
