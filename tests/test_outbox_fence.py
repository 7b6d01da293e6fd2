"""An Outbox fences a second writer of its subject, but not a stream leader that refuses
the writer's own last sequence for a moment after an election (seen when a NATS node was
killed under load: an engine shard stopped with "md.1 has another writer")."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from cluster.stream import Fenced, Outbox


class Stream:
    """One subject of a stream, with the fence's check; `refuse` times it wrongly says no."""

    def __init__(self, refuse: int = 0) -> None:
        self.messages: list[SimpleNamespace] = []
        self.refuse = refuse

    async def publish(self, subject: str, payload: bytes, stream: str, headers: dict[str, str], timeout: float) -> Any:
        last = self.messages[-1].seq if self.messages else 0
        if self.refuse or int(headers["Nats-Expected-Last-Subject-Sequence"]) != last:
            self.refuse = max(0, self.refuse - 1)
            raise RuntimeError(f"nats: wrong last sequence: {last}")
        self.messages.append(SimpleNamespace(seq=last + 10, headers=headers, data=payload))
        return SimpleNamespace(seq=last + 10)

    async def get_last_msg(self, stream: str, subject: str) -> Any:
        return self.messages[-1] if self.messages else None


def test_a_refusal_of_its_own_last_sequence_is_tried_again_and_published_once() -> None:
    async def scenario() -> list[bytes]:
        stream = Stream()
        outbox = Outbox(stream, "md.1")
        await outbox.open()
        await outbox.publish(5, b"a")
        stream.refuse = 2  # a new leader, not caught up yet
        await outbox.publish(9, b"b")
        await outbox.publish(9, b"b")  # (already out: skipped)
        return [m.data for m in stream.messages]

    assert asyncio.run(scenario()) == [b"a", b"b"]


def test_another_writer_is_fenced() -> None:
    async def scenario() -> None:
        stream = Stream()
        outbox = Outbox(stream, "md.1")
        await outbox.open()
        await outbox.publish(5, b"a")
        other = Outbox(stream, "md.1")
        await other.open()
        await other.publish(7, b"x")  # a second copy of the stage writes
        await outbox.publish(9, b"b")

    with pytest.raises(Fenced, match="another writer"):
        asyncio.run(scenario())
