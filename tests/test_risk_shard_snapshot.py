"""A cluster risk shard's snapshot keeps the commands that wait for a settlement (a new
order whose owner was shown a fill or cancel not settled there yet): a shard restarted
from it decides them, in the same order, when that settlement comes."""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path

from cluster.risk_shard import RiskShard, Waiting
from cluster.wire import Layout
from exchange.instruments import load_instruments
from protocol.messages import TIF, Cancel, NewOrder, Side

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
