"""Invariants of the order book over random command streams (hypothesis)."""

from __future__ import annotations

from collections import defaultdict

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.book import Book
from exchange.naive_book import NaiveBook
from protocol.messages import (
    TIF,
    Accepted,
    BookLevelChanged,
    Cancel,
    Canceled,
    Command,
    Fill,
    Liquidity,
    MassCancel,
    NewOrder,
    Quote,
    Reason,
    Replace,
    Replaced,
    Side,
    Trade,
    Triggered,
)
from tests.rulebook import TEST

OWNERS = ["a", "b", "c"]
prices = st.integers(95, 105)
qtys = st.integers(1, 12)

new_orders = st.builds(
    lambda side, qty, price, tif, owner: NewOrder(
        "TEST", side, qty, price, TIF.IOC if price is None and tif in (TIF.GTC, TIF.POST) else tif, owner
    ),
    st.sampled_from(Side),
    qtys,
    st.one_of(st.none(), prices, prices, prices, prices),
    st.sampled_from([TIF.GTC, TIF.GTC, TIF.GTC, TIF.IOC, TIF.FOK, TIF.POST]),
    st.sampled_from(OWNERS),
)
def _stop(side: Side, qty: int, price: int | None, tif: TIF, owner: str, trigger: int) -> NewOrder:
    budget = TEST.stop_budget(qty, trigger) if side is Side.BUY and price is None else None
    return NewOrder("TEST", side, qty, price, TIF.IOC if price is None and tif in (TIF.GTC, TIF.POST) else tif, owner, None, budget, trigger)


stop_orders = st.builds(
    _stop, st.sampled_from(Side), qtys, st.one_of(st.none(), prices, prices), st.sampled_from([TIF.GTC, TIF.GTC, TIF.IOC, TIF.FOK]),
    st.sampled_from(OWNERS), prices,
)
icebergs = st.builds(
    lambda side, qty, price, show, owner: NewOrder("TEST", side, qty, price, TIF.GTC, owner, show=show),
    st.sampled_from(Side), st.integers(1, 40), prices, st.integers(1, 6), st.sampled_from(OWNERS),
)
order_refs = st.integers(1, 60)
cancels = st.builds(lambda oid, owner: Cancel("TEST", oid, owner), order_refs, st.sampled_from(OWNERS))
mass_cancels = st.builds(
    lambda owner, ids: MassCancel("TEST", owner, ids), st.sampled_from(OWNERS), st.one_of(st.none(), st.lists(order_refs, max_size=5))
)
replaces = st.builds(
    lambda oid, qty, price, owner: Replace("TEST", oid, qty, price, owner),
    order_refs,
    qtys,
    st.one_of(st.none(), prices),
    st.sampled_from(OWNERS),
)
oco_orders = st.builds(
    lambda order, other: msgspec.structs.replace(order, oco=other), st.one_of(new_orders, stop_orders), st.integers(1, 30)
)
streams = st.lists(st.one_of(new_orders, new_orders, stop_orders, icebergs, oco_orders, cancels, mass_cancels, replaces, replaces), max_size=60)


def depth_map(book: Book) -> dict[tuple[Side, int], int]:
    bids, asks = book.depth(10**6)
    return {**{(Side.BUY, p): q for p, q in bids}, **{(Side.SELL, p): q for p, q in asks}}


def assert_price_heaps_sound(book: Book) -> None:
    """Each side's heap holds every live price and every dormant (emptied) level's price,
    each once; a dormant level is empty; the heap's top, if live, is the best price."""
    for half in (book.bids, book.asks):
        in_heap = [half.sign * key for key in half.heap]
        assert len(in_heap) == len(set(in_heap)), "a price twice in the heap"
        assert set(in_heap) == half.levels.keys() | half.dormant.keys()
        assert not half.levels.keys() & half.dormant.keys()
        assert all(not level.orders and level.total == 0 for level in half.dormant.values())
        assert all(level.orders for level in half.levels.values())
        assert half.best() == (max(half.levels) if half.side is Side.BUY else min(half.levels)) if half.levels else half.best() is None


@settings(max_examples=300, deadline=None)
@given(streams)
def test_book_never_crossed_and_level_events_match_the_book(stream: list[Command]) -> None:
    book = Book(TEST)
    for seq, cmd in enumerate(stream, 1):
        before = depth_map(book)
        events = book.apply(seq, cmd)
        after = depth_map(book)
        bid, ask = book.bbo()
        assert bid is None or ask is None or bid[0] < ask[0], "crossed book"
        reported = {(e.side, e.price): e.qty for e in events if isinstance(e, BookLevelChanged)}
        changed = {k for k in before.keys() | after.keys() if before.get(k, 0) != after.get(k, 0)}
        assert changed <= reported.keys(), "a level changed without a BookLevelChanged"
        for key, qty in reported.items():
            assert after.get(key, 0) == qty
        assert_price_heaps_sound(book)


