"""One symbol's order book and its matching loop: price-time priority, deterministic.

Data layout (chosen for the hot path, see bench/engine.py):
- each side keeps a SortedList of its prices and a dict price -> Level;
- a Level's FIFO is a dict order_id -> Order: dicts keep insertion order, so iteration
  is time priority, and removing any order (cancel, replace) is O(1);
- self.orders maps order_id -> Order for O(1) cancel and replace.

Nothing here awaits, reads a clock, draws a random number or touches a file: the same
commands with the same sequence numbers always give the same events and the same books.
"""

from __future__ import annotations

import hashlib
from typing import Iterator

from sortedcontainers import SortedList

from exchange.instruments import Instrument
from protocol.messages import (
    TIF,
    Accepted,
    BookLevelChanged,
    Cancel,
    Canceled,
    CancelReason,
    Command,
    Event,
    Fill,
    Liquidity,
    NewOrder,
    Rejected,
    RejectReason,
    Replace,
    Replaced,
    Side,
    Trade,
)

BUY, SELL = Side.BUY, Side.SELL
GTC, IOC, FOK, POST = TIF.GTC, TIF.IOC, TIF.FOK, TIF.POST
ADDED, REMOVED = Liquidity.ADDED, Liquidity.REMOVED


class Order:
    """A resting (or matching) order. Mutable: leaves and price change as it lives."""

    __slots__ = ("order_id", "side", "price", "leaves", "tif", "owner", "client_id")

    def __init__(
        self,
        order_id: int,
        side: Side,
        price: int | None,
        leaves: int,
        tif: TIF,
        owner: str,
        client_id: str | None,
    ) -> None:
        self.order_id = order_id
        self.side = side
        self.price = price
        self.leaves = leaves
        self.tif = tif
        self.owner = owner
        self.client_id = client_id


class Level:
    __slots__ = ("orders", "total")

    def __init__(self) -> None:
        self.orders: dict[int, Order] = {}
        self.total = 0


