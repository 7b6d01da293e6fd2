"""One symbol's order book and its matching loop: price-time priority, deterministic.

Data layout (shaped by bench/engine.py; the hot path is replace, 82% of the standard mix):
- each side (a Half) keeps a dict price -> Level and a heap of its prices, best on top
  (bids as negative prices). Empty levels leave the dict at once and the heap lazily:
  a price on top of the heap with no level is popped when met, and the heap is rebuilt
  when stale entries outnumber live ones. heapq is C; a sorted container costs several
  times more per level created or emptied, which most replaces do.
- a Level's FIFO is a dict order_id -> Order: dicts keep insertion order, so iteration
  is time priority, and removing any order (cancel, replace) is O(1);
- self.orders maps order_id -> Order for O(1) cancel and replace.

Nothing here awaits, reads a clock, draws a random number or touches a file: the same
commands with the same sequence numbers always give the same events and the same books.
"""

from __future__ import annotations

import hashlib
from heapq import heapify, heappop, heappush
from itertools import groupby
from operator import attrgetter
from typing import Iterator

import msgspec

from exchange.instruments import Instrument
from exchange.rules import check_order, check_owned, check_replace
from protocol.messages import (
    TIF,
    Accepted,
    BookLevelChanged,
    Cancel,
    Canceled,
    Command,
    Event,
    Fill,
    Liquidity,
    NewOrder,
    Problem,
    Quote,
    Reason,
    Rejected,
    Replace,
    Replaced,
    Side,
    Trade,
)

BUY, SELL = Side.BUY, Side.SELL
GTC, IOC, FOK, POST = TIF.GTC, TIF.IOC, TIF.FOK, TIF.POST
ADDED, REMOVED = Liquidity.ADDED, Liquidity.REMOVED


class Order(msgspec.Struct, array_like=True, gc=False):
    """A resting (or matching) order. Mutable: leaves and price change as it lives.
    Untracked by the collector (its fields are numbers, strings and enum members): a
    book of many orders costs a young-generation collection nothing. Encoded as an array
    of its fields: a snapshot's rows and the state hash's input are the orders themselves,
    encoded and decoded in C (a restart loads every one of them)."""

    order_id: int
    side: Side
    price: int | None
    leaves: int
    tif: TIF
    owner: str
    client_id: str | None
    budget: int | None = None  # a market BUY's spending limit, lots x ticks


class Level:
    __slots__ = ("side", "price", "orders", "total")

    def __init__(self, side: Side, price: int) -> None:
        self.side = side
        self.price = price
        self.orders: dict[int, Order] = {}
        self.total = 0


class Half:
    """One side of the book: levels by price and a lazily cleaned heap of prices."""

    __slots__ = ("side", "sign", "levels", "heap")

    def __init__(self, side: Side) -> None:
        self.side = side
        self.sign = -1 if side is BUY else 1  # heap key = sign * price: best on top
        self.levels: dict[int, Level] = {}
        self.heap: list[int] = []

    def best(self) -> int | None:
        heap, levels, sign = self.heap, self.levels, self.sign
        while heap:
            price = heap[0] * sign
            if price in levels:
                return price
            heappop(heap)
        return None

    def add_level(self, price: int) -> Level:
        level = self.levels[price] = Level(self.side, price)
        heap = self.heap
        if len(heap) > 2 * len(self.levels) + 64:
            # Too many stale prices: rebuild from the live levels (amortised O(1)).
            sign = self.sign
            heap[:] = [sign * p for p in self.levels]
            heapify(heap)
        else:
            heappush(heap, self.sign * price)
        return level

    def prices(self) -> list[int]:
        """Live prices, best first."""
        return sorted(self.levels, reverse=self.side is BUY)


