"""Per-symbol matching tasks: each owns one Book and applies its commands in journal order.

The task only moves commands from its inbox through Book.apply (which never awaits) and
hands the resulting events to the sinks it was given (execution reports, trades, market
data), one call per drained batch so that downstream work is batched too.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable

from exchange.book import Book
from protocol.messages import Command, Event

Sink = Callable[[list[Event]], None]
# Commands applied before the task yields to the event loop: long enough to batch the
# sinks' work, short enough that sockets are served within a few milliseconds.
DRAIN_SLICE = 2_000


class SymbolMatcher:
    def __init__(self, book: Book, sinks: list[Sink]) -> None:
        self.book = book
        self.sinks = sinks
        self.inbox: deque[tuple[int, Command]] = deque()
        self.applied_seq = 0  # the last journal sequence applied to this book
        self._wake = asyncio.Event()
        self._stopping = False

    def submit(self, seq: int, cmd: Command) -> None:
        self.inbox.append((seq, cmd))
        self._wake.set()

    async def run(self) -> None:
        inbox, apply = self.inbox, self.book.apply
        while True:
            await self._wake.wait()
            self._wake.clear()
            while inbox:
                events: list[Event] = []
                for _ in range(min(len(inbox), DRAIN_SLICE)):
                    seq, cmd = inbox.popleft()
                    events += apply(seq, cmd)
                    self.applied_seq = seq
                for sink in self.sinks:
                    sink(events)
                if inbox:
                    await asyncio.sleep(0)
            if self._stopping:
                return

    def stop(self) -> None:
        """Finish what is in the inbox, then end run()."""
        self._stopping = True
        self._wake.set()
