"""The rulebook for an order's terms: one place, called by the gateway and by the book.

The gateway turns wire text into integer terms with `order_terms` / `replace_terms` and
refuses what breaks a rule before anything is journaled. The book applies `check_order`
/ `check_replace` to every command again on apply, so replaying a journal is
self-contained (a journal written by an older, laxer gateway still replays the same).
`Reason` (protocol/messages.py) stays the one list of codes.
"""

from __future__ import annotations

from exchange.instruments import Instrument
from protocol.messages import TIF, Problem, Reason
from protocol.text import clip

GTC, POST = TIF.GTC, TIF.POST
TIF_BY_NAME = {t.value: t for t in TIF}


# ---------------------------------------------------------------- integer terms (book and gateway)


def check_order(inst: Instrument, qty: int, price: int | None, tif: TIF) -> Problem | None:
    """A new order's integer terms: positive, on the instrument's ranges, a valid tif."""
    if 0 < qty and inst.min_qty <= qty <= inst.max_qty:  # the common case in one expression
        if price is None:
            if tif is not GTC and tif is not POST:
                return None
        elif 0 < price and inst.min_price <= price <= inst.max_price:
            return None
    if qty <= 0:
        return Problem(Reason.BAD_QTY, "quantity must be positive")
    if price is not None and price <= 0:
        return Problem(Reason.BAD_PRICE, "price must be positive")
    if price is None and (tif is GTC or tif is POST):
        return Problem(Reason.BAD_TIF, f"a market order cannot be {tif.value}")
    return inst.check(qty, price)


def check_owned(order_owner: str | None, order_id: int, owner: str) -> Problem | None:
    """A cancel or replace names an open order of its sender's (None: no such open order).
    The gateway asks before journaling, the book again when it applies (a fill may win)."""
    if order_owner is None:
        return Problem(Reason.UNKNOWN_ORDER, f"order {order_id} is not open")
    if order_owner != owner:
        return Problem(Reason.NOT_OWNER, f"order {order_id} is not yours")
    return None


def check_replace(inst: Instrument, qty: int, price: int) -> Problem | None:
    """A replace's new open quantity and price (the current price if it keeps it)."""
    if 0 < qty and inst.min_qty <= qty <= inst.max_qty and 0 < price and inst.min_price <= price <= inst.max_price:
        return None  # the common case, decided in one expression (replace is 82% of a busy book)
    if qty <= 0:
        return Problem(Reason.BAD_QTY, "quantity must be positive")
    if price <= 0:
        return Problem(Reason.BAD_PRICE, "price must be positive")
    return inst.check(qty, price)


# ---------------------------------------------------------------- wire text -> terms (gateway)


def quantity_and_price(inst: Instrument, qty_text: str, price_text: str | None) -> tuple[int, int | None] | Problem:
    """Lots and ticks (None: no price) from decimal text, exactly, or the first rule broken."""
    qty = inst.parse_qty(qty_text)
    if isinstance(qty, Problem):
        return qty
    price = None if price_text is None else inst.parse_price(price_text)
    return price if isinstance(price, Problem) else (qty, price)


def order_terms(inst: Instrument, qty_text: str, price_text: str | None, tif_text: str | None) -> tuple[int, int | None, TIF] | Problem:
    """A new order's decimal text to (lots, ticks or None for market, tif), or the rule it breaks.

    A limit order defaults to GTC, a market order to IOC; a market order may be IOC or FOK.
    """
    parsed = quantity_and_price(inst, qty_text, price_text)
    if isinstance(parsed, Problem):
        return parsed
    qty, price = parsed
    tif_name = tif_text.upper() if tif_text is not None else ("GTC" if price is not None else "IOC")
    tif = TIF_BY_NAME.get(tif_name)
    if tif is None:
        return Problem(Reason.BAD_TIF, f"time in force {clip(tif_name)} is not GTC, IOC, FOK or POST")
    problem = check_order(inst, qty, price, tif)
    return (qty, price, tif) if problem is None else problem


def replace_terms(inst: Instrument, qty_text: str, price_text: str | None, current_price: int | None) -> tuple[int, int | None] | Problem:
    """A replace's text to (new open lots, new ticks or None to keep the price), or the rule it breaks.

    current_price is None for an order not priced yet (a market order still in flight):
    then only the quantity is checked here, and the book decides the rest.
    """
    parsed = quantity_and_price(inst, qty_text, price_text)
    if isinstance(parsed, Problem):
        return parsed
    qty, price = parsed
    new_price = current_price if price is None else price
    problem = inst.check(qty, None) if new_price is None else check_replace(inst, qty, new_price)
    return parsed if problem is None else problem
