"""Balances and pre-trade risk (exchange/risk.py): exact amounts, and the invariants under
live-like interleavings of per-symbol matching, checked against a serial replay."""

from __future__ import annotations

from collections import Counter, deque

from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.book import Book, Order
from exchange.engine import Engine
from exchange.instruments import Instrument, load_instruments, parse_instruments
from exchange.risk import FEE_ACCOUNT, MAX_OPEN_ORDERS, Risk, totals
from protocol.messages import TIF, Cancel, Command, MassCancel, NewOrder, Problem, Reason, Replace, Side, Transfer

INSTRUMENTS = load_instruments()
AAPL = INSTRUMENTS["AAPL"]  # lot 1 share, tick 0.01 USD; USD unit 1e-7: a lot x tick is 100,000 units
CENT = AAPL.quote_per_lot_tick


def funded(engine: Engine, *accounts: str) -> int:
    seq = 0
    for account in accounts:
        for asset, amount in (("USD", 10_000 * 100 * CENT), ("AAPL", 1_000)):
            seq += 1
            engine.apply(seq, Transfer(account, asset, amount, f"{account}-{asset}"))
    return seq


def test_a_limit_buy_locks_qty_times_price_and_a_fill_moves_both_sides() -> None:
    engine = Engine(INSTRUMENTS)
    seq = funded(engine, "alice", "bob")
    risk = engine.risk
    engine.apply(seq + 1, NewOrder("AAPL", Side.BUY, 10, 15000, TIF.GTC, "alice"))  # 10 @ 150.00
    assert risk.balances[("alice", "USD")] == [(1_000_000 - 150_000) * CENT, 150_000 * CENT]
    engine.apply(seq + 2, NewOrder("AAPL", Side.SELL, 4, 14900, TIF.GTC, "bob"))  # trades 4 @ 150.00
    assert risk.balances[("alice", "USD")] == [(1_000_000 - 150_000) * CENT, 6 * 15000 * CENT]
    assert risk.balances[("alice", "AAPL")] == [1_004, 0]
    assert risk.balances[("bob", "AAPL")] == [996, 0]
    assert risk.balances[("bob", "USD")] == [(1_000_000 + 60_000) * CENT, 0]
    engine.apply(seq + 3, Cancel("AAPL", seq + 1, "alice"))
    assert risk.balances[("alice", "USD")] == [(1_000_000 - 60_000) * CENT, 0]


def test_a_buy_that_trades_better_than_its_limit_gets_the_difference_back() -> None:
    engine = Engine(INSTRUMENTS)
    seq = funded(engine, "alice", "bob")
    engine.apply(seq + 1, NewOrder("AAPL", Side.SELL, 5, 14000, TIF.GTC, "bob"))
    engine.apply(seq + 2, NewOrder("AAPL", Side.BUY, 5, 15000, TIF.IOC, "alice"))
    assert engine.risk.balances[("alice", "USD")] == [(1_000_000 - 70_000) * CENT, 0]


def test_a_market_buy_spends_at_most_its_budget() -> None:
    engine = Engine(INSTRUMENTS)
    seq = funded(engine, "alice", "bob", "carol")
    engine.apply(seq + 1, NewOrder("AAPL", Side.SELL, 5, 10000, TIF.GTC, "bob"))
    engine.apply(seq + 2, NewOrder("AAPL", Side.SELL, 5, 20000, TIF.GTC, "carol"))
    # alice's market BUY of 5 was sequenced when bob's 5 @ 100.00 were the best ask: it
    # locked 5 x 100.00 = 50,000 lots x ticks. Before it matches, carol takes bob's 5; only
    # 200.00 asks are left: it buys the 2 shares its budget pays for, the rest is released.
    engine.apply(seq + 3, NewOrder("AAPL", Side.BUY, 5, 10000, TIF.IOC, "carol"))
    engine.apply(seq + 4, NewOrder("AAPL", Side.BUY, 5, None, TIF.IOC, "alice", budget=50_000))
    assert engine.risk.balances[("alice", "AAPL")] == [1_002, 0]
    assert engine.risk.balances[("alice", "USD")] == [(1_000_000 - 40_000) * CENT, 0]


