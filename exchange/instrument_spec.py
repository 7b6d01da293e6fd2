"""An instruments file as written (decimal strings): msgspec Structs, in a module of their
own so that exchange/instruments.py can be compiled (mypyc drops a Struct's class options)."""

from __future__ import annotations

import msgspec


class InstrumentSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One instrument as written in the instruments TOML file (all decimal strings)."""

    tick: str
    lot: str
    min_qty: str | None = None
    max_qty: str | None = None
    min_price: str | None = None
    max_price: str | None = None
    base: str | None = None  # what is bought; default: the symbol's part before "-", or the symbol
    quote: str | None = None  # what it is paid in; default: the part after "-", or USD
    maker_fee_bps: int = 0  # fee on what the maker receives, in 1/100 of a percent
    taker_fee_bps: int = 0  # fee on what the taker receives
    stop_collar_bps: int = 500  # a stop-market BUY locks qty x trigger x (1 + this / 10,000) and never spends more


class InstrumentsFile(msgspec.Struct, forbid_unknown_fields=True):
    instruments: dict[str, InstrumentSpec]
    # Each asset's smallest unit ("0.01": cents). An asset not listed gets the coarsest unit
    # that counts every lot and every lot x tick exactly; list it to pin it, since balances
    # are kept in these units.
    assets: dict[str, str] = {}
