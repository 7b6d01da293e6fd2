"""Books applied from the stream: what an engine shard matches, and what the gateways (BOOK,
ORDERS and their owners' reports) keep of every engine shard.

Matching is deterministic, so applying the same orders.<engine>.> messages in the
stream's order gives every process the same books, events and trade ids as the engine
shard itself. (What the notifiers and the trade log need is published by the engine
shard, on md.<engine> and reports.<engine>: they keep no books.)
"""

from __future__ import annotations

from typing import Any, Callable, cast

from cluster.snapshots import RoleSnapshots
from cluster.stream import Input, Tail
from cluster.wire import Sequenced, decode_sequenced
from exchange.book import Book
from exchange.instruments import Instrument
from protocol.messages import Event, OrderCommand

# (the input message, its commands as sequenced, the events they made), per input message
OnApplied = Callable[[Input, Sequenced, list[Event]], None]


class Replica(Tail):
    def __init__(
        self, js: Any, instruments: dict[str, Instrument], subject: str = "orders.>", snapshots: RoleSnapshots | None = None, market_data: bool = True
    ) -> None:
        """market_data False: its books make no BookLevelChanged or Quote events (exchange/book.py)."""
        super().__init__(js, subject)
        self.snapshots = snapshots
        self.books: dict[str, Book] = {symbol: Book(inst, market_data) for symbol, inst in sorted(instruments.items())}
        self.extra: dict[str, Any] = {}  # its owner's own state at the snapshot (JSON), as extra_of gave it
        self.extra_of: Callable[[], dict[str, Any]] = dict
        loaded = snapshots.load() if snapshots is not None else None
        if loaded is not None:  # (before anything reads the books: a gateway's desk indexes them)
            self.applied, engine, self.extra = loaded
            for book in engine.books.values():
                book.market_data = market_data
            self.books.update(engine.books)

    def apply(self, inp: Input) -> tuple[Sequenced, list[Event]]:
        s = decode_sequenced(inp.data)
        books = self.books
        events: list[Event] = []
        for seq, cmd in zip(s.seqs, s.cmds, strict=True):
            events += books[cast(OrderCommand, cmd).symbol].apply(seq, cmd)
        self.mark(inp.seq, len(s.seqs))
        if self.snapshots is not None:
            self.snapshots.applied(len(s.seqs))
        return s, events

    def snapshot_if_due(self) -> None:
        """After a batch: the books as applied through now, every so many commands."""
        if self.snapshots is not None and self.snapshots.due():
            self.snapshots.take(self.applied, self.books, None, self.extra_of())

    async def follow(self, on_applied: OnApplied, after_batch: Callable[[], None] = lambda: None) -> None:
        """Apply every message as it comes, forever; after_batch once per batch."""
        while True:
            for inp in await self.batch():
                on_applied(inp, *self.apply(inp))
            after_batch()
            self.snapshot_if_due()
