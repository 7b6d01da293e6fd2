"""Instruments: tick and lot sizes, exact decimal <-> integer conversion, static checks.

A price is carried as an integer count of ticks and a quantity as a count of lots.
Conversion from text is exact: "150.255" on a 0.01 tick is refused, never rounded.
No floats anywhere: the decimal string is split into digits and scaled as integers.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from protocol.messages import Problem, RejectReason
from protocol.text import clip

# ASCII digits only: str.isdigit() and int() accept other scripts' digits, which we refuse.
_DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]+))?", re.ASCII)
MAX_TEXT = 24  # characters in a price or quantity; anything longer is refused unread
MAX_STEPS = 10**15  # the largest count of ticks or lots an order may carry


_UNSEEN = -2  # not a count(): those are None, -1 or positive
CACHE_SIZE = 65_536  # distinct texts remembered per step; prices and sizes repeat a lot


class Step:
    """A positive decimal increment (a tick or a lot) and counting in units of it.

    count() and format() are on every order's path, and a market quotes the same few
    thousand prices and sizes over and over: both keep a bounded memo (cleared when full).
    """

    __slots__ = ("text", "decimals", "units", "_pow", "_counted", "_formatted")

    def __init__(self, text: str) -> None:
        match = _DECIMAL.fullmatch(text)
        if match is None:
            raise ValueError(f"step {text!r} is not a positive decimal")
        whole, frac = match.group(1), (match.group(2) or "").rstrip("0")
        self.text = text
        self.decimals = len(frac)
        self._pow = 10**self.decimals
        self.units = int(whole) * self._pow + (int(frac) if frac else 0)
        if self.units <= 0:
            raise ValueError(f"step {text!r} must be positive")
        self._counted: dict[str, int | None] = {}
        self._formatted: dict[int, str] = {}

    def count(self, text: str) -> int | None:
        """Exact count of steps in text; -1 if off the step; None if not a positive decimal."""
        steps = self._counted.get(text, _UNSEEN)  # None is a valid answer
        if steps != _UNSEEN:
            return steps
        steps = self._count(text)
        if len(self._counted) >= CACHE_SIZE:
            self._counted.clear()
        self._counted[text] = steps
        return steps

    def _count(self, text: str) -> int | None:
        if len(text) > MAX_TEXT:
            return None
        match = _DECIMAL.fullmatch(text)
        if match is None:
            return None
        whole, frac = match.group(1), match.group(2) or ""
        extra = frac[self.decimals :]
        if extra.strip("0"):
            return -1  # digits finer than the step's decimals
        frac = frac[: self.decimals].ljust(self.decimals, "0")
        units = int(whole) * self._pow + (int(frac) if frac else 0)
        steps, rem = divmod(units, self.units)
        if rem:
            return -1
        if steps <= 0 or steps > MAX_STEPS:
            return None
        return steps

    def format(self, steps: int) -> str:
        """Canonical text: always exactly the step's number of decimals."""
        text = self._formatted.get(steps)
        if text is not None:
            return text
        units = steps * self.units
        if not self.decimals:
            text = str(units)
        else:
            whole, frac = divmod(units, self._pow)
            text = f"{whole}.{frac:0{self.decimals}d}"
        if len(self._formatted) >= CACHE_SIZE:
            self._formatted.clear()
        self._formatted[steps] = text
        return text


class MissingInstrument(Exception):
    """The journal or a snapshot names a symbol the instruments file no longer has."""


class InstrumentSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One instrument as written in the instruments TOML file (all decimal strings)."""

    tick: str
    lot: str
    min_qty: str | None = None
    max_qty: str | None = None
    min_price: str | None = None
    max_price: str | None = None


class InstrumentsFile(msgspec.Struct, forbid_unknown_fields=True):
    instruments: dict[str, InstrumentSpec]


class Instrument:
    """A tradable symbol with its tick, lot, quantity limits and price band (as integers)."""

    __slots__ = ("symbol", "tick", "lot", "min_qty", "max_qty", "min_price", "max_price")

    def __init__(self, symbol: str, spec: InstrumentSpec) -> None:
        self.symbol = symbol
        self.tick = Step(spec.tick)
        self.lot = Step(spec.lot)
        self.min_qty = self._limit(self.lot, spec.min_qty, 1)
        self.max_qty = self._limit(self.lot, spec.max_qty, MAX_STEPS)
        self.min_price = self._limit(self.tick, spec.min_price, 1)
        self.max_price = self._limit(self.tick, spec.max_price, MAX_STEPS)

    @staticmethod
    def _limit(step: Step, text: str | None, default: int) -> int:
        if text is None:
            return default
        steps = step.count(text)
        if steps is None or steps < 0:
            raise ValueError(f"limit {text!r} is not a positive multiple of {step.text}")
        return steps

    # ---- text -> integers (the gateway's job, before anything is journaled)

    def parse_qty(self, text: str) -> int | Problem:
        lots = self.lot.count(text)
        if lots is None:
            return Problem(RejectReason.BAD_QTY, f"quantity {clip(text)} is not a positive decimal number")
        if lots < 0:
            return Problem(RejectReason.BAD_LOT, f"quantity {clip(text)} is not a multiple of the lot {self.lot.text}")
        return lots

    def parse_price(self, text: str) -> int | Problem:
        ticks = self.tick.count(text)
        if ticks is None:
            return Problem(RejectReason.BAD_PRICE, f"price {clip(text)} is not a positive decimal number")
        if ticks < 0:
            return Problem(RejectReason.BAD_TICK, f"price {clip(text)} is not on the tick {self.tick.text}")
        return ticks

    # ---- integer checks (also applied by the matching core, so replay is self-contained)

    def check(self, qty: int, price: int | None) -> Problem | None:
        if qty < self.min_qty or qty > self.max_qty:
            return Problem(
                RejectReason.QTY_RANGE,
                f"quantity {self.format_qty(qty)} is outside {self.format_qty(self.min_qty)}..{self.format_qty(self.max_qty)}",
            )
        if price is not None and (price < self.min_price or price > self.max_price):
            return Problem(
                RejectReason.PRICE_BAND,
                f"price {self.format_price(price)} is outside the band {self.format_price(self.min_price)}..{self.format_price(self.max_price)}",
            )
        return None

    def format_qty(self, lots: int) -> str:
        return self.lot.format(lots)

    def format_price(self, ticks: int) -> str:
        return self.tick.format(ticks)


# An equity, a crypto pair, a future and an FX pair: the engine is asset-agnostic.
DEFAULT_INSTRUMENTS_TOML = """\
[instruments.AAPL]
tick = "0.01"
lot = "1"
max_qty = "1000000"

[instruments.BTC-USD]
tick = "0.01"
lot = "0.00001"
max_qty = "1000"

[instruments.ES]
tick = "0.25"
lot = "1"
max_qty = "10000"

[instruments.EUR-USD]
tick = "0.00001"
lot = "1000"
min_qty = "1000"
max_qty = "100000000"
"""


SYMBOL = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,15}", re.ASCII)


def parse_instruments(toml_text: str | bytes) -> dict[str, Instrument]:
    spec = msgspec.toml.decode(toml_text, type=InstrumentsFile)
    for symbol in spec.instruments:
        if not SYMBOL.fullmatch(symbol):
            raise ValueError(f"symbol {symbol!r}: use 1-16 of A-Z 0-9 . _ -, starting with a letter or digit")
    return {symbol: Instrument(symbol, s) for symbol, s in sorted(spec.instruments.items())}


class InstrumentsFileError(Exception):
    """The instruments file is missing or wrong."""


def load_instruments(path: str | Path | None = None) -> dict[str, Instrument]:
    """The instruments from a TOML file, or the built-in default set."""
    if path is None:
        return parse_instruments(DEFAULT_INSTRUMENTS_TOML)
    try:
        return parse_instruments(Path(path).read_bytes())
    except (OSError, ValueError) as exc:  # msgspec's decode and validation errors are ValueErrors
        raise InstrumentsFileError(f"instruments file {path}: {exc}") from None
