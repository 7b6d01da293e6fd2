"""`python -m tests.faulty_server serve ...`: `tickline serve` whose books raise on an order
with client id `boom`, a stand-in for a bug in matching (tests/test_recovery.py)."""

from __future__ import annotations

from typing import Any

from exchange.book import Book
from tickline.cli import main

_apply = Book.apply


def _apply_or_fail(self: Book, seq: int, cmd: Any) -> Any:
    if getattr(cmd, "client_id", None) == "boom":
        raise KeyError("boom")
    return _apply(self, seq, cmd)


Book.apply = _apply_or_fail  # type: ignore[method-assign]

if __name__ == "__main__":
    raise SystemExit(main())
