"""The cluster's composition root: each role as a process over NATS JetStream, and
`tickline cluster up/down` (docs/SCALING.md).

    clients --TCP--> gateway(s) --Submit--> in.<risk shard>  (an ACK: accepted and on a quorum)
    risk shard (holds, ids) --Sequenced--> orders.<engine shard>.r<risk>
    engine shard (matching) --Settle--> in.<risk shard>  (the merge is the stream's)
    engine shard --MarketUpdates--> md.<engine shard> --> notifiers (market data to their
                 share of the subscribers)
    engine shard --Reports--> reports.<engine shard> --> the trade log (SQLite)
    orders.> --> replicas: gateways (BOOK, ORDERS, execution reports)

Every process is started by `up` with the same cluster.json; each role wires its pieces
in the numbered order of the data's path.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Container, cast

import msgspec
import structlog

from cluster.engine_shard import EngineShard
from cluster.market_data import MarketDataTail
from cluster.nats import NatsCluster, process_alive
from cluster.replica import Replica
from cluster.retention import compact
from cluster.risk_shard import RiskShard
from cluster.snapshots import RoleSnapshots, StateSnapshots, StreamCompacted, dropped_through, kept_snapshots
from cluster.stream import Input, Reader, Tail, connect, ensure_stream, stream_ready
from cluster.submitter import Submitter
from cluster.supervisor import Chore, Supervisor, Watched
from cluster.trade_log import Logged, ReportsTail
from cluster.wire import LOGGED_SUBJECT, STREAM, BalancesAsk, Layout, Sequenced, decode_balances_answer, decode_verdicts, encode
from exchange.book import Book, disconnected
from exchange.instruments import assets_of, load_instruments
from exchange.risk import MAX_OPEN_ORDERS, SETTLED, Risk
from exchange.transfers import reply as transfer_reply
from exchange.transfers import terms as transfer_terms
from exchange.transfers import unknown_account
from gateway.desk import LOGGED_WAIT, OrderDesk, SourceUnavailable
from gateway.intake import StreamIntake
from gateway.server import MAX_BACKLOG, Gateway
from journal.accounts import Accounts
from journal.history import History
from journal.layout import DataDir
from journal.records import encode_batch
from journal.tradelog import TradeLog
from notifier.feed import SymbolFeed
from notifier.server import Notifier
from protocol.messages import Command, Event, NewOrder, OrderCommand, Problem, Reason, Transfer
from telemetry.probes import raised_at
from telemetry.registry import Telemetry
from tickline import __version__
from tickline.tuning import tune_runtime

log = structlog.get_logger("cluster")
DECISIONS_GRACE = 10.0  # seconds a stopping gateway waits for the risk shards' decisions on what it took
RISK_SILENT = 3.0  # seconds without a risk shard's heartbeat (it sends one every 0.5 s) before a gateway calls it down
DECISION_WAIT = 20.0  # seconds a new order or replace waits for a risk shard that answers but cannot decide (no quorum) before it is refused
TRADELOG_BEHIND = 100_000  # rows handed to the trade log's writer and not committed before reading waits


@dataclass
class ClusterConfig:
    directory: str = "var/cluster"
    host: str = "127.0.0.1"
    port: int = 7001  # every gateway listens here (SO_REUSEPORT: the kernel spreads clients)
    md_port: int = 7002  # every notifier listens here
    gateways: int = 1
    notifiers: int = 1
    risk_shards: int = 1
    engines: dict[str, int] = field(default_factory=dict)  # symbol -> engine shard (default 0)
    engine_shards: int = 1
    nats_ports: list[tuple[int, int]] = field(default_factory=lambda: [(4222, 6222), (4223, 6223), (4224, 6224)])
    instruments: str | None = None
    supervise: bool = True  # a supervisor process restarts a role that dies (cluster/supervisor.py)
    snapshot_every: int = 100_000  # commands a role applies between its snapshots (0: none); cluster/snapshots.py
    # Open orders one account may have: fixed for the cluster's life (a restarted risk shard
    # decides its input's tail again, and must decide it as it did).
    max_open_orders: int = MAX_OPEN_ORDERS
    max_backlog: int = MAX_BACKLOG  # a gateway's commands not decided yet past which it stops reading (as serve's)
    compact_every: float = 60.0  # seconds between the supervisor's runs of `cluster compact` (0: never)

    def snapshots(self, role: str, index: int) -> Path:
        """Where a role keeps its snapshots (with snapshot_every 0 it writes none, but loads
        what is there: the stream may have been compacted since they were written)."""
        return self.snapshots_root / f"{role}-{index}"

    @property
    def snapshots_root(self) -> Path:
        return Path(self.directory) / "snapshots"

    def roles(self) -> list[tuple[str, int]]:
        """Every role process of this cluster, as (role, index)."""
        counts = {"tradelog": 1, "risk": self.risk_shards, "engine": self.engine_shards, "gateway": self.gateways, "notifier": self.notifiers}
        return [(role, index) for role, n in counts.items() for index in range(n)]

    @property
    def layout(self) -> Layout:
        return Layout(self.risk_shards, dict(self.engines), self.engine_shards)

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{client}" for client, _ in self.nats_ports]

    @property
    def data(self) -> DataDir:
        return DataDir(Path(self.directory))  # accounts.db and trades.db, as for `serve`

    def save(self) -> None:
        Path(self.directory).mkdir(parents=True, exist_ok=True)
        (Path(self.directory) / "cluster.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> ClusterConfig:
        raw = json.loads((Path(directory) / "cluster.json").read_text())
        raw["nats_ports"] = [tuple(p) for p in raw["nats_ports"]]
        return cls(**raw)


# ---------------------------------------------------------------------- roles


async def run_role(config: ClusterConfig, role: str, index: int) -> int:
    register(Path(config.directory), role, index)  # (started by hand too: `down` stops it)
    tune_runtime()  # the collector as `tickline serve` sets it: every role keeps books too
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopped = asyncio.create_task(stop.wait())
    # A signal stops a role that is still starting too: it may wait for its NATS nodes forever.
    starting = asyncio.create_task(_start_role(config, role, index))
    await asyncio.wait([starting, stopped], return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        log.info("stopped", role=role, index=index, started=False)
        return 0
    try:
        nc, work, closers = starting.result()
    except StreamCompacted as exc:  # (its input has a hole: no state can be built from it)
        log.error("role_cannot_start", role=role, index=index, why=str(exc))
        return 2
    done, _ = await asyncio.wait([work, stopped], return_when=asyncio.FIRST_COMPLETED)
    failed = work in done and work.exception() is not None
    if failed:
        error = cast(BaseException, work.exception())
        log.error("role_failed", role=role, index=index, error=repr(error), at=raised_at(error))
    for close in closers:  # each stops its own work in the order it needs (a gateway: its clients first)
        await close()
    work.cancel()
    await nc.close()
    log.info("stopped", role=role, index=index)
    return 1 if failed else 0


async def _start_role(config: ClusterConfig, role: str, index: int) -> tuple[Any, asyncio.Task[Any], list[Any]]:
    """Connected, the stream there, the role's state loaded and its work started: (the NATS
    connection, the work, what stops it in order)."""
    nc, js = await connect(config.urls, f"{role}-{index}")
    await ensure_stream(js)
    instruments = load_instruments(Path(config.instruments) if config.instruments else None)
    work: asyncio.Task[Any]
    closers: list[Any] = []
    snapshots, every = config.snapshots(role, index), config.snapshot_every
    try:
        if role == "risk":
            shard = RiskShard(nc, js, index, config.layout, instruments, snapshots, every, max_open_orders=config.max_open_orders)
            work = asyncio.create_task(shard.run())
        elif role == "engine":
            work = asyncio.create_task(EngineShard(nc, js, index, config.layout, instruments, snapshots, every).run())
        elif role == "gateway":
            work, closers = await _gateway(config, index, nc, js, instruments)
        elif role == "notifier":
            work, closers = await _notifier(config, index, js, instruments)
        elif role == "tradelog":
            work, closers = await _tradelog(config, nc, js, instruments)
        else:
            raise ValueError(f"no role {role}")
    except BaseException:  # (StreamCompacted, or cancelled by a signal)
        await nc.close()
        raise
    return nc, work, closers


async def _gateway(config: ClusterConfig, index: int, nc: Any, js: Any, instruments: dict) -> tuple[asyncio.Task[Any], list[Any]]:
    role = GatewayRole(config, index, nc, js, instruments)
    follow = await role.start()
    return follow, [role.close]


class GatewayRole:
    """A cluster gateway: the same Gateway, Connection and OrderDesk as `tickline serve`,
    with a StreamIntake: commands go to the accounts' risk shards, decisions and matching
    come back on the stream. Each numbered step is a method, called in order by start()."""

    def __init__(self, config: ClusterConfig, index: int, nc: Any, js: Any, instruments: dict) -> None:
        self.config, self.index, self.nc, self.js, self.instruments = config, index, nc, js, instruments
        self.name = f"g{index}x{time.time_ns():x}"  # this incarnation: its tickets are its own
        self.telemetry = Telemetry()
        self.events: list[Event] = []  # a stream batch's matching events, handed to the gateway after it
        self.money_seen: dict[str, dict[int, int]] = {}  # account -> engine shard -> input of its last money event here
        self.applied_of: dict[int, int] = {}  # engine shard -> its last input applied here (what this gateway may have sent of it)
        self.entered_via: dict[int, int] = {}  # order id -> the gateway index it came through, for cancel_on_disconnect orders

    async def start(self) -> asyncio.Task[Any]:
        self.build_intake()  # 1
        await self.build_desk()  # 2
        follow = self.follow_the_stream()  # 3
        await self.listen(follow)  # 4
        return follow

    def build_intake(self) -> None:
        """1. The replica of every engine shard's books, and the intake: commands to the
        accounts' risk shards (grouped into one message per shard while one is in flight)."""
        self.replica = Replica(self.js, self.instruments, snapshots=_role_snapshots(self.config, "gateway", self.index, self.instruments), market_data=False)
        self.entered_via = {order_id: index for order_id, index in self.replica.extra.get("entered_via", [])}
        self.replica.extra_of = self._snapshot_extra
        submitter = Submitter(self.js, self.name, self.config.layout, self.money_seen.get)
        self.intake = StreamIntake(self.name, submitter.forward, self.unavailable)
        self.heard: dict[int, float] = {}  # risk shard -> when its last heartbeat came (alive.risk.<k>)
        self.since = time.monotonic()

    def risk_down(self, account: str) -> str | None:
        """Why the account's risk shard cannot answer now (no heartbeat for RISK_SILENT s), or None."""
        shard = self.config.layout.risk_of(account)
        if time.monotonic() - self.heard.get(shard, self.since) > RISK_SILENT:
            return f"risk shard {shard} is not answering"
        return None

    def unavailable(self, cmd: Command) -> str | None:
        return self.risk_down(cast(OrderCommand, cmd).owner)

    async def _heartbeat(self, msg: Any) -> None:
        self.heard[int(msg.subject.rsplit(".", 1)[1])] = time.monotonic()

    async def _give_up(self) -> None:
        """Twice a second: what waits on a silent risk shard, or too long on any, is refused."""
        while True:
            await asyncio.sleep(0.5)
            if self.intake.give_up(RISK_SILENT, DECISION_WAIT):
                self._after_batch()

    async def build_desk(self) -> None:
        """2. The desk and the gateway: balances from the account's risk shard, history from
        the trade log's file (up to what this gateway has heard of)."""
        data, books, intake = self.config.data, self.replica.books, self.intake
        self.accounts = Accounts(data.accounts)
        await self.accounts.open()

        async def heard_of() -> int:  # (REPORTS' through=: what the file holds all of)
            latest = intake.latest
            await self.logged(dict(self.applied_of))
            return latest

        self.history = History(data.trades, self.instruments, lambda symbol: books[symbol].bbo(), heard_of)
        self.desk = OrderDesk(
            self.instruments, books, Risk(self.instruments), intake, version=__version__,
            check_password=self.accounts.check, market_source=self.history.answer, reports_source=self.history.reports,
            balances_source=self.balances, telemetry=self.telemetry,
        )  # fmt: skip (its Risk only names the assets: the balances are the risk shards')
        self.gateway = Gateway(self.desk, telemetry=self.telemetry, backlog=lambda: intake.tickets - intake.through, max_backlog=self.config.max_backlog)

    async def balances(self, account: str) -> list[tuple[str, int, int]]:
        """BALANCES, once the risk shard has settled what this gateway has shown the account."""
        down = self.risk_down(account)
        if down is not None:
            raise SourceUnavailable(f"{down}; try again")
        ask = encode(BalancesAsk(account, self.money_seen.get(account, {})))
        try:
            reply = await self.nc.request(f"balances.{self.config.layout.risk_of(account)}", ask, timeout=5)
        except Exception as exc:  # (nats: a timeout, no responders)
            raise SourceUnavailable(f"risk shard {self.config.layout.risk_of(account)} did not answer ({type(exc).__name__}); try again") from None
        answer = decode_balances_answer(reply.data)
        if answer.behind:  # (the FILL went out from this gateway's books; its settlement has not reached the shard)
            shards = ", ".join(map(str, answer.behind))
            raise SourceUnavailable(f"engine shard {shards} has not settled what you were sent yet: the balances would be stale; try again")
        return answer.rows

    async def logged(self, wanted: dict[int, int]) -> None:
        """Once the trade log's file holds the rows of each engine shard's inputs through
        `wanted` (those this gateway has applied, its replies and reports made from them):
        the trade log is asked, for LOGGED_WAIT s at most."""
        deadline = time.monotonic() + LOGGED_WAIT
        while True:
            try:
                # (no longer than what is left: a REPORTS answers within LOGGED_WAIT, not twice that)
                reply = await self.nc.request(LOGGED_SUBJECT, b"", timeout=max(0.1, deadline - time.monotonic()))
            except Exception as exc:  # (nats: a timeout, no responders)
                raise SourceUnavailable(f"the trade log did not answer ({type(exc).__name__}); try again") from None
            have = msgspec.msgpack.decode(reply.data, type=dict[int, int])
            behind = sorted(e for e, through in wanted.items() if have.get(e, 0) < through)
            if not behind:
                return
            if time.monotonic() >= deadline:
                shards = ", ".join(map(str, behind))
                raise SourceUnavailable(f"the trade log has not written all that engine shard {shards} matched yet: the answer would leave some out; try again")
            await asyncio.sleep(0.01)

    def follow_the_stream(self) -> asyncio.Task[Any]:
        """3. What comes back, both from the stream: refusals (verdicts.<this gateway>), and
        the accepted commands with their matching (orders.>); then ACKs and REJs in request
        order, then the reports."""
        self.refusals = asyncio.create_task(self._read_refusals())
        self.watch = asyncio.create_task(self._give_up())
        return asyncio.create_task(self._follow_orders())

    async def _read_refusals(self) -> None:  # (a gateway sends no transfers: every verdict is a refusal)
        verdicts = Reader(self.js, f"verdicts.{self.name}")
        await verdicts.start()
        while True:
            for inp in await verdicts.batch():
                for ticket, _, reason, text in decode_verdicts(inp.data).results:
                    self.intake.turned_down(ticket, reason, text)
            self._after_batch()

    async def _follow_orders(self) -> None:
        await self.replica.begin()
        await self.replica.follow(self._applied, self._after_batch)

    def _applied(self, inp: Input, s: Sequenced, made: list[Event]) -> None:
        for gw, ticket, seq, cmd in zip(s.gateways, s.tokens, s.seqs, s.cmds, strict=True):
            self.intake.sequenced(gw, ticket, seq, cmd)
            if type(cmd) is NewOrder and cmd.cod:
                self.entered_via[seq] = gateway_index(gw)
        self.events.extend(made)
        engine, sessions_of = int(inp.subject.split(".")[1]), self.gateway.by_owner  # orders.<engine>.r<risk>
        self.applied_of[engine] = inp.seq
        for e in made:  # only owners with a session here can have seen it (and ask)
            if type(e) in SETTLED and e.owner in sessions_of:  # type: ignore[union-attr]
                self.money_seen.setdefault(e.owner, {})[engine] = inp.seq  # type: ignore[union-attr]

    def _snapshot_extra(self) -> dict[str, Any]:
        """What the books do not say: the gateway each open cancel_on_disconnect order came
        through (forgotten once closed)."""
        is_open = self.desk.orders.is_open
        self.entered_via = {order_id: index for order_id, index in self.entered_via.items() if is_open(order_id)}
        return {"entered_via": sorted(self.entered_via.items())}

    async def cancel_what_the_last_run_left(self) -> None:
        """Orders entered with cancel_on_disconnect through this gateway's index by its last
        run (killed or stopped: every connection went with it) are canceled, as `tickline
        serve`'s restart does, before it listens (their decisions waited for a while)."""
        mine = self.index
        cancels = disconnected(self.replica.books, lambda order_id: self.entered_via.get(order_id) == mine)
        for cancel in cancels:
            self.desk.submit(cancel)
        intake, deadline = self.intake, time.monotonic() + DECISIONS_GRACE
        while intake.advance() < intake.tickets and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if cancels:
            log.info("disconnected_orders_canceled", orders=sum(len(c.order_ids or []) for c in cancels), undecided=intake.tickets - intake.advance())

    def _after_batch(self) -> None:
        """The batch's replies (ACKs, REJs), then its reports, then what waited for its
        matching (queries, CANCELED_ALL, a QUIT): as serve sends them. The open orders (and
        CANCEL ALL's counts) follow the batch first."""
        gateway, intake = self.gateway, self.intake
        reports = gateway.desk.reports(self.events) if self.events else []
        self.events.clear()  # (read, not kept)
        through = intake.advance()
        gateway.on_released(through)
        intake.matched(through)
        gateway.send_reports(reports)  # (and on_matched: what waited for matching goes now)
        gateway.write_now()

    async def listen(self, follow: asyncio.Task[Any]) -> None:
        """4. Once caught up with the stream (current books), listen."""
        await _until_caught_up(self.replica, follow)
        await self.nc.subscribe("alive.risk.*", cb=self._heartbeat)
        self.since = time.monotonic()  # (a shard is given RISK_SILENT from now to be heard)
        await self.cancel_what_the_last_run_left()
        host, port = await self.gateway.start(self.config.host, self.config.port, reuse_port=True)
        log.info("order_entry_listening", host=host, port=port, gateway=self.name, caught_up=self.replica.applied, replayed=self.replica.replayed)
        self.follow = follow

    async def close(self) -> None:
        """Take no more requests, then wait (a while) for the decisions on those taken: the
        stream is still followed, so their ACKs and REJs go out before the BYE."""
        intake, follow = self.intake, self.follow
        self.gateway.stop_accepting()
        deadline = time.monotonic() + DECISIONS_GRACE
        while intake.advance() < intake.tickets and not follow.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        undecided = intake.tickets - intake.advance()
        if undecided:
            log.warning("shutting_down_undecided", requests=undecided)
        await self.gateway.close(f"shutting down; {undecided} requests undecided: see ORDERS after reconnecting" if undecided else "shutting down", 2.0)
        self.refusals.cancel()
        self.watch.cancel()
        follow.cancel()
        await self.history.close()
        await self.accounts.close()


