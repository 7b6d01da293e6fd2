"""One market-data connection: its subscriptions, its flow control, its requests."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol, cast

import structlog

from netio.plumbing import capped_write, limit_buffers, peer_name
from notifier.feed import SymbolFeed
from protocol import marketdata as M
from protocol.requests import BadRequest
from protocol.text import TOO_LONG, LineSplitter

log = structlog.get_logger("notifier")


@dataclass(frozen=True)
class Limits:
    """A subscriber's buffers: user-space high-water mark (past it: conflate), the kernel's
    send buffer, the hard cap of unread bytes and how long it may stop reading (past
    either: disconnected with a reason)."""

    high: int = 256 * 1024
    sndbuf: int = 128 * 1024
    hard_cap: int = 8 * 1024 * 1024
    pause_deadline: float = 10.0


class Hub(Protocol):
    """What a subscriber needs of the market-data server (notifier/server.py's Notifier)."""

    version: str
    feeds: dict[str, SymbolFeed]

    def admit(self, sub: Subscriber) -> bool: ...
    def forget(self, sub: Subscriber) -> None: ...
    def recent_trades(self, symbol: str, from_seq: int, as_json: bool) -> list[bytes] | None: ...
    async def older_trades(self, symbol: str, from_seq: int, as_json: bool) -> list[bytes]: ...


class Subscriber(asyncio.Protocol):
    def __init__(self, notifier: Hub, limits: Limits) -> None:
        self.nf = notifier
        self.limits = limits
        self.transport: asyncio.Transport | None = None
        self.subs: dict[str, frozenset[str]] = {}  # symbol or "*" -> kinds
        self.since: dict[str, int] = {}  # symbol -> seq its snapshot/subscription starts after
        self.json = False
        self.paused = False
        self.paused_since = 0.0
        self.splitter = LineSplitter(512)
        self.peer = "?"

    # ------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = transport = cast(asyncio.Transport, transport)
        limit_buffers(transport, self.limits.high, self.limits.sndbuf)
        self.peer = peer_name(transport)
        if not self.nf.admit(self):
            transport.write(M.line_text("ERR", "too_many_connections the server is full; try again later"))
            transport.close()
            return
        transport.write(M.line_text("HELLO", f"tickline-md {self.nf.version} type HELP for commands"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.nf.forget(self)

    def pause_writing(self) -> None:
        self.paused = True
        self.paused_since = time.monotonic()

    def resume_writing(self) -> None:
        # It kept up again: what it missed of book and quotes comes as a fresh state.
        self.paused = False
        out = []
        for symbol, feed in self.nf.feeds.items():
            kinds = self.kinds_for(symbol)
            if "book" in kinds:
                out.append(feed.snapshot(self.json))
            if "quotes" in kinds:
                out.append(feed.current_quote(self.json))
        if out:
            self.write(b"".join(out))

    # ------------------------------------------------------------ requests

    def data_received(self, data: bytes) -> None:
        for line in self.splitter.feed(data):
            if line is TOO_LONG:
                self._say("ERR", "line_too_long a request is one short line")
                continue
            req = M.parse_md_line(line)
            if req is None:
                continue
            if isinstance(req, BadRequest):
                self._say("ERR", f"{req.code} {req.text}")
            elif isinstance(req, M.Subscribe):
                self._subscribe(req)
            elif isinstance(req, M.Unsubscribe):
                self._unsubscribe(req)
            elif isinstance(req, M.ReplayTrades):
                self._replay(req)
            elif isinstance(req, M.MdPing):
                self._say("PONG", "")
            elif isinstance(req, M.MdHelp):
                self.write(("HELP\n" + "".join(f"  {h}\n" for h in M.MD_HELP) + "END\n").encode())
            elif isinstance(req, M.MdQuit):
                self.goodbye("goodbye")

    def _subscribe(self, req: M.Subscribe) -> None:
        kinds = M.kinds_of(req.kinds)
        symbols = list(self.nf.feeds) if req.symbol == "*" else [req.symbol]
        if kinds is None or (req.symbol != "*" and req.symbol not in self.nf.feeds):
            self._say("ERR", f"unknown_symbol no such symbol {req.symbol[:16]}" if kinds else "bad_request kinds are trades, quotes, book or all")
            return
        self.json = req.json or self.json
        self.subs[req.symbol] = self.subs.get(req.symbol, frozenset()) | kinds
        out = []
        for symbol in symbols:
            feed = self.nf.feeds[symbol]
            self.since[symbol] = feed.seq  # updates up to here are in what we send now
            if req.symbol != "*" or len(symbols) == 1:
                out.append(self._line("SUBSCRIBED", f"{symbol} {','.join(sorted(kinds))} seq={feed.seq}"))
            if "book" in kinds:
                out.append(feed.snapshot(self.json))
            if "quotes" in kinds:
                out.append(feed.current_quote(self.json))
        if req.symbol == "*":
            out.insert(0, self._line("SUBSCRIBED", f"* {','.join(sorted(kinds))} symbols={len(symbols)}"))
        self.write(b"".join(out))

    def _unsubscribe(self, req: M.Unsubscribe) -> None:
        kinds = M.kinds_of(req.kinds) or frozenset()
        left = self.subs.get(req.symbol, frozenset()) - kinds
        if left:
            self.subs[req.symbol] = left
        else:
            self.subs.pop(req.symbol, None)
        self._say("UNSUBSCRIBED", f"{req.symbol} {req.kinds.lower()}")

    def _replay(self, req: M.ReplayTrades) -> None:
        if req.symbol not in self.nf.feeds:
            self._say("ERR", f"unknown_symbol no such symbol {req.symbol[:16]}")
            return
        lines = self.nf.recent_trades(req.symbol, req.from_seq, self.json)
        if lines is not None:
            self._send_replay(req, lines)
        else:  # older than memory: from the trade log, off the event loop
            task = asyncio.get_running_loop().create_task(self.nf.older_trades(req.symbol, req.from_seq, self.json))
            task.add_done_callback(lambda t: self._send_replay(req, t.result()))

    def _send_replay(self, req: M.ReplayTrades, lines: list[bytes]) -> None:
        head = self._line("REPLAY", f"{req.symbol} from={req.from_seq} count={len(lines)}")
        self.write(head + b"".join(lines) + self._line("END", ""))

    def kinds_for(self, symbol: str) -> frozenset[str]:
        subs = self.subs
        exact, star = subs.get(symbol), subs.get("*")
        if star is None:
            return exact or frozenset()
        return star if exact is None else star | exact

    # ------------------------------------------------------------ output

    def _line(self, kind: str, text: str) -> bytes:
        return M.line_json(kind, text) if self.json else M.line_text(kind, text)

    def _say(self, kind: str, text: str) -> None:
        self.write(self._line(kind, text))

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not capped_write(transport, data, self.limits.hard_cap):
            self.drop(f"slow_consumer more than {self.limits.hard_cap} bytes unread; reconnect and REPLAY trades from your last seq")

    def drop(self, reason: str) -> None:
        """Disconnect a subscriber that cannot keep up, with a one-line reason."""
        log.warning("subscriber_dropped", peer=self.peer, reason=reason.split()[0])
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self._line("ERR", reason))
            self.transport.abort()
            self.nf.forget(self)

    def goodbye(self, text: str) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self._line("BYE", text))
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
