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
from typing import Iterable, Iterator

from sortedcontainers import SortedDict

from exchange.book import Order, encode_orders, hash_book
from exchange.instruments import Instrument
from exchange.orderbook import PriceLevel
from exchange.rules import check_not_paired, check_not_pending, check_oco, check_order, check_replace, check_show, check_stop, check_trigger
from protocol.messages import (
    TIF,
    Accepted,
    Cancel,
    Canceled,
    Command,
    Event,
    Fill,
    Liquidity,
    MassCancel,
    NewOrder,
    Problem,
    Reason,
    Rejected,
    Replace,
    Replaced,
    Side,
    Trade,
    Triggered,
)


class NaiveOrder:
    def __init__(
        self, order_id: int, side: Side, price: int | None, leaves: int, tif: TIF, owner: str, client_id: str | None,
        budget: int | None = None, stop: int | None = None, cod: bool = False, show: int | None = None,
    ) -> None:  # fmt: skip
        self.order_id, self.side, self.price, self.leaves = order_id, side, price, leaves
        self.tif, self.owner, self.client_id = tif, owner, client_id
        self.budget, self.stop = budget, stop  # a market BUY's spending limit; a pending stop's trigger
        self.cod = cod  # canceled when its connection closes
        self.show, self.hidden = show, 0  # an iceberg: leaves is the slice shown, hidden the rest
        self.oco: int | None = None  # the other order of its OCO pair
        self.touched = False  # traded or replaced since accepted: it cannot join a pair


