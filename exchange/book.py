"""One symbol's order book and its matching loop: price-time priority, deterministic.

Data layout (shaped by bench/engine.py; the hot path is replace, 82% of the standard mix):
- each side (a Half) keeps a dict price -> Level and a heap of its prices, best on top
  (bids as negative prices). Empty levels leave the dict at once and the heap lazily
  (dormant until then: a new order at that price takes its level back): a price on top
  of the heap with no live level is popped when met, and the heap is rebuilt when stale
  entries outnumber live ones. heapq is C; a sorted container costs several times more
  per level created or emptied, which most replaces do.
- a Level's FIFO is a dict order_id -> Order: dicts keep insertion order, so iteration
  is time priority, and removing any order (cancel, replace) is O(1);
- self.orders maps order_id -> Order for O(1) cancel and replace.
- the commonest commands, done whole without the general path's list of touched levels:
  a plain resting order moved to a price where it does not trade (`_move`), a plain GTC
  limit order that rests (`_post`), a cancel of a resting order (`_pull`): -19.5%
  instructions per command of the mix (bench/engine.py). A property test holds their
  events, market data included, to those of the general path.

Nothing here awaits, reads a clock, draws a random number or touches a file: the same
commands with the same sequence numbers always give the same events and the same books.
"""

from __future__ import annotations

import hashlib
from heapq import heapify, heappop, heappush
from itertools import compress, groupby
from operator import attrgetter
from typing import Callable, Iterator, cast

import msgspec

from exchange.instruments import Instrument
from exchange.rules import (
    check_not_paired,
    check_not_pending,
    check_oco,
    check_order,
    check_owned,
    check_replace,
    check_show,
    check_stop,
    check_trigger,
)
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
    MassCancel,
    NewOrder,
    Problem,
    Quote,
    Reason,
    Rejected,
    Replace,
    Replaced,
    Side,
    Trade,
    Triggered,
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
    stop: int | None = None  # a pending stop's trigger (None once it fired, and for any other order)
    cod: bool = False  # canceled when the connection it was entered on closes
    show: int | None = None  # an iceberg's displayed slice: `leaves` is what is shown (and trades first),
    hidden: int = 0  # the reserve behind it; a new slice comes from it at the back of the level
    oco: int | None = None  # the other order of its one-cancels-the-other pair
    touched: bool = False  # traded or replaced since it was accepted (then it cannot join a pair)


class Level(msgspec.Struct, eq=False):
    """A price level: its orders in time priority (a dict is an ordered set) and their
    shown total. A Struct, made in C: a replace to a new price makes one (~45% of the
    exchange-core mix's commands); eq=False: equal and hashed by identity (a dict key)."""

    side: Side
    price: int
    orders: dict[int, Order] = msgspec.field(default_factory=dict)
    total: int = 0


class Half:
    """One side of the book: levels by price and a lazily cleaned heap of prices.

    A level that empties goes from `levels` to `dormant` while its price is still in the
    heap: a new order at that price takes it back without a new Level or a heap push (a
    busy book empties and refills the same few prices near the top all the time), and no
    price is ever in the heap twice. Every price in the heap is in exactly one of the two.
    """

    __slots__ = ("side", "sign", "levels", "heap", "dormant")

    def __init__(self, side: Side) -> None:
        self.side = side
        self.sign = -1 if side is BUY else 1  # heap key = sign * price: best on top
        self.levels: dict[int, Level] = {}
        self.heap: list[int] = []
        self.dormant: dict[int, Level] = {}  # empty levels whose price is still in the heap

    def best(self) -> int | None:
        heap, levels, sign = self.heap, self.levels, self.sign
        while heap:
            price = heap[0] * sign
            if price in levels:
                return price
            heappop(heap)
            del self.dormant[price]
        return None

    def add_level(self, price: int) -> Level:
        level = self.dormant.pop(price, None)
        if level is not None:
            self.levels[price] = level
            return level
        level = self.levels[price] = Level(self.side, price)
        heap = self.heap
        if len(heap) > 2 * len(self.levels) + 64:
            # Too many stale prices: rebuild from the live levels (amortised O(1)).
            sign = self.sign
            heap[:] = [sign * p for p in self.levels]
            heapify(heap)
            self.dormant.clear()
        else:
            heappush(heap, self.sign * price)
        return level

    def empty(self, price: int) -> None:
        """The level at price has no order left: off the live levels, kept dormant."""
        self.dormant[price] = self.levels.pop(price)

    def prices(self) -> list[int]:
        """Live prices, best first."""
        return sorted(self.levels, reverse=self.side is BUY)


