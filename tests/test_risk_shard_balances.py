"""A cluster's BALANCES waits, at the account's risk shard, for the settlements of what
its asker was shown (a FILL, a CANCELED), and is answered as soon as they are in."""

from __future__ import annotations

import asyncio

from cluster.risk_shard import RiskShard
from cluster.stream import Input
from cluster.wire import BalancesAsk, Layout, Settle, decode_balances_answer, encode
from exchange.instruments import load_instruments


class Request:
    """A NATS request as the risk shard sees it: its data, and what it responds."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.answers: list[bytes] = []

    async def respond(self, data: bytes) -> None:
        self.answers.append(data)


def test_balances_are_answered_once_the_settlement_the_asker_has_seen_comes() -> None:
    async def scenario() -> None:
        shard = RiskShard(None, None, 0, Layout(), load_instruments())
        shard.settled_through = {0: 3}
        ask = Request(encode(BalancesAsk("t1", {0: 5})))  # shown a fill of engine 0's input 5
        answering = asyncio.create_task(shard._answer_balances(ask))
        await asyncio.sleep(0.05)
        assert ask.answers == []  # settled through 3 only: it waits
        await shard.step([Input(10, 0, "in.0.e0", encode(Settle([], 0, 5)))])
        await asyncio.wait_for(answering, 0.5)  # at once, not after the 2 s wait
        assert decode_balances_answer(ask.answers[0]).behind == []
        assert shard._asks_waiting == {}

    asyncio.run(scenario())


def test_balances_say_which_engine_shard_is_behind_when_its_settlement_does_not_come(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("cluster.risk_shard.BALANCES_WAIT", 0.1)

    async def scenario() -> None:
        shard = RiskShard(None, None, 0, Layout(), load_instruments())
        shard.settled_through = {0: 3, 1: 9}
        ask = Request(encode(BalancesAsk("t1", {0: 5, 1: 9})))
        await asyncio.wait_for(shard._answer_balances(ask), 1.0)
        assert decode_balances_answer(ask.answers[0]).behind == [0]
        assert shard._asks_waiting == {}

    asyncio.run(scenario())