def test_an_oco_pair_locks_what_its_larger_order_needs_and_the_one_that_trades_takes_it_over() -> None:
    engine = Engine(INSTRUMENTS)
    seq = funded(engine, "alice", "bob", "carol")
    risk, book = engine.risk, engine.books["AAPL"]
    # A bracket on 800 of alice's 1,000 AAPL: a take-profit at 160.00 and a stop-loss at 140.00.
    engine.apply(seq + 1, NewOrder("AAPL", Side.SELL, 800, 16000, TIF.GTC, "alice"))
    stop_loss = NewOrder("AAPL", Side.SELL, 800, None, TIF.IOC, "alice", stop=14000, oco=seq + 1)
    assert risk.hold(seq + 2, stop_loss) is None  # 200 available: the sum would be refused
    risk.settle(book.apply(seq + 2, stop_loss))
    assert risk.balances[("alice", "AAPL")] == [200, 800]  # not 1,600: they never both execute
    engine.apply(seq + 3, NewOrder("AAPL", Side.BUY, 900, 13900, TIF.GTC, "bob"))
    engine.apply(seq + 4, NewOrder("AAPL", Side.SELL, 1, 13900, TIF.GTC, "carol"))  # prints 139.00: the stop fires
    assert book.order(seq + 1) is None and book.order(seq + 2) is None  # sold; the take-profit went with it
    assert risk.balances[("alice", "AAPL")] == [200, 0]  # sold 800 out of the pair's one lock
    assert risk.balances[("alice", "USD")] == [(1_000_000 + 800 * 13900) * CENT, 0]
    assert not [h for h in risk.holds.values() if h.account == "alice"]


def test_fees_go_to_the_fee_account() -> None:
    toml = '[instruments.X]\ntick = "1"\nlot = "1"\nmaker_fee_bps = 10\ntaker_fee_bps = 20\n[assets]\nUSD = "0.01"\nX = "0.001"\n'
    instruments = parse_instruments(toml)
    engine = Engine(instruments)
    for n, (account, asset, amount) in enumerate([("a", "USD", 10**9), ("b", "X", 10**9)], 1):
        engine.apply(n, Transfer(account, asset, amount, str(n)))
    engine.apply(3, NewOrder("X", Side.SELL, 100, 50, TIF.GTC, "b"))  # maker
    engine.apply(4, NewOrder("X", Side.BUY, 100, 50, TIF.GTC, "a"))  # taker
    risk = engine.risk
    assert risk.balances[("b", "USD")] == [500_000 - 500, 0]  # 5000.00 USD less 10 bps
    assert risk.balances[("a", "X")] == [100_000 - 200, 0]  # 100.000 X less 20 bps
    assert risk.balances[(FEE_ACCOUNT, "USD")] == [500, 0] and risk.balances[(FEE_ACCOUNT, "X")] == [200, 0]


def test_a_fee_rounds_up_to_a_whole_unit_never_to_zero() -> None:
    # Reported: a taker fee of 33 bps on 9 XAU (unit 1) was 0. A non-zero rate takes at
    # least one unit; an exact fee is not rounded at all.
    toml = '[instruments.XAU-USD]\ntick = "1"\nlot = "1"\nmaker_fee_bps = 0\ntaker_fee_bps = 33\n[assets]\nUSD = "1"\nXAU = "1"\n'
    engine = Engine(parse_instruments(toml))
    for n, (account, asset, amount) in enumerate([("a", "USD", 10**6), ("b", "XAU", 10**6)], 1):
        engine.apply(n, Transfer(account, asset, amount, str(n)))
    engine.apply(3, NewOrder("XAU-USD", Side.SELL, 9, 2000, TIF.GTC, "b"))  # maker: no fee
    engine.apply(4, NewOrder("XAU-USD", Side.BUY, 9, 2000, TIF.GTC, "a"))  # taker: 9 x 0.33% = 0.0297 XAU
    risk = engine.risk
    assert risk.balances[("a", "XAU")] == [9 - 1, 0] and risk.balances[(FEE_ACCOUNT, "XAU")] == [1, 0]
    assert risk.balances[("b", "USD")] == [18_000, 0]
    assert sum(avail + locked for (_, asset), (avail, locked) in risk.balances.items() if asset == "XAU") == 10**6  # none made or lost


def test_a_refused_hold_changes_nothing_and_says_what_was_needed() -> None:
    risk = Risk(INSTRUMENTS)
    assert risk.hold(1, Transfer("alice", "USD", 100 * 100 * CENT, "r1")) is None
    problem = risk.hold(2, NewOrder("AAPL", Side.BUY, 1, 15000, TIF.GTC, "alice"))
    assert problem == Problem(problem.reason, "needs 150.0000000 USD, 100.0000000 available") and problem.reason.value == "insufficient_funds"
    assert risk.balances[("alice", "USD")] == [100 * 100 * CENT, 0] and not risk.holds


# ---------------------------------------------------------------- live interleavings vs replay

ACCOUNTS = ["a", "b", "c"]
SYMBOLS = ["AAPL", "ES"]
INITIAL = {"USD": 20_000 * 100 * CENT, "AAPL": 50, "ES": 50}


