"""A risk shard: the balances of its accounts, as a state machine over in.<shard>.>.

Its one input merges, in the stream's order, the gateways' new commands (hold their funds,
number them, or refuse them) and the engine shards' matching events (settle). Accepted
commands go to their symbol's engine shard (orders.<engine>.r<shard>) with their order
ids; refusals to the gateway that sent them. The same input replayed gives the same holds,
ids and refusals: the state is rebuilt by replaying it from its first message.

A new order or replace whose owner has been shown a fill, cancel or replace that is not
settled here yet (Submit.seen: the engine shard's settlement is in flight) waits for that
settlement if the owner cannot pay for it now, and the owner's later commands wait behind
it: what a CANCELED freed pays for the next order, as in `tickline serve`. (Settlements
only give back, so a new order that can be paid now is decided now; a replace or an OCO
order, whose lock depends on another's, waits.) Whether a command waits depends only on
the input, so a replay decides it at the same point; a snapshot keeps what waits.
"""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path
from typing import Any, Coroutine, NamedTuple, cast

import msgspec
import structlog

from cluster.snapshots import RoleSnapshots
from cluster.stream import PART_ITEMS, Outbox, Tail, parts, publish_once
from cluster.wire import BalancesAnswer, Layout, Sequenced, Settle, Verdicts, decode_balances_ask, decode_in, encode, orders_subject
from exchange.instruments import Instrument
from exchange.risk import MAX_OPEN_ORDERS, Risk
from exchange.sequencer import Sequencer
from protocol.messages import Command, NewOrder, OrderCommand, Problem, Reason, Replace, Transfer

log = structlog.get_logger("risk")
# Refusals that an owner's settlements in flight may turn into an acceptance.
SETTLING_PAYS = frozenset({Reason.INSUFFICIENT_FUNDS, Reason.TOO_MANY_ORDERS})
BALANCES_WAIT = 2.0  # seconds a BALANCES waits for the settlements its asker has seen (then: stale, say so)


class Waiting(NamedTuple):
    gateway: str
    token: int
    cmd: Command
    ts_ns: int  # when its input was stored: the order's time, however long it waited
    needs: dict[int, int] | None  # engine shard -> the input it must have settled through