class Book:
    def __init__(self, instrument: Instrument) -> None:
        self.instrument = instrument
        self.symbol = instrument.symbol
        self.orders: dict[int, Order] = {}
        self.bid_prices: SortedList = SortedList()  # best bid is the last
        self.ask_prices: SortedList = SortedList()  # best ask is the first
        self.bid_levels: dict[int, Level] = {}
        self.ask_levels: dict[int, Level] = {}

    # ------------------------------------------------------------------ commands

    def apply(self, seq: int, cmd: Command) -> list[Event]:
        """Apply one command; seq is its journal sequence number (and a new order's id)."""
        out: list[Event] = []
        # (side, price) -> level touched by this command; one BookLevelChanged each at the end
        touched: dict[tuple[Side, int], Level] = {}
        kind = type(cmd)
        if kind is Replace:
            self._replace(seq, cmd, out, touched)  # type: ignore[arg-type]
        elif kind is NewOrder:
            self._new(seq, cmd, out, touched)  # type: ignore[arg-type]
        elif kind is Cancel:
            self._cancel(cmd, out, touched)  # type: ignore[arg-type]
        else:
            raise TypeError(f"not a command: {cmd!r}")
        if touched:
            symbol = self.symbol
            for (side, price), level in touched.items():
                out.append(BookLevelChanged(symbol, side, price, level.total))
        return out

    def _new(self, seq: int, cmd: NewOrder, out: list[Event], touched: dict) -> None:
        price, tif = cmd.price, cmd.tif
        problem = self._check_new(cmd)
        if problem is not None:
            out.append(Rejected(problem[0], problem[1], cmd.owner, cmd.client_id))
            return
        out.append(Accepted(seq, self.symbol, cmd.side, cmd.qty, price, tif, cmd.owner, cmd.client_id))
        order = Order(seq, cmd.side, price, cmd.qty, tif, cmd.owner, cmd.client_id)
        if tif is POST and self._crosses(order):
            self._kill(order, CancelReason.WOULD_CROSS, out)
            return
        if tif is FOK and self._fillable(order) < order.leaves:
            self._kill(order, CancelReason.FOK_UNFILLED, out)
            return
        self._match(seq, order, out, touched)
        if order.leaves:
            if price is None:
                self._kill(order, CancelReason.NO_LIQUIDITY, out)
            elif tif is GTC or tif is POST:
                self._rest(order, touched)
            else:
                self._kill(order, CancelReason.EXPIRED, out)

    def _check_new(self, cmd: NewOrder) -> tuple[RejectReason, str] | None:
        if cmd.symbol != self.symbol:
            return RejectReason.UNKNOWN_SYMBOL, f"this book trades {self.symbol}, not {cmd.symbol}"
        if cmd.qty <= 0:
            return RejectReason.BAD_QTY, "quantity must be positive"
        if cmd.price is not None and cmd.price <= 0:
            return RejectReason.BAD_PRICE, "price must be positive"
        if cmd.price is None and (cmd.tif is GTC or cmd.tif is POST):
            return RejectReason.BAD_TIF, f"a market order cannot be {cmd.tif.value}"
        return self.instrument.check(cmd.qty, cmd.price)

    def _cancel(self, cmd: Cancel, out: list[Event], touched: dict) -> None:
        order = self._owned(cmd.order_id, cmd.owner, out)
        if order is None:
            return
        self._unrest(order, touched)
        self._kill(order, CancelReason.USER, out)

    def _replace(self, seq: int, cmd: Replace, out: list[Event], touched: dict) -> None:
        order = self._owned(cmd.order_id, cmd.owner, out)
        if order is None:
            return
        price = order.price if cmd.price is None else cmd.price
        problem = (
            (RejectReason.BAD_QTY, "quantity must be positive") if cmd.qty <= 0
            else (RejectReason.BAD_PRICE, "price must be positive") if price <= 0
            else self.instrument.check(cmd.qty, price)
        )  # fmt: skip
        if problem is not None:
            out.append(Rejected(problem[0], problem[1], cmd.owner, order.client_id, order.order_id))
            return
        if price == order.price and cmd.qty <= order.leaves:
            # A pure decrease keeps time priority: shrink in place.
            level = (self.bid_levels if order.side is BUY else self.ask_levels)[price]
            level.total -= order.leaves - cmd.qty
            order.leaves = cmd.qty
            touched[(order.side, price)] = level
            out.append(Replaced(order.order_id, self.symbol, order.side, cmd.qty, price, True, order.owner, order.client_id))
            return
        # Anything else loses priority: out of the book, then in again as if new.
        self._unrest(order, touched)
        order.price = price
        order.leaves = cmd.qty
        out.append(Replaced(order.order_id, self.symbol, order.side, cmd.qty, price, False, order.owner, order.client_id))
        if order.tif is POST and self._crosses(order):
            self._kill(order, CancelReason.WOULD_CROSS, out)
            return
        self._match(seq, order, out, touched)
        if order.leaves:
            self._rest(order, touched)

    def _owned(self, order_id: int, owner: str, out: list[Event]) -> Order | None:
        order = self.orders.get(order_id)
        if order is None:
            out.append(Rejected(RejectReason.UNKNOWN_ORDER, f"order {order_id} is not open", owner, None, order_id))
            return None
        if order.owner != owner:
            out.append(Rejected(RejectReason.NOT_OWNER, f"order {order_id} is not yours", owner, None, order_id))
            return None
        return order

    # ------------------------------------------------------------------ matching

    def _match(self, seq: int, taker: Order, out: list[Event], touched: dict) -> None:
        """The matching loop: take liquidity from the best opposite levels, oldest first.

        Trades execute at the resting order's price. An order of the taker's own owner is
        never traded with: it is canceled (self-trade prevention, cancel-oldest).
        """
        if taker.side is BUY:
            prices, levels, best_at, maker_side = self.ask_prices, self.ask_levels, 0, SELL
        else:
            prices, levels, best_at, maker_side = self.bid_prices, self.bid_levels, -1, BUY
        limit = taker.price
        symbol, owner, book_orders = self.symbol, taker.owner, self.orders
        match_no = 0
        while prices:
            price = prices[best_at]
            if limit is not None and (price > limit if best_at == 0 else price < limit):
                break
            level = levels[price]
            gone: list[Order] = []
            for maker in level.orders.values():
                if maker.owner == owner:
                    level.total -= maker.leaves
                    gone.append(maker)
                    self._kill(maker, CancelReason.SELF_TRADE, out)
                    continue
                qty = taker.leaves if taker.leaves < maker.leaves else maker.leaves
                match_no += 1
                tid = f"{seq}-{match_no}"
                maker.leaves -= qty
                taker.leaves -= qty
                level.total -= qty
                out.append(Trade(tid, seq, symbol, qty, price, taker.side, maker.order_id, taker.order_id, maker.owner, owner))
                out.append(Fill(maker.order_id, symbol, maker_side, qty, price, maker.leaves, tid, ADDED, maker.owner, maker.client_id))
                out.append(Fill(taker.order_id, symbol, taker.side, qty, price, taker.leaves, tid, REMOVED, owner, taker.client_id))
                if not maker.leaves:
                    gone.append(maker)
                if not taker.leaves:
                    break
            level_orders = level.orders
            for maker in gone:
                del level_orders[maker.order_id]
                del book_orders[maker.order_id]
            touched[(maker_side, price)] = level
            if not level_orders:
                del levels[price]
                prices.pop(best_at)
            if not taker.leaves:
                return

    def _crosses(self, order: Order) -> bool:
        if order.side is BUY:
            return bool(self.ask_prices) and order.price >= self.ask_prices[0]  # type: ignore[operator]
        return bool(self.bid_prices) and order.price <= self.bid_prices[-1]  # type: ignore[operator]

    def _fillable(self, taker: Order) -> int:
        """How much the taker could fill now (own orders excluded), stopping at its quantity."""
        want, limit, total = taker.leaves, taker.price, 0
        if taker.side is BUY:
            prices, levels = iter(self.ask_prices), self.ask_levels
        else:
            prices, levels = reversed(self.bid_prices), self.bid_levels
        for price in prices:
            if limit is not None and (price > limit if taker.side is BUY else price < limit):
                break
            for maker in levels[price].orders.values():
                if maker.owner != taker.owner:
                    total += maker.leaves
                    if total >= want:
                        return total
        return total

    # ------------------------------------------------------------------ resting

    def _rest(self, order: Order, touched: dict) -> None:
        price = order.price
        assert price is not None
        if order.side is BUY:
            levels, prices = self.bid_levels, self.bid_prices
        else:
            levels, prices = self.ask_levels, self.ask_prices
        level = levels.get(price)
        if level is None:
            level = levels[price] = Level()
            prices.add(price)
        level.orders[order.order_id] = order
        level.total += order.leaves
        self.orders[order.order_id] = order
        touched[(order.side, price)] = level

    def _unrest(self, order: Order, touched: dict) -> None:
        if order.side is BUY:
            levels, prices = self.bid_levels, self.bid_prices
        else:
            levels, prices = self.ask_levels, self.ask_prices
        level = levels[order.price]  # type: ignore[index]
        del level.orders[order.order_id]
        level.total -= order.leaves
        del self.orders[order.order_id]
        touched[(order.side, order.price)] = level
        if not level.orders:
            del levels[order.price]  # type: ignore[arg-type]
            prices.remove(order.price)

    def _kill(self, order: Order, reason: CancelReason, out: list[Event]) -> None:
        out.append(Canceled(order.order_id, self.symbol, order.side, order.leaves, reason, order.owner, order.client_id))
        order.leaves = 0

    # ------------------------------------------------------------------ views

    def best_bid(self) -> tuple[int, int] | None:
        if not self.bid_prices:
            return None
        price = self.bid_prices[-1]
        return price, self.bid_levels[price].total

    def best_ask(self) -> tuple[int, int] | None:
        if not self.ask_prices:
            return None
        price = self.ask_prices[0]
        return price, self.ask_levels[price].total

    def depth(self, levels: int = 10) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """L2: (bids best first, asks best first) as (price, total qty), up to `levels` each."""
        bids = [(p, self.bid_levels[p].total) for p in reversed(self.bid_prices[-levels:])] if levels > 0 else []
        asks = [(p, self.ask_levels[p].total) for p in self.ask_prices[:levels]] if levels > 0 else []
        return bids, asks

    def resting(self) -> Iterator[Order]:
        """Every resting order, bids then asks, each side in priority order."""
        for price in reversed(self.bid_prices):
            yield from self.bid_levels[price].orders.values()
        for price in self.ask_prices:
            yield from self.ask_levels[price].orders.values()

    def state_hash(self) -> str:
        """A digest of everything that decides future matching: levels, FIFO order, leaves."""
        h = hashlib.blake2b(digest_size=16)
        h.update(self.symbol.encode())
        for o in self.resting():
            h.update(f"|{o.order_id},{o.side.value},{o.price},{o.leaves},{o.tif.value},{o.owner},{o.client_id}".encode())
        return h.hexdigest()
