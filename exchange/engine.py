"""The matching core for all symbols, in one piece: each command's hold, its book, its
settlement, in journal order. Replay, verification and tests use it; the server runs the
same three steps split up (hold at the gateway, one matching task per symbol, settle as
the first of matching's sinks).
"""

from __future__ import annotations

import hashlib
from typing import Iterable, cast

from exchange.book import Book
from exchange.instruments import Instrument, MissingInstrument
from exchange.risk import Risk
from protocol.messages import Command, Event, OrderCommand, Transfer


class Engine:
    def __init__(self, instruments: dict[str, Instrument]) -> None:
        self.instruments = instruments
        self.books: dict[str, Book] = {symbol: Book(inst) for symbol, inst in sorted(instruments.items())}
        self.risk = Risk(instruments)

    def apply(self, seq: int, cmd: Command) -> list[Event]:
        if type(cmd) is Transfer:
            self.risk.hold(seq, cmd, replay=True)
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
        self.risk.hold(seq, cmd, replay=True)
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
