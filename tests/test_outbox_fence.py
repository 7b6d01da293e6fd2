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


def test_an_output_in_parts_is_resumed_after_a_restart_from_the_first_part_not_stored() -> None:
    """One input's output too large for one message goes in parts; a stage that stopped
    after some of them sends the rest once (and the next input's output after them)."""

    async def scenario() -> tuple[list[bytes], list[str], tuple[int, int]]:
        stream = Stream()
        first = Outbox(stream, "reports.1")
        await first.open()
        await first.publish(5, b"a")
        await first.publish(9, b"p0", 0, 3)
        await first.publish(9, b"p1", 1, 3)  # ...and then the stage was killed
        again = Outbox(stream, "reports.1")  # restarted: it replays input 9 and makes the same parts
        await again.open()
        state = (again.published_through, again.parts_out)
        for i, part in enumerate((b"p0", b"p1", b"p2")):
            await again.publish(9, part, i, 3)
        await again.publish(9, b"p2", 2, 3)  # (out: skipped)
        await again.publish(12, b"b")
        return [m.data for m in stream.messages], [m.headers.get("Tickline-Part", "") for m in stream.messages], state

    data, parts, state = asyncio.run(scenario())
    assert data == [b"a", b"p0", b"p1", b"p2", b"b"]
    assert parts == ["", "0/3", "1/3", "2/3", ""]
    assert state == (8, 2)  # every input before 9 is out, and 2 of 9's parts
