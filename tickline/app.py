"""The composition root of `tickline serve`: the one module that wires every package, in
the order data flows (docs/ARCHITECTURE.md has the core's stages and the cluster's roles).

    clients --TCP lines--> gateway --> sequencer (hold, number) --journal (fsync, group commit)--> ACK
                                       |--> per-symbol queue --> matching --> settlement
                                                                  |--> execution reports to sessions
                                                                  |--> trade log (SQLite WAL)
                                                                  |--> notifier --TCP lines--> subscribers
                                                                          and --WebSocket--> dashboard pages
    browsers --HTTP--> dashboard: the page, /api (the desk's public answers), /metrics (telemetry)

Each object is made before anything uses it; the numbered steps (Serve's methods, in
run()'s order) follow the diagram.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import structlog

from exchange.book import disconnected
from exchange.instruments import load_instruments
from exchange.matching import Durable, Matching
from exchange.risk import MAX_OPEN_ORDERS
from exchange.sequencer import Sequencer
from exchange.transfers import terms as transfer_terms
from gateway.admin import AdminServer
from gateway.desk import LOGGED_WAIT, OrderDesk, SourceUnavailable
from gateway.intake import JournalIntake
from gateway.server import Gateway
from journal.accounts import AccountAdmin, Accounts
from journal.history import History
from journal.journal import Journal
from journal.layout import DataDir, DataDirLock
from journal.queries import last_trade_seqs
from journal.recovery import recover
from journal.snapshot_replica import replica_command
from journal.snapshotter import Snapshotter
from journal.tradelog import TradeLog
from notifier.feed import feeds_of
from notifier.server import Notifier
from notifier.session import Limits
from protocol.messages import OrderCommand, Transfer
from telemetry.probes import GcPauses, LoopLag, raised_at, resident_bytes, timed, timed_call
from telemetry.registry import Telemetry
from tickline import __version__
from tickline.tuning import before_recovery, tune_runtime

if TYPE_CHECKING:
    from web.server import Dashboard

log = structlog.get_logger("tickline")


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 7001
    data_dir: Path = Path("var")
    instruments: Path | None = None
    snapshot_every: int = 50_000  # commands between snapshots (at most)...
    snapshot_interval: float = 10.0  # ...or seconds, whichever comes first: bounds the restart
    segment_bytes: int = 64 * 1024 * 1024  # journal segment size before rotating
    retention: str = "keep"  # journal segments a snapshot covers: keep | delete
    snapshots_by: str = "replica"  # the periodic ones: replica (a process following the journal) | fork
    tradelog_max_rows: int = 500_000  # rows waiting for SQLite before they are dropped
    max_backlog: int = 8_000  # commands accepted and not yet matched before reading stops
    max_connections: int = 5_000  # order-entry connections in all...
    max_connections_per_address: int = 500  # ...and from one client address
    login_timeout: float = 60.0  # seconds an order-entry connection may stay without logging in (0: no limit)
    max_open_orders: int = MAX_OPEN_ORDERS  # per account: beyond, a new order is refused (too_many_orders)
    md_host: str = "127.0.0.1"
    md_port: int = 7002
    web_host: str = "127.0.0.1"
    web_port: int | None = 7080  # the dashboard and /metrics; None: off
    md_hard_cap: int = 8 * 1024 * 1024  # unread bytes before a subscriber is disconnected
    md_pause_deadline: float = 10.0  # seconds a subscriber may stop reading
    shutdown_grace: float = 2.0  # seconds connections get to take their last bytes
    tls_cert: Path | None = None  # both ports speak TLS when given (LOGIN carries a password)
    tls_key: Path | None = None
    demo: bool = False  # a fresh data directory gets funded demo accounts (make run)
    log_recovered_state: bool = False  # log the recovered state's hash (compare with `tickline replay`)


# make run's newcomers: (name, password) and what each is given.
DEMO_ACCOUNTS = [("alice", "alice"), ("bob", "bob")]
DEMO_FUNDS = [("USD", "1000000"), ("AAPL", "1000"), ("BTC", "10"), ("ES", "100"), ("EUR", "1000000")]
DEMO_TRANSFERS = [[name, asset, amount, f"demo:{name}:{asset}"] for name, _ in DEMO_ACCOUNTS for asset, amount in DEMO_FUNDS]


async def serve(config: Config) -> int:
    # Whatever way serve ends (a port in use, a bad file), the database connections' threads
    # are closed: the interpreter waits for them, and a server that failed to start hung.
    async with contextlib.AsyncExitStack() as threads:
        return await Serve(config, threads).run()


class Serve:
    """`tickline serve`: each numbered step of the diagram above is a method, called in order
    by run(); each builds what the next ones use (attributes of the instance)."""

    def __init__(self, config: Config, threads: contextlib.AsyncExitStack) -> None:
        self.config, self.threads = config, threads
        self.data = DataDir(config.data_dir)
        self.telemetry = Telemetry()  # every stage records how long it takes (docs/PERFORMANCE.md)
        self.stop = asyncio.Event()  # set by SIGINT/SIGTERM, by a journal that can no longer write, by a matching bug
        self.failures: list[BaseException] = []
        self.broken = False  # matching raised: the books are not to be trusted (nor snapshotted)
        self.snapshots: asyncio.Task[None] | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # from the start: a signal during recovery waits for it
            loop.add_signal_handler(sig, self.stop.set)
        took = Stopwatch()  # each step's seconds, logged once listening: where a restart's time goes
        self.open_journal()  # 1
        took("open_journal")
        await self.recover_books()  # 2
        took("recover_books")
        self.build_core()  # 3
        await self.build_order_entry()  # 4
        took("build_order_entry")
        await self.build_market_data()  # 5
        await self.connect_outputs()  # 6
        took("connect_outputs")
        try:
            await self.listen()  # 7
        except BaseException:  # a port in use: the admin socket (ours: the data dir is locked) goes too
            self.data.admin_socket.unlink(missing_ok=True)
            raise
        took("listen")
        log.info("started", **took.laps)
        self.start_snapshots()  # 8
        await self.stop.wait()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, _exit_now)
        return await self.shut_down()  # 9

    def _journal_failed(self, exc: BaseException) -> None:
        self.failures.append(exc)
        self.stop.set()

    def _matching_failed(self, seq: int, cmd: OrderCommand, exc: Exception) -> None:
        """A bug in matching: the book may be half way through the command. Nothing more is
        matched or snapshotted, and the server stops (exit 1) rather than serve on, wedged
        or wrong. The command is in the journal: a restart replays it (and meets the same bug
        until it is fixed: fail-stop, as a real exchange halts a broken book)."""
        log.critical("matching_failed", seq=seq, command=repr(cmd)[:300], error=repr(exc)[:300], at=raised_at(exc))
        self.broken = True
        self.failures.append(exc)
        if self.snapshots is not None:
            self.snapshots.cancel()
        self.stop.set()

    def open_journal(self) -> None:
        """1. The journal, the truth: one server per data directory (an OS lock, which its
        writer process holds too), and opening the journal cuts a torn tail (a crash
        mid-write) once."""
        self.instruments = load_instruments(self.config.instruments)
        self.lock = DataDirLock(self.data)
        self.lock.acquire()
        self.journal = Journal(
            self.data.journal, segment_bytes=self.config.segment_bytes, on_failure=self._journal_failed, telemetry=self.telemetry,
            inherit_fds=(self.lock.fileno(),),
        )  # fmt: skip

    async def recover_books(self) -> None:
        """2. The trade log, then the books: the newest snapshot + the journal tail, whose
        trades the log gets again (INSERT OR IGNORE) in case a crash lost them."""
        config, data = self.config, self.data
        self.tradelog = TradeLog(data.trades, self.instruments, max_rows=config.tradelog_max_rows, telemetry=self.telemetry, held=True)
        await self.tradelog.open()
        self.tradelog_task = asyncio.create_task(self.tradelog.run(), name="tradelog-writer")
        before_recovery()
        self.recovered = await recover(config.data_dir, self.instruments, self.tradelog, log_state=config.log_recovered_state)
        self.books, self.risk = self.recovered.engine.books, self.recovered.engine.risk
        self.risk.max_open_orders = config.max_open_orders  # (replay applied what was accepted, whatever the limit then)
        tune_runtime()

    def build_core(self) -> None:
        """3. The core's stages (docs/ARCHITECTURE.md): the sequencer holds, numbers and
        journals each command; matching, one queue per symbol, applies a durable batch at
        once (a slice of it), what is left as that symbol's own later steps of the loop."""
        journal, telemetry = self.journal, self.telemetry
        self.sequencer = Sequencer(self.risk, lambda: journal.next_seq, journal.append)
        self.step_us = telemetry.histogram("matching_step_us", "matching a durable batch (or what a symbol had left of one) and its sinks")
        self.matching = Matching(self.books, timed(asyncio.get_running_loop().call_soon, self.step_us), self._matching_failed)
        self.intake = JournalIntake(self.sequencer, lambda: journal.durable_seq, self.matching.applied)
        matching = self.matching
        self.tradelog.handed_through = lambda: matching.applied_through(journal.durable_seq)  # the log records how far it is whole

    async def _caught_up(self) -> int:
        """Everything durable up to now, matched and committed to the trade log: the seq
        the log holds every row through (REPORTS' through=), which stops before rows it
        dropped at its bound, or lacks until a refill, so that no reply claims them."""
        through = self.journal.durable_seq
        while not self.matching.applied(through):
            await asyncio.sleep(0.001)
        try:
            await asyncio.wait_for(self.tradelog.wait_committed(), LOGGED_WAIT)
        except asyncio.TimeoutError:
            raise SourceUnavailable(
                f"the trade log has not written what this server has matched yet (its writer is {LOGGED_WAIT:g} s behind): the answer would leave some out; try again"
            ) from None
        return self.tradelog.whole_through(through)

    async def build_order_entry(self) -> None:
        """4. The gateway: sessions log in to accounts and turn lines into commands for the
        intake; the desk they share knows the open orders and answers queries, the trade
        log's through `history`; the admin channel takes deposits and withdrawals."""
        data, threads, books, journal, matching = self.data, self.threads, self.books, self.journal, self.matching
        self.history = History(data.trades, self.instruments, lambda symbol: books[symbol].bbo(), self._caught_up)
        await self.history.market.open()
        threads.push_async_callback(self.history.close)
        accounts = Accounts(data.accounts)
        await accounts.open()
        threads.push_async_callback(accounts.close)
        self.desk = OrderDesk(
            self.instruments, books, self.risk, self.intake, version=__version__, refused=self.tradelog.on_refusal,
            reports_source=self.history.reports, check_password=accounts.check, market_source=self.history.answer, telemetry=self.telemetry,
        )  # fmt: skip
        config = self.config
        self.gateway = Gateway(
            self.desk, telemetry=self.telemetry, max_backlog=config.max_backlog, max_sessions=config.max_connections,
            max_per_address=config.max_connections_per_address, login_timeout=config.login_timeout,
            backlog=lambda: journal.next_seq - 1 - journal.durable_seq + matching.queued(),
        )  # fmt: skip
        self.admin = AdminServer(self.desk, accounts.exists, self.telemetry)  # on a Unix socket

    async def build_market_data(self) -> None:
        """5. The notifier: market data for subscribers; REPLAY of older trades from the trade log."""
        config = self.config
        limits = Limits(hard_cap=config.md_hard_cap, pause_deadline=config.md_pause_deadline)
        last_trades = await asyncio.to_thread(last_trade_seqs, self.data.trades)
        self.notifier = Notifier(feeds_of(self.books, last_trades), self.history.older_trades, version=__version__, limits=limits)

    async def connect_outputs(self) -> None:
        """6. Matching's output: settlement of balances first, then execution reports to the
        owners' sessions, trades to the log, market data to the notifier. Then the journal
        starts committing into matching (exchange/matching.py Durable says in which order);
        cancel_on_disconnect orders left open by the last process are canceled first."""
        matching, gateway, tradelog = self.matching, self.gateway, self.tradelog
        matching.send_to([self.risk.settle, gateway.deliver, tradelog.on_events, self.notifier.on_events])
        released: list[Callable[[int], None]] = [gateway.on_released, self.admin.on_released]
        await self.journal.start(Durable(matching, released, tradelog.on_durable, gateway.write_now, timed_call(matching.apply_now, self.step_us)))
        for cancel in disconnected(self.books):  # their connections died with the last process
            self.desk.submit(cancel)
        if self.config.demo and create_demo_accounts(self.data.accounts):
            for words in DEMO_TRANSFERS:
                name, asset, amount, ref = words
                transfer = transfer_terms("DEPOSIT", name, asset, amount, ref, self.risk.assets)
                if isinstance(transfer, Transfer):
                    self.desk.submit(transfer)  # journaled like any other
            log.info("demo_accounts", accounts=" ".join(n for n, _ in DEMO_ACCOUNTS), login="LOGIN alice alice  (or: LOGIN bob bob)")

    async def listen(self) -> None:
        """7. Listen: the admin channel, market data, the dashboard (the page, its JSON,
        /metrics, market data over a WebSocket), then order entry."""
        config, telemetry, journal, notifier = self.config, self.telemetry, self.journal, self.notifier
        self.probes: list[LoopLag | GcPauses] = [LoopLag(telemetry), GcPauses(telemetry)]
        for probe in self.probes:
            probe.start()
        telemetry.gauge("journal_seq", lambda: journal.durable_seq, "the last command on disk")
        telemetry.gauge("md_subscribers", lambda: len(notifier.subscribers), "market-data connections (web pages included)")
        telemetry.gauge("memory_rss_bytes", resident_bytes, "the server process's resident memory")
        books = self.books  # (what most of that memory holds, as orders rest)
        telemetry.gauge("book_orders", lambda: sum(len(b.orders) + len(b.stops) for b in books.values()), "orders in the books, pending stops included")
        telemetry.count("journal_fsyncs_total", lambda: journal.commits, "journal group commits (one fdatasync each)")
        tls = tls_context(config.tls_cert, config.tls_key)
        await self.admin.start(self.data.admin_socket)
        md_host, md_port = await notifier.start(config.md_host, config.md_port, tls)
        log.info("market_data_listening", host=md_host, port=md_port, tls=tls is not None)
        self.dashboard: Dashboard | None = None
        if config.web_port is not None:
            from web.server import Dashboard  # (aiohttp: 0.2 s of a start, only with a dashboard)

            self.dashboard = Dashboard(self.desk.answer_public, notifier.new_session, telemetry)
            web_host, web_port = await self.dashboard.start(config.web_host, config.web_port, tls)
            log.info("dashboard_listening", url=f"{'https' if tls else 'http'}://{web_host}:{web_port}/", host=web_host, port=web_port)
        host, port = await self.gateway.start(config.host, config.port, tls)
        log.info("order_entry_listening", host=host, port=port, tls=tls is not None, data_dir=str(config.data_dir), next_seq=journal.next_seq)

    def start_snapshots(self) -> None:
        """8. Snapshots every so many commands (and at shutdown), so a restart replays little;
        the trade log's writer takes the rows recovery replayed; and its refill, if it lacks
        rows before the snapshot restarted from. Once listening: none may hold up listening."""
        config, journal, intake = self.config, self.journal, self.intake
        self.tradelog.release()
        self.snapshotter = Snapshotter(
            config.data_dir, self.books, self.risk, lambda: journal.durable_seq, lambda: intake.settled(journal.durable_seq), self.tradelog,
            every=config.snapshot_every, interval=config.snapshot_interval, retention=config.retention,
            last_seq=self.recovered.snapshot_seq, telemetry=self.telemetry, hold_intake=self.gateway.hold_intake,
            replica=replica_command(config.data_dir, config.snapshot_every, config.snapshot_interval, config.instruments) if config.snapshots_by == "replica" else None,
        )  # fmt: skip
        self.snapshots = asyncio.create_task(self.snapshotter.run(), name="snapshots")
        refill_to = self.recovered.refill_to  # the trade log's rows before the snapshot, if it lacks some
        self.refill = None if refill_to is None else asyncio.create_task(self.tradelog.refill(config.data_dir, config.instruments, refill_to))

    async def shut_down(self) -> int:
        """9. In reverse: stop taking requests, make everything received durable, let
        matching finish, tell every connection (both servers at once), snapshot, close the logs."""
        gateway, notifier, grace = self.gateway, self.notifier, self.config.shutdown_grace
        log.info("shutting_down", sessions=len(gateway.sessions), subscribers=len(notifier.subscribers))
        gateway.stop_accepting()
        self.admin.close()
        await self.journal.close()
        if not self.broken:
            self.matching.drain_all()
        bye = "shutting down after an internal error" if self.broken else "shutting down"
        await asyncio.gather(gateway.close(bye, grace), notifier.close(bye, grace))
        if self.dashboard is not None:
            await self.dashboard.close()
        assert self.snapshots is not None
        self.snapshots.cancel()
        if self.refill is not None:
            self.refill.cancel()
        if not self.broken:
            await self.snapshotter.take()
        await self.tradelog.close()
        await self.tradelog_task  # the market and accounts readers close as serve() returns (its exit stack)
        self.data.admin_socket.unlink(missing_ok=True)
        for probe in self.probes:
            probe.stop()
        log.info("stopped", last_seq=self.journal.durable_seq, fsyncs=self.journal.commits)
        self.lock.release()
        return 1 if self.failures else 0


class Stopwatch:
    """Seconds since the last call, by name."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self.last = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self.last, 3)
        self.last = now


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def create_demo_accounts(accounts: Path) -> bool:
    """alice and bob, if the account store has nobody yet; whether they were created (then
    DEMO_TRANSFERS fund them: `serve --demo` and `cluster up --demo` alike)."""
    admin = AccountAdmin(accounts)
    try:
        if admin.list():
            return False
        for name, password in DEMO_ACCOUNTS:
            admin.add(name, password)
        return True
    finally:
        admin.close()


def _exit_now() -> None:
    """A second SIGINT/SIGTERM: leave without the graceful steps. Nothing acknowledged is
    lost (every ACK was fsync'd); the next start replays the journal tail."""
    log.warning("forced_exit")
    os._exit(1)