def test_price_heaps_stay_sound_when_many_prices_come_and_go() -> None:
    """Hundreds of prices rest and leave (cancels, replaces to new prices), past the point
    where a side rebuilds its heap from the live levels, and back to prices left dormant."""
    book = Book(TEST)
    seq = 0
    for round_ in range(6):
        ids = []
        for i in range(150):
            seq += 1
            price = 1_000 + 200 * round_ + (i * 7) % 300  # a third of them the last round's prices
            book.apply(seq, NewOrder("TEST", Side.BUY, 1, price, TIF.GTC, "a"))
            ids.append(seq)
            seq += 1
            book.apply(seq, NewOrder("TEST", Side.SELL, 1, 2_000 + price, TIF.GTC, "b"))
            ids.append(seq)
        for n, order_id in enumerate(ids):
            seq += 1
            owner = "a" if n % 2 == 0 else "b"
            if n % 3:
                book.apply(seq, Cancel("TEST", order_id, owner))
            else:
                moved = book.order(order_id)
                assert moved is not None and moved.price is not None
                book.apply(seq, Replace("TEST", order_id, 1, moved.price + 1, owner))
            assert_price_heaps_sound(book)
    assert len(book.orders) == 100 * 6


@settings(max_examples=300, deadline=None)
@given(streams)
def test_quantity_is_conserved_per_order(stream: list[Command]) -> None:
    book = Book(TEST)
    submitted: dict[int, int] = defaultdict(int)
    filled: dict[int, int] = defaultdict(int)
    canceled: dict[int, int] = defaultdict(int)
    leaves: dict[int, int] = {}
    for seq, cmd in enumerate(stream, 1):
        for e in book.apply(seq, cmd):
            if isinstance(e, Accepted):
                submitted[e.order_id] += e.qty
                leaves[e.order_id] = e.qty
            elif isinstance(e, Replaced):
                submitted[e.order_id] += e.qty - leaves[e.order_id]
                leaves[e.order_id] = e.qty
            elif isinstance(e, Fill):
                assert e.leaves == leaves[e.order_id] - e.qty
                filled[e.order_id] += e.qty
                leaves[e.order_id] = e.leaves
            elif isinstance(e, Canceled):
                assert e.leaves == leaves[e.order_id]
                canceled[e.order_id] += e.leaves
                leaves[e.order_id] = 0
    for oid, qty in submitted.items():
        open_order = book.order(oid)
        resting = open_order.leaves + open_order.hidden if open_order is not None else 0  # (an iceberg: shown + hidden)
        assert resting == leaves[oid]
        assert qty == filled[oid] + canceled[oid] + resting, f"order {oid}"


@settings(max_examples=300, deadline=None)
@given(streams)
def test_no_order_trades_ahead_of_an_earlier_order_at_its_price(stream: list[Command]) -> None:
    book = Book(TEST)
    for seq, cmd in enumerate(stream, 1):
        queues = {
            (half.side, price): list(level.orders) for half in (book.bids, book.asks) for price, level in half.levels.items()
        }
        consumed: dict[tuple[Side, int], list[int]] = defaultdict(list)
        for e in book.apply(seq, cmd):
            maker = None
            if isinstance(e, Fill) and e.liquidity is Liquidity.ADDED:
                maker, key = e.order_id, (e.side, e.price)
            elif isinstance(e, Canceled) and e.reason is Reason.SELF_TRADE:
                maker = e.order_id
                key = next((k for k, q in queues.items() if maker in q), (e.side, 0))
            if maker is not None and maker not in consumed[key]:
                consumed[key].append(maker)
        for key, makers in consumed.items():
            queue = queues.get(key, [])
            makers = [m for m in makers if m in queue]  # (not: a fired stop that rested during the command)
            assert makers == queue[: len(makers)], "an order traded ahead of an older one"
            for oid in makers[:-1]:  # (an iceberg rests on with its next slice, behind them)
                assert oid not in book.orders or book.orders[oid].show is not None, "a later order traded while an older one still rests"


@settings(max_examples=200, deadline=None)
@given(streams)
def test_replay_gives_identical_events_and_state(stream: list[Command]) -> None:
    first, second = Book(TEST), Book(TEST)
    for seq, cmd in enumerate(stream, 1):
        assert first.apply(seq, cmd) == second.apply(seq, cmd)
    assert first.state_hash() == second.state_hash()


