"""One market-data connection: its subscriptions, its flow control, its requests."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Iterator, Protocol, cast

import structlog

from netio.plumbing import FlowControl, capped_write, limit_buffers, peer_name
from notifier.feed import SymbolFeed
from protocol import marketdata as M
from protocol.requests import BadRequest
from protocol.text import TOO_LONG, LineSplitter

log = structlog.get_logger("notifier")


class TradeLogBehind(Exception):
    """REPLAY reached a trade neither the trade log's file nor memory holds yet."""

    def __init__(self, missing: int) -> None:
        super().__init__(f"the trade log has not written trade seq={missing} yet; try again")


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
        self.flow: FlowControl | None = None
        self.replaying = False  # a REPLAY waits for the trade log; later requests wait behind it
        self.backlog: list[bytes | None] = []
        self.input_closed = False

    # ------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = transport = cast(asyncio.Transport, transport)
        self.flow = FlowControl(transport)
        limit_buffers(transport, self.limits.high, self.limits.sndbuf)
        self.peer = peer_name(transport)
        if not self.nf.admit(self):
            transport.write(M.md_text(M.MdError("too_many_connections", "the server is full; try again later")))
            transport.close()
            return
        transport.write(M.md_text(M.MdHello(self.nf.version)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.nf.forget(self)

    def eof_received(self) -> bool:
        # Half-close: answer what was asked (a REPLAY may still be reading the trade log), then close.
        self.input_closed = True
        if self.replaying:
            return True
        return False

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

    # ------------------------------------------------------------ requests, answered in order

    def data_received(self, data: bytes) -> None:
        lines = self.splitter.feed(data)
        if self.replaying:  # a REPLAY is reading the trade log: what comes after waits
            self.backlog.extend(lines)
            return
        self._process(iter(lines))

    def _process(self, lines: Iterator[bytes | None]) -> None:
        for line in lines:
            if line is TOO_LONG:
                self._reply(M.MdError("line_too_long", "a request is one short line"), False)
                continue
            req = M.parse_md_line(line)
            if req is None:
                continue
            is_json = line[:1] == b"{"
            if isinstance(req, BadRequest):
                self._reply(M.MdError(req.code, req.text), is_json)
            elif isinstance(req, M.Subscribe):
                self._subscribe(req, is_json)
            elif isinstance(req, M.Unsubscribe):
                self._unsubscribe(req, is_json)
            elif isinstance(req, M.ReplayTrades):
                if self._replay(req, is_json):  # waiting for the trade log: stop here
                    self.backlog = list(lines)
                    assert self.flow is not None
                    self.flow.pause("replay")
                    return
            elif isinstance(req, M.MdPing):
                self._reply(M.MdPong(), is_json)
            elif isinstance(req, M.MdHelp):
                self._reply(M.MdHelpReply(M.MD_HELP), is_json)
            elif isinstance(req, M.MdQuit):
                self.goodbye("goodbye", is_json)
                return
        if self.input_closed and self.transport is not None:
            self.transport.close()

    def _kinds(self, symbol: str, kinds_text: str, is_json: bool) -> frozenset[str] | None:
        """A SUB's or UNSUB's kinds, if they and the symbol exist (else the ERR is sent)."""
        kinds = M.kinds_of(kinds_text)
        if kinds is None:
            self._reply(M.MdError("bad_request", "kinds are trades, quotes, book or all"), is_json)
        elif symbol != "*" and symbol not in self.nf.feeds:
            self._reply(M.MdError("unknown_symbol", f"no such symbol {symbol[:16]}"), is_json)
            kinds = None
        return kinds

    def _subscribe(self, req: M.Subscribe, is_json: bool) -> None:
        kinds = self._kinds(req.symbol, req.kinds, is_json)
        if kinds is None:
            return
        symbols = list(self.nf.feeds) if req.symbol == "*" else [req.symbol]
        self.json = req.json or is_json or self.json  # a JSON SUB gets JSON updates
        self.subs[req.symbol] = self.subs.get(req.symbol, frozenset()) | kinds
        named = ",".join(sorted(kinds))
        out = []
        if req.symbol == "*":
            out.append(self._encode(M.Subscribed("*", named, symbols=len(symbols)), is_json))
        for symbol in symbols:
            feed = self.nf.feeds[symbol]
            self.since[symbol] = feed.seq  # updates up to here are in what we send now
            if req.symbol != "*" or len(symbols) == 1:
                out.append(self._encode(M.Subscribed(symbol, named, feed.seq), is_json))
            if "book" in kinds:
                out.append(feed.snapshot(self.json))
            if "quotes" in kinds:
                out.append(feed.current_quote(self.json))
        self.write(b"".join(out))

    def _unsubscribe(self, req: M.Unsubscribe, is_json: bool) -> None:
        kinds = self._kinds(req.symbol, req.kinds, is_json)  # (a typo must not look done)
        if kinds is None:
            return
        left = self.subs.get(req.symbol, frozenset()) - kinds
        if left:
            self.subs[req.symbol] = left
        else:
            self.subs.pop(req.symbol, None)
        self._reply(M.Unsubscribed(req.symbol, req.kinds.lower()), is_json)

    def _replay(self, req: M.ReplayTrades, is_json: bool) -> bool:
        """Send the trades from a seq on; True if that waits for the trade log (off the loop)."""
        if req.symbol not in self.nf.feeds:
            self._reply(M.MdError("unknown_symbol", f"no such symbol {req.symbol[:16]}"), is_json)
            return False
        lines = self.nf.recent_trades(req.symbol, req.from_seq, is_json)
        if lines is not None:
            self._send_replay(req, lines, is_json)
            return False
        self.replaying = True
        task = asyncio.get_running_loop().create_task(self.nf.older_trades(req.symbol, req.from_seq, is_json))
        task.add_done_callback(lambda t: self._replayed(req, t, is_json))
        return True

    def _replayed(self, req: M.ReplayTrades, task: asyncio.Task[list[bytes]], is_json: bool) -> None:
        """The trade log answered: the REPLAY block, then the requests that waited behind it."""
        self.replaying = False
        if task.cancelled() or self.transport is None or self.transport.is_closing():
            return
        failed = task.exception()
        if isinstance(failed, TradeLogBehind):
            self._reply(M.MdError("unavailable", str(failed)), is_json)
        elif failed is not None:
            log.error("replay_failed", peer=self.peer, error=repr(failed))
            self._reply(M.MdError("internal", "the trade log could not be read; try again"), is_json)
        else:
            self._send_replay(req, task.result(), is_json)
        assert self.flow is not None
        self.flow.resume("replay")
        backlog, self.backlog = self.backlog, []
        self._process(iter(backlog))

    def _send_replay(self, req: M.ReplayTrades, lines: list[bytes], is_json: bool) -> None:
        head = self._encode(M.ReplayHead(req.symbol, req.from_seq, len(lines)), is_json)
        self.write(head + b"".join(lines) + self._encode(M.End(), is_json))

    def kinds_for(self, symbol: str) -> frozenset[str]:
        subs = self.subs
        exact, star = subs.get(symbol), subs.get("*")
        if star is None:
            return exact or frozenset()
        return star if exact is None else star | exact

    # ------------------------------------------------------------ output

    def _encode(self, r: M.MdReply, is_json: bool) -> bytes:
        return M.md_json(r) if is_json else M.md_text(r)

    def _reply(self, r: M.MdReply, is_json: bool) -> None:
        self.write(self._encode(r, is_json))

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not capped_write(transport, data, self.limits.hard_cap):
            self.drop("slow_consumer", f"more than {self.limits.hard_cap} bytes unread; reconnect and REPLAY trades from your last seq")

    def drop(self, code: str, text: str) -> None:
        """Disconnect a subscriber that cannot keep up, with a one-line reason after what it
        was sent: nothing more is queued for it, its buffer (whole lines) then the reason go
        out as it reads, then the connection closes; if it reads none of that within the
        pause deadline, it is cut off. (An abort at once cut the line the kernel was sending.)"""
        log.warning("subscriber_dropped", peer=self.peer, reason=code)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(self._encode(M.MdError(code, text), self.json))
            transport.close()  # is_closing() from now on: write() sends it nothing more
            self.nf.forget(self)
            asyncio.get_running_loop().call_later(self.limits.pause_deadline, transport.abort)

    def goodbye(self, text: str, is_json: bool | None = None) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self._encode(M.MdBye(text), self.json if is_json is None else is_json))
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
