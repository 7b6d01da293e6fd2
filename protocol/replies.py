"""Order-entry replies: one Struct per kind, formatted as a text line or a JSON line.

Text replies are one line each, the kind first, the order id second where there is one,
key=value tokens next, a human sentence (if any) last. Multi-line replies (BOOK, ORDERS,
SYMBOLS, HELP) end with a line `END`. Quantities and prices are already decimal strings
formatted by the symbol's instrument. docs/PROTOCOL.md shows every form.
"""

from __future__ import annotations

import msgspec

_OPTS = dict(frozen=True, tag_field="type", omit_defaults=True)


class Ack(msgspec.Struct, tag="ack", **_OPTS):  # type: ignore[call-arg]
    order_id: int
    side: str
    symbol: str
    qty: str
    price: str  # "MKT" for a market order
    tif: str
    id: str | None = None


class FillReport(msgspec.Struct, tag="fill", **_OPTS):  # type: ignore[call-arg]
    order_id: int
    qty: str
    price: str
    leaves: str
    trade: str
    liq: str  # A: added liquidity (maker), R: removed it (taker)
    id: str | None = None


class CanceledReport(msgspec.Struct, tag="canceled", **_OPTS):  # type: ignore[call-arg]
    order_id: int
    leaves: str
    reason: str
    id: str | None = None


class ReplacedReport(msgspec.Struct, tag="replaced", **_OPTS):  # type: ignore[call-arg]
    order_id: int
    qty: str
    price: str
    priority: str  # kept | lost
    id: str | None = None


class Reject(msgspec.Struct, tag="rej", **_OPTS):  # type: ignore[call-arg]
    reason: str
    text: str
    id: str | None = None
    order_id: int | None = None


class Error(msgspec.Struct, tag="err", **_OPTS):  # type: ignore[call-arg]
    code: str
    text: str


class Hello(msgspec.Struct, tag="hello", **_OPTS):  # type: ignore[call-arg]
    version: str
    session: str
    owner: str


class Resumed(msgspec.Struct, tag="resumed", **_OPTS):  # type: ignore[call-arg]
    session: str
    owner: str
    open_orders: int


class Pong(msgspec.Struct, tag="pong", **_OPTS):  # type: ignore[call-arg]
    pass


class Bye(msgspec.Struct, tag="bye", **_OPTS):  # type: ignore[call-arg]
    text: str


class BookReply(msgspec.Struct, tag="book", **_OPTS):  # type: ignore[call-arg]
    symbol: str
    bids: list[tuple[str, str]]  # (price, total qty), best first
    asks: list[tuple[str, str]]


class OpenOrder(msgspec.Struct, frozen=True, omit_defaults=True):
    order_id: int
    side: str
    symbol: str
    qty: str  # open (leaves) quantity
    price: str
    tif: str
    id: str | None = None


class OrdersReply(msgspec.Struct, tag="orders", **_OPTS):  # type: ignore[call-arg]
    orders: list[OpenOrder]


class SymbolInfo(msgspec.Struct, frozen=True):
    symbol: str
    tick: str
    lot: str
    min_qty: str
    max_qty: str
    min_price: str
    max_price: str


class SymbolsReply(msgspec.Struct, tag="symbols", **_OPTS):  # type: ignore[call-arg]
    symbols: list[SymbolInfo]


class HelpReply(msgspec.Struct, tag="help", **_OPTS):  # type: ignore[call-arg]
    lines: list[str]


Reply = (
    Ack | FillReport | CanceledReport | ReplacedReport | Reject | Error | Hello | Resumed | Pong | Bye
    | BookReply | OrdersReply | SymbolsReply | HelpReply
)  # fmt: skip


def _id(cid: str | None) -> str:
    return f" id={cid}" if cid is not None else ""


# The hot replies also have direct formatters, used by to_text and by the gateway's
# per-order paths (no Struct built just to be formatted and dropped).


def ack_text(order_id: int, side: str, symbol: str, qty: str, price: str, tif: str, cid: str | None) -> bytes:
    if cid is None:
        return f"ACK {order_id} {side} {symbol} {qty} {price} {tif}\n".encode()
    return f"ACK {order_id} {side} {symbol} {qty} {price} {tif} id={cid}\n".encode()