@settings(max_examples=300, deadline=None)
@given(streams)
def test_a_book_without_market_data_events_gives_the_same_other_events_and_state(stream: list[Command]) -> None:
    # (a cluster's engine shard, gateways and trade log keep such books; the notifiers the full ones)
    full, quiet = Book(TEST), Book(TEST, market_data=False)
    for seq, cmd in enumerate(stream, 1):
        assert [e for e in full.apply(seq, cmd) if not isinstance(e, (BookLevelChanged, Quote))] == quiet.apply(seq, cmd), f"command {seq}: {cmd}"
        assert (quiet.md_seq, quiet.quote) == (full.md_seq, full.quote)
    assert quiet.state_hash() == full.state_hash()


@settings(max_examples=500, deadline=None)
@given(streams)
def test_engine_and_naive_reference_agree(stream: list[Command]) -> None:
    book, naive = Book(TEST), NaiveBook(TEST)
    for seq, cmd in enumerate(stream, 1):
        mine = [
            msgspec.structs.replace(e, md_seq=0) if isinstance(e, Trade) else e
            for e in book.apply(seq, cmd)
            if not isinstance(e, (BookLevelChanged, Quote))
        ]
        assert mine == naive.apply(seq, cmd), f"command {seq}: {cmd}"
        assert book.depth(10**6) == naive.depth(10**6)


@settings(max_examples=300, deadline=None)
@given(streams)
def test_market_data_is_numbered_gap_free_and_quotes_follow_the_top(stream: list[Command]) -> None:
    book = Book(TEST)
    numbers: list[int] = []
    for seq, cmd in enumerate(stream, 1):
        events = book.apply(seq, cmd)
        numbers += [e.md_seq for e in events if isinstance(e, (Trade, BookLevelChanged, Quote))]
        quotes = [e for e in events if isinstance(e, Quote)]
        bid, ask = book.bbo()
        top = (bid[0] if bid else None, bid[1] if bid else 0, ask[0] if ask else None, ask[1] if ask else 0)
        if quotes:
            assert (quotes[-1].bid, quotes[-1].bid_qty, quotes[-1].ask, quotes[-1].ask_qty) == top
        else:
            assert book.quote == top  # unchanged top: no quote
    assert numbers == list(range(1, len(numbers) + 1))


@settings(max_examples=300, deadline=None)
@given(streams)
def test_stops_fire_only_when_a_trade_reaches_them_and_stay_hidden_until_then(stream: list[Command]) -> None:
    book = Book(TEST)
    for seq, cmd in enumerate(stream, 1):
        events = book.apply(seq, cmd)
        printed: list[int] = []
        for e in events:
            if isinstance(e, Trade):
                printed.append(e.price)
            elif isinstance(e, Triggered):  # a trade of this command, before it, reached its trigger
                assert any(p >= e.stop if e.side is Side.BUY else p <= e.stop for p in printed), f"{e} fired without a trade reaching it"
        for stop in book.pending():  # and every stop this command's trades reached has fired
            assert stop.stop is not None
            assert not any(p >= stop.stop if stop.side is Side.BUY else p <= stop.stop for p in printed)
        depth = depth_map(book)
        resting = defaultdict(int)
        for o in book.resting():
            assert o.order_id not in book.stops
            resting[(o.side, o.price)] += o.leaves
        assert depth == dict(resting), "the depth shows exactly the resting orders, never a pending stop"


@settings(max_examples=300, deadline=None)
@given(streams)
def test_an_iceberg_shows_at_most_its_slice_and_hides_the_rest(stream: list[Command]) -> None:
    book = Book(TEST)
    for seq, cmd in enumerate(stream, 1):
        events = book.apply(seq, cmd)
        shown = {(e.side, e.price): e.qty for e in events if isinstance(e, BookLevelChanged)}  # (a level emptied and refilled: its last)
        for (side, price), qty in shown.items():  # market data never shows more than the slices
            level = (book.bids if side is Side.BUY else book.asks).levels.get(price)
            assert qty == (0 if level is None else sum(o.leaves for o in level.orders.values()))
        for o in book.resting():
            if o.show is not None:
                assert 0 < o.leaves <= o.show and o.hidden >= 0
            else:
                assert o.hidden == 0


