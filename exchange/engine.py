"""The matching core for all symbols: routes each command to its symbol's book.

The server runs one matching task per symbol, each owning one Book; this class is the
same thing in one piece, for replay, verification and tests.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

from exchange.book import Book
from exchange.instruments import Instrument, MissingInstrument
from protocol.messages import Command, Event


class Engine:
    def __init__(self, instruments: dict[str, Instrument]) -> None:
        self.instruments = instruments
        self.books: dict[str, Book] = {symbol: Book(inst) for symbol, inst in sorted(instruments.items())}

    def apply(self, seq: int, cmd: Command) -> list[Event]:
        book = self.books.get(cmd.symbol)
        if book is None:
            # The gateway journals only known symbols: the instruments file lost one since.
            # Replaying on would rewrite history (its orders rejected), so refuse.
            raise MissingInstrument(
                f"journal command {seq} trades {cmd.symbol}, which the instruments file does not define; "
                "restore it there (an instrument cannot be removed while the journal holds its orders)"
            )
        return book.apply(seq, cmd)

    def state_hash(self) -> str:
        return combine_hashes(self.books[symbol].state_hash() for symbol in sorted(self.books))


def combine_hashes(book_hashes: Iterable[str]) -> str:
    """The engine's state hash from its books' hashes, in symbol order."""
    h = hashlib.blake2b(digest_size=16)
    for book_hash in book_hashes:
        h.update(book_hash.encode())
    return h.hexdigest()
