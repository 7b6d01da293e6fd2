"""One order-entry connection: bytes in, requests handled, replies out, in order.

Replies keep request order. A batch of lines (one data_received) that journaled a command
is held until the journal says that command is durable; later batches queue behind it.
Execution reports (FILL, CANCELED, REPLACED) are written as the matching tasks produce
them: an order's ACK is always released before its command reaches matching.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from collections import deque
from typing import TYPE_CHECKING

import structlog

from protocol import replies as R
from protocol.messages import TIF, Cancel, Command, NewOrder, RejectReason, Replace, Side
from protocol.requests import (
    BadRequest,
    BookQuery,
    Buy,
    CancelOrder,
    Help,
    OrdersQuery,
    Ping,
    Quit,
    ReplaceOrder,
    Request,
    Resume,
    Sell,
    SymbolsQuery,
    decode_json,
)
from protocol.text import HELP_LINES, TOO_LONG, LineSplitter, clip, parse_line


if TYPE_CHECKING:
    from gateway.server import Gateway

log = structlog.get_logger("gateway")

CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,32}", re.ASCII)
TOKEN = re.compile(r"[0-9a-f]{32}", re.ASCII)
TIF_BY_NAME = {t.value: t for t in TIF}
MAX_BOOK_LEVELS = 1000
# Flow control. A client may have this many commands waiting for the disk before we stop
# reading from it; and its unread replies may reach WRITE_HIGH before we stop reading
# (it can't make us buffer more of its own replies), and WRITE_CAP before we hang up
# (execution reports from others' trades still arrive for a client that never reads).
MAX_INFLIGHT = 20_000
WRITE_HIGH = 256 * 1024
WRITE_CAP = 16 * 1024 * 1024


def owner_of(token: str) -> str:
    """The owner id recorded on orders: derived from the secret token, not the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class Session(asyncio.Protocol):
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.token = secrets.token_hex(16)
        self.owner = owner_of(self.token)
        self.json_mode = False  # the form of the last request: for reports with no order to go by
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.splitter = LineSplitter()
        self.held: deque[tuple[int, list[bytes]]] = deque()  # (seq that must be durable, replies)
        self.outbuf: list[bytes] = []  # ready to go out at the end of this loop iteration
        self.inflight = 0  # commands journaled and not yet durable
        self._inflight_seqs: deque[tuple[int, int]] = deque()  # (last seq, count) per held batch
        self._paused_for_writes = False
        self._paused_for_inflight = False
        self._reading_paused = False
        self.quitting = False  # QUIT received: BYE once all its commands have been matched
        self.last_seq = 0  # the last command this session journaled

    # ------------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=WRITE_HIGH)  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        if not self.gw.admit(self):
            transport.write(R.to_text(R.Error("too_many_connections", "the server is full; try again later")))
            transport.close()
            return
        log.info("session_open", peer=self.peer, owner=self.owner)
        transport.write(R.to_text(R.Hello(self.gw.version, self.token, self.owner)))  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.gw.forget(self)
        self.held.clear()
        log.info("session_closed", peer=self.peer, owner=self.owner, error=str(exc) if exc else None)

    def pause_writing(self) -> None:
        self._paused_for_writes = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._paused_for_writes = False
        self._update_reading()

    def _update_reading(self) -> None:
        want_paused = self._paused_for_writes or self._paused_for_inflight or self.gw.closing
        if self.transport is None or want_paused == self._reading_paused or self.transport.is_closing():
            return
        self._reading_paused = want_paused
        if want_paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    # ------------------------------------------------------------------ requests

    def data_received(self, data: bytes) -> None:
        out: list[bytes] = []
        last_seq = count = 0
        for line in self.splitter.feed(data):
            if self.quitting:
                break
            if line is TOO_LONG:
                out.append(R.to_text(R.Error("line_too_long", f"a line may be at most {self.splitter.limit} bytes; discarded up to its end")))
                continue
            is_json = line[:1] == b"{"
            request = decode_json(line) if is_json else parse_line(line)
            if request is None:
                continue
            self.json_mode = is_json
            try:
                kind = type(request)
                if kind is Buy or kind is Sell:
                    reply, seq = self._new_order(request, is_json)  # type: ignore[arg-type]
                    out.append(reply)
                else:
                    seq = self.handle(request, is_json, out)
            except Exception:  # a bug must cost one request, never the session or the server
                log.exception("request_failed", peer=self.peer, line=line[:200])
                out.append(R.to_text(R.Error("internal", "the request failed inside the server; it was not executed")))
                continue
            if seq:
                last_seq, count = seq, count + 1
        self._emit(out, last_seq, count)

    def handle(self, req: Request | BadRequest, is_json: bool, out: list[bytes]) -> int:
        """Any request but a new order: append its immediate reply; return the seq it journaled, or 0."""
        kind = type(req)
        if kind is CancelOrder:
            reply, seq = self._cancel(req)  # type: ignore[arg-type]
        elif kind is ReplaceOrder:
            reply, seq = self._replace(req)  # type: ignore[arg-type]
        else:
            reply, seq = self._query(req), 0
        if reply is not None:
            out.append(R.to_json(reply) if is_json else R.to_text(reply))
        return seq

    def _new_order(self, req: Buy | Sell, is_json: bool) -> tuple[bytes, int]:
        """Validate, journal and ACK a new order (the ACK goes out once it is durable)."""
        cid = req.id
        problem = None
        inst = self.gw.instruments.get(req.symbol.upper())
        if cid is not None and not CLIENT_ID.fullmatch(cid):
            problem, cid = (RejectReason.BAD_ID, "a client order id is 1-32 of A-Z a-z 0-9 . _ : -"), None
        elif inst is None:
            problem = RejectReason.UNKNOWN_SYMBOL, f"no such symbol {clip(req.symbol)}; type SYMBOLS"
        else:
            qty = inst.parse_qty(req.qty)
            price = None if req.price is None else inst.parse_price(req.price)
            tif_name = req.tif.upper() if req.tif is not None else ("GTC" if req.price is not None else "IOC")
            tif = TIF_BY_NAME.get(tif_name)
            if type(qty) is tuple:
                problem = qty
            elif type(price) is tuple:
                problem = price
            elif tif is None:
                problem = RejectReason.BAD_TIF, f"time in force {clip(tif_name)} is not GTC, IOC, FOK or POST"
            elif price is None and (tif is TIF.GTC or tif is TIF.POST):
                problem = RejectReason.BAD_TIF, f"a market order cannot be {tif_name}"
            elif cid is not None and self.gw.orders.find_client_id(self.owner, cid) is not None:
                problem = RejectReason.DUPLICATE_ID, f"an open order already has id {cid}"
            elif self.gw.closing:
                problem = RejectReason.SHUTTING_DOWN, "the exchange is shutting down"
            else:
                problem = inst.check(qty, price)  # type: ignore[arg-type]
        if problem is not None:
            reason = problem[0]._value_
            if self.gw.audit is not None:
                side_name = "BUY" if type(req) is Buy else "SELL"
                self.gw.audit(self.owner, req.symbol[:16], side_name, req.qty[:32], req.price and req.price[:32], req.tif, cid, reason, problem[1])
            reject = R.Reject(reason, problem[1], cid)
            return (R.to_json(reject) if is_json else R.to_text(reject)), 0
        symbol = inst.symbol  # type: ignore[union-attr]
        side = Side.BUY if type(req) is Buy else Side.SELL
        cmd = NewOrder(symbol, side, qty, price, tif, self.owner, cid)  # type: ignore[arg-type]
        seq = self._journal(cmd)
        self.gw.orders.add(seq, cmd, is_json)
        fields = (
            seq, side._value_, symbol, inst.format_qty(qty),  # type: ignore[union-attr, arg-type]
            "MKT" if price is None else inst.format_price(price), tif._value_, cid,  # type: ignore[union-attr, arg-type]
        )  # fmt: skip
        return (R.to_json(R.Ack(*fields)) if is_json else R.ack_text(*fields)), seq

    def _journal(self, cmd: Command) -> int:
        self.last_seq = seq = self.gw.append(cmd)
        return seq

    def _owned(self, order_id: int | None, cid: str | None) -> tuple[int, NewOrder | None, R.Reject | None]:
        """The open order a cancel or replace names, if it is this session's owner's."""
        orders = self.gw.orders
        if order_id is None:
            if cid is None:
                return 0, None, R.Reject(RejectReason.UNKNOWN_ORDER.value, "name the order: an order id or id=<client-order-id>")
            order_id = orders.find_client_id(self.owner, cid)
            if order_id is None:
                shown = cid if CLIENT_ID.fullmatch(cid) else None
                return 0, None, R.Reject(RejectReason.UNKNOWN_ORDER.value, f"no open order has id {clip(cid)}", shown)
        entry = orders.by_id.get(order_id)
        if entry is None:
            return 0, None, R.Reject(RejectReason.UNKNOWN_ORDER.value, f"order {order_id} is not open", cid, order_id)
        order = entry[0]
        if order.owner != self.owner:
            return 0, None, R.Reject(RejectReason.NOT_OWNER.value, f"order {order_id} is not yours", cid, order_id)
        if self.gw.closing:
            return 0, None, R.Reject(RejectReason.SHUTTING_DOWN.value, "the exchange is shutting down", cid, order_id)
        return order_id, order, None

    def _cancel(self, req: CancelOrder) -> tuple[R.Reject | None, int]:
        order_id, order, reject = self._owned(req.order_id, req.id)
        if order is None:
            return reject, 0
        # The CANCELED (or a REJ if it filled first) comes back from the matching task.
        return None, self._journal(Cancel(order.symbol, order_id, self.owner))

    def _replace(self, req: ReplaceOrder) -> tuple[R.Reject | None, int]:
        order_id, order, reject = self._owned(req.order_id, req.id)
        if order is None:
            return reject, 0
        inst = self.gw.instruments[order.symbol]
        qty = inst.parse_qty(req.qty)
        if type(qty) is tuple:
            return R.Reject(qty[0].value, qty[1], order.client_id, order_id), 0
        if req.price is None:
            price = self.gw.open_qty_price(order_id, order)[1]
        else:
            price = inst.parse_price(req.price)
            if type(price) is tuple:
                return R.Reject(price[0].value, price[1], order.client_id, order_id), 0
        problem = inst.check(qty, price)  # type: ignore[arg-type]
        if problem is not None:
            return R.Reject(problem[0].value, problem[1], order.client_id, order_id), 0
        new_price = None if req.price is None else price
        return None, self._journal(Replace(order.symbol, order_id, qty, new_price, self.owner))  # type: ignore[arg-type]

    def _query(self, req: Request | BadRequest) -> R.Reply | None:
        kind = type(req)
        if kind is BadRequest:
            return R.Error(req.code, req.text)  # type: ignore[union-attr]
        if kind is Ping:
            return R.Pong()
        if kind is BookQuery:
            return self._book(req)  # type: ignore[arg-type]
        if kind is OrdersQuery:
            return self.gw.orders_reply(self.owner)
        if kind is SymbolsQuery:
            return self.gw.symbols_reply()
        if kind is Help:
            return R.HelpReply(HELP_LINES)
        if kind is Resume:
            return self._resume(req)  # type: ignore[arg-type]
        if kind is Quit:
            self.quitting = True
            self.gw.quit_when_settled(self)
            return None
        raise TypeError(f"unhandled request {req!r}")

    def _book(self, req: BookQuery) -> R.Reply:
        book = self.gw.books.get(req.symbol.upper())
        if book is None:
            return R.Reject(RejectReason.UNKNOWN_SYMBOL.value, f"no such symbol {clip(req.symbol)}; type SYMBOLS")
        if not 1 <= req.levels <= MAX_BOOK_LEVELS:
            return R.Error("bad_request", f"levels must be 1..{MAX_BOOK_LEVELS}")
        inst = book.instrument
        bids, asks = book.depth(req.levels)
        return R.BookReply(
            book.symbol,
            [(inst.format_price(p), inst.format_qty(q)) for p, q in bids],
            [(inst.format_price(p), inst.format_qty(q)) for p, q in asks],
        )

    def _resume(self, req: Resume) -> R.Reply:
        if not TOKEN.fullmatch(req.token):
            return R.Error("bad_request", "a session token is the 32 hex digits from a HELLO line")
        self.gw.forget(self)
        self.token, self.owner = req.token, owner_of(req.token)
        self.gw.admit(self)
        log.info("session_resumed", peer=self.peer, owner=self.owner)
        return R.Resumed(self.token, self.owner, len(self.gw.orders.of_owner(self.owner)))

    # ------------------------------------------------------------------ replies

    def _emit(self, out: list[bytes], last_seq: int, count: int) -> None:
        if last_seq or self.held:
            if count:
                self.inflight += count
                self._inflight_seqs.append((last_seq, count))
                if self.inflight > MAX_INFLIGHT and not self._paused_for_inflight:
                    self._paused_for_inflight = True
                    self._update_reading()
            need = last_seq or self.held[-1][0]
            if out:
                self.held.append((need, out))
            self.gw.wait_for_durable(self)
        elif out:
            self.send(b"".join(out))

    def release(self, durable_seq: int) -> bool:
        """Write the held replies now on disk; True while some are still held."""
        held = self.held
        if held and held[0][0] <= durable_seq:
            chunks: list[bytes] = []
            while held and held[0][0] <= durable_seq:
                chunks += held.popleft()[1]
            self.send(b"".join(chunks))
        seqs = self._inflight_seqs
        while seqs and seqs[0][0] <= durable_seq:
            self.inflight -= seqs.popleft()[1]
        if self._paused_for_inflight and self.inflight <= MAX_INFLIGHT // 2:
            self._paused_for_inflight = False
            self._update_reading()
        return bool(held) or bool(seqs)

    def send(self, data: bytes) -> None:
        """Queue bytes for this session; everything queued in one loop iteration goes out
        in one write (ACKs, FILLs from every symbol, replies), see Gateway.flush."""
        if self.transport is None or self.transport.is_closing():
            return
        self.outbuf.append(data)
        if len(self.outbuf) == 1:
            self.gw.schedule_flush(self)

    def flush(self) -> None:
        transport = self.transport
        if not self.outbuf or transport is None or transport.is_closing():
            self.outbuf.clear()
            return
        data = b"".join(self.outbuf) if len(self.outbuf) > 1 else self.outbuf[0]
        self.outbuf.clear()
        transport.write(data)
        if transport.get_write_buffer_size() > WRITE_CAP:
            log.warning("session_slow_consumer", peer=self.peer, owner=self.owner, buffered=transport.get_write_buffer_size())
            transport.abort()

    def say_bye(self, text: str) -> None:
        """Send whatever is held or queued, then BYE, and close (QUIT, and everyone at shutdown)."""
        self.release(1 << 62)
        self.send(R.to_json(R.Bye(text)) if self.json_mode else R.to_text(R.Bye(text)))
        self.flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
