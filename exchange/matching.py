"""Per-symbol matching queues: each owns one Book and applies its commands in journal order.

No event loop here: a SymbolMatcher is given a `schedule` callable (the composition root
passes loop.call_soon) and asks it to run `drain` when its queue stops being empty, so
each symbol's work runs as its own step of the loop, after whatever queued it. `drain`
moves commands through Book.apply (which never awaits) and hands the events to the sinks
it was given (execution reports, trade log, market data), one call per drained batch so
that downstream work is batched too.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from exchange.book import Book
from protocol.messages import Command, Event

Sink = Callable[[list[Event]], None]
Schedule = Callable[[Callable[[], None]], object]
# Commands applied per step: long enough to batch the sinks' work, short enough that
# sockets are served within a few milliseconds (the rest goes in the next step).
DRAIN_SLICE = 2_000


class SymbolMatcher:
    def __init__(self, book: Book, sinks: list[Sink], schedule: Schedule) -> None:
        self.book = book
        self.sinks = sinks
        self.schedule = schedule
        self.inbox: deque[tuple[int, Command]] = deque()
        self.applied_seq = 0  # the last journal sequence applied to this book
        self._scheduled = False

    def submit(self, seq: int, cmd: Command) -> None:
        self.inbox.append((seq, cmd))
        if not self._scheduled:
            self._scheduled = True
            self.schedule(self.drain)

    def drain(self) -> None:
        """Apply up to DRAIN_SLICE queued commands; schedule another step if more remain."""
        self._scheduled = False
        inbox, apply = self.inbox, self.book.apply
        events: list[Event] = []
        for _ in range(min(len(inbox), DRAIN_SLICE)):
            seq, cmd = inbox.popleft()
            events += apply(seq, cmd)
            self.applied_seq = seq
        for sink in self.sinks:
            sink(events)
        if inbox and not self._scheduled:
            self._scheduled = True
            self.schedule(self.drain)

    def drain_all(self) -> None:
        """Apply everything queued now (shutdown)."""
        while self.inbox:
            self.drain()
