"""Instruments: tick and lot sizes, exact decimal <-> integer conversion, static checks.

A price is carried as an integer count of ticks and a quantity as a count of lots.
Conversion from text is exact: "150.255" on a 0.01 tick is refused, never rounded.
No floats anywhere: the decimal string is split into digits and scaled as integers.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from exchange.instrument_spec import InstrumentsFile, InstrumentSpec
from protocol.messages import Problem, Reason
from protocol.text import clip

# ASCII digits only: str.isdigit() and int() accept other scripts' digits, which we refuse.
_DECIMAL = re.compile(r"([0-9]+)(?:\.([0-9]+))?", re.ASCII)
MAX_TEXT = 24  # characters in a price or quantity; anything longer is refused unread
MAX_STEPS = 10**15  # the largest count of ticks or lots an order may carry
TOO_LARGE = -3  # Step.count: a positive decimal, on the step, of more than MAX_STEPS steps


_UNSEEN = -2  # not a count(): those are None, -1, TOO_LARGE or positive
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
        """Exact count of steps in text; -1 if off the step; TOO_LARGE past MAX_STEPS; None
        if not a positive decimal (or longer than MAX_TEXT)."""
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
        if steps <= 0:
            return None
        return TOO_LARGE if steps > MAX_STEPS else steps

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


def _not_a_number(text: str) -> str:
    return f"longer than {MAX_TEXT} characters" if len(text) > MAX_TEXT else "not a positive decimal number"


class MissingInstrument(Exception):
    """The journal or a snapshot names a symbol the instruments file no longer has."""


class Asset:
    """Something an account holds; balances count its smallest unit, as integers."""

    __slots__ = ("name", "unit")

    def __init__(self, name: str, unit: str) -> None:
        self.name = name
        self.unit = Step(unit)

    def format(self, units: int) -> str:
        if units < 0:  # never for a balance; said plainly if it ever is
            return "-" + self.unit.format(-units)
        return self.unit.format(units)

    def parse(self, text: str) -> int | None:
        """A positive amount in units, exactly; TOO_LARGE past MAX_STEPS units; None if not
        one (or finer than the unit)."""
        units = self.unit.count(text)
        return units if units is not None and (units > 0 or units == TOO_LARGE) else None


class Instrument:
    """A tradable symbol with its tick, lot, quantity limits and price band (as integers),
    its assets, and what a lot and a lot x tick are worth in them (see exchange/risk.py)."""

    __slots__ = (
        "symbol", "tick", "lot", "min_qty", "max_qty", "min_price", "max_price",
        "base", "quote", "base_asset", "quote_asset", "base_per_lot", "quote_per_lot_tick", "maker_fee_bps", "taker_fee_bps",
        "stop_collar_bps",
    )  # fmt: skip

    def __init__(self, symbol: str, spec: InstrumentSpec) -> None:
        self.symbol = symbol
        self.tick = Step(spec.tick)
        self.lot = Step(spec.lot)
        self.min_qty = self._limit(self.lot, spec.min_qty, 1)
        self.max_qty = self._limit(self.lot, spec.max_qty, MAX_STEPS)
        self.min_price = self._limit(self.tick, spec.min_price, 1)
        self.max_price = self._limit(self.tick, spec.max_price, MAX_STEPS)
        default_base, _, default_quote = symbol.partition("-")
        self.base = spec.base or default_base
        self.quote = spec.quote or default_quote or "USD"
        for bps in (spec.maker_fee_bps, spec.taker_fee_bps):
            if not 0 <= bps <= 10_000:
                raise ValueError(f"{symbol}: a fee is 0..10000 basis points, not {bps}")
        self.maker_fee_bps = spec.maker_fee_bps
        self.taker_fee_bps = spec.taker_fee_bps
        if not 0 <= spec.stop_collar_bps <= 100_000:
            raise ValueError(f"{symbol}: stop_collar_bps is 0..100000 basis points, not {spec.stop_collar_bps}")
        self.stop_collar_bps = spec.stop_collar_bps
        # Priced alone at first; parse_instruments prices every instrument in the units of
        # the whole file's assets.
        self.price_in(Asset(self.base, _coarsest_unit([[self.lot]])), Asset(self.quote, _coarsest_unit([[self.lot, self.tick]])))

    def price_in(self, base: Asset, quote: Asset) -> None:
        """Fix what a lot (in base units) and a lot x tick (in quote units) are worth."""
        self.base_asset, self.quote_asset = base, quote
        self.base_per_lot = _exact_units(self.lot, [], base, f"{self.symbol}: a lot of {self.lot.text}")
        self.quote_per_lot_tick = _exact_units(self.lot, [self.tick], quote, f"{self.symbol}: a lot x tick of {self.lot.text} x {self.tick.text}")

    @staticmethod
    def _limit(step: Step, text: str | None, default: int) -> int:
        if text is None:
            return default
        steps = step.count(text)
        if steps is None or steps < 0:
            raise ValueError(f"limit {text!r} is not a positive multiple of {step.text}")
        return steps

    def stop_budget(self, qty: int, trigger: int) -> int:
        """What a stop-market BUY may spend, in lots x ticks: its trigger plus the collar, rounded up."""
        return -(-qty * trigger * (10_000 + self.stop_collar_bps) // 10_000)

    # ---- text -> integers (the gateway's job, before anything is journaled)

    def parse_qty(self, text: str) -> int | Problem:
        lots = self.lot.count(text)
        if lots == TOO_LARGE:  # (a number, only too large for an order: said as check() says it)
            return self._qty_range(clip(text))
        if lots is None:
            return Problem(Reason.BAD_QTY, f"quantity {clip(text)} is {_not_a_number(text)}")
        if lots < 0:
            return Problem(Reason.BAD_LOT, f"quantity {clip(text)} is not a multiple of the lot {self.lot.text}")
        return lots

    def parse_price(self, text: str) -> int | Problem:
        ticks = self.tick.count(text)
        if ticks == TOO_LARGE:
            return self._price_band(clip(text))
        if ticks is None:
            return Problem(Reason.BAD_PRICE, f"price {clip(text)} is {_not_a_number(text)}")
        if ticks < 0:
            return Problem(Reason.BAD_TICK, f"price {clip(text)} is not on the tick {self.tick.text}")
        return ticks

    # ---- integer checks (also applied by the matching core, so replay is self-contained)

    def check(self, qty: int, price: int | None) -> Problem | None:
        if qty < self.min_qty or qty > self.max_qty:
            return self._qty_range(self.format_qty(qty))
        if price is not None and (price < self.min_price or price > self.max_price):
            return self._price_band(self.format_price(price))
        return None

    def _qty_range(self, qty: str) -> Problem:
        return Problem(Reason.QTY_RANGE, f"quantity {qty} is outside {self.format_qty(self.min_qty)}..{self.format_qty(self.max_qty)}")

    def _price_band(self, price: str) -> Problem:
        return Problem(Reason.PRICE_BAND, f"price {price} is outside the band {self.format_price(self.min_price)}..{self.format_price(self.max_price)}")

    def format_qty(self, lots: int) -> str:
        return self.lot.format(lots)

    def format_price(self, ticks: int) -> str:
        return self.tick.format(ticks)


# An equity, a crypto pair, a future and an FX pair: the engine is asset-agnostic. ES is
# settled like spot (ES/USD: a buyer pays price x qty and holds the contracts; a seller
# must hold them): no margin, no short selling. Balances count each asset's smallest unit:
# USD to 1e-7 so that a BTC lot (0.00001) at a cent's tick costs a whole number of units.
DEFAULT_INSTRUMENTS_TOML = """\
[assets]
USD = "0.0000001"
AAPL = "1"
BTC = "0.00000001"
ES = "1"
EUR = "0.01"

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


