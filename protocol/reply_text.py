"""The replies every order meets (ACK, FILL, CANCELED, REPLACED, TRIGGERED, REJ) formatted
straight to bytes from their fields: no Struct built just to be formatted and dropped.
Compiled with the hot path (protocol/replies.py, which defines Structs, cannot be)."""

from __future__ import annotations


def _opt(value: str | None) -> str:
    return "-" if value is None else value


def _stop(stop: str | None) -> str:
    return f" stop={stop}" if stop is not None else ""


def _show(show: str | None) -> str:
    return f" show={show}" if show is not None else ""


def _oco(oco: int | None) -> str:
    return f" oco={oco}" if oco is not None else ""


def _id(cid: str | None) -> str:
    return f" id={cid}" if cid is not None else ""


def ack_text(
    order_id: int, side: str, symbol: str, qty: str, price: str, tif: str, cid: str | None,
    stop: str | None = None, show: str | None = None, oco: int | None = None,
) -> bytes:  # fmt: skip
    if stop is not None or show is not None or oco is not None:
        return f"ACK {order_id} {side} {symbol} {qty} {price} {tif}{_stop(stop)}{_show(show)}{_id(cid)}{_oco(oco)}\n".encode()
    if cid is None:
        return f"ACK {order_id} {side} {symbol} {qty} {price} {tif}\n".encode()
    return f"ACK {order_id} {side} {symbol} {qty} {price} {tif} id={cid}\n".encode()


def triggered_text(order_id: int, symbol: str, side: str, qty: str, price: str, stop: str, cid: str | None) -> bytes:
    return f"TRIGGERED {order_id} {symbol} {side} {qty} {price} stop={stop}{_id(cid)}\n".encode()


def fill_text(order_id: int, symbol: str, side: str, qty: str, price: str, leaves: str, trade: str, liq: str, cid: str | None) -> bytes:
    if cid is None:
        return f"FILL {order_id} {symbol} {side} {qty} {price} leaves={leaves} trade={trade} liq={liq}\n".encode()
    return f"FILL {order_id} {symbol} {side} {qty} {price} leaves={leaves} trade={trade} liq={liq} id={cid}\n".encode()


def canceled_text(order_id: int, leaves: str, reason: str, cid: str | None) -> bytes:
    return f"CANCELED {order_id} leaves={leaves} reason={reason}{_id(cid)}\n".encode()


def replaced_text(order_id: int, qty: str, price: str, priority: str, cid: str | None) -> bytes:
    return f"REPLACED {order_id} {qty} {price} priority={priority}{_id(cid)}\n".encode()


def reject_text(reason: str, text: str, cid: str | None = None, order_id: int | None = None) -> bytes:
    order = f" order={order_id}" if order_id is not None else ""
    return f"REJ {reason}{order}{_id(cid)} {text}\n".encode()