async def _nothing_to_wait_for() -> int:
    return 0


async def _until_caught_up(tail: Tail, follow: asyncio.Task[Any]) -> None:
    """Listen only with current state: wait for the input's tail (or for its task to fail)."""
    waiter = asyncio.create_task(tail.caught_up.wait())
    await asyncio.wait([follow, waiter], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()


def gateway_index(name: str) -> int:
    """The index of a gateway incarnation's name, g<index>x<time> (-1: not a gateway's)."""
    index, x, _ = name[1:].partition("x")
    return int(index) if name[:1] == "g" and x and index.isdigit() else -1


def _role_snapshots(config: ClusterConfig, role: str, index: int, instruments: dict) -> RoleSnapshots:
    return RoleSnapshots(config.snapshots(role, index), instruments, config.snapshot_every)


async def _notifier(config: ClusterConfig, index: int, js: Any, instruments: dict) -> tuple[asyncio.Task[Any], list[Any]]:
    """No books: the feeds as the engine shards' market data (md.>) makes them, from the
    newest snapshot of them."""
    snapshots = StateSnapshots(config.snapshots("notifier", index), config.snapshot_every, "feeds")
    loaded = snapshots.load()
    tail = MarketDataTail(js, snapshots)
    tail.applied, states = loaded if loaded is not None else (0, {})
    feeds = {s: SymbolFeed(inst, states[s]) if s in states else SymbolFeed.of_book(Book(inst)) for s, inst in sorted(instruments.items())}
    history = History(config.data.trades, instruments, lambda symbol: (None, None), _nothing_to_wait_for)  # (REPLAY only: no TICKER here)
    notifier = Notifier(feeds, history.older_trades, version=__version__)

    async def follow() -> None:
        while True:
            notifier.on_events(await tail.updates())
            if snapshots.due():
                snapshots.take(tail.applied, {s: feed.state() for s, feed in feeds.items()})

    through = await tail.begin()
    following = asyncio.create_task(follow())
    await _until_caught_up(tail, following)  # (what it applies fills the feeds' memory of trades for REPLAY)
    host, port = await notifier.start(config.host, config.md_port, reuse_port=True)
    log.info("market_data_listening", host=host, port=port, notifier=index, caught_up=through, replayed=tail.replayed)

    async def close() -> None:
        await notifier.close("shutting down", 2.0)

    return following, [close]


async def _tradelog(config: ClusterConfig, nc: Any, js: Any, instruments: dict) -> tuple[asyncio.Task[Any], list[Any]]:
    """No books: the rows of what the engine shards' matching made (reports.>), from how far
    the newest snapshot says the file holds; and how far that is, to a gateway that asks."""
    tradelog = TradeLog(config.data.trades, instruments)
    await tradelog.open()
    writer = asyncio.create_task(tradelog.run())
    snapshots = StateSnapshots(config.snapshots("tradelog", 0), config.snapshot_every, "through")
    tail = ReportsTail(js, snapshots)
    loaded = snapshots.load()
    tail.applied = loaded[0] if loaded is not None else 0
    logged = Logged(loaded[1].get("logged", {}) if loaded is not None else {})

    async def follow() -> None:
        # Nothing is dropped here (tickline serve drops past max_rows and refills from its
        # journal): reading the stream waits while the writer is behind.
        while True:
            for engine, through, inputs, events in await tail.reports():
                for s in inputs:
                    for first, cmds, ts in s.runs():  # their audit rows, their trades' time
                        tradelog.on_durable(first, len(cmds), encode_batch(first, cmds, ts))
                tradelog.on_events(events)
                logged.hand(tradelog.queued, engine, through)
            if snapshots.due():  # (written once the rows it covers are in the file)
                snapshots.take(tail.applied, {"logged": logged.all()}, tradelog.wait_committed)
            while tradelog.queued - tradelog.committed > TRADELOG_BEHIND:
                await tradelog.wait_committed()

    async def announce() -> None:  # (what `up` and a restart's timing wait for)
        await tail.caught_up.wait()
        await tradelog.wait_committed()
        log.info("tradelog_caught_up", applied=tail.applied, replayed=tail.replayed)

    async def how_far(msg: Any) -> None:
        await msg.respond(msgspec.msgpack.encode(logged.now(tradelog.committed)))

    await tail.begin()
    await nc.subscribe(LOGGED_SUBJECT, cb=how_far)
    log.info("tradelog_started", path=str(config.data.trades))
    follow_task = asyncio.create_task(follow())
    announcing = asyncio.create_task(announce())

    async def close() -> None:
        announcing.cancel()
        follow_task.cancel()  # nothing more handed to the writer, then it finishes what it has
        await tradelog.close()
        await writer

    return follow_task, [close]


# ---------------------------------------------------------------------- up / down


class RoleRunning(Exception):
    """Another process serves this role of this cluster already."""


def claim_role(directory: Path, role: str, index: int) -> IO[str]:
    """This process's claim on `<role> <index>` of the cluster in directory, held (an open,
    locked file) until it exits: the kernel lets go of a dead one's, so a kill -9 frees it
    for the restart. A second copy would take the same clients (a gateway's or notifier's
    port is shared: SO_REUSEPORT) and write the same snapshots; it is refused instead,
    naming the one that serves."""
    import fcntl

    claim = open(directory / f"{role}-{index}.lock", "a+")
    try:
        fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        claim.seek(0)
        holder = claim.read().strip() or "?"
        claim.close()
        raise RoleRunning(
            f"{role} {index} already runs for {directory} (pid {holder}): a second copy would share its work; "
            f"`tickline cluster down --dir {directory}` stops the cluster (or kill {holder} to restart that role)"
        ) from None
    claim.seek(0)
    claim.truncate()
    claim.write(f"{os.getpid()}\n")
    claim.flush()
    return claim


def register(directory: Path, role: str, index: int) -> None:
    """Add this process to <dir>/pids (pid role index), where `down` finds what serves the
    directory: a role started by hand as well as those `up` started (it lists them too)."""
    import fcntl

    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "pids", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # roles start together: one reads and appends at a time
        f.seek(0)
        if not any(line.split()[:1] == [str(os.getpid())] for line in f.read().splitlines()):
            f.write(f"{os.getpid()} {role} {index}\n")


def _registered(directory: Path) -> list[tuple[int, str, int]]:
    """<dir>/pids as (pid, role, index), in the order they registered (a restart adds its own)."""
    pids_file = directory / "pids"
    if not pids_file.exists():
        return []
    return [(int(pid), role, int(index)) for pid, role, index in (line.split() for line in pids_file.read_text().splitlines() if line.strip())]


def _serving(directory: Path) -> list[int]:
    """The pids in <dir>/pids that are still this directory's processes (a pid the system
    has since given to another program is not signalled)."""
    pids = list(dict.fromkeys(pid for pid, _, _ in _registered(directory)))
    return [pid for pid in pids if _ours(pid, directory)]


def _ours(pid: int, directory: Path) -> bool:
    """Alive, and started for this directory (its command line names it, as given or resolved)."""
    if not process_alive(pid):
        return False
    cmdline = _cmdline(pid)
    if not cmdline:
        return True  # (no /proc: trust the file)
    here = directory.resolve()
    forms = {str(directory), str(here), os.path.relpath(here)} - {".", ""}
    return any(form in cmdline for form in forms)


def up(config: ClusterConfig, demo: bool = False) -> int:
    """Start the NATS nodes and every role as background processes (under a supervisor
    that restarts a role that dies, unless --no-supervise); wait until each has caught up
    with the stream (gateways and notifiers listen, shards answer). Their pids go to
    <dir>/pids for `down` (and each role adds itself, also when started by hand)."""
    directory = Path(config.directory)
    if _serving(directory):
        sys.stderr.write(f"tickline: a cluster is up in {directory}: tickline cluster down --dir {directory} first\n")
        return 1
    (directory / "pids").unlink(missing_ok=True)  # (what a crashed cluster left: none of it runs)
    config.save()
    nats = NatsCluster(directory / "nats", ports=config.nats_ports)
    nats.directory.mkdir(parents=True, exist_ok=True)
    for node in nats.nodes:
        nats.start_node(node, detach=True)

    async def ready() -> None:  # the nodes, then the stream: before any role starts
        await nats.wait_ready()
        await stream_ready(config.urls)

    try:
        asyncio.run(ready())
    except TimeoutError as exc:
        nats.stop()
        sys.stderr.write(f"tickline: {exc}\n")
        return 1
    with open(directory / "pids", "a") as f:  # pid role index, per line (the roles add themselves too)
        f.write("".join(f"{n.proc.pid} nats {i}\n" for i, n in enumerate(nats.nodes) if n.proc is not None))
    failed = _start_supervisor(config) if config.supervise else start_roles(config)[1]
    if failed is not None:
        sys.stderr.write(f"tickline: {failed}\n")
        down(directory)
        return 1
    if demo:
        _demo_accounts(config)
    sys.stdout.write(f"cluster up: order entry {config.host}:{config.port}, market data {config.host}:{config.md_port}; logs in {directory}\n")
    return 0


def start_roles(config: ClusterConfig, running: Container[tuple[str, int]] = ()) -> tuple[list[tuple[str, int, subprocess.Popen[bytes]]], str | None]:
    """Every role (but those running) as a background process, then until each has caught up
    with the stream (gateways and notifiers listen, shards answer): the processes, and what
    did not start."""
    directory = Path(config.directory)
    roles = [r for r in config.roles() if r not in running]
    logs_before = {(role, i): _size(directory / f"{role}-{i}.log") for role, i in roles}  # a restart appends
    procs = [(role, i, start_role(directory, role, i)) for role, i in roles]
    with open(directory / "pids", "a") as f:
        f.write("".join(f"{p.pid} {role} {i}\n" for role, i, p in procs))
    for role, i, proc in procs:
        # (the trade log too: until it listens, a gateway's REPORTS and TRADES answer "unavailable")
        if not _wait_ready(directory / f"{role}-{i}.log", logs_before[(role, i)], proc):
            return procs, f"the {role} {i} did not start; see {directory}/{role}-{i}.log"
    return procs, None


def _start_supervisor(config: ClusterConfig) -> str | None:
    """`tickline cluster supervise` in the background; it answers one line once every role
    is up ("ready"), or says which did not start."""
    directory = Path(config.directory)
    out = open(directory / "supervisor.log", "ab")
    proc = subprocess.Popen(_cli(directory, "supervise"), stdout=subprocess.PIPE, stderr=out, start_new_session=True)
    out.close()
    assert proc.stdout is not None
    answer = proc.stdout.readline().decode().strip()
    proc.stdout.close()
    return None if answer == "ready" else answer or f"the supervisor did not start; see {directory}/supervisor.log"


def supervise(config: ClusterConfig) -> int:
    """The supervisor's process: start the roles, say whether they are up (to `up`, which
    waits for that line), then restart any that dies until `down` stops this first."""
    directory = Path(config.directory)
    register(directory, "supervisor", 0)
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stopping.append(signum))
    since = time.monotonic()
    # Roles that serve already (this supervisor started by hand after the last one died)
    # are watched, not started again: a second copy would be refused.
    adopted = {(role, i): pid for role, i in config.roles() if (pid := role_holder(directory, role, i)) is not None}
    procs, failed = start_roles(config, running=adopted)
    sys.stdout.write(f"{failed or 'ready'}\n")
    sys.stdout.flush()
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # (`up` has read its line and is gone)
    if failed is not None:
        return 1
    if adopted:
        log.info("roles_adopted", roles=" ".join(f"{role}-{i}:{pid}" for (role, i), pid in adopted.items()))
    watched: list[tuple[str, int, Watched]] = [*procs, *((role, i, Adopted(pid, directory)) for (role, i), pid in adopted.items())]
    log.info("supervising", roles=len(watched), compact_every_s=config.compact_every)
    chores = [Chore("compact", config.compact_every, lambda: _command(directory, "compact"))] if config.compact_every > 0 else []
    Supervisor(watched, lambda role, index: start_role(directory, role, index), since=since, chores=chores).run(lambda: bool(stopping))
    return 0