class RiskShard:
    def __init__(
        self, nc: Any, js: Any, shard: int, layout: Layout, instruments: dict[str, Instrument], snapshots: Path | None = None, every: int = 0,
        max_open_orders: int = MAX_OPEN_ORDERS,
    ) -> None:  # fmt: skip
        self.nc, self.js, self.shard, self.layout = nc, js, shard, layout
        self.risk = Risk(instruments)
        self.accepted = 0  # commands accepted: the next one's id is layout.order_id(shard, accepted)
        self.reader = Tail(js, f"in.{shard}.>")  # (its applied: the last input message applied)
        self.settled_through: dict[int, int] = {}  # engine shard -> its last input settled here
        # Owner -> its commands that wait for settlements its gateway had shown it (Submit.seen)
        self.waiting: dict[str, deque[Waiting]] = {}
        self.snapshots = RoleSnapshots(snapshots, instruments, every) if snapshots else None
        loaded = self.snapshots.load() if self.snapshots is not None else None
        if loaded is not None:  # the balances, holds and refs at a stream sequence, with the counters
            self.reader.applied, engine, counters = loaded
            self.risk, self.accepted = engine.risk, counters["accepted"]
            self.settled_through = {int(e): through for e, through in counters["settled_through"].items()}
            for w in msgspec.convert(counters.get("waiting", []), list[Waiting], strict=False):  # (JSON keys are strings)
                self.waiting.setdefault(cast(OrderCommand, w.cmd).owner, deque()).append(w)
        self.risk.max_open_orders = max_open_orders
        # The core's first stage, as `tickline serve` has it: numbered with this shard's
        # share of the ids, recorded by counting (publishing is this adapter's: step below).
        self.sequencer = Sequencer(self.risk, lambda: layout.order_id(shard, self.accepted), self._count)
        self.outboxes = [Outbox(js, orders_subject(e, shard)) for e in range(layout.engine_shards)]
        self._asks: set[asyncio.Task[None]] = set()
        self._asks_waiting: dict[asyncio.Future[None], dict[int, int]] = {}  # BALANCES until settled that far

    async def run(self) -> None:
        for outbox in self.outboxes:
            await outbox.open()
        through = await self.reader.begin()  # (reading from after the snapshot's sequence, self.applied)
        log.info("risk_shard_started", shard=self.shard, snapshot=self.applied, replaying_through=through)
        while not self.reader.caught_up.is_set():  # replaying: balances are not to be asked yet
            await self.step(await self.reader.batch())
        await self.nc.subscribe(f"balances.{self.shard}", cb=self._balances)
        await self.nc.subscribe(f"state.risk.{self.shard}", cb=self._state)
        log.info("risk_shard_caught_up", shard=self.shard, applied=self.applied, replayed=self.reader.replayed)
        heartbeat = asyncio.create_task(self._heartbeat())  # (the gateways call a silent shard down)
        try:
            while True:
                await self.step(await self.reader.batch())
        finally:
            heartbeat.cancel()

    @property
    def applied(self) -> int:
        """The last input message applied."""
        return self.reader.applied

    async def _heartbeat(self) -> None:
        while True:
            await self.nc.publish(f"alive.risk.{self.shard}", b"")
            await asyncio.sleep(0.5)

    async def step(self, batch: list) -> None:
        out = [Sequenced([], [], [], [], []) for _ in self.outboxes]
        verdicts: dict[str, Verdicts] = {}
        commands = 0  # (settlements not counted: a snapshot every so many commands)
        waiting = self.waiting
        for inp in batch:
            msg = decode_in(inp.data)
            if isinstance(msg, Settle):
                self.reader.mark(inp.seq, 0)
                self.risk.settle(msg.events)  # type: ignore[arg-type]
                self.settled_through[msg.engine] = msg.through
                if waiting:
                    before = ([len(s.seqs) for s in out], {g: len(v.results) for g, v in verdicts.items()})
                    self._release(inp.seq, out, verdicts)
                    if sum(len(s.seqs) for s in out) + sum(len(v.results) for v in verdicts.values()) > PART_ITEMS:
                        # (rare: tens of thousands of orders freed at once) What came before
                        # goes first; then this release alone, in parts if it is that large.
                        await self._publish(*_cut(out, verdicts, before), inp.seq - 1)
                        await self._publish(out, verdicts, inp.seq)
                        out, verdicts = [Sequenced([], [], [], [], []) for _ in self.outboxes], {}
                if self._asks_waiting:
                    self._answer_settled()
                continue
            self.reader.mark(inp.seq, len(msg.cmds))
            commands += len(msg.cmds)
            for token, cmd in zip(msg.tokens, msg.cmds, strict=True):
                if type(cmd) is not Transfer:
                    # An owner's commands are decided in their order: behind one that waits, they wait.
                    owner = cast(OrderCommand, cmd).owner
                    needs = msg.seen.get(owner) if type(cmd) is NewOrder or type(cmd) is Replace else None
                    behind = owner in waiting
                    if behind or needs is not None and not self._settled(needs):
                        # ...unless it can be paid now and the settlements cannot change its lock.
                        if behind or not _pays_alone(cmd) or not self._decide(msg.gateway, token, cmd, inp.seq, inp.ts_ns, out, verdicts, short_waits=True):
                            waiting.setdefault(owner, deque()).append(Waiting(msg.gateway, token, cmd, inp.ts_ns, needs))
                        continue
                self._decide(msg.gateway, token, cmd, inp.seq, inp.ts_ns, out, verdicts)
        await self._publish(out, verdicts, batch[-1].seq)
        self.snapshot_if_due(commands)  # (the batch's outputs are out: a restart after it publishes from the next)

    async def _publish(self, out: list[Sequenced], verdicts: dict[str, Verdicts], through: int) -> None:
        """The outputs of the inputs through `through`. Verdicts first: once any of their
        orders is out, the verdicts are too (a restart then skips them); then one message
        per engine shard, at once (each subject is fenced on its own). Over PART_ITEMS, in
        parts (then they hold one input's decisions alone: a restart makes the same parts)."""
        if through > max(o.published_through for o in self.outboxes):
            await asyncio.gather(*(self._verdicts(gateway, v, through) for gateway, v in verdicts.items() if v.results))

        def send(e: int, s: Sequenced) -> Coroutine[Any, Any, None]:
            return self.outboxes[e].publish_parts(through, len(s.seqs), lambda a, b, last: encode(s.part(a, b)))

        await asyncio.gather(*(send(e, s) for e, s in enumerate(out) if s.seqs))

    async def _verdicts(self, gateway: str, v: Verdicts, through: int) -> None:
        bounds = parts(len(v.results))
        for i, (a, b) in enumerate(bounds):
            await publish_once(self.js, f"verdicts.{gateway}", through, encode(Verdicts(v.results[a:b])), i, len(bounds))

    def snapshot_if_due(self, commands: int) -> None:
        """After a batch of so many commands: the balances, holds, refs and counters, and
        what waits for a settlement (owner by owner, in order), every so many commands."""
        snapshots = self.snapshots
        if snapshots is not None:
            snapshots.applied(commands)
            if snapshots.due():
                held = msgspec.to_builtins([w for queue in self.waiting.values() for w in queue])
                counters = {"accepted": self.accepted, "settled_through": self.settled_through, "waiting": held}
                snapshots.take(self.applied, {}, self.risk, counters)

    def _settled(self, needs: dict[int, int]) -> bool:
        """Has every engine shard's settlement reached what the owner was shown?"""
        settled = self.settled_through  # (per order of an owner who was sent money events: no list, no sort)
        for engine, seq in needs.items():
            if settled.get(engine, 0) < seq:
                return False
        return True

    def _behind(self, needs: dict[int, int]) -> list[int]:
        """The engine shards whose settlements have not reached what the owner was shown."""
        settled = self.settled_through
        return sorted(e for e, seq in needs.items() if settled.get(e, 0) < seq)

    def _release(self, input_seq: int, out: list[Sequenced], verdicts: dict[str, Verdicts]) -> None:
        """After a settlement: decide what waited for it, each owner's in order."""
        waiting = self.waiting
        for owner in list(waiting):  # (in the order they began to wait: the input's)
            queue = waiting[owner]
            while queue and (queue[0].needs is None or self._settled(queue[0].needs)):
                w = queue.popleft()
                self._decide(w.gateway, w.token, w.cmd, input_seq, w.ts_ns, out, verdicts)
            if not queue:
                del waiting[owner]

    def _decide(
        self, gateway: str, token: int, cmd: Command, input_seq: int, ts_ns: int, out: list[Sequenced], verdicts: dict[str, Verdicts], short_waits: bool = False
    ) -> bool:
        """Hold, number or refuse one command, while input input_seq is applied; an accepted
        order goes to its engine shard's message, a refusal to its gateway's verdicts.
        short_waits: a refusal for want of funds or of an open-order place is not made
        (False: nothing changed), as the settlements in flight may pay for it."""
        seq = self.sequencer.step(cmd)
        if type(seq) is Problem:  # (a duplicate transfer's carries the seq it was applied as)
            if short_waits and seq.reason in SETTLING_PAYS:
                return False
            verdicts.setdefault(gateway, Verdicts([])).results.append((token, seq.seq, seq.reason._value_, seq.text))
            return True
        seq = cast(int, seq)
        if type(cmd) is Transfer:  # nothing to match: the sender hears here
            verdicts.setdefault(gateway, Verdicts([])).results.append((token, seq, "", ""))
            return True
        e = self.layout.engine_of(cast(OrderCommand, cmd).symbol)
        if input_seq > self.outboxes[e].published_through:  # else: published before a restart
            s = out[e]
            s.ts_ns.append(ts_ns)
            s.seqs.append(seq)
            s.cmds.append(cmd)
            s.gateways.append(gateway)
            s.tokens.append(token)
        return True

    def _count(self, cmd: Command) -> None:
        self.accepted += 1

    async def _balances(self, msg: Any) -> None:
        task = asyncio.create_task(self._answer_balances(msg))  # one that waits holds up no other
        self._asks.add(task)
        task.add_done_callback(self._asks.discard)

    async def _answer_balances(self, msg: Any) -> None:
        """An account's balances once every fill and cancel its asker has seen is settled
        here (a client that read FILL and then BALANCES sees the fill in it)."""
        ask = decode_balances_ask(msg.data)
        if not self._settled(ask.seen):  # settlements are milliseconds behind; give up after BALANCES_WAIT s
            settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._asks_waiting[settled] = ask.seen
            try:
                await asyncio.wait_for(settled, BALANCES_WAIT)
            except asyncio.TimeoutError:
                pass
            finally:
                self._asks_waiting.pop(settled, None)
        await msg.respond(encode(BalancesAnswer(self.risk.of(ask.account), self._behind(ask.seen))))

    def _answer_settled(self) -> None:
        """The BALANCES asks whose asker's fills and cancels are now all settled here."""
        for settled, seen in list(self._asks_waiting.items()):
            if not settled.done() and self._settled(seen):
                settled.set_result(None)

    async def _state(self, msg: Any) -> None:
        """For tests and operators: the state hash, every balance, the last input applied."""
        rows, _, _ = self.risk.state()
        await msg.respond(msgspec.json.encode({"hash": self.risk.state_hash(), "balances": rows, "applied": self.applied, "accepted": self.accepted}))


def _pays_alone(cmd: Command) -> bool:
    """Whether a command's hold is the same before and after the owner's settlements in
    flight: a new order's is, unless it is one of an OCO pair (its lock depends on the
    other order's, which a fill may have closed); a replace's depends on what its order
    still holds. Settlements only give back (a fill's proceeds and price improvement, a
    cancel's lock, an open-order place), so such an order that can be paid now would be
    paid after them too, the same lock: decided at once, it changes nothing but the wait."""
    return type(cmd) is NewOrder and cmd.oco is None


def _cut(out: list[Sequenced], verdicts: dict[str, Verdicts], marks: tuple[list[int], dict[str, int]]) -> tuple[list[Sequenced], dict[str, Verdicts]]:
    """Take what was decided before `marks` (the lengths then) out of `out` and `verdicts`."""
    ends, results = marks
    head = {g: Verdicts(v.results[: results.get(g, 0)]) for g, v in verdicts.items()}
    for g, v in verdicts.items():
        del v.results[: results.get(g, 0)]
    return [s.cut(end) for s, end in zip(out, ends, strict=True)], head
