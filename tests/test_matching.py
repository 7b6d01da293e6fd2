"""exchange/matching.py: a command whose matching raises stops its symbol's matcher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exchange.book import Book
from exchange.instruments import load_instruments
from exchange.matching import Matching
from protocol.messages import TIF, Event, Fill, NewOrder, OrderCommand, Side


class Faulty(Book):
    def apply(self, seq: int, cmd: Any) -> list[Event]:
        if cmd.client_id == "boom":
            raise KeyError("boom")
        return super().apply(seq, cmd)


def test_the_commands_before_a_failing_one_are_reported_and_nothing_after_it_is_applied() -> None:
    book = Faulty(load_instruments()["ES"])
    scheduled: list[Any] = []
    failures: list[tuple[int, OrderCommand, Exception]] = []
    matching = Matching({"ES": book}, scheduled.append, lambda seq, cmd, exc: failures.append((seq, cmd, exc)))
    out: list[Event] = []
    matching.send_to([out.extend])
    boom = NewOrder("ES", Side.BUY, 1, 18_000, TIF.GTC, "b", "boom")
    matching.submit(1, [NewOrder("ES", Side.SELL, 5, 18_000, TIF.GTC, "a"), NewOrder("ES", Side.BUY, 2, 18_000, TIF.GTC, "b"), boom])
    matching.submit(4, [NewOrder("ES", Side.BUY, 1, 18_000, TIF.GTC, "b")])
    matching.apply_now()
    assert [(e.order_id, e.qty) for e in out if type(e) is Fill] == [(1, 2), (2, 2)]  # commands 1 and 2, whole
    assert [(seq, cmd) for seq, cmd, _ in failures] == [(3, boom)]
    reported = len(out)
    matching.matchers["ES"].drain_all()  # (what shutdown does): nothing more
    for step in scheduled:
        step()
    resting = book.order(1)
    assert len(out) == reported and resting is not None and resting.leaves == 3  # command 4 never matched
    assert not matching.applied(4) and len(failures) == 1


def test_a_durable_batch_over_several_symbols_goes_to_each_sink_in_one_call_and_a_failure_after_it() -> None:
    instruments = load_instruments()
    es, aapl = Faulty(instruments["ES"]), Book(instruments["AAPL"])
    calls: list[list[Event]] = []
    order: list[str] = []
    failures: list[int] = []
    matching = Matching({"ES": es, "AAPL": aapl}, lambda step: None, lambda seq, cmd, exc: (failures.append(seq), order.append("failure")))
    matching.send_to([lambda events: (calls.append(list(events)), order.append("sink"))])
    matching.submit(1, [
        NewOrder("ES", Side.SELL, 5, 18_000, TIF.GTC, "a"),
        NewOrder("AAPL", Side.SELL, 3, 15_000, TIF.GTC, "a"),
        NewOrder("ES", Side.BUY, 1, 18_000, TIF.GTC, "b", "boom"),
        NewOrder("AAPL", Side.BUY, 2, 15_000, TIF.GTC, "b"),
    ])  # fmt: skip
    matching.apply_now()
    assert len(calls) == 1  # both symbols' events, ES's (the first submitted) first
    assert [(e.symbol, e.order_id, e.qty) for e in calls[0] if type(e) is Fill] == [("AAPL", 2, 2), ("AAPL", 4, 2)]
    assert [getattr(e, "symbol", None) for e in calls[0]].index("AAPL") > 0
    assert failures == [3] and order == ["sink", "failure"]  # ES's failure reported once its order 1's events went out


def test_a_trade_log_that_drops_a_step_is_behind_from_its_lowest_seq_whatever_the_symbols_order() -> None:
    from journal.tradelog import TradeLog

    instruments = load_instruments()
    aapl, es = Book(instruments["AAPL"]), Book(instruments["ES"])
    aapl.apply(6, NewOrder("AAPL", Side.SELL, 1, 15_000, TIF.GTC, "a"))
    es.apply(3, NewOrder("ES", Side.SELL, 1, 18_000, TIF.GTC, "a"))
    # One step's events: AAPL's (a trade at seq 7), then ES's (a trade at seq 4).
    events = aapl.apply(7, NewOrder("AAPL", Side.BUY, 1, 15_000, TIF.GTC, "b")) + es.apply(4, NewOrder("ES", Side.BUY, 1, 18_000, TIF.GTC, "b"))
    log = TradeLog(Path("unused.sqlite"), instruments, max_rows=1)
    log.on_events(events)  # over a bound of one row: dropped
    assert log.behind_from == 4