class Adopted:
    """A role that served before this supervisor started: not its child, so watched by pid."""

    def __init__(self, pid: int, directory: Path) -> None:
        self.pid, self.directory = pid, directory

    def poll(self) -> int | str | None:
        return None if _ours(self.pid, self.directory) else "unknown (not this supervisor's child)"


def role_holder(directory: Path, role: str, index: int) -> int | None:
    """The pid of the process that serves `<role> <index>` (holds its claim), if one does."""
    claim = directory / f"{role}-{index}.lock"
    try:
        holder = claim.read_text().strip()
    except FileNotFoundError:
        return None
    return int(holder) if holder.isdigit() and _ours(int(holder), directory) else None


def _command(directory: Path, action: str) -> subprocess.Popen[bytes]:
    """`tickline cluster <action>` on this cluster, as the supervisor's chore: its one line
    on a pipe, its errors in the supervisor's log (this process's stderr)."""
    return subprocess.Popen(_cli(directory, action), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, preexec_fn=lambda: os.nice(10))  # (behind the roles)


def _demo_accounts(config: ClusterConfig) -> None:
    """As `tickline serve --demo`: with no accounts yet, alice and bob, funded."""
    from tickline.app import DEMO_TRANSFERS, create_demo_accounts

    if not create_demo_accounts(config.data.accounts):
        return
    asyncio.run(transfers(config, DEMO_TRANSFERS))
    sys.stdout.write("demo accounts: LOGIN alice alice  (or: LOGIN bob bob)\n")