@st.composite
def streams(draw: st.DrawFn) -> list[tuple]:
    n = draw(st.integers(5, 60))
    out = []
    for _ in range(n):
        kind = draw(st.sampled_from(["new", "new", "new", "market", "stop", "stop_market", "iceberg", "oco", "cancel", "cancel_all", "replace", "withdraw"]))
        out.append((
            kind, draw(st.sampled_from(ACCOUNTS)), draw(st.sampled_from(SYMBOLS)), draw(st.sampled_from([Side.BUY, Side.SELL])),
            draw(st.integers(1, 20)), draw(st.integers(95, 105)) * 400, draw(st.sampled_from([TIF.GTC, TIF.GTC, TIF.IOC, TIF.FOK])),
            draw(st.integers(0, 1000)),
        ))  # fmt: skip
    return out


def need_of_order(x: Order, inst: Instrument) -> int:
    """What an open order locks: a SELL its lots, a BUY lots x price (a market BUY its budget)."""
    if x.side is not Side.BUY:
        return (x.leaves + x.hidden) * inst.base_per_lot
    return ((x.leaves + x.hidden) * x.price if x.price is not None else x.budget or 0) * inst.quote_per_lot_tick


def need_of(book: Book, order_id: int) -> tuple[int, int | None] | None:
    o = book.order(order_id)
    return None if o is None else (o.leaves, o.price)


def command_of(item: tuple, books: dict[str, Book], journal: list[Command]) -> Command | None:
    """The stream item's command, given the books and the journal so far (None: nothing to do)."""
    kind, account, symbol, side, qty, price, tif, pick = item
    new_orders = [(s, c) for s, c in enumerate(journal, 1) if isinstance(c, NewOrder) and c.owner == account]
    if kind == "new":
        return NewOrder(symbol, side, qty, price, tif, account)
    if kind == "market":
        budget = books[symbol].sweep_cost(qty, account) if side is Side.BUY else None
        return NewOrder(symbol, side, qty, None, TIF.IOC, account, budget=budget)
    if kind in ("stop", "stop_market"):  # the trigger: the pick-th tick around the price
        stop = price + (pick % 9 - 4) * 400
        limit = price if kind == "stop" else None
        return books[symbol].budgeted(NewOrder(symbol, side, qty, limit, tif if limit else TIF.IOC, account, stop=stop))
    if kind == "iceberg":
        return NewOrder(symbol, side, qty * 3, price, TIF.GTC, account, show=1 + pick % 5)
    if kind == "cancel_all":
        return MassCancel(symbol, account)
    if kind == "withdraw":
        return Transfer(account, "USD", -qty * 1000 * CENT, f"w{len(journal)}")
    if not new_orders:
        return None
    target, cmd = new_orders[pick % len(new_orders)]
    if kind == "oco":  # paired with one of the account's orders (the book refuses what it must)
        stop = price + (pick % 9 - 4) * 400 if pick % 2 else None
        return NewOrder(cmd.symbol, side, qty, price, TIF.GTC, account, stop=stop, oco=target)
    if kind == "cancel":
        return Cancel(cmd.symbol, target, account)
    now = need_of(books[cmd.symbol], target)
    shrink = now is not None and qty <= now[0] and pick % 2 == 0
    return Replace(cmd.symbol, target, qty, None if shrink else price, account, shrink=shrink)


