"""A WebSocket in front of a market-data session: the page gets exactly what port 7002 sends.

The notifier's Subscriber (notifier/session.py) is an asyncio.Protocol; it is given this
bridge as its transport, so a browser tab has the same subscriptions, sequence numbers,
snapshot-then-increments and slow-consumer policy as a TCP subscriber: its writes queue
here (never awaited by the notifier), the high-water mark makes it pause_writing
(conflate increments), draining below a quarter of it makes it resume_writing (a fresh
snapshot), and past its hard cap it drops the tab. One task sends what queued as one
WebSocket message (whole lines), awaiting the socket: a slow tab only slows that task.
It sends at most every FLUSH_EVERY seconds: a busy book makes thousands of fan-outs a
second, and a browser paid ~30 us of CPU per order at 10,000 orders/s receiving each as a
message of its own (measured: `python -m bench.load --web page`); a person sees no
difference, and the exchange beside it keeps its cores.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from aiohttp import WSMsgType, web

DEFAULT_HIGH = 64 * 1024
FLUSH_EVERY = 0.05  # seconds between WebSocket messages to one tab, at most 20 a second


class SocketBridge:
    """Just the asyncio.Transport methods the market-data session uses."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        transport = request.transport
        # The socket too: the session bounds its kernel send buffer as on port 7002.
        self.extra = {name: transport.get_extra_info(name) if transport is not None else None for name in ("peername", "socket")}
        self.protocol: asyncio.Protocol | None = None
        self._chunks: deque[bytes] = deque()
        self._queued = 0  # bytes waiting here
        self._sending = 0  # bytes of the message being sent
        self._high, self._low = DEFAULT_HIGH, DEFAULT_HIGH // 4
        self._paused = False  # the session was told to pause_writing
        self._closing = False
        self._reading = asyncio.Event()
        self._reading.set()
        self._wake = asyncio.Event()

    # ------------------------------------------------------------ the transport's side

    def write(self, data: bytes) -> None:
        if self._closing or not data:
            return
        self._chunks.append(data)
        self._queued += len(data)
        self._wake.set()
        if not self._paused and self.get_write_buffer_size() > self._high and self.protocol is not None:
            self._paused = True
            self.protocol.pause_writing()

    def get_write_buffer_size(self) -> int:
        return self._queued + self._sending

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = DEFAULT_HIGH if high is None else high
        self._low = self._high // 4 if low is None else low

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        value = self.extra.get(name)
        return default if value is None else value

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    def close(self) -> None:
        """After what is queued has been sent."""
        self._closing = True
        self._wake.set()

    def abort(self) -> None:
        self._closing = True
        self._chunks.clear()
        self._queued = 0
        self._wake.set()

    # ------------------------------------------------------------ the WebSocket's side

    async def run(self, protocol: asyncio.Protocol) -> None:
        """Serve the tab until either side closes."""
        self.protocol = protocol
        protocol.connection_made(self)  # type: ignore[arg-type]
        sender = asyncio.create_task(self._send())
        try:
            async for msg in self.ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                await self._reading.wait()  # the session paused reading (a REPLAY is being read)
                if self._closing:
                    break
                protocol.data_received(msg.data.encode() + b"\n")
        finally:
            self._closing = True
            self._wake.set()
            await sender
            protocol.connection_lost(None)

    async def _send(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._chunks:
                data = b"".join(self._chunks)
                self._chunks.clear()
                self._queued, self._sending = 0, len(data)
                try:
                    await self.ws.send_str(data.decode())
                except (ConnectionError, RuntimeError):
                    self.abort()
                    break
                finally:
                    self._sending = 0
                if self._paused and self.get_write_buffer_size() <= self._low and self.protocol is not None and not self._closing:
                    self._paused = False
                    self.protocol.resume_writing()
            if self._closing:
                await self.ws.close()
                return
            await asyncio.sleep(FLUSH_EVERY)  # what arrives meanwhile goes in the next message
