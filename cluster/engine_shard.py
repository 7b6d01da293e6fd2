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
from typing import Any, Coroutine

import msgspec
import structlog

from cluster.replica import Replica
from cluster.snapshots import RoleSnapshots
from cluster.stream import PART_ITEMS, Input, Outbox
from cluster.wire import Layout, MarketUpdates, Reports, Settle, Settlement, encode, in_subject, md_subject, reports_subject
from exchange.engine import combine_hashes
from exchange.instruments import Instrument
from exchange.risk import SETTLED
from protocol.messages import MARKET_DATA_TYPES, REPORT_TYPES, Event, MarketData, Report, Trade

log = structlog.get_logger("engine")
LOGGED = REPORT_TYPES | {Trade}  # what the trade log keeps of matching's events


class Outputs:
    """What a run of inputs made for each output subject: settlements per risk shard, market
    data, and for the trade log the inputs as read with their trades and reports."""

    __slots__ = ("settled", "market", "inputs", "logged")

    def __init__(self, risk_shards: int) -> None:
        self.settled: list[list[Settlement]] = [[] for _ in range(risk_shards)]
        self.market: list[MarketData] = []
        self.inputs: list[msgspec.Raw] = []
        self.logged: list[Trade | Report] = []


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
        reader, outboxes = self.replica, self.outboxes
        answering = False
        while True:
            if not answering and self.replica.caught_up.is_set():  # its state may be asked now
                answering = True
                await self.nc.subscribe(f"state.engine.{self.shard}", cb=self._state)
                log.info("engine_shard_caught_up", shard=self.shard, applied=self.replica.applied, replayed=self.replica.replayed)
            batch = await reader.batch()
            pending, events_in = Outputs(len(outboxes)), 0
            for inp in batch:
                _, events = self.replica.apply(inp)
                if events_in and events_in + len(events) > PART_ITEMS:  # (rare: a sweep of thousands of orders)
                    await self._publish(pending, inp.seq - 1)  # what came before it
                    pending, events_in = Outputs(len(outboxes)), 0
                self._sort(inp, events, pending)
                events_in += len(events)
                if events_in > PART_ITEMS:  # one command's output alone, too large for one message: in parts
                    await self._publish(pending, inp.seq)
                    pending, events_in = Outputs(len(outboxes)), 0
            await self._publish(pending, batch[-1].seq)
            self.replica.snapshot_if_due()  # (its outputs for the batch are out: a restart after it publishes from the next)

    def _sort(self, inp: Input, events: list[Event], out: Outputs) -> None:
        """One input's events to the outputs that take them (those not published before a restart)."""
        layout, outboxes = self.layout, self.outboxes
        fresh_md = inp.seq > self.md.published_through  # else: sent before a restart
        fresh_log = inp.seq > self.reports.published_through
        if fresh_log:
            out.inputs.append(msgspec.Raw(inp.data))
        for e in events:
            kind = type(e)
            if kind in SETTLED:
                k = layout.risk_of(e.owner)  # type: ignore[union-attr]
                if inp.seq > outboxes[k].published_through:
                    out.settled[k].append(e)  # type: ignore[arg-type]  # SETTLED: exactly these types
            if kind in MARKET_DATA_TYPES and fresh_md:
                out.market.append(e)  # type: ignore[arg-type]
            if kind in LOGGED and fresh_log:
                out.logged.append(e)  # type: ignore[arg-type]

    async def _publish(self, out: Outputs, through: int) -> None:
        """Each output's message for the inputs up to `through`, at once (each subject is
        fenced on its own). One input's output over PART_ITEMS goes in parts, in order: a
        settlement's part that is not the last says only the inputs before it are settled."""
        shard = self.shard

        def settle(k: int, settled: list[Settlement]) -> Coroutine[Any, Any, None]:
            return self.outboxes[k].publish_parts(through, len(settled), lambda a, b, last: encode(Settle(settled[a:b], shard, through if last else through - 1)))

        sends = [settle(k, settled) for k, settled in enumerate(out.settled) if settled]
        if out.market:
            sends.append(self.md.publish_parts(through, len(out.market), lambda a, b, last: encode(MarketUpdates(out.market[a:b]))))
        if out.inputs:
            sends.append(self.reports.publish_parts(through, len(out.logged), lambda a, b, last: encode(Reports(out.inputs if a == 0 else [], out.logged[a:b]))))
        await asyncio.gather(*sends)

    async def _state(self, msg: Any) -> None:
        books = self.replica.books
        await msg.respond(msgspec.json.encode({"hash": combine_hashes(books[s].state_hash() for s in sorted(books)), "applied": self.replica.applied}))