class Book:
    def __init__(self, instrument: Instrument, market_data: bool = True) -> None:
        """market_data False: apply() returns no BookLevelChanged and no Quote (md_seq and the
        quote move as ever), for a replica that reads only reports and trades (a cluster's
        gateways: the engine shards publish the market data)."""
        self.instrument = instrument
        self.market_data = market_data
        self.symbol = instrument.symbol
        self.orders: dict[int, Order] = {}
        self.bids = Half(BUY)
        self.asks = Half(SELL)
        self.md_seq = 0  # the last market-data sequence number used (see protocol.messages)
        self.quote: tuple[int | None, int, int | None, int] = (None, 0, None, 0)  # last published top
        self.last: int | None = None  # the last trade's price (stops fire on trades; part of the state)
        self.stops: dict[int, Order] = {}  # pending stops by id, in the order they were accepted
        self._buy_stops: list[tuple[int, int]] = []  # heaps of (trigger, id), BUY lowest first, SELL (-trigger) highest
        self._sell_stops: list[tuple[int, int]] = []  # first; a canceled stop's entry stays until met
        self._cause = 0  # the journal sequence of the command being applied
        # The trades of the command `_traded_in` (reset at its first trade, not per command):
        self._traded_in = 0
        self._match_no = 0  # how many so far (trade ids are <cause>-<n>: fired stops trade in the same command)
        self._hi, self._lo = 0, 0  # the highest and lowest price they printed at (0: none since the stops looked)
        self.pairs: dict[int, int] = {}  # OCO: order id -> the other's, both ways (from the orders' oco)
        # A replace's or new order's terms in range, positive (check_replace's common case, for the fast paths).
        self._ranges = (max(1, instrument.min_qty), instrument.max_qty, max(1, instrument.min_price), instrument.max_price)

    # ------------------------------------------------------------------ commands

    def apply(self, seq: int, cmd: Command) -> list[Event]:
        """Apply one command; seq is its journal sequence number (and a new order's id)."""
        self._cause = seq  # every report this command causes names it
        if type(cmd) is Replace:  # (the commonest commands of a busy book whole: see _move, _post)
            done = self._move(seq, cmd)
            if done is not None:
                return done
        elif type(cmd) is NewOrder:
            done = self._post(seq, cmd)
            if done is not None:
                return done
        elif type(cmd) is Cancel:
            done = self._pull(seq, cmd)
            if done is not None:
                return done
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
        elif type(cmd) is MassCancel:
            self._mass_cancel(cmd, out, touched)
        else:
            raise TypeError(f"not a command: {cmd!r}")
        if self.pairs:
            self._cancel_pairs(out, 0, touched)
        if self.stops and self._traded_in == seq:
            self._fire_stops(out, touched)
        if touched:
            symbol, md_seq = self.symbol, self.md_seq
            bid, _, ask, _ = self.quote
            at_top = False  # only a change at or inside the last quote can move it
            market_data = self.market_data
            for level in touched:
                md_seq += 1
                if market_data:
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
            if self.market_data:
                out.append(Quote(self.md_seq, self.symbol, *quote))

    def _new(self, seq: int, cmd: NewOrder, out: list[Event], touched: dict) -> None:
        price, tif = cmd.price, cmd.tif
        problem = self._check_new(cmd)
        if problem is not None:
            out.append(Rejected(problem.reason, problem.text, cmd.owner, cmd.client_id, seq, seq))
            return
        if cmd.oco is not None:
            partner = self.order(cmd.oco)
            problem = check_oco(cmd.oco, None if partner is None else (partner.owner, partner.oco, partner.touched), cmd.owner)
            if problem is not None:
                out.append(Rejected(problem.reason, problem.text, cmd.owner, cmd.client_id, seq, seq))
                return
        if cmd.stop is not None:
            self._new_stop(seq, cmd, out)
            return
        out.append(Accepted(seq, self.symbol, cmd.side, cmd.qty, price, tif, cmd.owner, cmd.client_id, None, cmd.show))
        order = Order(seq, cmd.side, price, cmd.qty, tif, cmd.owner, cmd.client_id)
        if cmd.budget is not None and price is None and cmd.side is BUY:
            order.budget = cmd.budget
        if cmd.cod:
            order.cod = True
        if cmd.show is not None:
            order.show = cmd.show
        if cmd.oco is not None:
            self._pair(order, cmd.oco)
        self._enter(order, out, touched)

    def _post(self, seq: int, cmd: NewOrder) -> list[Event] | None:
        """A plain GTC limit order that does not trade, whole: accepted and resting, with
        the events apply() would make (its level, a Quote if at or inside it); None: not
        that case (nothing changed), the general path decides."""
        price = cmd.price
        if cmd.tif is not GTC or price is None or cmd.stop is not None or cmd.show is not None or cmd.oco is not None or cmd.symbol != self.symbol:
            return None
        qty = cmd.qty
        least_qty, most_qty, least_price, most_price = self._ranges
        if not (least_qty <= qty <= most_qty and least_price <= price <= most_price):
            return None
        side = cmd.side
        if side is BUY:  # (as in _move, inline: a shared method measured +2.8% of the mix's instructions)
            half, other = self.bids, self.asks
            heap = other.heap  # (prices: sign 1)
            # At or past the nearest opposite price the heap holds (live or dormant: the
            # best live one is no nearer), it may trade: against the best live one?
            if heap and price >= heap[0] and (best := other.best()) is not None and price >= best:
                return None  # it trades
        else:
            half, other = self.asks, self.bids
            heap = other.heap  # (negative prices: sign -1)
            if heap and price <= -heap[0] and (best := other.best()) is not None and price <= best:
                return None
        symbol = self.symbol
        out: list[Event] = [Accepted(seq, symbol, side, qty, price, GTC, cmd.owner, cmd.client_id, None, None)]
        order = Order(seq, side, price, qty, GTC, cmd.owner, cmd.client_id)
        if cmd.cod:
            order.cod = True
        level = half.levels.get(price) or half.add_level(price)
        level.orders[seq] = order
        level.total += qty
        self.orders[seq] = order
        return self._level_changed(out, side, price, level.total)

    def _pull(self, seq: int, cmd: Cancel) -> list[Event] | None:
        """A cancel of a resting order in no OCO pair, whole; None: not that case (a stop,
        a pair, not the owner's or not open: the general path decides)."""
        order = self.orders.get(cmd.order_id)
        if order is None or order.owner != cmd.owner or order.oco is not None:
            return None
        order_id, side, price = order.order_id, order.side, order.price
        assert price is not None  # (resting)
        half = self.bids if side is BUY else self.asks
        level = half.levels[price]
        del level.orders[order_id]
        level.total -= order.leaves
        del self.orders[order_id]
        if not level.orders:
            half.dormant[price] = half.levels.pop(price)
        out: list[Event] = [Canceled(order_id, self.symbol, side, order.leaves + order.hidden, Reason.USER, order.owner, order.client_id, seq)]
        return self._level_changed(out, side, price, level.total)

    def _level_changed(self, out: list[Event], side: Side, price: int, total: int) -> list[Event]:
        """The end of a fast path that changed one level: its BookLevelChanged, and a Quote if
        it is at or inside the last one (as apply's general path ends)."""
        md_seq = self.md_seq = self.md_seq + 1
        if self.market_data:
            out.append(BookLevelChanged(md_seq, self.symbol, side, price, total))
        bid, _, ask, _ = self.quote
        if (bid is None or price >= bid) if side is BUY else (ask is None or price <= ask):
            self._publish_quote(out)
        return out

    def _enter(self, order: Order, out: list[Event], touched: dict) -> None:
        """An accepted order meets the book: it matches, rests or is canceled, by its tif."""
        price, tif = order.price, order.tif
        crosses = self._crosses(order)
        if tif is POST and crosses:
            self._kill(order, Reason.WOULD_CROSS, out)
            return
        if tif is FOK and self._fillable(order) < order.leaves:
            self._kill(order, Reason.FOK_UNFILLED, out)
            return
        if crosses:
            self._match(self._cause, order, out, touched)
        if order.leaves:
            if price is None:
                self._kill(order, Reason.NO_LIQUIDITY, out)
            elif tif is GTC or tif is POST:
                self._rest(order, touched)
            else:
                self._kill(order, Reason.EXPIRED, out)

    # ------------------------------------------------------------------ stops

    def _new_stop(self, seq: int, cmd: NewOrder, out: list[Event]) -> None:
        """A stop waits off the book (not in market data) until a trade reaches its trigger;
        one the last trade has reached already is refused."""
        stop, buy = cmd.stop, cmd.side is BUY
        assert stop is not None
        problem = check_stop(self.instrument, stop) or check_trigger(self.instrument, buy, stop, self.last)
        if problem is not None:
            out.append(Rejected(problem.reason, problem.text, cmd.owner, cmd.client_id, seq, seq))
            return
        out.append(Accepted(seq, self.symbol, cmd.side, cmd.qty, cmd.price, cmd.tif, cmd.owner, cmd.client_id, stop, cmd.show))
        order = Order(
            seq, cmd.side, cmd.price, cmd.qty, cmd.tif, cmd.owner, cmd.client_id, cmd.budget if buy and cmd.price is None else None, stop, cmd.cod, cmd.show
        )  # fmt: skip
        if cmd.oco is not None:
            self._pair(order, cmd.oco)
        self._pend(order)

    def _pair(self, order: Order, other_id: int) -> None:
        """An accepted order joins its OCO pair (its other order was checked: open, free)."""
        other = self.order(other_id)
        assert other is not None
        order.oco, other.oco = other_id, order.order_id
        self.pairs[order.order_id], self.pairs[other_id] = other_id, order.order_id

    def _cancel_pairs(self, out: list[Event], since: int, touched: dict) -> None:
        """One-cancels-the-other: an order of a pair that traded (even partly) or was canceled
        in out[since:] takes the other one with it (CANCELED reason=oco)."""
        pairs = self.pairs
        for i in range(since, len(out)):
            e = out[i]
            if (type(e) is Fill or type(e) is Canceled) and e.order_id in pairs:
                other = self._unpair(e.order_id)
                if other is not None:
                    self._take_off(other, touched)
                    self._kill(other, Reason.OCO, out)

    def _cancel_other(self, maker: Order, level: Level, gone: list[Order], out: list[Event], touched: dict) -> None:
        """A resting order of a pair traded: its other order goes now, before this sweep can
        reach it (on the same side, at this price or a worse one) and trade both."""
        other = self._unpair(maker.order_id)
        if other is None:
            return
        if other.stop is None and other.side is maker.side and other.price == level.price:
            level.total -= other.leaves  # in the level being swept: it leaves after the pass, skipped till then
            gone.append(other)
        else:
            self._take_off(other, touched)
        self._kill(other, Reason.OCO, out)

    def _unpair(self, order_id: int) -> Order | None:
        """order_id's pair ends: both orders are plain orders now (one open still after a
        partial fill); the other one, if it is open, for the caller to cancel."""
        pairs = self.pairs
        other_id = pairs.pop(order_id)
        del pairs[other_id]
        mine, other = self.order(order_id), self.order(other_id)
        if mine is not None:
            mine.oco = None
        if other is not None:
            other.oco = None
        return other

    def _pend(self, order: Order) -> None:
        stop = order.stop
        assert stop is not None
        self.stops[order.order_id] = order
        if order.side is BUY:
            heappush(self._buy_stops, (stop, order.order_id))
        else:
            heappush(self._sell_stops, (-stop, order.order_id))

    def _fire_stops(self, out: list[Event], touched: dict) -> None:
        """Fire every stop the command's trades reached (BUY: a trade at or above its
        trigger; SELL: at or below), those reached together in the order they were accepted;
        their own trades may fire more."""
        stops, symbol = self.stops, self.symbol
        while self._hi and stops:
            hi, lo = self._hi, self._lo
            self._hi = self._lo = 0
            fired: list[int] = []
            for heap, bound in ((self._buy_stops, hi), (self._sell_stops, -lo)):  # (a SELL's key is -trigger)
                while heap and heap[0][0] <= bound:
                    order_id = heappop(heap)[1]
                    if order_id in stops:  # (not: canceled while pending)
                        fired.append(order_id)
            for order_id in sorted(fired):
                order = stops.pop(order_id, None)
                if order is None:
                    continue  # the other order of a pair that a stop fired before it traded: canceled
                stop = order.stop
                assert stop is not None
                order.stop = None
                since = len(out)
                out.append(Triggered(order.order_id, symbol, order.side, order.leaves, order.price, stop, order.owner, order.client_id, self._cause))
                self._enter(order, out, touched)
                if self.pairs:
                    self._cancel_pairs(out, since, touched)
        if len(self._buy_stops) + len(self._sell_stops) > 2 * len(stops) + 64:  # canceled stops' entries: rebuild
            self._buy_stops = [(o.stop, i) for i, o in stops.items() if o.side is BUY and o.stop is not None]
            self._sell_stops = [(-o.stop, i) for i, o in stops.items() if o.side is SELL and o.stop is not None]
            heapify(self._buy_stops)
            heapify(self._sell_stops)

    def _check_new(self, cmd: NewOrder) -> Problem | None:
        if cmd.symbol != self.symbol:
            return Problem(Reason.UNKNOWN_SYMBOL, f"this book trades {self.symbol}, not {cmd.symbol}")
        problem = check_order(self.instrument, cmd.qty, cmd.price, cmd.tif)
        return problem if problem is not None or cmd.show is None else check_show(cmd.show, cmd.price)

    def _cancel(self, cmd: Cancel, out: list[Event], touched: dict) -> None:
        order = self._owned(cmd.order_id, cmd.owner, out)
        if order is None:
            return
        self._take_off(order, touched)
        self._kill(order, Reason.USER, out)

    def _mass_cancel(self, cmd: MassCancel, out: list[Event], touched: dict) -> None:
        """The owner's open orders here (resting and pending stops; only the listed ones, if
        a list is given), oldest first. Nothing to cancel is no error: it is zero canceled."""
        only = None if cmd.order_ids is None else set(cmd.order_ids)
        mine = [o for o in (*self.orders.values(), *self.stops.values()) if o.owner == cmd.owner and (only is None or o.order_id in only)]
        for order in sorted(mine, key=_order_id):
            self._take_off(order, touched)
            self._kill(order, cmd.reason, out)

    def _take_off(self, order: Order, touched: dict) -> None:
        """An open order leaves: a pending stop (its heap entry is skipped when met), or off
        its level."""
        if order.stop is not None:
            del self.stops[order.order_id]
        else:
            self._unrest(order, touched)

    def _replace(self, seq: int, cmd: Replace, out: list[Event], touched: dict) -> None:
        order = self.orders.get(cmd.order_id)
        if order is None or order.owner != cmd.owner:  # (the common case without a call: a pending stop, or a refusal)
            order = self._owned(cmd.order_id, cmd.owner, out)
            if order is None:
                return
        if order.stop is not None or order.oco is not None or order.show is not None:  # (replace is 82% of a busy book: one test)
            problem = check_not_pending(order.order_id, order.stop) or check_not_paired(order.order_id, order.oco)
            if problem is not None:
                out.append(Rejected(problem.reason, problem.text, cmd.owner, order.client_id, order.order_id, self._cause))
                return
            if order.show is not None:
                self._replace_iceberg(cmd, order, out, touched)
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
                order.touched = True  # (changed: it can no longer join an OCO pair)
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
        order.touched = True
        del level.orders[order.order_id]
        level.total -= order.leaves
        touched[level] = None
        if not level.orders:
            half.dormant[old_price] = half.levels.pop(old_price)  # (Half.empty, inline: 0.9% of the mix's instructions)
        order.price = price
        order.leaves = qty
        out.append(Replaced(order.order_id, self.symbol, side, qty, price, False, order.owner, order.client_id, self._cause))
        other = self.asks if side is BUY else self.bids  # (_crosses, for a priced order)
        heap = other.heap
        best = heap[0] * other.sign if heap else None  # (Half.best inline while its top is live: 1.6% of the mix's instructions)
        if best is not None and best not in other.levels:
            best = other.best()
        if best is not None and (price >= best if side is BUY else price <= best):
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

    def _move(self, seq: int, cmd: Replace) -> list[Event] | None:
        """The mix's most common command whole: a plain resting order to a new price that
        does not cross. Its events are what apply() would make (Replaced, the two levels,
        a Quote if at or inside it), without the general path's bookkeeping; None: not
        that case (nothing changed), the general path decides."""
        order_id = cmd.order_id
        order = self.orders.get(order_id)
        price = cmd.price
        if order is None or order.owner != cmd.owner or price is None or cmd.shrink or order.stop is not None or order.oco is not None or order.show is not None:
            return None
        old_price = order.price
        assert old_price is not None  # a resting order has a price
        qty = cmd.qty
        least_qty, most_qty, least_price, most_price = self._ranges
        if price == old_price or not (least_qty <= qty <= most_qty and least_price <= price <= most_price):
            return None
        side = order.side
        if side is BUY:
            half, other = self.bids, self.asks
            heap = other.heap  # (prices: sign 1)
            # At or past the nearest opposite price the heap holds (live or dormant: the
            # best live one is no nearer), it may trade: against the best live one?
            if heap and price >= heap[0] and (best := other.best()) is not None and price >= best:
                return None  # it trades
        else:
            half, other = self.asks, self.bids
            heap = other.heap  # (negative prices: sign -1)
            if heap and price <= -heap[0] and (best := other.best()) is not None and price <= best:
                return None
        order.touched = True
        levels = half.levels
        level = levels[old_price]
        del level.orders[order_id]
        level.total -= order.leaves
        if not level.orders:
            half.dormant[old_price] = levels.pop(old_price)
        order.price = price
        order.leaves = qty
        new = levels.get(price)
        if new is None:  # (a dormant level taken back here, without add_level's call: ~70% of the mix's new levels)
            new = half.dormant.pop(price, None)
            if new is None:
                new = half.add_level(price)
            else:
                levels[price] = new
        new.orders[order_id] = order
        new.total += qty
        md_seq = self.md_seq + 2
        self.md_seq = md_seq
        symbol = self.symbol
        replaced = Replaced(order_id, symbol, side, qty, price, False, order.owner, order.client_id, seq)
        out: list[Event]
        if self.market_data:
            out = [replaced, BookLevelChanged(md_seq - 1, symbol, side, old_price, level.total), BookLevelChanged(md_seq, symbol, side, price, new.total)]
        else:
            out = [replaced]
        bid, _, ask, _ = self.quote
        if side is BUY:
            at_top = bid is None or old_price >= bid or price >= bid
        else:
            at_top = ask is None or old_price <= ask or price <= ask
        if at_top:
            self._publish_quote(out)
        return out

    def _replace_iceberg(self, cmd: Replace, order: Order, out: list[Event], touched: dict) -> None:
        """The same rules for an iceberg, on its whole open quantity (shown + hidden): a
        decrease at its price keeps priority (the hidden part goes first), anything else
        re-enters it at the back, showing a new slice."""
        old_price, total = order.price, order.leaves + order.hidden
        assert old_price is not None
        price = old_price if cmd.price is None or cmd.shrink else cmd.price
        qty = cmd.qty if not cmd.shrink or cmd.qty < total else total
        problem = check_replace(self.instrument, qty, price)
        if problem is not None:
            out.append(Rejected(problem.reason, problem.text, cmd.owner, order.client_id, order.order_id, self._cause))
            return
        if qty != total or price != old_price:
            order.touched = True
        level = (self.bids if order.side is BUY else self.asks).levels[old_price]
        if price == old_price and qty <= total:
            shown = min(order.leaves, qty)
            level.total -= order.leaves - shown
            order.leaves, order.hidden = shown, qty - shown
            touched[level] = None
            out.append(Replaced(order.order_id, self.symbol, order.side, qty, price, True, order.owner, order.client_id, self._cause))
            return
        self._unrest(order, touched)
        order.price, order.leaves, order.hidden = price, qty, 0
        out.append(Replaced(order.order_id, self.symbol, order.side, qty, price, False, order.owner, order.client_id, self._cause))
        self._enter(order, out, touched)  # as if new: it matches, then rests a new slice

    def _owned(self, order_id: int, owner: str, out: list[Event]) -> Order | None:
        order = self.orders.get(order_id) or self.stops.get(order_id)
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
        if self._traded_in != seq:  # this command's first matching
            self._traded_in, self._match_no, self._hi, self._lo = seq, 0, 0, 0
        match_no = first_match = self._match_no
        while True:
            price = half.best()
            if price is None or (limit is not None and (price > limit if buying else price < limit)):
                break
            level = levels[price]
            before = match_no
            gone: list[Order] = []
            sliced: list[Order] = []  # icebergs whose slice is gone: a new one, at the back of the level
            for maker in level.orders.values():
                if not maker.leaves:  # the other order of a pair that traded just before it in this level: canceled
                    continue
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
                maker.touched = True
                taker.leaves -= qty
                level.total -= qty
                out.append(Trade(self.md_seq, tid, seq, symbol, qty, price, taker.side, maker.order_id, taker.order_id, maker.owner, owner))
                out.append(Fill(maker.order_id, symbol, maker_side, qty, price, maker.leaves + maker.hidden, tid, ADDED, maker.owner, maker.client_id, seq))
                out.append(Fill(taker.order_id, symbol, taker.side, qty, price, taker.leaves, tid, REMOVED, owner, taker.client_id, seq))
                if not maker.leaves:
                    (sliced if maker.hidden else gone).append(maker)
                if maker.oco is not None:
                    self._cancel_other(maker, level, gone, out, touched)
                if not taker.leaves:
                    break
            level_orders = level.orders
            for maker in gone:
                del level_orders[maker.order_id]
                del book_orders[maker.order_id]
            for maker in sliced:  # (after the level's pass: the same place as at once, behind every order of it)
                del level_orders[maker.order_id]
                level_orders[maker.order_id] = maker
                assert maker.show is not None
                maker.leaves = min(maker.show, maker.hidden)
                maker.hidden -= maker.leaves
                level.total += maker.leaves
            touched[level] = None
            if not level_orders:
                half.empty(price)
            if match_no != before:  # traded at this price: the last price, and what stops fire on
                self.last = price
                if price > self._hi:
                    self._hi = price
                if price < self._lo or not self._lo:
                    self._lo = price
            if not taker.leaves or taker.budget is not None and taker.budget < (half.best() or 0):
                break
        self._match_no = match_no
        if match_no != first_match:
            taker.touched = True

    def _crosses(self, order: Order) -> bool:
        """Whether the order would meet the best opposite price (a market order: any)."""
        if order.side is BUY:
            best = self.asks.best()
            return best is not None and (order.price is None or order.price >= best)
        best = self.bids.best()
        return best is not None and (order.price is None or order.price <= best)

    def _fillable(self, taker: Order) -> int:
        """How much the taker could fill now, stopping at its quantity."""
        want, limit, total, budget = taker.leaves, taker.price, 0, taker.budget
        buying = taker.side is BUY
        for price, qty in self._liquidity(self.asks if buying else self.bids, taker.owner):
            if limit is not None and (price > limit if buying else price < limit):
                break
            if budget is not None:
                qty = min(qty, budget // price)
                budget -= qty * price
            total += qty
            if total >= want:
                break
        return total

    def _liquidity(self, half: Half, owner: str) -> Iterator[tuple[int, int]]:
        """(price, open quantity) of each order an order of owner's would meet on that side,
        in the order it would meet them: never its own (self-trade prevention cancels them),
        nor a pair's second order (the sweep cancels it once the first trades: _cancel_other)."""
        gone: set[int] = set()
        for price in half.prices():
            for maker in half.levels[price].orders.values():
                if maker.owner != owner and maker.order_id not in gone:
                    yield price, maker.leaves + maker.hidden
                    if maker.oco is not None:
                        gone.add(maker.oco)

    def budgeted(self, cmd: NewOrder) -> NewOrder:
        """A market BUY with its budget (what the book would cost now; a stop: its trigger
        plus the instrument's collar): the sequencing point locks that much, and matching
        never spends more. Other orders as they are."""
        if cmd.price is not None or cmd.side is not BUY:
            return cmd
        if cmd.stop is not None:
            return msgspec.structs.replace(cmd, budget=self.instrument.stop_budget(cmd.qty, cmd.stop))
        return msgspec.structs.replace(cmd, budget=self.sweep_cost(cmd.qty, cmd.owner))

    def sweep_cost(self, qty: int, owner: str) -> int:
        """What buying qty at market would cost now, in lots x ticks (as _liquidity meets the
        asks); less if the book holds less."""
        cost = 0
        for price, available in self._liquidity(self.asks, owner):
            take = min(qty, available)
            cost += take * price
            qty -= take
            if not qty:
                break
        return cost

    # ------------------------------------------------------------------ resting

    def _rest(self, order: Order, touched: dict) -> None:
        price = order.price
        assert price is not None
        if order.show is not None and order.leaves > order.show:  # an iceberg shows a slice
            order.leaves, order.hidden = order.show, order.leaves - order.show
        half = self.bids if order.side is BUY else self.asks
        level = half.levels.get(price) or half.add_level(price)
        level.orders[order.order_id] = order
        level.total += order.leaves
        self.orders[order.order_id] = order
        touched[level] = None

    def load(self, orders: list[Order], md_seq: int, stops: list[Order] = [], last: int | None = None) -> None:  # noqa: B006 (read only)
        """Rest orders as they were (restoring a snapshot): bids best first, then asks best
        first, FIFO within a level; no matching. Per order only C runs (columns by
        attrgetter, dicts by zip): a restart loads every resting order."""
        ids, prices = list(map(_order_id, orders)), list(map(_price, orders))
        self.orders.update(zip(ids, orders, strict=True))
        start = 0
        for price, run in groupby(prices):  # a bid's price is never an adjacent ask's: no crossed book
            end = start + len(list(run))
            mine = orders[start:end]
            level = (self.bids if mine[0].side is BUY else self.asks).add_level(price)
            level.orders = dict(zip(ids[start:end], mine, strict=True))
            level.total = sum(map(_leaves, mine))
            start = end
        for order in stops:
            self._pend(order)
        everyone = [*orders, *stops]
        paired = {o.order_id: o for o in compress(everyone, map(_oco, everyone))}
        for o in paired.values():  # (a snapshot of an older version may name a partner long gone)
            partner = paired.get(cast(int, o.oco))
            if partner is None or partner.oco != o.order_id:
                o.oco = None
        self.pairs = {i: o.oco for i, o in paired.items() if o.oco is not None}
        self.md_seq, self.last = md_seq, last
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
            half.empty(price)

    def _kill(self, order: Order, reason: Reason, out: list[Event]) -> None:
        leaves = order.leaves + order.hidden
        out.append(Canceled(order.order_id, self.symbol, order.side, leaves, reason, order.owner, order.client_id, self._cause))
        order.leaves = order.hidden = 0

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

    def pending(self) -> Iterator[Order]:
        """Every pending stop, in the order they were accepted."""
        return iter(self.stops.values())

    def order(self, order_id: int) -> Order | None:
        """An open order: resting, or a pending stop."""
        return self.orders.get(order_id) or self.stops.get(order_id)

    def encoded_orders(self) -> bytes:
        """Every resting order in priority order, msgpack-encoded (a snapshot's rows, the
        state hash's input): a copy taken in C, on the event loop when a snapshot is captured."""
        return encode_orders([o for half in (self.bids, self.asks) for price in half.prices() for o in half.levels[price].orders.values()])

    def encoded_stops(self) -> bytes:
        """The pending stops in the order they were accepted, msgpack-encoded (as encoded_orders)."""
        return encode_orders(list(self.stops.values()))

    def state_hash(self) -> str:
        """A digest of everything that decides future matching: levels, FIFO order, leaves,
        pending stops and the last trade's price."""
        return hash_book(self.symbol, self.md_seq, self.encoded_orders(), self.encoded_stops(), self.last)


def disconnected(books: dict[str, Book], entered_here: Callable[[int], bool] | None = None) -> list[MassCancel]:
    """After a restart no connection is left: the open orders entered with
    cancel_on_disconnect, as one MassCancel per symbol and owner (in that order). A
    cluster's gateway asks for those entered through it (entered_here: by order id)."""
    out = []
    for symbol, book in sorted(books.items()):
        ids: dict[str, list[int]] = {}
        orders = [*book.orders.values(), *book.stops.values()]
        for o in compress(orders, map(attrgetter("cod"), orders)):  # (a restart looks at every open order: in C)
            if entered_here is None or entered_here(o.order_id):
                ids.setdefault(o.owner, []).append(o.order_id)
        out += [MassCancel(symbol, owner, sorted(mine), Reason.DISCONNECT) for owner, mine in sorted(ids.items())]
    return out


encode_orders = msgspec.msgpack.Encoder().encode
decode_orders = msgspec.msgpack.Decoder(list[Order]).decode
NO_ORDERS = encode_orders([])
_order_id, _price, _leaves, _oco = attrgetter("order_id"), attrgetter("price"), attrgetter("leaves"), attrgetter("oco")


def hash_book(symbol: str, md_seq: int, encoded_orders: bytes, encoded_stops: bytes = NO_ORDERS, last: int | None = None) -> str:
    """The state hash of one book: its market-data sequence, its resting orders in
    priority order and its pending stops, as Book encodes them, and the last trade price."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{symbol}#{md_seq}#{last}|".encode())
    h.update(encoded_orders)
    h.update(b"|")
    h.update(encoded_stops)
    return h.hexdigest()
