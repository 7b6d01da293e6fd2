"""The core's three stages in one piece, in journal order: the sequencer's hold (replayed:
accepted when it was recorded), the symbol's book (matching), the settlement of what it
produced. Replay, verification and tests use it; `tickline serve` runs the same objects
split up (the sequencer at the gateway, one matching queue per symbol, settlement as the
first of matching's sinks), a cluster runs them as roles (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import hashlib
from typing import Iterable, cast

from exchange.book import Book
from exchange.instruments import Instrument, MissingInstrument
from exchange.risk import Risk
from exchange.sequencer import Sequencer
from protocol.messages import Command, Event, OrderCommand, Transfer


class Engine:
    def __init__(self, instruments: dict[str, Instrument]) -> None:
        self.instruments = instruments
        self.books: dict[str, Book] = {symbol: Book(inst) for symbol, inst in sorted(instruments.items())}
        self.risk = Risk(instruments)  # the settler: money moved by fills, cancels, replaces
        self.sequencer = Sequencer(self.risk)  # replays what was sequenced (holds, transfer refs)

    def apply(self, seq: int, cmd: Command) -> list[Event]:
        if type(cmd) is Transfer:
            self.sequencer.replay(seq, cmd)
            return []
        symbol = cast(OrderCommand, cmd).symbol  # type() is, then a cast: isinstance on a Struct is slow
        book = self.books.get(symbol)
        if book is None:
            # The gateway journals only known symbols: the instruments file lost one since.
            # Replaying on would rewrite history (its orders rejected), so refuse.
            raise MissingInstrument(
                f"journal command {seq} trades {symbol}, which the instruments file does not define; "
                "restore it there (an instrument cannot be removed while the journal holds its orders)"
            )
        self.sequencer.replay(seq, cmd)
        events = book.apply(seq, cmd)
        self.risk.settle(events)
        return events

    def state_hash(self) -> str:
        return combine_hashes([*(self.books[symbol].state_hash() for symbol in sorted(self.books)), self.risk.state_hash()])


def combine_hashes(hashes: Iterable[str]) -> str:
    """The engine's state hash from its books' hashes, in symbol order, then the balances'."""
    h = hashlib.blake2b(digest_size=16)
    for part in hashes:
        h.update(part.encode())
    return h.hexdigest()