SYMBOL = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,15}", re.ASCII)  # and asset names


def _exact_units(first: Step, more: list[Step], asset: Asset, what: str) -> int:
    """The product of steps counted in the asset's unit; it must be a whole number."""
    units, decimals = first.units, first.decimals
    for step in more:
        units, decimals = units * step.units, decimals + step.decimals
    scale = asset.unit.decimals - decimals  # value = units / 10**decimals; unit = u / 10**d
    num, den = (units * 10**scale, asset.unit.units) if scale >= 0 else (units, asset.unit.units * 10**-scale)
    count, rem = divmod(num, den)
    if rem or count <= 0:
        raise ValueError(f"{what} is not a whole number of {asset.name} units of {asset.unit.text}")
    return count


def _coarsest_unit(steps: list[list[Step]]) -> str:
    """The largest power-of-ten unit that counts every product of steps exactly."""
    decimals = max(sum(s.decimals for s in product) for product in steps)
    return "1" if not decimals else "0." + "0" * (decimals - 1) + "1"


def parse_instruments(toml_text: str | bytes) -> dict[str, Instrument]:
    spec = msgspec.toml.decode(toml_text, type=InstrumentsFile)
    for symbol in spec.instruments:
        if not SYMBOL.fullmatch(symbol):
            raise ValueError(f"symbol {symbol!r}: use 1-16 of A-Z 0-9 . _ -, starting with a letter or digit")
    instruments = {symbol: Instrument(symbol, s) for symbol, s in sorted(spec.instruments.items())}
    needs: dict[str, list[list[Step]]] = {}
    for inst in instruments.values():
        needs.setdefault(inst.base, []).append([inst.lot])
        needs.setdefault(inst.quote, []).append([inst.lot, inst.tick])
    for name in needs:
        if not SYMBOL.fullmatch(name):
            raise ValueError(f"asset {name!r}: use 1-16 of A-Z 0-9 . _ -")
    assets = {name: Asset(name, spec.assets.get(name) or _coarsest_unit(products)) for name, products in sorted(needs.items())}
    for inst in instruments.values():
        inst.price_in(assets[inst.base], assets[inst.quote])
    return instruments


def assets_of(instruments: dict[str, Instrument]) -> dict[str, Asset]:
    """Every asset the instruments trade, by name."""
    out: dict[str, Asset] = {}
    for inst in instruments.values():
        out.setdefault(inst.base, inst.base_asset)
        out.setdefault(inst.quote, inst.quote_asset)
    return dict(sorted(out.items()))


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