class Book:
    def __init__(self, instrument: Instrument) -> None:
        self.instrument = instrument
        self.symbol = instrument.symbol
        self.orders: dict[int, Order] = {}
        self.bids = Half(BUY)
        self.asks = Half(SELL)
        self.md_seq = 0  # the last market-data sequence number used (see protocol.messages)
        self.quote: tuple[int | None, int, int | None, int] = (None, 0, None, 0)  # last published top
        self._cause = 0  # the journal sequence of the command being applied

    # ------------------------------------------------------------------ commands

    def apply(self, seq: int, cmd: Command) -> list[Event]:
        """Apply one command; seq is its journal sequence number (and a new order's id)."""
        self._cause = seq  # every report this command causes names it
        out: list[Event] = []
        # Levels this command changed, in the order it changed them: one BookLevelChanged
        # each at the end, however many fills hit them (a dict is an ordered set here).
        touched: dict[Level, None] = {}
        if type(cmd) is Replace:
            self._replace(seq, cmd, out, touched)
        elif type(cmd) is NewOrder:
            self._new(seq, cmd, out, touched)
        elif type(cmd) is Cancel:
            self._cancel(cmd, out, touched)
        else:
            raise TypeError(f"not a command: {cmd!r}")
        if touched:
            symbol, md_seq = self.symbol, self.md_seq
            bid, _, ask, _ = self.quote
            at_top = False  # only a change at or inside the last quote can move it
            for level in touched:
                md_seq += 1
                out.append(BookLevelChanged(md_seq, symbol, level.side, level.price, level.total))
                if level.side is BUY:
                    at_top = at_top or bid is None or level.price >= bid
                else:
                    at_top = at_top or ask is None or level.price <= ask
            self.md_seq = md_seq
            if at_top:
                self._publish_quote(out)
        return out

    def _publish_quote(self, out: list[Event]) -> None:
        """A Quote if the best bid or offer (price or size) changed."""
        bid, ask = self.bids.best(), self.asks.best()
        quote = (
            bid, 0 if bid is None else self.bids.levels[bid].total,
            ask, 0 if ask is None else self.asks.levels[ask].total,
        )  # fmt: skip
        if quote != self.quote:
            self.quote = quote
            self.md_seq += 1
            out.append(Quote(self.md_seq, self.symbol, *quote))

    def _new(self, seq: int, cmd: NewOrder, out: list[Event], touched: dict) -> None:
        price, tif = cmd.price, cmd.tif
        problem = self._check_new(cmd)
        if problem is not None:
            out.append(Rejected(problem.reason, problem.text, cmd.owner, cmd.client_id, seq, seq))
            return
        out.append(Accepted(seq, self.symbol, cmd.side, cmd.qty, price, tif, cmd.owner, cmd.client_id))
        order = Order(seq, cmd.side, price, cmd.qty, tif, cmd.owner, cmd.client_id)
        if cmd.budget is not None and price is None and cmd.side is BUY:
            order.budget = cmd.budget
        crosses = self._crosses(order)
        if tif is POST and crosses:
            self._kill(order, Reason.WOULD_CROSS, out)
            return
        if tif is FOK and self._fillable(order) < order.leaves:
            self._kill(order, Reason.FOK_UNFILLED, out)
            return
        if crosses:
            self._match(seq, order, out, touched)
        if order.leaves:
            if price is None:
                self._kill(order, Reason.NO_LIQUIDITY, out)
            elif tif is GTC or tif is POST:
                self._rest(order, touched)
            else:
                self._kill(order, Reason.EXPIRED, out)

    def _check_new(self, cmd: NewOrder) -> Problem | None:
        if cmd.symbol != self.symbol:
            return Problem(Reason.UNKNOWN_SYMBOL, f"this book trades {self.symbol}, not {cmd.symbol}")
        return check_order(self.instrument, cmd.qty, cmd.price, cmd.tif)

    def _cancel(self, cmd: Cancel, out: list[Event], touched: dict) -> None:
        order = self._owned(cmd.order_id, cmd.owner, out)
        if order is None:
            return
        self._unrest(order, touched)
        self._kill(order, Reason.USER, out)

    def _replace(self, seq: int, cmd: Replace, out: list[Event], touched: dict) -> None:
        order = self._owned(cmd.order_id, cmd.owner, out)
        if order is None:
            return
        old_price = order.price
        assert old_price is not None  # a resting order has a price
        price = old_price if cmd.price is None or cmd.shrink else cmd.price
        qty = cmd.qty if not cmd.shrink or cmd.qty < order.leaves else order.leaves
        problem = check_replace(self.instrument, qty, price)
        if problem is not None:
            out.append(Rejected(problem.reason, problem.text, cmd.owner, order.client_id, order.order_id, self._cause))
            return
        side = order.side
        half = self.bids if side is BUY else self.asks
        level = half.levels[old_price]
        if price == old_price:
            if qty != order.leaves:
                level.total += qty - order.leaves
                touched[level] = None
            if qty <= order.leaves:
                # A pure decrease keeps time priority: shrink in place.
                order.leaves = qty
                out.append(Replaced(order.order_id, self.symbol, side, qty, price, True, order.owner, order.client_id, self._cause))
                return
            # An increase goes to the back of its level.
            order.leaves = qty
            out.append(Replaced(order.order_id, self.symbol, side, qty, price, False, order.owner, order.client_id, self._cause))
            del level.orders[order.order_id]
            level.orders[order.order_id] = order
            return
        # A price change loses priority: out of the book, then in again as if new.
        del level.orders[order.order_id]
        level.total -= order.leaves
        touched[level] = None
        if not level.orders:
            del half.levels[old_price]
        order.price = price
        order.leaves = qty
        out.append(Replaced(order.order_id, self.symbol, side, qty, price, False, order.owner, order.client_id, self._cause))
        if self._crosses(order):
            if order.tif is POST:
                del self.orders[order.order_id]
                self._kill(order, Reason.WOULD_CROSS, out)
                return
            self._match(seq, order, out, touched)
            if not order.leaves:
                del self.orders[order.order_id]
                return
        level = half.levels.get(price) or half.add_level(price)
        level.orders[order.order_id] = order
        level.total += order.leaves
        touched[level] = None

    def _owned(self, order_id: int, owner: str, out: list[Event]) -> Order | None:
        order = self.orders.get(order_id)
        if order is not None and order.owner == owner:  # the common case, without a call
            return order
        problem = check_owned(None if order is None else order.owner, order_id, owner)
        assert problem is not None
        out.append(Rejected(problem.reason, problem.text, owner, None, order_id, self._cause))
        return None

    # ------------------------------------------------------------------ matching

    def _match(self, seq: int, taker: Order, out: list[Event], touched: dict) -> None:
        """The matching loop: take liquidity from the best opposite levels, oldest first.

        Trades execute at the resting order's price. An order of the taker's own owner is
        never traded with: it is canceled (self-trade prevention, cancel-oldest).
        """
        half = self.asks if taker.side is BUY else self.bids
        levels, maker_side, buying = half.levels, half.side, taker.side is BUY
        limit = taker.price
        symbol, owner, book_orders = self.symbol, taker.owner, self.orders
        budget = taker.budget
        match_no = 0
        while True:
            price = half.best()
            if price is None or (limit is not None and (price > limit if buying else price < limit)):
                return
            level = levels[price]
            gone: list[Order] = []
            for maker in level.orders.values():
                if maker.owner == owner:
                    level.total -= maker.leaves
                    gone.append(maker)
                    self._kill(maker, Reason.SELF_TRADE, out)
                    continue
                qty = taker.leaves if taker.leaves < maker.leaves else maker.leaves
                if budget is not None:  # a market BUY spends no more than it locked
                    if budget < qty * price:
                        qty = budget // price
                        if not qty:
                            taker.budget = 0
                            break
                    budget -= qty * price
                    taker.budget = budget
                match_no += 1
                self.md_seq += 1
                tid = f"{seq}-{match_no}"
                maker.leaves -= qty
                taker.leaves -= qty
                level.total -= qty
                out.append(Trade(self.md_seq, tid, seq, symbol, qty, price, taker.side, maker.order_id, taker.order_id, maker.owner, owner))
                out.append(Fill(maker.order_id, symbol, maker_side, qty, price, maker.leaves, tid, ADDED, maker.owner, maker.client_id, seq))
                out.append(Fill(taker.order_id, symbol, taker.side, qty, price, taker.leaves, tid, REMOVED, owner, taker.client_id, seq))
                if not maker.leaves:
                    gone.append(maker)
                if not taker.leaves:
                    break
            level_orders = level.orders
            for maker in gone:
                del level_orders[maker.order_id]
                del book_orders[maker.order_id]
            touched[level] = None
            if not level_orders:
                del levels[price]
            if not taker.leaves or taker.budget is not None and taker.budget < (half.best() or 0):
                return

    def _crosses(self, order: Order) -> bool:
        """Whether the order would meet the best opposite price (a market order: any)."""
        if order.side is BUY:
            best = self.asks.best()
            return best is not None and (order.price is None or order.price >= best)
        best = self.bids.best()
        return best is not None and (order.price is None or order.price <= best)

    def _fillable(self, taker: Order) -> int:
        """How much the taker could fill now (own orders excluded), stopping at its quantity."""
        want, limit, total, budget = taker.leaves, taker.price, 0, taker.budget
        half = self.asks if taker.side is BUY else self.bids
        for price in half.prices():
            if limit is not None and (price > limit if taker.side is BUY else price < limit):
                break
            for maker in half.levels[price].orders.values():
                if maker.owner != taker.owner:
                    qty = maker.leaves
                    if budget is not None:
                        qty = min(qty, budget // price)
                        budget -= qty * price
                    total += qty
                    if total >= want:
                        return total
        return total

    def budgeted(self, cmd: NewOrder) -> NewOrder:
        """A market BUY with its budget (what the book would cost now): the sequencing
        point locks that much, and matching never spends more. Other orders as they are."""
        if cmd.price is not None or cmd.side is not BUY:
            return cmd
        return msgspec.structs.replace(cmd, budget=self.sweep_cost(cmd.qty, cmd.owner))

    def sweep_cost(self, qty: int, owner: str) -> int:
        """What buying qty at market would cost now, in lots x ticks (own orders skipped,
        as self-trade prevention cancels them); less if the book holds less."""
        cost = 0
        for price in self.asks.prices():
            for maker in self.asks.levels[price].orders.values():
                if maker.owner != owner:
                    take = min(qty, maker.leaves)
                    cost += take * price
                    qty -= take
                    if not qty:
                        return cost
        return cost

    # ------------------------------------------------------------------ resting

    def _rest(self, order: Order, touched: dict) -> None:
        price = order.price
        assert price is not None
        half = self.bids if order.side is BUY else self.asks
        level = half.levels.get(price) or half.add_level(price)
        level.orders[order.order_id] = order
        level.total += order.leaves
        self.orders[order.order_id] = order
        touched[level] = None

    def load(self, orders: list[Order], md_seq: int) -> None:
        """Rest orders as they were (restoring a snapshot): bids best first, then asks best
        first, FIFO within a level; no matching. Per order only C runs (columns by
        attrgetter, dicts by zip): a restart loads every resting order."""
        ids, sides, prices, leaves = (list(map(attrgetter(f), orders)) for f in ("order_id", "side", "price", "leaves"))
        self.orders.update(zip(ids, orders, strict=True))
        start = 0
        for price, run in groupby(prices):  # a bid's price is never an adjacent ask's: no crossed book
            end = start + sum(1 for _ in run)
            level = (self.bids if sides[start] is BUY else self.asks).add_level(price)
            level.orders = dict(zip(ids[start:end], orders[start:end], strict=True))
            level.total = sum(leaves[start:end])
            start = end
        self.md_seq = md_seq
        bid, ask = self.bids.best(), self.asks.best()
        self.quote = (bid, 0 if bid is None else self.bids.levels[bid].total, ask, 0 if ask is None else self.asks.levels[ask].total)

    def _unrest(self, order: Order, touched: dict) -> None:
        price = order.price
        assert price is not None  # a resting order has a price
        half = self.bids if order.side is BUY else self.asks
        level = half.levels[price]
        del level.orders[order.order_id]
        level.total -= order.leaves
        del self.orders[order.order_id]
        touched[level] = None
        if not level.orders:
            del half.levels[price]

    def _kill(self, order: Order, reason: Reason, out: list[Event]) -> None:
        out.append(Canceled(order.order_id, self.symbol, order.side, order.leaves, reason, order.owner, order.client_id, self._cause))
        order.leaves = 0

    # ------------------------------------------------------------------ views

    def bbo(self) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        """Best bid and best offer as (price, total qty), None for an empty side."""
        bid, ask = self.bids.best(), self.asks.best()
        return (
            None if bid is None else (bid, self.bids.levels[bid].total),
            None if ask is None else (ask, self.asks.levels[ask].total),
        )

    def depth(self, levels: int = 10) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """L2: (bids best first, asks best first) as (price, total qty), up to `levels` each."""
        return (
            [(p, self.bids.levels[p].total) for p in self.bids.prices()[: max(levels, 0)]],
            [(p, self.asks.levels[p].total) for p in self.asks.prices()[: max(levels, 0)]],
        )

    def resting(self) -> Iterator[Order]:
        """Every resting order, bids then asks, each side in priority order."""
        for half in (self.bids, self.asks):
            for price in half.prices():
                yield from half.levels[price].orders.values()

    def order(self, order_id: int) -> Order | None:
        return self.orders.get(order_id)

    def encoded_orders(self) -> bytes:
        """Every resting order in priority order, msgpack-encoded (a snapshot's rows, the
        state hash's input): a copy taken in C, on the event loop when a snapshot is captured."""
        return encode_orders([o for half in (self.bids, self.asks) for price in half.prices() for o in half.levels[price].orders.values()])

    def state_hash(self) -> str:
        """A digest of everything that decides future matching: levels, FIFO order, leaves."""
        return hash_book(self.symbol, self.md_seq, self.encoded_orders())


encode_orders = msgspec.msgpack.Encoder().encode


def hash_book(symbol: str, md_seq: int, encoded_orders: bytes) -> str:
    """The state hash of one book: its market-data sequence and its resting orders in
    priority order, as Book.encoded_orders gives them."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{symbol}#{md_seq}|".encode())
    h.update(encoded_orders)
    return h.hexdigest()
