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
from typing import Any, Callable

import msgspec
import structlog

from cluster.replica import Replica
from cluster.snapshots import RoleSnapshots
from cluster.stream import Input, Outbox
from cluster.wire import Layout, MarketUpdates, Reports, Settle, Settlement, encode, in_subject, md_subject, reports_subject
from exchange.engine import combine_hashes
from exchange.instruments import Instrument
from exchange.risk import SETTLED
from protocol.messages import MARKET_DATA_TYPES, REPORT_TYPES, Event, MarketData, Report, Trade

log = structlog.get_logger("engine")
LOGGED = REPORT_TYPES | {Trade}  # what the trade log keeps of matching's events
# Events in one message at most. A message must stay under the nodes' max_payload
# (cluster/nats.py, 8 MiB), and one command's output has no bound: a market order that
# sweeps 70,000 resting orders makes 70,000 trades and 140,000 fills. An event is at most
# a few hundred bytes (names and client ids are 32 characters at most), ~46 in the 70,000
# sweep: ~0.7-4 MB a message.
PART_EVENTS = 16_000


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
                if events_in and events_in + len(events) > PART_EVENTS:  # (rare: a sweep of thousands of orders)
                    await self._publish(pending, inp.seq - 1)  # what came before it
                    pending, events_in = Outputs(len(outboxes)), 0
                self._sort(inp, events, pending)
                events_in += len(events)
                if events_in > PART_EVENTS:  # one command's output alone, too large for one message: in parts
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
        fenced on its own). One input's output over PART_EVENTS goes in parts, in order: a
        settlement's part that is not the last says only the inputs before it are settled."""

        async def send(outbox: Outbox, items: list, make: Callable[[list, bool, bool], Any]) -> None:
            parts = [items[i : i + PART_EVENTS] for i in range(0, len(items), PART_EVENTS)] or [[]]
            for i, part in enumerate(parts):
                await outbox.publish(through, encode(make(part, i == 0, i == len(parts) - 1)), i, len(parts))

        shard = self.shard
        sends = [
            send(self.outboxes[k], settled, lambda part, first, last: Settle(part, shard, through if last else through - 1))
            for k, settled in enumerate(out.settled) if settled
        ]  # fmt: skip
        if out.market:
            sends.append(send(self.md, out.market, lambda part, first, last: MarketUpdates(part)))
        if out.inputs:
            sends.append(send(self.reports, out.logged, lambda part, first, last: Reports(out.inputs if first else [], part)))
        await asyncio.gather(*sends)

    async def _state(self, msg: Any) -> None:
        books = self.replica.books
        await msg.respond(msgspec.json.encode({"hash": combine_hashes(books[s].state_hash() for s in sorted(books)), "applied": self.replica.applied}))
