"""A deliberately plain reference order book, written from the rulebook, not for speed.

It is the straightforward design: a SortedDict of price -> deque per side and a dict of
orders; cancels search the deque. It keeps the same contract as exchange.book.Book
(exchange/orderbook.py) and the same rules (exchange/rules.py), minus market data: it
numbers no level changes or quotes. The contract tests run the rulebook against both,
the differential tests demand identical events from random streams, and bench/engine.py
times both on the same stream and prints the ratio.
"""

from __future__ import annotations

from collections import deque
from typing import Iterator

from sortedcontainers import SortedDict

from exchange.book import Order, encode_orders, hash_book
from exchange.instruments import Instrument
from exchange.orderbook import PriceLevel
from exchange.rules import check_order, check_replace
from protocol.messages import (
    TIF,
    Accepted,
    Cancel,
    Canceled,
    Command,
    Event,
    Fill,
    Liquidity,
    NewOrder,
    Problem,
    Reason,
    Rejected,
    Replace,
    Replaced,
    Side,
    Trade,
)


class NaiveOrder:
    def __init__(self, order_id: int, side: Side, price: int | None, leaves: int, tif: TIF, owner: str, client_id: str | None):
        self.order_id, self.side, self.price, self.leaves = order_id, side, price, leaves
        self.tif, self.owner, self.client_id = tif, owner, client_id


