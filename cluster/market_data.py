"""A notifier's input: the market data the engine shards publish (md.>).

A notifier keeps no books. Each symbol's feed (notifier/feed.py) is the L2 and the top
that the symbol's trades, level changes and quotes imply, with the seq of each kind's last
update (the prev links), so following md.> from a snapshot of the feeds gives exactly the
lines `tickline serve` sends, after any restart.

Its snapshots are the feeds' states at a stream sequence (cluster/snapshots.py
StateSnapshots: `feeds-<seq>.msgpack` in <cluster dir>/snapshots/notifier-<n>/, msgpack
symbol -> state).
"""

from __future__ import annotations

from typing import Any

from cluster.snapshots import StateSnapshots
from cluster.stream import Tail
from cluster.wire import decode_market_updates
from protocol.messages import MarketData


class MarketDataTail(Tail):
    """md.>: every engine shard's market data, in the stream's order (each symbol's is in
    its seq order: one engine shard publishes it)."""

    def __init__(self, js: Any, snapshots: StateSnapshots) -> None:
        super().__init__(js, "md.>")
        self.snapshots = snapshots

    async def updates(self) -> list[MarketData]:
        """The updates of every message that has arrived (at least one message)."""
        out: list[MarketData] = []
        for inp in await self.batch():
            events = decode_market_updates(inp.data).events
            out += events
            self.mark(inp.seq, len(events))
            self.snapshots.applied(len(events))
        return out