def start_role(directory: Path, role: str, index: int) -> subprocess.Popen[bytes]:
    out = open(directory / f"{role}-{index}.log", "ab")
    proc = subprocess.Popen(_cli(directory, "role", role, str(index)), stdout=out, stderr=out, start_new_session=True)
    out.close()
    return proc


def _cli(directory: Path, *args: str) -> list[str]:
    """The command line of `tickline cluster <args> --dir <directory>`."""
    return [sys.executable, "-m", "tickline.cli", "cluster", *args, "--dir", str(directory)]


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _wait_ready(log_path: Path, start: int, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> bool:
    """Until the role logs that it listens or has caught up (after `start` in its log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with open(log_path, "rb") as f:
            f.seek(start)
            seen = f.read()
            if b"_listening" in seen or b"_caught_up" in seen:
                return True
        time.sleep(0.05)
    return False


def down(directory: Path) -> int:
    """SIGTERM every process that serves the directory (roles first, NATS last: `up`
    started those, a role started by hand added itself), kill what lingers."""
    pids_file = directory / "pids"
    if not pids_file.exists():
        sys.stderr.write(f"tickline: no cluster is up in {directory}\n")
        return 1
    pids = _serving(directory)
    nats = [pid for pid in pids if "nats-server" in _cmdline(pid)]
    supervisors = [pid for pid in pids if " cluster supervise " in _cmdline(pid)]  # first: it would restart the roles
    roles = [pid for pid in pids if pid not in nats and pid not in supervisors]
    for pid in [*supervisors, *reversed(roles), *nats]:
        _signal(pid, signal.SIGTERM)
        if not _wait_gone(pid, 10.0):
            _signal(pid, signal.SIGKILL)
    pids_file.unlink()
    sys.stdout.write("cluster down\n")
    return 0


def status(config: ClusterConfig) -> tuple[list[str], bool]:
    """`tickline cluster status`: each process the directory should have (NATS nodes, the
    supervisor, the roles), whether it runs, how often the supervisor restarted it and how
    far its newest snapshot reaches; then the stream. The lines, and whether all is well."""
    directory = Path(config.directory)
    latest = {(role, index): pid for pid, role, index in _registered(directory)}  # (the last registered wins)
    log_path = directory / "supervisor.log"
    supervised = log_path.read_text(errors="replace").rpartition("event='supervising'")[2] if log_path.exists() else ""  # (since the last up)
    restarts = re.findall(r"event='role_restarted' role='(\w+)' index=(\d+)", supervised)
    lines = [
        f"cluster {directory}: order entry {config.host}:{config.port}, market data {config.host}:{config.md_port}"
        if latest else f"cluster {directory}: down (`tickline cluster up --dir {directory}` starts it)"
    ]  # fmt: skip
    expected = [("nats", i) for i in range(len(config.nats_ports))] + [("supervisor", 0)] * config.supervise + config.roles()
    well = True
    for role, index in expected:
        # A role is served by the holder of its claim (a copy that was refused registered too)
        pid = (role_holder(directory, role, index) if role not in ("nats", "supervisor") else None) or latest.get((role, index))
        running = pid is not None and _ours(pid, directory)
        well &= running
        words = [f"{role} {index}".ljust(13), f"pid {pid:<8}" if pid else "no pid".ljust(12), "running" if running else "NOT RUNNING"]
        if latest and (n := restarts.count((role, str(index)))):
            words.append(f"restarted {n} time{'s' * (n > 1)} by the supervisor")
        if kept := kept_snapshots(config.snapshots(role, index)) if role not in ("nats", "supervisor") else []:
            words.append(f"snapshot through stream seq {max(kept):,}")
        lines.append("  ".join(words))
    try:
        lines.append(asyncio.run(_stream_state(config)))
    except ClusterDown as exc:
        lines.append(f"stream: {exc}")
        well = False
    return lines, well


async def _stream_state(config: ClusterConfig) -> str:
    nc = await _connect_once(config)
    try:
        state = (await nc.jetstream().stream_info(STREAM)).state
    except Exception as exc:  # (no stream yet, no quorum: a timeout)
        raise ClusterDown(f"its stream does not answer ({type(exc).__name__})") from None
    finally:
        await nc.close()
    dropped = dropped_through(config.snapshots_root)
    return f"stream {STREAM}: {state.messages:,} messages, {state.bytes:,} bytes, seqs {state.first_seq:,}..{state.last_seq:,}" + (
        f"; compacted through {dropped:,}" if dropped else ""
    )


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


async def transfers(config: ClusterConfig, moves: list[list[str]], verb: str = "DEPOSIT") -> list[str]:
    """Deposits (or, negative, withdrawals; all withdrawals with verb WITHDRAW) through each
    account's risk shard, all sent at once: the words (account, asset, amount, ref) of each;
    a reply line each, in order, as `tickline accounts deposit` prints them
    (exchange/transfers.py): the same rules, the ref applied once by the risk shard's sequencer."""
    assets = assets_of(load_instruments(Path(config.instruments) if config.instruments else None))
    answers: dict[int, str] = {}
    wanted: dict[int, Transfer] = {}
    accounts = Accounts(config.data.accounts)
    await accounts.open()
    try:
        for token, words in enumerate(moves, 1):
            cmd: Transfer | Problem = Problem(Reason.BAD_REQUEST, "usage: <account> <asset> <amount> <ref>")
            if len(words) == 4:
                cmd = transfer_terms(verb, words[0], words[1], words[2], words[3], assets)
            if isinstance(cmd, Transfer) and not await accounts.exists(cmd.account):
                cmd = unknown_account(cmd.account)
            if isinstance(cmd, Problem):
                answers[token] = transfer_reply(None, cmd)
            else:
                wanted[token] = cmd
    finally:
        await accounts.close()
    if wanted:
        await _submit_transfers(config, wanted, answers)
    return [answers[token] for token in range(1, len(moves) + 1)]


VERDICT_WAIT = float(os.environ.get("TICKLINE_VERDICT_WAIT", "60"))  # seconds a transfer waits for its risk shard's verdict


async def _submit_transfers(config: ClusterConfig, wanted: dict[int, Transfer], answers: dict[int, str]) -> None:
    """Each transfer to its account's risk shard; each verdict into answers, by token (or,
    none within VERDICT_WAIT, why not). ClusterDown if the NATS nodes do not answer."""
    nc = await _connect_once(config)
    js = nc.jetstream()
    name = f"admin{time.time_ns():x}"
    submitter = Submitter(js, name, config.layout)
    all_in = asyncio.Event()

    async def read_verdicts() -> None:
        verdicts = Reader(js, f"verdicts.{name}")
        await verdicts.start()
        while not all_in.is_set():
            for inp in await verdicts.batch():
                for token, seq, reason, text in decode_verdicts(inp.data).results:
                    outcome = Problem(Reason(reason), text, seq) if reason else seq
                    answers.setdefault(token, transfer_reply(wanted[token], outcome))
            if all(token in answers for token in wanted):
                all_in.set()

    reading = asyncio.create_task(read_verdicts())
    for token, cmd in wanted.items():
        submitter.forward(token, cmd)
    try:
        await asyncio.wait_for(all_in.wait(), VERDICT_WAIT)
    except TimeoutError:  # (its risk shard down, or the stream without a quorum)
        for token, cmd in wanted.items():
            shard = config.layout.risk_of(cmd.account)
            why = (
                f"no verdict from risk shard {shard} within {VERDICT_WAIT:g} s: the transfer may be in the stream;"
                " the same command again (the same ref) applies it at most once and says what became of it"
            )
            answers.setdefault(token, transfer_reply(cmd, Problem(Reason.UNAVAILABLE, why)))
    finally:
        reading.cancel()
        await nc.close()


class ClusterDown(Exception):
    """The cluster's processes do not answer."""


async def _listening(port: int) -> bool:
    """Whether something accepts a TCP connection on 127.0.0.1:port within a second."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def _connect_once(config: ClusterConfig) -> Any:
    """A command's own connection: ClusterDown if the nodes do not answer (at once if none
    of them is listening: a stopped cluster is said to be so without a wait)."""
    import nats

    ports = [client for client, _ in config.nats_ports]
    if not any(await asyncio.gather(*(_listening(port) for port in ports))):
        raise ClusterDown(f"no NATS node of it is listening (127.0.0.1 ports {', '.join(map(str, ports))})")
    try:  # (nats.connect retries a refused first connection for ever: the deadline is ours)
        return await asyncio.wait_for(nats.connect(config.urls, connect_timeout=1, max_reconnect_attempts=0, error_cb=_quiet_error), 5)
    except Exception as exc:  # (nats raises its own kinds, and OSError)
        why = "within 5 s" if isinstance(exc, TimeoutError) else f"({type(exc).__name__})"
        raise ClusterDown(f"its NATS nodes do not answer {why}") from None


async def compact_stream(config: ClusterConfig) -> str:
    """`tickline cluster compact`: drop the stream's messages every role's snapshots cover
    (cluster/retention.py); one line saying what was dropped, or why nothing was."""
    nc = await _connect_once(config)
    try:
        done = await compact(nc.jetstream(), config.snapshots_root, [f"{role}-{i}" for role, i in config.roles()])
    finally:
        await nc.close()
    if done.why_not:
        return f"nothing dropped: {done.why_not}; the stream holds {done.left:,} messages" + (f" (dropped through {done.through:,} before)" if done.through else "")
    log.info("stream_compacted", through=done.through, dropped=done.dropped, left=done.left)
    return f"dropped {done.dropped:,} messages through stream sequence {done.through:,} (each subject's last kept); the stream holds {done.left:,}"


async def balances(config: ClusterConfig) -> tuple[list[tuple[str, str, int, int]], dict[int, int]]:
    """Every balance, from the risk shards that own them (a cluster has no journal files to
    replay): (account, asset, available, locked) rows sorted, and each shard's last input applied."""
    nc = await _connect_once(config)
    try:
        rows: list[tuple[str, str, int, int]] = []
        applied: dict[int, int] = {}
        for shard in range(config.layout.risk_shards):
            try:
                reply = json.loads((await nc.request(f"state.risk.{shard}", b"", timeout=5)).data)
            except Exception as exc:  # (no responders, a timeout)
                raise ClusterDown(f"risk shard {shard} does not answer ({type(exc).__name__})") from None
            rows += [tuple(row) for row in reply["balances"]]
            applied[shard] = reply["applied"]
        return sorted(rows), applied
    finally:
        await nc.close()


async def _quiet_error(exc: Exception) -> None:
    pass
