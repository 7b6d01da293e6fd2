"""The market-data server: subscriptions, and the fan-out loop (`Notifier.fan_out`).

Events reach the notifier synchronously from the matching tasks (`on_events`): each is
numbered already, applied to its SymbolFeed and encoded once. The fan-out runs once per
event-loop iteration (call_soon), so everything produced in one iteration goes to each
subscriber in one write, in one synchronous pass over the subscribers (no await per
subscriber: a slow one cannot hold up the rest), starting one place further each time.

The queue between matching and fan-out is the feeds' pending lists: they are emptied by
the next fan-out, so they hold at most one iteration's output. Per subscriber:
- its socket buffer may hold HIGH bytes; past that (pause_writing) it gets trades only,
  book and quote increments are conflated, and on resume_writing it gets a fresh SNAPSHOT
  and QUOTE for what it follows;
- past HARD_CAP, or paused longer than PAUSE_DEADLINE, it is told why in one line and
  disconnected: trades are never skipped silently (it can reconnect and REPLAY).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Awaitable, Callable, Sequence, cast

import structlog

from netio.plumbing import close_all, listen
from notifier.feed import SymbolFeed
from notifier.session import Limits, Subscriber, TradeLogBehind
from protocol import marketdata as M
from protocol.messages import MARKET_DATA_TYPES, Event, MarketData

log = structlog.get_logger("notifier")
# REPLAY's older trades: (symbol, from seq) -> rows of (md_seq, qty, price, aggressor, trade_id, prev)
ReplaySource = Callable[[str, int], Awaitable[list[tuple[int, str, str, str, str, int]]]]


class Notifier:
    def __init__(
        self,
        feeds: dict[str, SymbolFeed],
        replay_source: ReplaySource | None,
        *,
        version: str,
        max_subscribers: int = 10_000,
        limits: Limits | None = None,
    ) -> None:
        """feeds: each symbol's, as at the first event on_events will be given (notifier/feed.py feeds_of)."""
        self.feeds = feeds
        self.replay_source = replay_source
        self.version = version
        self.max_subscribers = max_subscribers
        self.limits = limits or Limits()
        self.subscribers: dict[Subscriber, None] = {}
        self._dirty: dict[str, SymbolFeed] = {}
        self._scheduled = False
        self._rotation = 0
        self._server: asyncio.AbstractServer | None = None
        self._watchdog: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None, reuse_port: bool = False) -> tuple[str, int]:
        self._server, host, port = await listen(self.new_session, host, port, tls, reuse_port)
        self._watchdog = asyncio.get_running_loop().create_task(self._watch_paused(), name="md-watchdog")
        return host, port

    def new_session(self) -> Subscriber:
        """A market-data session for a connection: TCP here, a WebSocket on the dashboard."""
        return Subscriber(self, self.limits)

    # ------------------------------------------------------------ from matching

    def on_events(self, events: Sequence[Event]) -> None:
        feeds, dirty = self.feeds, self._dirty
        if not self.subscribers:  # follow the state only; nobody to send updates to
            for e in events:
                if type(e) in MARKET_DATA_TYPES:
                    md = cast(MarketData, e)
                    feeds[md.symbol].follow(md, False)
            return
        for e in events:
            if type(e) in MARKET_DATA_TYPES:
                md = cast(MarketData, e)
                feed = feeds[md.symbol]
                feed.follow(md)
                dirty[feed.symbol] = feed
        if dirty and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.fan_out)

    # ------------------------------------------------------------ the fan-out loop

    def fan_out(self) -> None:
        """Send this iteration's updates: one write per subscriber, one pass, rotating start."""
        self._scheduled = False
        updates = {symbol: feed.pending for symbol, feed in self._dirty.items()}
        for feed in self._dirty.values():
            feed.pending = []
        self._dirty = {}
        subscribers = list(self.subscribers)
        if not subscribers or not updates:
            return
        start = self._rotation % len(subscribers)
        self._rotation += 1
        encoded: dict[tuple[str, frozenset[str], bool], bytes] = {}  # each selection joined once
        for i in range(len(subscribers)):
            sub = subscribers[(start + i) % len(subscribers)]
            chunks = []
            for symbol, ups in updates.items():
                kinds = sub.kinds_for(symbol)
                if not kinds:
                    continue
                if sub.paused:
                    kinds = kinds & {"trades"}  # conflate increments while it cannot keep up
                    if not kinds:
                        continue
                since = sub.since.get(symbol, 0)
                if since >= ups[0].seq:  # subscribed mid-iteration: skip what its snapshot covers
                    chunks.append(self._join([u for u in ups if u.seq > since], kinds, sub.json))
                    continue
                key = (symbol, kinds, sub.json)
                data = encoded.get(key)
                if data is None:
                    data = encoded[key] = self._join(ups, kinds, sub.json)
                chunks.append(data)
            if chunks:
                sub.write(b"".join(chunks) if len(chunks) > 1 else chunks[0])

    @staticmethod
    def _join(ups: list, kinds: frozenset[str], as_json: bool) -> bytes:
        if as_json:
            return b"".join([u.json for u in ups if u.kind in kinds])
        return b"".join([u.text for u in ups if u.kind in kinds])

    # ------------------------------------------------------------ subscribers

    def admit(self, sub: Subscriber) -> bool:
        if len(self.subscribers) >= self.max_subscribers:
            return False
        self.subscribers[sub] = None
        return True

    def forget(self, sub: Subscriber) -> None:
        self.subscribers.pop(sub, None)

    def recent_trades(self, symbol: str, from_seq: int, as_json: bool) -> list[bytes] | None:
        """TRADE lines with seq >= from_seq if memory still has them all, else None."""
        recent = self.feeds[symbol].recent
        if recent and recent[0].seq <= from_seq or not recent and self.replay_source is None:
            return [u.json if as_json else u.text for u in recent if u.seq >= from_seq]
        return None

    async def older_trades(self, symbol: str, from_seq: int, as_json: bool) -> list[bytes]:
        """TRADE lines with seq >= from_seq: the trade log's, then memory's newer ones. Each
        trade names the one before it (prev): one that names a trade in neither means the
        trade log has not written it yet (behind, or down), and is said, not skipped."""
        rows = await self.replay_source(symbol, from_seq) if self.replay_source is not None else []
        encode = M.trade_json if as_json else M.trade_text
        known = max(from_seq - 1, 0)  # every trade up to here is before from_seq or listed (prev=0: the first trade)
        older = []
        for seq, qty, price, aggr, tid, prev in rows:
            if prev > known:
                raise TradeLogBehind(prev)
            older.append(encode(symbol, qty, price, aggr, tid, prev, seq))
            known = seq
        newer = [u for u in self.feeds[symbol].recent if u.seq > known]
        if newer and newer[0].prev > known:
            raise TradeLogBehind(newer[0].prev)
        return older + [u.json if as_json else u.text for u in newer]

    async def _watch_paused(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now, deadline = time.monotonic(), self.limits.pause_deadline
            for sub in list(self.subscribers):
                if sub.paused and now - sub.paused_since > deadline:
                    sub.drop("slow_consumer", f"not reading for {deadline:g}s; reconnect and REPLAY trades from your last seq")

    async def close(self, text: str, grace: float) -> None:
        """Send what is pending, BYE to every subscriber, close within the grace period."""
        if self._watchdog is not None:
            self._watchdog.cancel()
        self.fan_out()
        await close_all(self._server, lambda: self.subscribers, text, grace)
