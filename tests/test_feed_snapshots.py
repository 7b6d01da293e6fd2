"""A cluster notifier's snapshots (cluster/snapshots.py StateSnapshots): its feeds at a stream sequence.
A feed restored from one must go on exactly as the feed it was taken from: the same
SNAPSHOT and QUOTE, and the same prev links on the next updates. So must a feed that
followed the market with nobody subscribed (the server's, then)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from cluster.snapshots import StateSnapshots, kept_snapshots
from exchange.book import Book
from exchange.instruments import load_instruments
from notifier.feed import SymbolFeed
from protocol.messages import MARKET_DATA, TIF, Event, NewOrder, Side

INSTRUMENTS = load_instruments()
AAPL = INSTRUMENTS["AAPL"]


def orders(seed: int, n: int) -> list[NewOrder]:
    rng = random.Random(seed)
    return [NewOrder("AAPL", rng.choice([Side.BUY, Side.SELL]), rng.randint(1, 9), 15_000 + rng.randint(-20, 20), TIF.GTC, f"o{rng.randint(1, 5)}") for _ in range(n)]


def follow(feed: SymbolFeed, events: list[Event]) -> list[bytes]:
    """The text lines of the updates the events make, as sent."""
    for e in events:
        if isinstance(e, MARKET_DATA):
            feed.follow(e)
    lines = [u.text for u in feed.pending]
    feed.pending.clear()
    return lines


def test_a_feed_restored_from_its_snapshot_goes_on_exactly_as_the_one_it_was_taken_from(tmp_path: Path) -> None:
    book = Book(AAPL)
    feed = SymbolFeed.of_book(Book(AAPL))
    first = [e for seq, cmd in enumerate(orders(1, 300), start=1) for e in book.apply(seq, cmd)]
    assert follow(feed, first)
    snapshots = StateSnapshots(tmp_path / "notifier-0", every=1, kind="feeds")

    async def take() -> None:
        snapshots.take(1234, {"AAPL": feed.state()})
        assert snapshots.writing is not None
        await snapshots.writing

    asyncio.run(take())
    loaded = StateSnapshots(tmp_path / "notifier-0", every=1, kind="feeds").load()
    assert loaded is not None and loaded[0] == 1234
    restored = SymbolFeed(AAPL, loaded[1]["AAPL"])
    assert restored.snapshot(False) == feed.snapshot(False) and restored.snapshot(True) == feed.snapshot(True)
    assert restored.current_quote(False) == feed.current_quote(False)
    later = [e for seq, cmd in enumerate(orders(2, 300), start=301) for e in book.apply(seq, cmd)]
    assert follow(restored, later) == follow(feed, later)  # every seq and prev
    assert restored.state() == feed.state()


def test_a_damaged_newest_snapshot_is_skipped_for_the_older_and_two_are_kept(tmp_path: Path) -> None:
    directory = tmp_path / "notifier-0"
    snapshots = StateSnapshots(directory, every=1, kind="feeds")
    feed = SymbolFeed.of_book(Book(AAPL))
    book = Book(AAPL)

    async def take_three() -> None:
        for n in range(3):
            follow(feed, [e for seq, cmd in enumerate(orders(n, 50), start=1 + 50 * n) for e in book.apply(seq, cmd)])
            snapshots.take(100 * (n + 1), {"AAPL": feed.state()})
            assert snapshots.writing is not None
            await snapshots.writing

    asyncio.run(take_three())
    assert sorted(kept_snapshots(directory)) == [200, 300]  # (what `cluster compact` counts on)
    newest = directory / f"feeds-{300:020d}.msgpack"
    data = bytearray(newest.read_bytes())
    data[-3] ^= 0xFF
    newest.write_bytes(bytes(data))
    loaded = StateSnapshots(directory, every=1, kind="feeds").load()
    assert loaded is not None and loaded[0] == 200


def test_a_feed_followed_with_nobody_subscribed_goes_on_exactly_as_one_that_sent_everything() -> None:
    """With no subscriber the server's feeds keep only the state and the recent trades
    (notifier/server.py): the first subscriber after that must get the same SNAPSHOT,
    QUOTE, REPLAY from memory and prev links as if every update had been sent."""
    book = Book(AAPL)
    sent, quiet = SymbolFeed.of_book(Book(AAPL)), SymbolFeed.of_book(Book(AAPL))
    first = [e for seq, cmd in enumerate(orders(3, 300), start=1) for e in book.apply(seq, cmd)]
    assert follow(sent, first)
    for e in first:
        if isinstance(e, MARKET_DATA):
            quiet.follow(e, False)
    assert quiet.pending == [] and quiet.state() == sent.state()
    assert quiet.snapshot(False) == sent.snapshot(False) and quiet.current_quote(False) == sent.current_quote(False)
    assert [u.text for u in quiet.recent] == [u.text for u in sent.recent] and quiet.recent
    later = [e for seq, cmd in enumerate(orders(4, 300), start=301) for e in book.apply(seq, cmd)]
    assert follow(quiet, later) == follow(sent, later)  # every seq and prev
