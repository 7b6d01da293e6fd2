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
    NewOrder,
    Quote,
    Reason,
    Replace,
    Replaced,
    Side,
    Trade,
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
order_refs = st.integers(1, 60)
cancels = st.builds(lambda oid, owner: Cancel("TEST", oid, owner), order_refs, st.sampled_from(OWNERS))
replaces = st.builds(
    lambda oid, qty, price, owner: Replace("TEST", oid, qty, price, owner),
    order_refs,
    qtys,
    st.one_of(st.none(), prices),
    st.sampled_from(OWNERS),
)
streams = st.lists(st.one_of(new_orders, new_orders, cancels, replaces, replaces), max_size=60)


def depth_map(book: Book) -> dict[tuple[Side, int], int]:
    bids, asks = book.depth(10**6)
    return {**{(Side.BUY, p): q for p, q in bids}, **{(Side.SELL, p): q for p, q in asks}}


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
        resting = book.orders[oid].leaves if oid in book.orders else 0
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
                key = next(k for k, q in queues.items() if maker in q)
            if maker is not None and maker not in consumed[key]:
                consumed[key].append(maker)
        for key, makers in consumed.items():
            assert makers == queues[key][: len(makers)], "an order traded ahead of an older one"
            for oid in makers[:-1]:
                assert oid not in book.orders, "a later order traded while an older one still rests"


@settings(max_examples=200, deadline=None)
@given(streams)
def test_replay_gives_identical_events_and_state(stream: list[Command]) -> None:
    first, second = Book(TEST), Book(TEST)
    for seq, cmd in enumerate(stream, 1):
        assert first.apply(seq, cmd) == second.apply(seq, cmd)
    assert first.state_hash() == second.state_hash()


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
