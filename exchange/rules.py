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


def check_stop(inst: Instrument, stop: int) -> Problem | None:
    """A stop's trigger: a positive price inside the band (the book applies it again)."""
    if 0 < stop and inst.min_price <= stop <= inst.max_price:
        return None
    if stop <= 0:
        return Problem(Reason.BAD_PRICE, "stop price must be positive")
    return inst.check(inst.min_qty, stop)


def check_trigger(inst: Instrument, buy: bool, stop: int, last: int | None) -> Problem | None:
    """A new stop the last trade has already reached is refused: it would fire at once."""
    if last is not None and (last >= stop if buy else last <= stop):
        fmt = inst.format_price
        return Problem(Reason.WOULD_TRIGGER, f"the last trade ({fmt(last)}) has reached the stop price {fmt(stop)}")
    return None


def check_show(show: int | None, price: int | None) -> Problem | None:
    """An iceberg's displayed quantity: positive, on a limit order."""
    if show is None or show > 0 and price is not None:
        return None
    if price is None:
        return Problem(Reason.BAD_SHOW, "an iceberg (SHOW=) needs a price: a market order never rests")
    return Problem(Reason.BAD_SHOW, "SHOW= must be a positive quantity")


def show_terms(inst: Instrument, show_text: str, price: int | None) -> int | Problem:
    """An iceberg's SHOW= text to lots (on the lot), or the rule it breaks."""
    show = inst.parse_qty(show_text)
    if isinstance(show, Problem):
        return Problem(Reason.BAD_SHOW, f"show {show.text}")
    problem = check_show(show, price)
    return show if problem is None else problem


def check_oco(order_id: int, partner: tuple[str, int | None, bool] | None, owner: str) -> Problem | None:
    """The other order of an OCO pair: open in the same book (partner: its owner, its own
    pair, whether it traded or was replaced; None if not open there), the sender's, in no pair
    yet, untouched since it was accepted (the pair's funds were reckoned with its lock then)."""
    if partner is None:
        return Problem(Reason.BAD_OCO, f"order {order_id} is not open in this symbol (an OCO pair is in one symbol)")
    if partner[0] != owner:
        return Problem(Reason.BAD_OCO, f"order {order_id} is not yours")
    if partner[1] is not None:
        return Problem(Reason.BAD_OCO, f"order {order_id} is one of an OCO pair already")
    if partner[2]:
        return Problem(Reason.BAD_OCO, f"order {order_id} has traded or been replaced: pair an untouched order")
    return None


def check_not_paired(order_id: int, oco: int | None) -> Problem | None:
    """A replace of one order of an OCO pair is refused: cancel the pair, place another."""
    if oco is None:
        return None
    return Problem(Reason.BAD_OCO, f"order {order_id} is one of an OCO pair (with {oco}): cancel it and place another")


def check_not_pending(order_id: int, stop: int | None) -> Problem | None:
    """A replace needs an order on the book: a pending stop is canceled and placed again."""
    if stop is None:
        return None
    return Problem(Reason.STOP_PENDING, f"order {order_id} is a pending stop: cancel it and place another")


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
    # (every order and replace: the steps' counts at once; the calls that say what is wrong only if something is)
    lots, ticks = inst.lot.count(qty_text), None if price_text is None else inst.tick.count(price_text)
    if lots is not None and lots > 0 and (price_text is None or ticks is not None and ticks > 0):
        return lots, ticks
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


def stop_terms(inst: Instrument, stop_text: str) -> int | Problem:
    """A stop's trigger text to ticks (on the tick, inside the band), or the rule it breaks."""
    stop = inst.parse_price(stop_text)
    if isinstance(stop, Problem):
        return Problem(stop.reason, f"stop {stop.text}")
    problem = check_stop(inst, stop)
    return stop if problem is None else problem


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
