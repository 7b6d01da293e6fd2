"""A cluster risk shard's snapshot keeps the commands that wait for a settlement (a new
order whose owner was shown a fill or cancel not settled there yet): a shard restarted
from it decides them, in the same order, when that settlement comes."""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path

import pytest

import cluster.snapshots as snapshots
from cluster.risk_shard import RiskShard, Waiting
from cluster.wire import Layout
from exchange.book import Book
from exchange.instruments import load_instruments
from exchange.risk import Risk
from protocol.messages import TIF, Cancel, NewOrder, Side, Transfer

INSTRUMENTS = load_instruments()


def test_what_waits_for_a_settlement_is_in_the_snapshot_and_back_after_a_restart(tmp_path: Path) -> None:
    shard = RiskShard(None, None, 0, Layout(), INSTRUMENTS, tmp_path / "risk-0", every=1)
    shard.reader.applied, shard.accepted, shard.settled_through = 77, 5, {0: 70}
    shard.waiting = {
        "t2": deque([Waiting("g0x1", 9, NewOrder("AAPL", Side.BUY, 3, 15_000, TIF.GTC, "t2", client_id="a"), 123, {0: 75}),
                     Waiting("g0x1", 10, Cancel("AAPL", 4, "t2"), 124, None)]),
        "t1": deque([Waiting("g1x2", 3, NewOrder("AAPL", Side.SELL, 1, 15_100, TIF.GTC, "t1"), 125, {0: 76, 1: 4})]),
    }  # fmt: skip

    async def snapshot() -> None:
        shard.snapshot_if_due(1)
        assert shard.snapshots is not None and shard.snapshots.writing is not None
        await shard.snapshots.writing

    asyncio.run(snapshot())
    again = RiskShard(None, None, 0, Layout(), INSTRUMENTS, tmp_path / "risk-0", every=1)
    assert (again.applied, again.accepted, again.settled_through) == (77, 5, {0: 70})
    assert list(again.waiting) == ["t2", "t1"] and again.waiting == shard.waiting


def test_the_snapshot_keeps_the_settlements_seen_when_it_was_taken_not_when_it_was_written(tmp_path: Path) -> None:
    """A snapshot is written in a thread while the shard goes on: settlements applied after
    it was taken must not be in it. (They were, the dict being shared: a shard restarted
    from it let orders that waited go ahead earlier, numbered them differently from the
    engine's fills, and died at the first fill of an order it did not know: KeyError.)"""
    shard = RiskShard(None, None, 0, Layout(), INSTRUMENTS, tmp_path / "risk-0", every=1)
    shard.reader.applied, shard.accepted, shard.settled_through = 77, 5, {0: 70}

    async def snapshot_then_settle_more() -> None:
        shard.snapshot_if_due(1)
        shard.settled_through[0] = 90  # the next batch, applied while the snapshot is being written
        assert shard.snapshots is not None and shard.snapshots.writing is not None
        await shard.snapshots.writing

    asyncio.run(snapshot_then_settle_more())
    again = RiskShard(None, None, 0, Layout(), INSTRUMENTS, tmp_path / "risk-0", every=1)
    assert (again.applied, again.settled_through) == (77, {0: 70})


@pytest.mark.parametrize("fork", [True, False], ids=["forked child", "on the loop (no fork)"])
def test_a_role_snapshot_holds_the_books_and_holds_of_the_moment_it_was_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fork: bool) -> None:
    """A shard's or gateway's snapshot is made by a forked child (or, where the system cannot
    fork, copied on the loop) while the role goes on: what it applies after take() is not in it."""
    if not fork:
        monkeypatch.setattr(snapshots.forked, "start", lambda work: None)
    book, risk = Book(INSTRUMENTS["AAPL"]), Risk(INSTRUMENTS)
    for seq, owner in ((1, "t1"), (2, "t2")):
        risk.hold(seq, Transfer(owner, "USD", 10**12, f"{owner}-usd"))
        risk.hold(seq + 2, Transfer(owner, "AAPL", 10**6, f"{owner}-aapl"))

    def order(seq: int, side: Side, qty: int, price: int, owner: str) -> None:
        cmd = NewOrder("AAPL", side, qty, price, TIF.GTC, owner)
        assert risk.hold(seq, cmd) is None
        risk.settle(book.apply(seq, cmd))

    order(5, Side.BUY, 10, 15_000, "t1")
    order(6, Side.SELL, 4, 15_100, "t2")
    taken = (book.state_hash(), risk.state_hash())
    roles = snapshots.RoleSnapshots(tmp_path / "engine-0", INSTRUMENTS, 1)

    async def take_then_go_on() -> None:
        roles.take(6, {"AAPL": book}, risk, {"given": 6})
        order(7, Side.SELL, 3, 15_000, "t2")  # trades with t1's bid, while the snapshot is being made
        assert roles.writing is not None
        await roles.writing

    asyncio.run(take_then_go_on())
    loaded = roles.load()
    assert loaded is not None
    seq, engine, extra = loaded
    assert (seq, extra) == (6, {"given": 6})
    assert (engine.books["AAPL"].state_hash(), engine.risk.state_hash()) == taken != (book.state_hash(), risk.state_hash())
