"""An engine shard: the books of its symbols (the configuration's table), matching the
commands of orders.<shard>.> in the stream's order; the settlement of every match sent to
the risk shard of each account it moves money for (in.<risk>.e<shard>), its market
data (trades, level changes, quotes) to md.<shard>, which the notifiers read, and its
trades and execution reports with the input they came from to reports.<shard>, which the
trade log reads: matching runs once for each of them.

The gateways still apply the same orders.> to their own replicas (cluster/replica.py):
they need the books too (BOOK, ORDERS, a market BUY's budget) and their owners' reports.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import structlog

from cluster.replica import Replica
from cluster.snapshots import RoleSnapshots
from cluster.stream import Outbox
from cluster.wire import Layout, MarketUpdates, Reports, Settle, Settlement, encode, in_subject, md_subject, reports_subject
from exchange.engine import combine_hashes
from exchange.instruments import Instrument
from exchange.risk import SETTLED
from protocol.messages import MARKET_DATA_TYPES, REPORT_TYPES, MarketData, Report, Trade

log = structlog.get_logger("engine")
LOGGED = REPORT_TYPES | {Trade}  # what the trade log keeps of matching's events


class EngineShard:
    def __init__(self, nc: Any, js: Any, shard: int, layout: Layout, instruments: dict[str, Instrument], snapshots: Path | None = None, every: int = 0) -> None:
        self.nc, self.shard, self.layout = nc, shard, layout
        mine = {s: i for s, i in instruments.items() if layout.engine_of(s) == shard}
        self.replica = Replica(js, mine, f"orders.{shard}.>", RoleSnapshots(snapshots, mine, every) if snapshots else None)
        self.outboxes = [Outbox(js, in_subject(k, f"e{shard}")) for k in range(layout.risk_shards)]
        self.md = Outbox(js, md_subject(shard))
        self.reports = Outbox(js, reports_subject(shard))

    async def run(self) -> None:
        for outbox in (*self.outboxes, self.md, self.reports):
            await outbox.open()
        through = await self.replica.begin()
        log.info("engine_shard_started", shard=self.shard, symbols=" ".join(self.replica.books), replaying_through=through)
        reader, layout, outboxes, md, reports = self.replica, self.layout, self.outboxes, self.md, self.reports
        answering = False
        while True:
            if not answering and self.replica.caught_up.is_set():  # its state may be asked now
                answering = True
                await self.nc.subscribe(f"state.engine.{self.shard}", cb=self._state)
                log.info("engine_shard_caught_up", shard=self.shard, applied=self.replica.applied, replayed=self.replica.replayed)
            batch = await reader.batch()
            out: list[list[Settlement]] = [[] for _ in outboxes]
            market: list[MarketData] = []
            inputs: list[msgspec.Raw] = []
            logged: list[Trade | Report] = []
            for inp in batch:
                _, events = self.replica.apply(inp)
                fresh_md = inp.seq > md.published_through  # else: sent before a restart
                fresh_log = inp.seq > reports.published_through
                if fresh_log:
                    inputs.append(msgspec.Raw(inp.data))
                for e in events:
                    kind = type(e)
                    if kind in SETTLED:
                        k = layout.risk_of(e.owner)  # type: ignore[union-attr]
                        if inp.seq > outboxes[k].published_through:
                            out[k].append(e)  # type: ignore[arg-type]  # SETTLED: exactly these types
                    if kind in MARKET_DATA_TYPES and fresh_md:
                        market.append(e)  # type: ignore[arg-type]
                    if kind in LOGGED and fresh_log:
                        logged.append(e)  # type: ignore[arg-type]
            through = batch[-1].seq
            sends = [outboxes[k].publish(through, encode(Settle(settled, self.shard, through))) for k, settled in enumerate(out) if settled]
            if market:
                sends.append(md.publish(through, encode(MarketUpdates(market))))
            if inputs:
                sends.append(reports.publish(through, encode(Reports(inputs, logged))))
            await asyncio.gather(*sends)
            self.replica.snapshot_if_due()  # (its outputs for the batch are out: a restart after it publishes from the next)

    async def _state(self, msg: Any) -> None:
        books = self.replica.books
        await msg.respond(msgspec.json.encode({"hash": combine_hashes(books[s].state_hash() for s in sorted(books)), "applied": self.replica.applied}))
