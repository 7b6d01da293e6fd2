"""Books applied from the stream: what an engine shard matches and what every reader of
market state keeps (gateways for BOOK, ORDERS and reports; notifiers; the trade log).

Matching is deterministic, so applying the same orders.<engine>.> messages in the
stream's order gives every process the same books, events, trade ids and market-data
sequence numbers as the engine shard itself, without the events being published twice.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, cast

from cluster.snapshots import RoleSnapshots
from cluster.stream import Input, Reader, last_message
from cluster.wire import Sequenced, decode_sequenced
from exchange.book import Book
from exchange.instruments import Instrument
from protocol.messages import Event, OrderCommand

# (the input message, its commands as sequenced, the events they made), per input message
OnApplied = Callable[[Input, Sequenced, list[Event]], None]


class Replica:
    def __init__(
        self, js: Any, instruments: dict[str, Instrument], subject: str = "orders.>", snapshots: RoleSnapshots | None = None, market_data: bool = True
    ) -> None:
        """market_data False: its books make no BookLevelChanged or Quote events (exchange/book.py)."""
        self.js, self.subject, self.snapshots = js, subject, snapshots
        self.books: dict[str, Book] = {symbol: Book(inst, market_data) for symbol, inst in sorted(instruments.items())}
        self.reader = Reader(js, subject)
        self.applied = 0  # the last input message applied
        self.through = 0  # the input's last message when reading started
        self.caught_up = asyncio.Event()  # set once that one is applied: the state is current
        self.replayed = 0  # commands applied before caught_up (after the snapshot, if one was loaded)
        loaded = snapshots.load() if snapshots is not None else None
        if loaded is not None:  # (before anything reads the books: a gateway's desk indexes them)
            self.applied, engine, _ = loaded
            for book in engine.books.values():
                book.market_data = market_data
            self.books.update(engine.books)

    async def start(self) -> int:
        """Start reading (after the snapshot, if one was loaded); returns the stream sequence
        to have applied to be caught up."""
        last = await last_message(self.js, self.subject)
        self.through = 0 if last is None else int(last.seq)
        if self.through <= self.applied:
            self.caught_up.set()
        await self.reader.start(after=self.applied)
        return self.through

    def apply(self, inp: Input) -> tuple[Sequenced, list[Event]]:
        s = decode_sequenced(inp.data)
        books = self.books
        events: list[Event] = []
        for seq, cmd in zip(s.seqs, s.cmds, strict=True):
            events += books[cast(OrderCommand, cmd).symbol].apply(seq, cmd)
        self.applied = inp.seq
        if not self.caught_up.is_set():
            self.replayed += len(s.seqs)
            if inp.seq >= self.through:
                self.caught_up.set()
        if self.snapshots is not None:
            self.snapshots.applied(len(s.seqs))
        return s, events

    def snapshot_if_due(self, before_write: Callable[[], Awaitable[None]] | None = None) -> None:
        """After a batch: the books as applied through now, every so many commands."""
        if self.snapshots is not None and self.snapshots.due():
            self.snapshots.take(self.applied, self.books, None, {}, before_write)

    async def follow(self, on_applied: OnApplied, after_batch: Callable[[], None] = lambda: None) -> None:
        """Apply every message as it comes, forever; after_batch once per batch."""
        while True:
            for inp in await self.reader.batch():
                on_applied(inp, *self.apply(inp))
            after_batch()
            self.snapshot_if_due()
