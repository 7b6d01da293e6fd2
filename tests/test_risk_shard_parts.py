"""A risk shard's release too large for one message goes in parts, and a shard restarted
between the parts sends the rest once: every accepted order and every refusal reaches the
stream exactly once, as in a run that never stopped (the stream here is a fake with the
fence and the duplicate window's Msg-Id check; PART_ITEMS made small)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest

import cluster.risk_shard
import cluster.stream
from cluster.risk_shard import RiskShard
from cluster.stream import Input
from cluster.wire import PART, Layout, Settle, Submit, decode_sequenced, decode_verdicts, encode
from exchange.instruments import load_instruments
from protocol.messages import TIF, Canceled, NewOrder, Reason, Side, Transfer


class Crash(BaseException):
    """The shard's process dies here (not an Exception: nothing retries it)."""


class Stream:
    """Every subject of one stream: the fence on a subject's last sequence, and a Msg-Id
    stored once. `crash_after`: publishes on orders.> after which the publisher dies."""

    def __init__(self) -> None:
        self.messages: list[SimpleNamespace] = []
        self.crash_after: int | None = None

    async def publish(self, subject: str, payload: bytes, stream: str, headers: dict[str, str], timeout: float) -> Any:
        if subject.startswith("orders.") and self.crash_after is not None and len(self.on("orders.0.r0")) >= self.crash_after:
            raise Crash
        last = max((m.seq for m in self.on(subject)), default=0)
        fence = headers.get("Nats-Expected-Last-Subject-Sequence")
        if fence is not None and int(fence) != last:
            raise RuntimeError(f"nats: wrong last sequence: {last}")
        if any(m.headers["Nats-Msg-Id"] == headers["Nats-Msg-Id"] for m in self.messages):
            return SimpleNamespace(seq=last)
        self.messages.append(SimpleNamespace(seq=len(self.messages) + 1, subject=subject, headers=headers, data=payload))
        return SimpleNamespace(seq=len(self.messages))

    async def get_last_msg(self, stream: str, subject: str) -> Any:
        mine = self.on(subject)
        return mine[-1] if mine else None

    def on(self, subject: str) -> list[SimpleNamespace]:
        return [m for m in self.messages if m.subject == subject]


def inputs() -> list[Input]:
    """t1 and t2 funded (USD 100,000 and 10,000); two orders of t1's and one of t2's that
    locks all of t2's funds, decided at once; 11 of t2's that wait for engine shard 0's
    settlement through input 3 (its gateway had shown t2 the cancel of that order, which
    pays for them), the 6th too dear for t2's funds; then that Settle."""
    early = [NewOrder("AAPL", Side.BUY, 1, 10_000, TIF.GTC, "t1", f"p{i}") for i in range(2)]
    early.append(NewOrder("AAPL", Side.BUY, 100, 10_000, TIF.GTC, "t2", "all"))  # order id 5
    waiting = [NewOrder("AAPL", Side.BUY, 1, 10_000 + i, TIF.GTC, "t2", f"c{i}") for i in range(11)]
    waiting[5] = NewOrder("AAPL", Side.BUY, 1000, 10_000, TIF.GTC, "t2", "dear")
    messages = [
        Submit("g", [1, 2], [Transfer("t1", "USD", 10**12, "fund1"), Transfer("t2", "USD", 10**11, "fund2")]),
        Submit("g", [3, 4, 5], list(early)),
        Submit("g", list(range(6, 17)), list(waiting), {"t2": {0: 3}}),
        Settle([Canceled(5, "AAPL", Side.BUY, 100, Reason.USER, "t2", "all", 6)], 0, 3),
    ]
    return [Input(i + 1, 1_000 + i, "in.0.x", encode(m)) for i, m in enumerate(messages)]


def run(stream: Stream) -> None:
    async def go() -> None:
        shard = RiskShard(None, stream, 0, Layout(), {"AAPL": load_instruments()["AAPL"]})
        for outbox in shard.outboxes:
            await outbox.open()
        await shard.step(inputs())  # one batch (a restarted shard replays its input from the first message)

    asyncio.run(go())


def published(stream: Stream) -> tuple[list[tuple[int, str | None]], list[str], list[str | None]]:
    sequenced = [decode_sequenced(m.data) for m in stream.on("orders.0.r0")]
    orders = [(seq, cast(NewOrder, cmd).client_id) for s in sequenced for seq, cmd in zip(s.seqs, s.cmds, strict=True)]
    refusals = [text for m in stream.on("verdicts.g") for _, _, reason, text in decode_verdicts(m.data).results if reason]
    return orders, refusals, [m.headers.get(PART) for m in stream.on("orders.0.r0")]


@pytest.fixture(autouse=True)
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster.stream, "PART_ITEMS", 3)
    monkeypatch.setattr(cluster.risk_shard, "PART_ITEMS", 3)


def test_a_large_release_goes_in_parts_and_a_restart_between_them_sends_the_rest_once() -> None:
    whole = Stream()
    run(whole)
    orders, refusals, parts = published(whole)
    assert [client_id for _, client_id in orders] == ["p0", "p1", "all"] + [f"c{i}" for i in range(11) if i != 5]
    assert len(refusals) == 1 and refusals[0].startswith("needs 100000.0000000 USD"), refusals
    # What came before the release first, alone; then the release's 10 orders, 3 a message.
    assert parts == [None, "0/4", "1/4", "2/4", "3/4"]

    stopped = Stream()
    stopped.crash_after = 3
    with pytest.raises(Crash):
        run(stopped)
    assert published(stopped)[2] == [None, "0/4", "1/4"]
    stopped.crash_after = None
    run(stopped)  # restarted
    assert published(stopped) == (orders, refusals, parts)