class NaiveBook:
    def __init__(self, instrument: Instrument) -> None:
        self.instrument = instrument
        self.symbol = instrument.symbol
        self.bids: SortedDict = SortedDict()  # price -> deque[NaiveOrder]
        self.asks: SortedDict = SortedDict()
        self.orders: dict[int, NaiveOrder] = {}
        self.stops: list[NaiveOrder] = []  # pending stops, in the order they were accepted
        self.last: int | None = None  # the last trade's price
        self._cause = 0  # the journal sequence of the command being applied
        self._match_no = 0  # trades of this command so far
        self._prices: list[int] = []  # the prices this command's trades printed at, not yet looked at by the stops
        self.pairs: dict[int, int] = {}  # OCO pairs, both ways

    def apply(self, seq: int, cmd: Command) -> list[Event]:
        self._cause, self._match_no, self._prices = seq, 0, []
        out: list[Event] = []
        if isinstance(cmd, NewOrder):
            self.new(seq, cmd, out)
        elif isinstance(cmd, Cancel):
            order = self.find(cmd.order_id, cmd.owner, out)
            if order is not None:
                self.withdraw(order)
                self.cancel(order, Reason.USER, out)
        elif isinstance(cmd, Replace):
            self.replace(seq, cmd, out)
        elif isinstance(cmd, MassCancel):
            for order in sorted([*self.orders.values(), *self.stops], key=lambda o: o.order_id):
                if order.owner == cmd.owner and (cmd.order_ids is None or order.order_id in cmd.order_ids):
                    self.withdraw(order)
                    self.cancel(order, cmd.reason, out)
        self.cancel_pairs(out, 0)
        while self._prices:  # stops reached by this command's trades fire, in the order they came
            high, low = max(self._prices), min(self._prices)
            self._prices = []
            fired = [o for o in self.stops if o.stop is not None and (o.stop <= high if o.side == Side.BUY else o.stop >= low)]
            for order in fired:
                if order not in self.stops:
                    continue  # canceled: the other order of a pair a stop before it traded
                self.stops.remove(order)
                stop, order.stop = order.stop, None
                assert stop is not None
                since = len(out)
                out.append(Triggered(order.order_id, self.symbol, order.side, order.leaves, order.price, stop, order.owner, order.client_id, seq))
                self.enter(order, out)
                self.cancel_pairs(out, since)
        return out

    def cancel_pairs(self, out: list[Event], since: int) -> None:
        for e in out[since:]:
            if isinstance(e, (Fill, Canceled)) and e.order_id in self.pairs:
                self.cancel_other(e.order_id, out)

    def cancel_other(self, order_id: int, out: list[Event]) -> None:
        """One order of a pair traded or was canceled: the other one goes."""
        other_id = self.pairs.pop(order_id)
        del self.pairs[other_id]
        mine = self.order(order_id)
        if mine is not None:  # open still, after a partial fill: a plain order now
            mine.oco = None
        other = self.order(other_id)
        if other is not None:
            other.oco = None
            self.withdraw(other)
            self.cancel(other, Reason.OCO, out)

    def withdraw(self, order: NaiveOrder) -> None:
        """An open order leaves: a pending stop, or off the book."""
        if order in self.stops:
            self.stops.remove(order)
        else:
            self.remove(order)

    def new(self, seq: int, cmd: NewOrder, out: list[Event]) -> None:
        if cmd.symbol != self.symbol:
            problem: Problem | None = Problem(Reason.UNKNOWN_SYMBOL, f"this book trades {self.symbol}, not {cmd.symbol}")
        else:
            problem = check_order(self.instrument, cmd.qty, cmd.price, cmd.tif) or check_show(cmd.show, cmd.price)
        partner = None if cmd.oco is None else self.order(cmd.oco)
        if not problem and cmd.oco is not None:
            problem = check_oco(cmd.oco, None if partner is None else (partner.owner, partner.oco, partner.touched), cmd.owner)
        if not problem and cmd.stop is not None:
            problem = check_stop(self.instrument, cmd.stop) or check_trigger(self.instrument, cmd.side == Side.BUY, cmd.stop, self.last)
        if problem:
            out.append(Rejected(problem.reason, problem.text, cmd.owner, cmd.client_id, seq, seq))
            return
        out.append(Accepted(seq, self.symbol, cmd.side, cmd.qty, cmd.price, cmd.tif, cmd.owner, cmd.client_id, cmd.stop, cmd.show))
        budget = cmd.budget if cmd.side == Side.BUY and cmd.price is None else None
        order = NaiveOrder(seq, cmd.side, cmd.price, cmd.qty, cmd.tif, cmd.owner, cmd.client_id, budget, cmd.stop, cmd.cod, cmd.show)
        if partner is not None:
            order.oco, partner.oco = partner.order_id, seq
            self.pairs[seq], self.pairs[partner.order_id] = partner.order_id, seq
        if cmd.stop is not None:
            self.stops.append(order)
        else:
            self.enter(order, out)

    def enter(self, order: NaiveOrder, out: list[Event]) -> None:
        seq = self._cause
        if order.tif == TIF.POST and self.would_cross(order):
            self.cancel(order, Reason.WOULD_CROSS, out)
        elif order.tif == TIF.FOK and self.available(order) < order.leaves:
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
        pending = check_not_pending(order.order_id, order.stop) or check_not_paired(order.order_id, order.oco)
        if pending is not None:
            out.append(Rejected(pending.reason, pending.text, cmd.owner, order.client_id, order.order_id, self._cause))
            return
        price = cmd.price if cmd.price is not None else order.price
        assert price is not None  # a resting order has a price
        problem = check_replace(self.instrument, cmd.qty, price)
        if problem:
            out.append(Rejected(problem.reason, problem.text, cmd.owner, order.client_id, order.order_id, self._cause))
            return
        if (cmd.qty, price) != (order.leaves + order.hidden, order.price):
            order.touched = True
        keeps_priority = price == order.price and cmd.qty <= order.leaves + order.hidden
        if keeps_priority:  # (an iceberg: its hidden part goes first)
            order.leaves = min(order.leaves, cmd.qty)
            order.hidden = cmd.qty - order.leaves
        else:
            self.remove(order)
            order.price, order.leaves, order.hidden = price, cmd.qty, 0
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
        order = self.order(order_id)
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
        total, budget = 0, taker.budget
        canceled: set[int] = set()  # a pair's other order, once one of it would trade
        for price in prices:
            if not self.acceptable(taker, price):
                break
            for o in book[price]:
                if o.owner != taker.owner and o.order_id not in canceled:
                    qty = o.leaves + o.hidden if budget is None else min(o.leaves + o.hidden, budget // price)
                    if budget is not None:
                        budget -= qty * price
                    total += qty
                    if qty and o.order_id in self.pairs:
                        canceled.add(self.pairs[o.order_id])
        return total

    def match(self, seq: int, taker: NaiveOrder, out: list[Event]) -> None:
        book = self.asks if taker.side == Side.BUY else self.bids
        maker_side = Side.SELL if taker.side == Side.BUY else Side.BUY
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
            if taker.budget is not None:  # a market BUY spends no more than it locked
                qty = min(qty, taker.budget // price)
                if not qty:
                    return
                taker.budget -= qty * price
            self._match_no += 1
            self.last = price
            self._prices.append(price)
            trade_id = f"{seq}-{self._match_no}"
            maker.leaves -= qty
            taker.leaves -= qty
            maker.touched = taker.touched = True
            out.append(Trade(0, trade_id, seq, self.symbol, qty, price, taker.side, maker.order_id, taker.order_id, maker.owner, taker.owner))
            left = maker.leaves + maker.hidden
            out.append(Fill(maker.order_id, self.symbol, maker_side, qty, price, left, trade_id, Liquidity.ADDED, maker.owner, maker.client_id, seq))
            out.append(Fill(taker.order_id, self.symbol, taker.side, qty, price, taker.leaves, trade_id, Liquidity.REMOVED, taker.owner, taker.client_id, seq))
            if maker.leaves == 0 and maker.hidden:  # an iceberg's next slice, at the back of its level
                queue.popleft()
                maker.leaves = min(maker.show or 0, maker.hidden)
                maker.hidden -= maker.leaves
                queue.append(maker)
            elif maker.leaves == 0:
                self.remove(maker)
            if maker.order_id in self.pairs:  # its other order goes before the sweep can reach it
                self.cancel_other(maker.order_id, out)

    def add(self, order: NaiveOrder) -> None:
        if order.show is not None and order.leaves > order.show:
            order.leaves, order.hidden = order.show, order.leaves - order.show
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
        out.append(Canceled(order.order_id, self.symbol, order.side, order.leaves + order.hidden, reason, order.owner, order.client_id, self._cause))
        order.leaves = order.hidden = 0

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

    def pending(self) -> Iterator[NaiveOrder]:
        return iter(self.stops)

    def order(self, order_id: int) -> NaiveOrder | None:
        return self.orders.get(order_id) or next((o for o in self.stops if o.order_id == order_id), None)

    def state_hash(self) -> str:
        def rows(orders: Iterable[NaiveOrder]) -> bytes:
            return encode_orders(
                [Order(o.order_id, o.side, o.price, o.leaves, o.tif, o.owner, o.client_id, o.budget, o.stop, o.cod, o.show, o.hidden, o.oco, o.touched) for o in orders]
            )

        return hash_book(self.symbol, 0, rows(self.resting()), rows(self.stops), self.last)
