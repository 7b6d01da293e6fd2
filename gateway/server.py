"""The order-entry server: sessions by owner, ACK release after fsync, report routing."""

from __future__ import annotations

import asyncio
from typing import Callable

import structlog

from exchange.book import Book
from exchange.instruments import Instrument
from protocol import replies as R
from protocol.messages import Canceled, Command, Event, Fill, Liquidity, NewOrder, Rejected, Replaced

from gateway.orders import OpenOrders
from gateway.session import Session

log = structlog.get_logger("gateway")
ADDED = Liquidity.ADDED


class Gateway:
    def __init__(
        self,
        instruments: dict[str, Instrument],
        books: dict[str, Book],
        append: Callable[[Command], int],
        settled: Callable[[int], bool],
        *,
        version: str,
        max_sessions: int = 5_000,
        audit: Callable[..., None] | None = None,
    ) -> None:
        self.instruments = instruments
        self.books = books  # read-only here: BOOK replies and rebuilding open orders
        self.append = append  # journal a command; returns its sequence number
        self.settled = settled  # whether every command up to a seq is durable and matched
        self._quitting: dict[Session, None] = {}
        self.version = version
        self.max_sessions = max_sessions
        self.audit = audit  # audit(owner, symbol, side, qty, price, tif, client_id, reason, text) for refused orders
        self.orders = OpenOrders()
        self.sessions: dict[Session, None] = {}
        self.by_owner: dict[str, dict[Session, None]] = {}
        self._waiting: dict[Session, None] = {}  # sessions with replies held for the journal
        self._dirty: dict[Session, None] = {}  # sessions with bytes queued for this iteration
        self._server: asyncio.AbstractServer | None = None
        self.closing = False
        for book in books.values():
            for o in book.resting():
                self.orders.add(o.order_id, NewOrder(book.symbol, o.side, o.leaves, o.price, o.tif, o.owner, o.client_id), False)

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Session(self), host, port, reuse_address=True, backlog=1024)
        address = self._server.sockets[0].getsockname()
        return address[0], address[1]

    # ------------------------------------------------------------------ sessions

    def admit(self, session: Session) -> bool:
        if session not in self.sessions and len(self.sessions) >= self.max_sessions:
            return False
        self.sessions[session] = None
        self.by_owner.setdefault(session.owner, {})[session] = None
        return True

    def forget(self, session: Session) -> None:
        self.sessions.pop(session, None)
        self._waiting.pop(session, None)
        self._quitting.pop(session, None)
        mine = self.by_owner.get(session.owner)
        if mine is not None:
            mine.pop(session, None)
            if not mine:
                del self.by_owner[session.owner]

    def schedule_flush(self, session: Session) -> None:
        """Write the session's queued bytes once this loop iteration's work is done."""
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self.flush)
        self._dirty[session] = None

    def flush(self) -> None:
        dirty, self._dirty = self._dirty, {}
        for session in dirty:
            session.flush()

    def wait_for_durable(self, session: Session) -> None:
        self._waiting[session] = None

    def quit_when_settled(self, session: Session) -> None:
        """QUIT: say BYE after the reports of everything the session sent before it."""
        self._quitting[session] = None
        asyncio.get_running_loop().call_soon(self._finish_quits)

    def _finish_quits(self) -> None:
        for session in list(self._quitting):
            if session not in self._waiting and self.settled(session.last_seq):
                del self._quitting[session]
                session.say_bye("goodbye")

    def on_durable(self, durable_seq: int) -> None:
        """The journal has synced everything up to durable_seq: release those replies."""
        for session in list(self._waiting):
            if not session.release(durable_seq):
                del self._waiting[session]
        if self._quitting:
            # Not now: this batch is about to be handed to matching, not matched yet.
            asyncio.get_running_loop().call_soon(self._finish_quits)

    # ------------------------------------------------------------------ reports

    def deliver(self, events: list[Event]) -> None:
        """Execution reports from a matching task, to every live session of each owner.

        Each report is formatted once per form (text, JSON) and each session gets one
        write per batch. A report is (text formatter, reply Struct, its fields).
        """
        orders, by_id, instruments = self.orders, self.orders.by_id, self.instruments
        outgoing: dict[Session, list[bytes]] = {}
        for e in events:
            kind = type(e)
            if kind is Fill:
                entry = by_id.get(e.order_id) if e.leaves else orders.remove(e.order_id)  # type: ignore[union-attr]
                inst = instruments[e.symbol]  # type: ignore[union-attr]
                fields: tuple = (
                    e.order_id, inst.format_qty(e.qty), inst.format_price(e.price), inst.format_qty(e.leaves),  # type: ignore[union-attr]
                    e.trade_id, "A" if e.liquidity is ADDED else "R", e.client_id,  # type: ignore[union-attr]
                )  # fmt: skip
                text_of, struct = R.fill_text, R.FillReport
            elif kind is Canceled:
                entry = orders.remove(e.order_id)  # type: ignore[union-attr]
                inst = instruments[e.symbol]  # type: ignore[union-attr]
                fields = (e.order_id, inst.format_qty(e.leaves), e.reason._value_, e.client_id)  # type: ignore[union-attr]
                text_of, struct = R.canceled_text, R.CanceledReport
            elif kind is Replaced:
                entry = by_id.get(e.order_id)  # type: ignore[union-attr]
                inst = instruments[e.symbol]  # type: ignore[union-attr]
                priority = "kept" if e.priority_kept else "lost"  # type: ignore[union-attr]
                fields = (e.order_id, inst.format_qty(e.qty), inst.format_price(e.price), priority, e.client_id)  # type: ignore[union-attr]
                text_of, struct = R.replaced_text, R.ReplacedReport
            elif kind is Rejected:
                # The engine refused a command the gateway let through: a cancel or replace
                # that lost the race with a fill, or (never expected) a new order.
                entry = by_id.get(e.order_id) if e.order_id is not None else None  # type: ignore[union-attr]
                if entry is not None and e.order_id not in self.books[entry[0].symbol].orders:  # type: ignore[union-attr]
                    orders.remove(e.order_id)  # type: ignore[union-attr]
                fields = (e.reason._value_, e.text, e.client_id, e.order_id)  # type: ignore[union-attr]
                text_of, struct = R.reject_text, R.Reject
            else:
                continue
            sessions = self.by_owner.get(e.owner)  # type: ignore[union-attr]
            if not sessions:
                continue
            text = json = b""
            for session in sessions:
                if entry[1] if entry is not None else session.json_mode:
                    json = json or R.to_json(struct(*fields))
                    outgoing.setdefault(session, []).append(json)
                else:
                    text = text or text_of(*fields)
                    outgoing.setdefault(session, []).append(text)
        for session, chunks in outgoing.items():
            session.send(b"".join(chunks))
        if self._quitting:
            self._finish_quits()

    # ------------------------------------------------------------------ queries

    def orders_reply(self, owner: str) -> R.OrdersReply:
        rows = []
        for order_id, cmd in self.orders.of_owner(owner).items():
            inst = self.instruments[cmd.symbol]
            qty, price = self.open_qty_price(order_id, cmd)
            price_text = "MKT" if price is None else inst.format_price(price)
            rows.append(R.OpenOrder(order_id, cmd.side.value, cmd.symbol, inst.format_qty(qty), price_text, cmd.tif.value, cmd.client_id))
        return R.OrdersReply(rows)

    def open_qty_price(self, order_id: int, cmd: NewOrder) -> tuple[int, int | None]:
        """An open order's quantity and price now: the book's, or as sent if not matched yet."""
        live = self.books[cmd.symbol].orders.get(order_id)
        return (cmd.qty, cmd.price) if live is None else (live.leaves, live.price)

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

    # ------------------------------------------------------------------ shutdown

    def stop_accepting(self) -> None:
        """Close the listening socket and stop reading from every session."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session._update_reading()

    async def say_bye(self, text: str, timeout: float = 2.0) -> None:
        """BYE to every session, then wait (bounded) for their buffers to flush and close."""
        for session in list(self.sessions):
            session.say_bye(text)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.sessions and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