def fill_text(order_id: int, qty: str, price: str, leaves: str, trade: str, liq: str, cid: str | None) -> bytes:
    if cid is None:
        return f"FILL {order_id} {qty} {price} leaves={leaves} trade={trade} liq={liq}\n".encode()
    return f"FILL {order_id} {qty} {price} leaves={leaves} trade={trade} liq={liq} id={cid}\n".encode()


def canceled_text(order_id: int, leaves: str, reason: str, cid: str | None) -> bytes:
    return f"CANCELED {order_id} leaves={leaves} reason={reason}{_id(cid)}\n".encode()


def replaced_text(order_id: int, qty: str, price: str, priority: str, cid: str | None) -> bytes:
    return f"REPLACED {order_id} {qty} {price} priority={priority}{_id(cid)}\n".encode()


def reject_text(reason: str, text: str, cid: str | None = None, order_id: int | None = None) -> bytes:
    order = f" order={order_id}" if order_id is not None else ""
    return f"REJ {reason}{order}{_id(cid)} {text}\n".encode()


def to_text(r: Reply) -> bytes:
    """One reply as text, ending in LF (several lines for BOOK, ORDERS, SYMBOLS, HELP)."""
    kind = type(r)
    if kind is Ack:
        return ack_text(r.order_id, r.side, r.symbol, r.qty, r.price, r.tif, r.id)  # type: ignore[union-attr]
    if kind is FillReport:
        return fill_text(r.order_id, r.qty, r.price, r.leaves, r.trade, r.liq, r.id)  # type: ignore[union-attr]
    if kind is CanceledReport:
        return canceled_text(r.order_id, r.leaves, r.reason, r.id)  # type: ignore[union-attr]
    if kind is ReplacedReport:
        return replaced_text(r.order_id, r.qty, r.price, r.priority, r.id)  # type: ignore[union-attr]
    if kind is Reject:
        return reject_text(r.reason, r.text, r.id, r.order_id)  # type: ignore[union-attr]
    if kind is Error:
        s = f"ERR {r.code} {r.text}\n"  # type: ignore[union-attr]
    elif kind is Pong:
        s = "PONG\n"
    elif kind is Hello:
        s = f"HELLO tickline {r.version} session={r.session} owner={r.owner} type HELP for commands\n"  # type: ignore[union-attr]
    elif kind is Resumed:
        s = f"RESUMED session={r.session} owner={r.owner} open={r.open_orders}\n"  # type: ignore[union-attr]
    elif kind is Bye:
        s = f"BYE {r.text}\n"  # type: ignore[union-attr]
    elif kind is BookReply:
        lines = [f"BOOK {r.symbol} bids={len(r.bids)} asks={len(r.asks)}"]  # type: ignore[union-attr]
        lines += [f"BID {p} {q}" for p, q in r.bids]  # type: ignore[union-attr]
        lines += [f"ASK {p} {q}" for p, q in r.asks]  # type: ignore[union-attr]
        s = "\n".join(lines) + "\nEND\n"
    elif kind is OrdersReply:
        lines = [f"ORDERS {len(r.orders)}"]  # type: ignore[union-attr]
        lines += [f"ORDER {o.order_id} {o.side} {o.symbol} {o.qty} {o.price} {o.tif}{_id(o.id)}" for o in r.orders]  # type: ignore[union-attr]
        s = "\n".join(lines) + "\nEND\n"
    elif kind is SymbolsReply:
        lines = [f"SYMBOLS {len(r.symbols)}"]  # type: ignore[union-attr]
        lines += [
            f"SYMBOL {i.symbol} tick={i.tick} lot={i.lot} min_qty={i.min_qty} max_qty={i.max_qty} "
            f"min_price={i.min_price} max_price={i.max_price}"
            for i in r.symbols  # type: ignore[union-attr]
        ]
        s = "\n".join(lines) + "\nEND\n"
    elif kind is HelpReply:
        s = "HELP\n" + "".join(f"  {line}\n" for line in r.lines) + "END\n"  # type: ignore[union-attr]
    else:
        raise TypeError(f"not a reply: {r!r}")
    return s.encode()


_json = msgspec.json.Encoder()


def to_json(r: Reply) -> bytes:
    """One reply as a JSON object on one line, tagged by "type"."""
    return _json.encode(r) + b"\n"
