"""What both clients share: a bounded inbox read as an async iterator, and closing a stream."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import AsyncIterator, Generic, TypeVar

T = TypeVar("T")
MAX_LINE = 16 * 1024 * 1024  # the longest reply line either client reads (a BOOK of 1,000 levels, a long REPORTS)


class Inbox(Generic[T]):
    """Messages waiting for the application, at most `bound`: past it the oldest is
    dropped and counted (the reader of the socket never waits for the application)."""

    def __init__(self, bound: int) -> None:
        self._items: deque[T] = deque(maxlen=bound)
        self._ready = asyncio.Event()
        self._ended = False
        self.dropped = 0

    def put(self, item: T) -> None:
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    def end(self) -> None:
        """The connection is gone: iteration stops once what is here has been read."""
        self._ended = True
        self._ready.set()

    async def __aiter__(self) -> AsyncIterator[T]:
        while True:
            while self._items:
                yield self._items.popleft()
            if self._ended:
                return
            self._ready.clear()
            await self._ready.wait()


async def close_stream(writer: asyncio.StreamWriter, reader_task: asyncio.Task[None]) -> None:
    """Close our side, then wait for the reading task to see the end."""
    if not writer.is_closing():
        writer.close()
    try:
        await writer.wait_closed()
    except ConnectionError:
        pass
    await reader_task