@settings(max_examples=300, deadline=None)
@given(streams)
def test_the_two_orders_of_an_oco_pair_never_both_trade(stream: list[Command]) -> None:
    book = Book(TEST)
    partner: dict[int, int] = {}
    traded: set[int] = set()
    for seq, cmd in enumerate(stream, 1):
        events = book.apply(seq, cmd)
        if isinstance(cmd, NewOrder) and cmd.oco is not None and any(isinstance(e, Accepted) for e in events):
            partner[seq], partner[cmd.oco] = cmd.oco, seq
        for e in events:
            if isinstance(e, Fill):
                traded.add(e.order_id)
                assert partner.get(e.order_id) not in traded, f"both {e.order_id} and {partner[e.order_id]} traded"
        for oid, other in partner.items():  # an open order's pair is open too, or it is unpaired now
            order = book.order(oid)
            if order is not None and order.oco is not None:
                assert book.order(other) is not None
        open_orders = [*book.orders.values(), *book.stops.values()]
        links = {o.order_id: o.oco for o in open_orders if o.oco is not None}
        assert all(links.get(other) == oid for oid, other in links.items()), links  # both ways: a pair, or no link
        assert book.pairs == links


cod_orders = st.builds(lambda order: msgspec.structs.replace(order, cod=True), new_orders)
other_symbol = st.builds(lambda order: msgspec.structs.replace(order, symbol="OTHER"), new_orders)
out_of_range_qtys, out_of_band = st.sampled_from([0, -1, 1001]), st.sampled_from([0, 10_001])  # (TEST: 1..1000 lots, 1..10000 ticks)
off_limits = st.builds(
    lambda order, qty, price: msgspec.structs.replace(order, qty=qty, price=price), new_orders, st.one_of(qtys, out_of_range_qtys), st.one_of(prices, out_of_band)
)
named_orders = st.builds(lambda order, cid: msgspec.structs.replace(order, client_id=cid), new_orders, st.sampled_from(["x", "y"]))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_moves_new_orders_and_cancels_make_exactly_the_events_of_the_general_path(data: st.DataObject) -> None:
    # Most of a busy book's commands move an open order to a new price, rest a new one or
    # cancel one (Book._move, _post and _pull, its fast paths); the streams above rarely
    # name an open order with its owner. Here a move or cancel names one (or its owner gets
    # it wrong, or the price is where it is), and every command's events, market data
    # included, must be those of a book without the fast paths.
    fast, general, quiet = Book(TEST), Book(TEST), Book(TEST, market_data=False)
    general._move = general._post = general._pull = lambda seq, cmd: None  # type: ignore[method-assign]
    for seq in range(1, data.draw(st.integers(1, 80)) + 1):
        open_ids = sorted(fast.orders)
        if open_ids and data.draw(st.integers(0, 9)) < 6:
            order = fast.orders[data.draw(st.sampled_from(open_ids))]
            owner = data.draw(st.sampled_from([order.owner] * 4 + OWNERS))
            if data.draw(st.booleans()):
                bid, ask = fast.bbo()
                opposite = ask if order.side is Side.BUY else bid  # (a move to exactly its price trades)
                touch = [st.just(opposite[0])] * 2 if opposite else []
                qty, price = data.draw(st.one_of(qtys, qtys, qtys, out_of_range_qtys)), data.draw(st.one_of(prices, prices, st.none(), out_of_band, *touch))
                cmd: Command = Replace("TEST", order.order_id, qty, price, owner)
            else:
                cmd = Cancel("TEST", order.order_id, owner)
        else:
            cmd = data.draw(st.one_of(new_orders, named_orders, icebergs, stop_orders, oco_orders, cod_orders, other_symbol, off_limits))
        events = fast.apply(seq, cmd)
        assert events == general.apply(seq, cmd), f"command {seq}: {cmd}"
        assert [e for e in events if not isinstance(e, (BookLevelChanged, Quote))] == quiet.apply(seq, cmd)
        assert (fast.md_seq, fast.quote) == (general.md_seq, general.quote) == (quiet.md_seq, quiet.quote)
    assert fast.state_hash() == general.state_hash() == quiet.state_hash()


