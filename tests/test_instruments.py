from __future__ import annotations

import pytest

from exchange.instruments import load_instruments, parse_instruments
from protocol.messages import Reason

INSTRUMENTS = load_instruments()


def test_default_set_spans_asset_classes() -> None:
    assert sorted(INSTRUMENTS) == ["AAPL", "BTC-USD", "ES", "EUR-USD"]


@pytest.mark.parametrize(
    "symbol, text, ticks, canonical",
    [
        ("AAPL", "150.25", 15025, "150.25"),
        ("AAPL", "150.2", 15020, "150.20"),
        ("AAPL", "150", 15000, "150.00"),
        ("AAPL", "0150.250", 15025, "150.25"),
        ("ES", "4500.75", 18003, "4500.75"),
        ("EUR-USD", "1.08431", 108431, "1.08431"),
        ("BTC-USD", "64000.01", 6400001, "64000.01"),
    ],
)
def test_prices_parse_exactly_and_format_canonically(symbol: str, text: str, ticks: int, canonical: str) -> None:
    inst = INSTRUMENTS[symbol]
    assert inst.parse_price(text) == ticks
    assert inst.format_price(ticks) == canonical


@pytest.mark.parametrize(
    "symbol, text, lots, canonical",
    [
        ("AAPL", "10", 10, "10"),
        ("AAPL", "10.000", 10, "10"),
        ("BTC-USD", "0.5", 50000, "0.50000"),
        ("BTC-USD", "0.00001", 1, "0.00001"),
        ("EUR-USD", "25000", 25, "25000"),
    ],
)
def test_quantities_parse_exactly_and_format_canonically(symbol: str, text: str, lots: int, canonical: str) -> None:
    inst = INSTRUMENTS[symbol]
    assert inst.parse_qty(text) == lots
    assert inst.format_qty(lots) == canonical


@pytest.mark.parametrize(
    "symbol, text, reason",
    [
        ("AAPL", "150.255", Reason.BAD_TICK),
        ("AAPL", "150.001", Reason.BAD_TICK),
        ("ES", "4500.10", Reason.BAD_TICK),
        ("EUR-USD", "1.084315", Reason.BAD_TICK),
        ("AAPL", "0", Reason.BAD_PRICE),
        ("AAPL", "0.00", Reason.BAD_PRICE),
        ("AAPL", "-1", Reason.BAD_PRICE),
        ("AAPL", "+1", Reason.BAD_PRICE),
        ("AAPL", "NaN", Reason.BAD_PRICE),
        ("AAPL", "inf", Reason.BAD_PRICE),
        ("AAPL", "1e3", Reason.BAD_PRICE),
        ("AAPL", "1.", Reason.BAD_PRICE),
        ("AAPL", ".5", Reason.BAD_PRICE),
        ("AAPL", "1_000", Reason.BAD_PRICE),
        ("AAPL", "１５０", Reason.BAD_PRICE),  # full-width digits
        ("AAPL", "١٥٠", Reason.BAD_PRICE),  # Arabic-Indic digits
        ("AAPL", "", Reason.BAD_PRICE),
        ("AAPL", "9" * 30, Reason.BAD_PRICE),
        # A number, only beyond the largest count an order may carry: outside the band, as
        # a price between the band's top and that count is.
        ("AAPL", "99999999999999999", Reason.PRICE_BAND),
        ("EUR-USD", "99999999999.00000", Reason.PRICE_BAND),
    ],
)
def test_bad_prices_are_rejected_with_a_reason(symbol: str, text: str, reason: Reason) -> None:
    result = INSTRUMENTS[symbol].parse_price(text)
    assert isinstance(result, tuple) and result[0] is reason


@pytest.mark.parametrize(
    "symbol, text, reason",
    [
        ("AAPL", "1.5", Reason.BAD_LOT),
        ("EUR-USD", "1500", Reason.BAD_LOT),
        ("BTC-USD", "0.000001", Reason.BAD_LOT),
        ("AAPL", "0", Reason.BAD_QTY),
        ("AAPL", "-5", Reason.BAD_QTY),
        ("AAPL", "ten", Reason.BAD_QTY),
        ("AAPL", "9" * 20, Reason.QTY_RANGE),
        ("AAPL", "9" * 30, Reason.BAD_QTY),  # longer than any number is read
    ],
)
def test_bad_quantities_are_rejected_with_a_reason(symbol: str, text: str, reason: Reason) -> None:
    result = INSTRUMENTS[symbol].parse_qty(text)
    assert isinstance(result, tuple) and result[0] is reason


def test_limits_and_band_from_toml() -> None:
    instruments = parse_instruments(
        """
        [instruments.XYZ]
        tick = "0.05"
        lot = "100"
        min_qty = "100"
        max_qty = "10000"
        min_price = "1.00"
        max_price = "20.00"
        """
    )
    xyz = instruments["XYZ"]
    assert (xyz.min_qty, xyz.max_qty, xyz.min_price, xyz.max_price) == (1, 100, 20, 400)
    assert xyz.check(1, 20) is None
    assert [p and p.reason for p in (xyz.check(101, 20), xyz.check(1, 401), xyz.check(1, 19))] == [
        Reason.QTY_RANGE, Reason.PRICE_BAND, Reason.PRICE_BAND,
    ]  # fmt: skip


def test_a_bad_instruments_file_is_refused() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        parse_instruments('[instruments.X]\ntick = "0"\nlot = "1"\n')
    with pytest.raises(ValueError, match="colour"):
        parse_instruments('[instruments.X]\ntick = "0.01"\nlot = "1"\ncolour = "red"\n')
    with pytest.raises(ValueError, match="not a positive multiple"):
        parse_instruments('[instruments.X]\ntick = "0.01"\nlot = "1"\nmax_qty = "1.5"\n')
    with pytest.raises(ValueError):
        parse_instruments('[instruments."a b"]\ntick = "0.01"\nlot = "1"\n')
