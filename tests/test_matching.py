"""exchange/matching.py: a command whose matching raises stops its symbol's matcher."""

from __future__ import annotations

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
