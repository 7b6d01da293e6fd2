"""What risk locks for one open order (exchange/risk.py).

A module of its own because exchange/risk.py is compiled with mypyc (`make native`), and
mypyc drops a msgspec Struct's class options (gc=False here) in a module it compiles."""

from __future__ import annotations

import msgspec

from exchange.instruments import Instrument


class Hold(msgspec.Struct, gc=False):
    """What is locked for one open order: `held` units of the asset it pays with, whose
    balance (`bal`, the account's [available, locked] list) it keeps a reference to.

    A Struct, not a class with __init__: one is made per order, and a Struct is made in C
    (~4x faster here); gc=False: it refers to no object that could refer back to it."""

    account: str
    asset: str
    held: int
    price: int | None
    buy: bool
    inst: Instrument
    unit: int  # what one lot x tick (a BUY) or one lot (a SELL) locks
    bal: list[int]
    got: list[int] | None = None  # the balance of what it receives, once it first trades
    # The second order of an OCO pair paying with the same asset locks only what it needs
    # beyond the first's lock (the pair never both trade); this is the first's id until it
    # trades and takes that lock over.
    oco: int | None = None