def test_orders_moved_or_entered_at_exactly_the_opposite_best_trade_and_a_dormant_price_does_not_count() -> None:
    # (the fast paths test the heap's top price first, live or dormant: each edge, both sides)
    for side, mine, near, far in ((Side.BUY, 98, 101, 102), (Side.SELL, 105, 102, 101)):
        other = Side.SELL if side is Side.BUY else Side.BUY
        cases = [  # (the command, whether the near opposite order was canceled first, the price it trades at)
            (NewOrder("TEST", side, 1, near, TIF.GTC, "a"), False, near),
            (Replace("TEST", 1, 1, near, "a"), False, near),
            (NewOrder("TEST", side, 1, near, TIF.GTC, "a"), True, None),  # near is dormant: it rests
            (Replace("TEST", 1, 1, near, "a"), True, None),
            (Replace("TEST", 1, 1, far, "a"), True, far),
        ]
        for cmd, cancel_near, traded_at in cases:
            fast, general = Book(TEST), Book(TEST)
            general._move = general._post = general._pull = lambda seq, cmd: None  # type: ignore[method-assign]
            setup: list[Command] = [NewOrder("TEST", side, 1, mine, TIF.GTC, "a"), NewOrder("TEST", other, 1, near, TIF.GTC, "b"), NewOrder("TEST", other, 1, far, TIF.GTC, "b")]
            if cancel_near:
                setup.append(Cancel("TEST", 2, "b"))
            for seq, c in enumerate([*setup, cmd], 1):
                events = fast.apply(seq, c)
                assert events == general.apply(seq, c), f"{side} {c}"
            assert [e.price for e in events if isinstance(e, Trade)] == ([] if traded_at is None else [traded_at]), f"{side} {cmd}: {events}"


resting_sells = st.lists(
    st.tuples(st.sampled_from(["a", "a", "c"]), qtys, st.integers(100, 104), st.one_of(st.none(), st.integers(1, 4)), st.one_of(st.none(), st.integers(1, 8))),
    min_size=2, max_size=8,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(Side), resting_sells, st.one_of(st.none(), st.integers(1, 60)), st.one_of(st.none(), st.integers(100, 104)), st.sampled_from([TIF.GTC, TIF.IOC, TIF.FOK]))
def test_a_sweep_through_a_side_never_trades_both_orders_of_a_pair(
    side: Side, resting: list[tuple[str, int, int, int | None, int | None]], drawn: int | None, limit: int | None, tif: TIF
) -> None:
    """Pairs of one owner's orders on one side, at one price or several, then another
    owner's order through them: once one order of a pair trades, the other is gone before
    the sweep reaches it (the general stream above rarely builds this). A FOK counts a
    pair's liquidity once: it fills whole or not at all; a market BUY is budgeted so."""
    book, naive = Book(TEST), NaiveBook(TEST)
    maker_side = Side.SELL if side is Side.BUY else Side.BUY
    partner: dict[int, int] = {}

    def both(seq: int, cmd: NewOrder) -> list:
        events = book.apply(seq, cmd)
        mine = [msgspec.structs.replace(e, md_seq=0) if isinstance(e, Trade) else e for e in events if not isinstance(e, (BookLevelChanged, Quote))]
        assert mine == naive.apply(seq, cmd), f"command {seq}: {cmd}"  # the reference book agrees, event for event
        return events

    for seq, (owner, q, price, show, oco) in enumerate(resting, 1):
        cmd = NewOrder("TEST", maker_side, q, price if maker_side is Side.SELL else 205 - price, TIF.GTC, owner, show=show, oco=oco)
        if any(isinstance(e, Accepted) for e in both(seq, cmd)) and oco is not None:
            partner[seq], partner[oco] = oco, seq
    price = None if limit is None else limit if side is Side.BUY else 205 - limit
    within = [o for o in book.resting() if o.side is maker_side and (price is None or (o.price <= price if side is Side.BUY else o.price >= price))]
    qty = drawn or max(1, sum(o.leaves + o.hidden for o in within))  # (None: all the book shows within the limit, pairs twice)
    taker = book.budgeted(NewOrder("TEST", side, qty, price, TIF.IOC if limit is None and tif is TIF.GTC else tif, "b"))
    events = both(len(resting) + 1, taker)
    filled = sum(e.qty for e in events if isinstance(e, Fill) and e.owner == "b")
    if taker.tif is TIF.FOK:
        assert filled in (0, qty), f"a FOK filled {filled} of {qty}"
    elif price is None and side is Side.BUY and filled < qty:  # its budget ran out only where the book did
        assert not [o for o in book.resting() if o.side is Side.SELL and o.owner != "b"], "a market BUY budgeted short"
    assert book.depth(10**6) == naive.depth(10**6)
    traded = {e.order_id for e in events if isinstance(e, Fill)}
    assert not [(i, j) for i, j in partner.items() if i in traded and j in traded], "both orders of a pair traded"
    canceled = {e.order_id for e in events if isinstance(e, Canceled)}
    assert all(partner[i] in canceled or book.order(partner[i]) is None for i in traded if i in partner)
    for half in (book.bids, book.asks):
        for level in half.levels.values():
            assert all(o.leaves > 0 for o in level.orders.values()) and level.total == sum(o.leaves for o in level.orders.values())
    assert_price_heaps_sound(book)
    assert book.pairs == {o.order_id: o.oco for o in book.orders.values() if o.oco is not None}