@settings(max_examples=150, deadline=None)
@given(stream=streams(), order=st.lists(st.integers(0, 3), min_size=200, max_size=200), cap=st.sampled_from([2, 6, MAX_OPEN_ORDERS]))
def test_live_interleaving_and_serial_replay_reach_the_same_balances(stream: list[tuple], order: list[int], cap: int) -> None:
    live = Engine(INSTRUMENTS)  # books and risk, driven as the server drives them
    risk, books = live.risk, live.books
    risk.max_open_orders = cap  # (a replay applies what was accepted, whatever the limit)
    journal: list[Command] = []
    queues: dict[str, deque[tuple[int, Command]]] = {s: deque() for s in SYMBOLS}
    deposits: dict[str, int] = {}

    def sequence(cmd: Command) -> None:
        seq = len(journal) + 1
        before = risk.open_orders.get(cmd.owner, 0) if isinstance(cmd, NewOrder) else 0
        problem = risk.hold(seq, cmd)
        if isinstance(cmd, NewOrder):  # refused for the count exactly when the owner has `cap` already
            assert (problem is not None and problem.reason is Reason.TOO_MANY_ORDERS) == (before >= cap)
            assert risk.open_orders.get(cmd.owner, 0) == before + (problem is None) <= cap
        if problem is None:
            journal.append(cmd)
            if isinstance(cmd, Transfer):
                deposits[cmd.asset] = deposits.get(cmd.asset, 0) + cmd.amount
            else:
                queues[cmd.symbol].append((seq, cmd))

    def drain_one(symbol: str) -> None:
        if queues[symbol]:
            seq, cmd = queues[symbol].popleft()
            risk.settle(books[symbol].apply(seq, cmd))
        for (acct, asset), (avail, locked) in risk.balances.items():
            assert avail >= 0 and locked >= 0, (acct, asset, avail, locked)

    for account in ACCOUNTS:
        for asset, amount in INITIAL.items():
            sequence(Transfer(account, asset, amount, f"{account}:{asset}"))
    steps = iter(order)
    for item in stream:
        for _ in range(next(steps, 0)):  # matching runs a few steps, in whichever symbol's order
            drain_one(SYMBOLS[next(steps, 0) % 2])
        cmd = command_of(item, books, journal)
        if cmd is not None:
            sequence(cmd)
    for symbol in SYMBOLS:
        while queues[symbol]:
            drain_one(symbol)

    replay = Engine(INSTRUMENTS)
    for seq, cmd in enumerate(journal, 1):
        replay.apply(seq, cmd)
        for (acct, asset), (avail, locked) in replay.risk.balances.items():
            assert avail >= 0 and locked >= 0, ("replay", seq, acct, asset, avail, locked)
    assert replay.state_hash() == live.state_hash()
    # Each account's count of open orders is what its books hold (resting, pending stops),
    # live, replayed, and restored from a snapshot's state.
    open_now = Counter(o.owner for book in books.values() for o in [*book.resting(), *book.pending()])
    restored = Risk(INSTRUMENTS)
    restored.load(live.risk.state())
    for r in (live.risk, replay.risk, restored):
        assert {a: n for a, n in r.open_orders.items() if n} == open_now
    rows, holds, _ = live.risk.state()
    assert {a: t for a, t in totals(rows).items() if t} == {a: t for a, t in deposits.items() if t}
    # Locked is exactly what the open orders need.
    locked: dict[tuple[str, str], int] = {}
    for book in books.values():
        inst = book.instrument
        for o in [*book.resting(), *book.pending()]:  # a pending stop-market BUY: its budget; an iceberg: all of it
            leaves = o.leaves + o.hidden
            bought = leaves * o.price if o.price is not None else o.budget or 0
            key, amount = (
                ((o.owner, inst.quote), bought * inst.quote_per_lot_tick)
                if o.side is Side.BUY else ((o.owner, inst.base), leaves * inst.base_per_lot)
            )  # fmt: skip
            locked[key] = locked.get(key, 0) + amount
    for book in books.values():  # an OCO pair paying with one asset locks what its larger order needs
        inst = book.instrument
        for o in [*book.resting(), *book.pending()]:
            other = None if o.oco is None or o.oco > o.order_id else book.order(o.oco)
            if other is not None and other.side is o.side:
                asset = inst.quote if o.side is Side.BUY else inst.base

                locked[(o.owner, asset)] -= min(need_of_order(o, inst), need_of_order(other, inst))
    assert {(acct, asset): lk for acct, asset, _, lk in rows if lk} == {k: v for k, v in locked.items() if v}


def test_a_snapshot_leaves_out_what_was_held_for_commands_not_yet_durable() -> None:
    journal: list[Command] = [
        Transfer("alice", "USD", 1_000_000 * CENT, "d1"),
        Transfer("alice", "AAPL", 100, "d2"),
        NewOrder("AAPL", Side.BUY, 10, 15000, TIF.GTC, "alice"),
        NewOrder("AAPL", Side.SELL, 5, 16000, TIF.GTC, "alice"),
    ]
    live = Engine(INSTRUMENTS)
    risk = live.risk
    for seq, cmd in enumerate(journal, 1):  # durable and matched, as the server does it
        assert risk.hold(seq, cmd) is None
        if not isinstance(cmd, Transfer):
            risk.settle(live.books[cmd.symbol].apply(seq, cmd))
    # Appended after the last durable seq (4): held, not matched yet.
    assert risk.hold(5, NewOrder("AAPL", Side.BUY, 3, 14000, TIF.GTC, "alice")) is None
    assert risk.hold(6, Replace("AAPL", 3, 20, 15100, "alice")) is None
    assert risk.hold(7, Transfer("alice", "USD", -1_000 * CENT, "w1")) is None
    replay = Engine(INSTRUMENTS)
    for seq, cmd in enumerate(journal, 1):
        replay.apply(seq, cmd)
    assert risk.state(through=4) == replay.risk.state()
    assert risk.state(through=4) != risk.state()
