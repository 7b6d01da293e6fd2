"""The composition root: the one module that wires every package, in the order data flows.

    clients --TCP lines--> gateway --journal (fsync, group commit)--> ACK
                               |--> per-symbol queue --> matching task
                                                          |--> execution reports to sessions
                                                          |--> trade log (SQLite WAL)
                                                          |--> notifier --TCP lines--> subscribers
                                                                  and --WebSocket--> dashboard pages
    browsers --HTTP--> dashboard: the page, /api (the desk's public answers), /metrics (telemetry)

Each object is made before anything uses it; the numbered steps follow the diagram.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
from dataclasses import dataclass
from pathlib import Path

import structlog

from exchange.instruments import load_instruments
from exchange.matching import Durable, Matching
from exchange.sequencer import Sequencer
from gateway.admin import AdminServer
from gateway.desk import OrderDesk, ReportEvent
from gateway.intake import JournalIntake
from gateway.server import Gateway
from journal.accounts import AccountAdmin, Accounts
from journal.journal import Journal
from journal.layout import DataDir, DataDirLock
from journal.market import Market
from journal.queries import TradeRow, last_trade_seqs, reports_of, trades_from
from journal.recovery import recover
from journal.snapshotter import Snapshotter
from journal.tradelog import TradeLog
from notifier.server import Notifier
from notifier.session import Limits
from protocol.messages import Transfer
from protocol.replies import Reply
from protocol.requests import MarketQuery
from telemetry.probes import GcPauses, LoopLag, resident_bytes, timed
from telemetry.registry import Telemetry
from tickline import __version__
from tickline.tuning import tune_runtime
from web.server import Dashboard

log = structlog.get_logger("tickline")


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 7001
    data_dir: Path = Path("var")
    instruments: Path | None = None
    snapshot_every: int = 120_000  # commands between snapshots (at most)...
    snapshot_interval: float = 10.0  # ...or seconds, whichever comes first: bounds the restart
    segment_bytes: int = 64 * 1024 * 1024  # journal segment size before rotating
    retention: str = "keep"  # journal segments a snapshot covers: keep | delete
    tradelog_max_rows: int = 500_000  # rows waiting for SQLite before they are dropped
    max_backlog: int = 8_000  # commands accepted and not yet matched before reading stops
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


# make run's newcomers: (name, password) and what each is given.
DEMO_ACCOUNTS = [("alice", "alice"), ("bob", "bob")]
DEMO_FUNDS = [("USD", "1000000"), ("AAPL", "1000"), ("BTC", "10"), ("ES", "100"), ("EUR", "1000000")]


async def serve(config: Config) -> int:
    # Whatever way serve ends (a port in use, a bad file), the database connections' threads
    # are closed: the interpreter waits for them, and a server that failed to start hung.
    async with contextlib.AsyncExitStack() as threads:
        return await _serve(config, threads)


async def _serve(config: Config, threads: contextlib.AsyncExitStack) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()  # set by SIGINT/SIGTERM, or by a journal that can no longer write
    failures: list[BaseException] = []

    def journal_failed(exc: BaseException) -> None:
        failures.append(exc)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):  # from the start: a signal during recovery waits for it
        loop.add_signal_handler(sig, stop.set)
    data = DataDir(config.data_dir)
    telemetry = Telemetry()  # every stage records how long it takes (docs/PERFORMANCE.md)

    # 1. The journal, the truth: one server per data directory (an OS lock, which its
    #    writer process holds too), and opening the journal cuts a torn tail (a crash
    #    mid-write) once.
    instruments = load_instruments(config.instruments)
    lock = DataDirLock(data)
    lock.acquire()
    journal = Journal(
        data.journal, segment_bytes=config.segment_bytes, on_failure=journal_failed, telemetry=telemetry, inherit_fds=(lock.fileno(),),
    )  # fmt: skip

    # 2. The trade log, then the books: the newest snapshot + the journal tail, whose
    #    trades the log gets again (INSERT OR IGNORE) in case a crash lost them.
    fresh_log = not data.trades.exists()
    tradelog = TradeLog(data.trades, instruments, max_rows=config.tradelog_max_rows, telemetry=telemetry)
    await tradelog.open()
    tradelog_task = asyncio.create_task(tradelog.run(), name="tradelog-writer")
    recovered = await recover(config.data_dir, instruments, tradelog, fresh_log=fresh_log)
    books, risk = recovered.engine.books, recovered.engine.risk
    tune_runtime()

    # 3. Matching: one queue per symbol; a durable batch is applied at once (a slice of
    #    it), what is left as that symbol's own later steps of the event loop.
    matching = Matching(books, timed(loop.call_soon, telemetry.histogram("matching_step_us", "one symbol's drain and its sinks")))

    # 4. The gateway: sessions log in to accounts and turn lines into journaled commands;
    #    the desk they share holds each command's funds (risk, in journal order) before
    #    journaling it, knows the open orders and asks matching what has taken effect.
    async def caught_up() -> int:
        # Everything durable up to now, matched and committed to the trade log.
        through = journal.durable_seq
        while not matching.applied(through):
            await asyncio.sleep(0.001)
        await tradelog.wait_committed()
        return through

    async def reports_since(owner: str, since: int) -> tuple[list[ReportEvent], int]:
        through = await caught_up()
        return await asyncio.to_thread(reports_of, data.trades, owner, since, through), through

    market = Market(data.trades, instruments, lambda symbol: books[symbol].bbo())  # TICKER, KLINES, TRADES
    await market.open()
    threads.push_async_callback(market.close)

    async def market_history(query: MarketQuery) -> Reply:
        await caught_up()
        return await market.answer(query)

    accounts = Accounts(data.accounts)
    await accounts.open()
    threads.push_async_callback(accounts.close)
    sequencer = Sequencer(risk, lambda: journal.next_seq, journal.append)  # the core's first stage, recording to the journal
    intake = JournalIntake(sequencer, lambda: journal.durable_seq, matching.applied)
    desk = OrderDesk(
        instruments, books, risk, intake,
        version=__version__, refused=tradelog.on_refusal, reports_source=reports_since, check_password=accounts.check,
        market_source=market_history, telemetry=telemetry,
    )  # fmt: skip
    gateway = Gateway(
        desk, telemetry=telemetry, max_backlog=config.max_backlog,
        backlog=lambda: journal.next_seq - 1 - journal.durable_seq + matching.queued(),
    )  # fmt: skip
    admin = AdminServer(desk, accounts.exists, telemetry)  # deposits and withdrawals, figures; on a Unix socket

    # 5. The notifier: market data for subscribers; REPLAY of older trades from the trade log.
    async def older_trades(symbol: str, from_seq: int) -> list[TradeRow]:
        return await asyncio.to_thread(trades_from, data.trades, symbol, from_seq)

    limits = Limits(hard_cap=config.md_hard_cap, pause_deadline=config.md_pause_deadline)
    last_trades = await asyncio.to_thread(last_trade_seqs, data.trades)
    notifier = Notifier(books, older_trades, version=__version__, limits=limits, last_trade_seqs=last_trades)

    # 6. Matching's output: settlement of balances first, then execution reports to the
    #    owners' sessions, trades to the log, market data to the notifier. Then the journal
    #    starts committing into matching.
    matching.send_to([risk.settle, gateway.deliver, tradelog.on_events, notifier.on_events])
    await journal.start(Durable(matching, [gateway.on_released, admin.on_released], tradelog.on_durable, gateway.write_now))
    if config.demo:
        await _demo_accounts(data, desk)

    # 7. Snapshots every so many commands (and at shutdown), so a restart replays little.
    snapshotter = Snapshotter(
        config.data_dir, books, risk, lambda: journal.durable_seq, lambda: intake.settled(journal.durable_seq), tradelog,
        every=config.snapshot_every, interval=config.snapshot_interval, retention=config.retention, last_seq=recovered.snapshot_seq,
        telemetry=telemetry, hold_intake=gateway.hold_intake,
    )  # fmt: skip
    snapshots = asyncio.create_task(snapshotter.run(), name="snapshots")

    # 8. Listen (the dashboard too: the page, its JSON, /metrics, market data over a
    #    WebSocket), and wait for SIGINT or SIGTERM (a second one exits at once).
    probes: list[LoopLag | GcPauses] = [LoopLag(telemetry), GcPauses(telemetry)]
    for probe in probes:
        probe.start()
    telemetry.gauge("journal_seq", lambda: journal.durable_seq, "the last command on disk")
    telemetry.gauge("md_subscribers", lambda: len(notifier.subscribers), "market-data connections (web pages included)")
    telemetry.gauge("memory_rss_bytes", resident_bytes, "the server process's resident memory")
    telemetry.count("journal_fsyncs_total", lambda: journal.commits, "journal group commits (one fdatasync each)")
    tls = _tls_context(config)
    await admin.start(data.admin_socket)
    md_host, md_port = await notifier.start(config.md_host, config.md_port, tls)
    log.info("market_data_listening", host=md_host, port=md_port, tls=tls is not None)
    dashboard = Dashboard(desk.answer_public, notifier.new_session, telemetry) if config.web_port is not None else None
    if dashboard is not None and config.web_port is not None:
        web_host, web_port = await dashboard.start(config.web_host, config.web_port, tls)
        log.info("dashboard_listening", url=f"{'https' if tls else 'http'}://{web_host}:{web_port}/", host=web_host, port=web_port)
    host, port = await gateway.start(config.host, config.port, tls)
    log.info("order_entry_listening", host=host, port=port, tls=tls is not None, data_dir=str(config.data_dir), next_seq=journal.next_seq)
    await stop.wait()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _exit_now)

    # 9. Shut down in reverse: stop taking requests, make everything received durable,
    #    let matching finish, tell every connection (both servers at once), snapshot,
    #    close the logs.
    log.info("shutting_down", sessions=len(gateway.sessions), subscribers=len(notifier.subscribers))
    gateway.stop_accepting()
    admin.close()
    await journal.close()
    matching.drain_all()
    await asyncio.gather(
        gateway.close("shutting down", config.shutdown_grace),
        notifier.close("shutting down", config.shutdown_grace),
    )
    if dashboard is not None:
        await dashboard.close()
    snapshots.cancel()
    await snapshotter.take()
    await tradelog.close()
    await tradelog_task  # the market and accounts readers close as serve() returns (its exit stack)
    data.admin_socket.unlink(missing_ok=True)
    for probe in probes:
        probe.stop()
    log.info("stopped", last_seq=journal.durable_seq, fsyncs=journal.commits)
    lock.release()
    return 1 if failures else 0


def _tls_context(config: Config) -> ssl.SSLContext | None:
    if config.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


def create_demo_accounts(accounts: Path) -> bool:
    """alice and bob, if the account store has nobody yet; whether they were created."""
    admin = AccountAdmin(accounts)
    try:
        if admin.list():
            return False
        for name, password in DEMO_ACCOUNTS:
            admin.add(name, password)
        return True
    finally:
        admin.close()


async def _demo_accounts(data: DataDir, desk: OrderDesk) -> None:
    """A fresh data directory: alice and bob, funded (deposits journaled like any other)."""
    if not create_demo_accounts(data.accounts):
        return
    for name, _ in DEMO_ACCOUNTS:
        for asset, amount in DEMO_FUNDS:
            units = desk.risk.assets[asset].parse(amount)
            if units is not None:
                desk.submit(Transfer(name, asset, units, f"demo:{name}:{asset}"))  # (a duplicate ref: already funded)
    log.info("demo_accounts", accounts=" ".join(n for n, _ in DEMO_ACCOUNTS), login="LOGIN alice alice  (or: LOGIN bob bob)")


def _exit_now() -> None:
    """A second SIGINT/SIGTERM: leave without the graceful steps. Nothing acknowledged is
    lost (every ACK was fsync'd); the next start replays the journal tail."""
    log.warning("forced_exit")
    os._exit(1)