class NaiveBook:
    def __init__(self, instrument: Instrument) -> None:
        self.instrument = instrument
        self.symbol = instrument.symbol
        self.bids: SortedDict = SortedDict()  # price -> deque[NaiveOrder]
        self.asks: SortedDict = SortedDict()
        self.orders: dict[int, NaiveOrder] = {}
        self._cause = 0  # the journal sequence of the command being applied

    def apply(self, seq: int, cmd: Command) -> list[Event]:
        self._cause = seq
        out: list[Event] = []
        if isinstance(cmd, NewOrder):
            self.new(seq, cmd, out)
        elif isinstance(cmd, Cancel):
            order = self.find(cmd.order_id, cmd.owner, out)
            if order is not None:
                self.remove(order)
                self.cancel(order, Reason.USER, out)
        elif isinstance(cmd, Replace):
            self.replace(seq, cmd, out)
        return out

    def new(self, seq: int, cmd: NewOrder, out: list[Event]) -> None:
        if cmd.symbol != self.symbol:
            problem: Problem | None = Problem(Reason.UNKNOWN_SYMBOL, f"this book trades {self.symbol}, not {cmd.symbol}")
        else:
            problem = check_order(self.instrument, cmd.qty, cmd.price, cmd.tif)
        if problem:
            out.append(Rejected(problem.reason, problem.text, cmd.owner, cmd.client_id, seq, seq))
            return
        out.append(Accepted(seq, self.symbol, cmd.side, cmd.qty, cmd.price, cmd.tif, cmd.owner, cmd.client_id))
        order = NaiveOrder(seq, cmd.side, cmd.price, cmd.qty, cmd.tif, cmd.owner, cmd.client_id)
        if cmd.tif == TIF.POST and self.would_cross(order):
            self.cancel(order, Reason.WOULD_CROSS, out)
        elif cmd.tif == TIF.FOK and self.available(order) < order.leaves:
            self.cancel(order, Reason.FOK_UNFILLED, out)
        else:
            self.match(seq, order, out)
            if order.leaves > 0:
                if order.price is None:
                    self.cancel(order, Reason.NO_LIQUIDITY, out)
                elif order.tif in (TIF.GTC, TIF.POST):
                    self.add(order)
                else:
                    self.cancel(order, Reason.EXPIRED, out)

    def replace(self, seq: int, cmd: Replace, out: list[Event]) -> None:
        order = self.find(cmd.order_id, cmd.owner, out)
        if order is None:
            return
        price = cmd.price if cmd.price is not None else order.price
        assert price is not None  # a resting order has a price
        problem = check_replace(self.instrument, cmd.qty, price)
        if problem:
            out.append(Rejected(problem.reason, problem.text, cmd.owner, order.client_id, order.order_id, self._cause))
            return
        keeps_priority = price == order.price and cmd.qty <= order.leaves
        if keeps_priority:
            order.leaves = cmd.qty
        else:
            self.remove(order)
            order.price, order.leaves = price, cmd.qty
        out.append(Replaced(order.order_id, self.symbol, order.side, cmd.qty, price, keeps_priority, order.owner, order.client_id, self._cause))
        if keeps_priority:
            return
        if order.tif == TIF.POST and self.would_cross(order):
            self.cancel(order, Reason.WOULD_CROSS, out)
            return
        self.match(seq, order, out)
        if order.leaves > 0:
            self.add(order)

    def find(self, order_id: int, owner: str, out: list[Event]) -> NaiveOrder | None:
        order = self.orders.get(order_id)
        if order is None:
            out.append(Rejected(Reason.UNKNOWN_ORDER, f"order {order_id} is not open", owner, None, order_id, self._cause))
        elif order.owner != owner:
            out.append(Rejected(Reason.NOT_OWNER, f"order {order_id} is not yours", owner, None, order_id, self._cause))
            return None
        return order

    def acceptable(self, taker: NaiveOrder, price: int) -> bool:
        if taker.price is None:
            return True
        return price <= taker.price if taker.side == Side.BUY else price >= taker.price

    def best_opposite(self, taker: NaiveOrder) -> int | None:
        book = self.asks if taker.side == Side.BUY else self.bids
        if not book:
            return None
        return book.keys()[0] if taker.side == Side.BUY else book.keys()[-1]

    def would_cross(self, order: NaiveOrder) -> bool:
        best = self.best_opposite(order)
        return best is not None and self.acceptable(order, best)

    def available(self, taker: NaiveOrder) -> int:
        book = self.asks if taker.side == Side.BUY else self.bids
        prices = list(book.keys()) if taker.side == Side.BUY else list(reversed(book.keys()))
        total = 0
        for price in prices:
            if not self.acceptable(taker, price):
                break
            total += sum(o.leaves for o in book[price] if o.owner != taker.owner)
        return total

    def match(self, seq: int, taker: NaiveOrder, out: list[Event]) -> None:
        book = self.asks if taker.side == Side.BUY else self.bids
        maker_side = Side.SELL if taker.side == Side.BUY else Side.BUY
        match_no = 0
        while taker.leaves > 0:
            price = self.best_opposite(taker)
            if price is None or not self.acceptable(taker, price):
                return
            queue = book[price]
            maker = queue[0]
            if maker.owner == taker.owner:
                self.remove(maker)
                self.cancel(maker, Reason.SELF_TRADE, out)
                continue
            qty = min(taker.leaves, maker.leaves)
            match_no += 1
            trade_id = f"{seq}-{match_no}"
            maker.leaves -= qty
            taker.leaves -= qty
            out.append(Trade(0, trade_id, seq, self.symbol, qty, price, taker.side, maker.order_id, taker.order_id, maker.owner, taker.owner))
            out.append(Fill(maker.order_id, self.symbol, maker_side, qty, price, maker.leaves, trade_id, Liquidity.ADDED, maker.owner, maker.client_id, seq))
            out.append(Fill(taker.order_id, self.symbol, taker.side, qty, price, taker.leaves, trade_id, Liquidity.REMOVED, taker.owner, taker.client_id, seq))
            if maker.leaves == 0:
                self.remove(maker)

    def add(self, order: NaiveOrder) -> None:
        book = self.bids if order.side == Side.BUY else self.asks
        book.setdefault(order.price, deque()).append(order)
        self.orders[order.order_id] = order

    def remove(self, order: NaiveOrder) -> None:
        book = self.bids if order.side == Side.BUY else self.asks
        queue = book[order.price]
        queue.remove(order)
        if not queue:
            del book[order.price]
        del self.orders[order.order_id]

    def cancel(self, order: NaiveOrder, reason: Reason, out: list[Event]) -> None:
        out.append(Canceled(order.order_id, self.symbol, order.side, order.leaves, reason, order.owner, order.client_id, self._cause))
        order.leaves = 0

    # ---- the views of the contract

    def depth(self, levels: int = 10) -> tuple[list[PriceLevel], list[PriceLevel]]:
        bids = [(p, sum(o.leaves for o in self.bids[p])) for p in reversed(self.bids.keys())]
        asks = [(p, sum(o.leaves for o in self.asks[p])) for p in self.asks.keys()]
        return bids[: max(levels, 0)], asks[: max(levels, 0)]

    def bbo(self) -> tuple[PriceLevel | None, PriceLevel | None]:
        bids, asks = self.depth(1)
        return (bids[0] if bids else None, asks[0] if asks else None)

    def resting(self) -> Iterator[NaiveOrder]:
        for price in reversed(self.bids.keys()):
            yield from self.bids[price]
        for price in self.asks.keys():
            yield from self.asks[price]

    def order(self, order_id: int) -> NaiveOrder | None:
        return self.orders.get(order_id)

    def state_hash(self) -> str:
        rows = [Order(o.order_id, o.side, o.price, o.leaves, o.tif, o.owner, o.client_id) for o in self.resting()]
        return hash_book(self.symbol, 0, encode_orders(rows))
