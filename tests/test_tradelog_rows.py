"""The trade-log writer's row building: candles and times as the log has always had them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from journal.tradelog_writer import INTERVALS, IsoClock, fold_candles, iso

DAY_NS = 86_400 * 10**9
T0 = 1_780_000_000 * 10**9  # 2026-05-28

trades = st.lists(
    st.tuples(st.sampled_from(["AAPL", "BTC-USD"]), st.integers(1, 10**6), st.integers(T0, T0 + 3 * DAY_NS), st.integers(1, 10**7), st.integers(1, 10**4)),
    max_size=60,
    unique_by=lambda t: t[1],  # a trade's key is unique
)


def candles_one_by_one(rows: list[tuple[str, int, int, int, int]]) -> dict[tuple[str, int, int], list[int]]:
    """The definition: for every interval, the trades in each (symbol, start) bucket in key order."""
    out: dict[tuple[str, int, int], list[int]] = {}
    for interval in INTERVALS.values():
        buckets: dict[tuple[str, int, int], list[tuple[int, int, int]]] = {}
        for symbol, key, ts_ns, price, qty in rows:
            sec = ts_ns // 10**9
            buckets.setdefault((symbol, interval, sec - sec % interval), []).append((key, price, qty))
        for at, found in buckets.items():
            found.sort()
            prices = [p for _, p, _ in found]
            out[at] = [prices[0], max(prices), min(prices), prices[-1], sum(q for *_, q in found), sum(p * q for _, p, q in found), len(found), found[0][0], found[-1][0]]
    return out


@settings(max_examples=300, deadline=None)
@given(trades)
def test_candles_of_every_interval_are_those_of_their_trades_in_key_order(rows: list[tuple[str, int, int, int, int]]) -> None:
    assert fold_candles(rows) == candles_one_by_one(rows)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(st.integers(T0, T0 + 10 * DAY_NS), st.integers(0, 10**7).map(lambda us: T0 + us * 1000 + 500)), max_size=40))
def test_a_clock_formats_every_time_as_iso_does_including_microsecond_rounding(times: list[int]) -> None:
    clock = IsoClock()
    assert [clock(t) for t in times] == [iso(t) for t in times]
