"""The composition root: the one module that wires every package, in the order data flows.

    clients --TCP lines--> gateway --journal (fsync, group commit)--> ACK
                               |--> per-symbol queue --> matching task
                                                          |--> execution reports to sessions
                                                          |--> trade log (SQLite WAL)
                                                          |--> notifier --TCP lines--> subscribers
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import structlog

from exchange.instruments import load_instruments
from exchange.matching import SymbolMatcher
from gateway.server import Gateway
from journal.journal import Journal
from journal.queries import trades_from
from journal.recovery import recover
from journal.snapshotter import Snapshotter
from journal.tradelog import TradeLog
from notifier.server import Notifier
from protocol.messages import Command
from tickline import __version__

log = structlog.get_logger("tickline")


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 7001
    data_dir: Path = Path("var")
    instruments: Path | None = None
    snapshot_every: int = 1_000_000  # commands between snapshots
    retention: str = "keep"  # journal segments a snapshot covers: keep | delete
    tradelog_max_rows: int = 500_000  # rows waiting for SQLite before they are dropped
    md_host: str = "127.0.0.1"
    md_port: int = 7002
    md_hard_cap: int = 8 * 1024 * 1024  # unread bytes before a subscriber is disconnected
    md_pause_deadline: float = 10.0  # seconds a subscriber may stop reading


async def serve(config: Config) -> int:
    # 1. Instruments; the trade log; the books from the newest snapshot + the journal tail.
    instruments = load_instruments(config.instruments)
    db_path = config.data_dir / "trades.sqlite"
    fresh_log = not db_path.exists()
    tradelog = TradeLog(db_path, instruments, max_rows=config.tradelog_max_rows)
    await tradelog.open()
    writer = asyncio.create_task(tradelog.run(), name="tradelog-writer")
    recovered = await recover(config.data_dir, instruments, tradelog, fresh_log=fresh_log)
    engine = recovered.engine
    # The books hold hundreds of thousands of long-lived, acyclic objects, and every order
    # allocates a dozen short-lived ones: with the default thresholds the collector spends
    # a quarter of the server's time rescanning the books (bench/load.py: 60k -> 76k req/s
    # with it off). Freeze what recovery built, and collect young objects less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    # The journal's writer thread needs the GIL for a moment when the disk answers. With
    # the default 5 ms switch interval a busy event loop makes it wait up to 5 ms, and
    # every ACK with it (bench/load.py at 10,000 orders/s: ACK p50 2.3 ms at 5 ms, ~1.1 ms
    # at 0.5 ms).
    sys.setswitchinterval(0.0005)

    # 2. The journal: durable before ACK; each durable batch goes to matching, ACKs, logs.
    stop = asyncio.Event()  # set by SIGINT/SIGTERM, or by a journal that can no longer write

    def on_durable(first_seq: int, cmds: list[Command], ts_ns: int) -> None:
        # Queue the commands for matching and release their ACKs. Matching steps run
        # later in this loop iteration, so an order's FILL never overtakes its ACK, and
        # the session's flush (scheduled by the release, after the steps) sends both in
        # one write.
        for seq, cmd in enumerate(cmds, first_seq):
            matchers[cmd.symbol].submit(seq, cmd)
        gateway.on_durable(first_seq + len(cmds) - 1)
        tradelog.on_durable(first_seq, cmds, ts_ns)

    journal = Journal(config.data_dir / "journal", on_durable, on_failure=lambda exc: stop.set())

    # 3. The gateway: sessions, validation, open orders rebuilt from the books.
    def settled(seq: int) -> bool:
        return journal.durable_seq >= seq and not any(m.inbox for m in matchers.values())

    gateway = Gateway(engine.instruments, engine.books, journal.append, settled, version=__version__, audit=tradelog.on_reject)

    # 4. The notifier: market data for subscribers, older trades for REPLAY from the trade log.
    async def replay_source(symbol: str, from_seq: int) -> list[tuple[int, str, str, str, str]]:
        return await asyncio.to_thread(trades_from, db_path, symbol, from_seq)

    notifier = Notifier(
        engine.books, replay_source, version=__version__, hard_cap=config.md_hard_cap, pause_deadline=config.md_pause_deadline
    )

    # 5. One matching queue per symbol, drained in its own steps of the event loop; its
    #    events go to the owners' sessions, the trade log and the notifier.
    loop = asyncio.get_running_loop()
    sinks = [gateway.deliver, tradelog.on_events, notifier.on_events]
    matchers = {s: SymbolMatcher(book, sinks, loop.call_soon) for s, book in engine.books.items()}
    journal.start()

    # 6. Snapshots every so many commands (and at shutdown), so a restart replays little.
    snapshotter = Snapshotter(
        config.data_dir, engine.books, lambda: journal.durable_seq, lambda: settled(journal.durable_seq), tradelog,
        every=config.snapshot_every, retention=config.retention, last_seq=recovered.snapshot_seq,
    )  # fmt: skip
    snapshots = asyncio.create_task(snapshotter.run(), name="snapshots")

    # 7. Listen, and wait for SIGINT or SIGTERM.
    md_host, md_port = await notifier.start(config.md_host, config.md_port)
    log.info("market_data_listening", host=md_host, port=md_port)
    host, port = await gateway.start(config.host, config.port)
    log.info("order_entry_listening", host=host, port=port, data_dir=str(config.data_dir), next_seq=journal.next_seq)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    # 8. Shut down in reverse: stop taking requests, make everything received durable,
    #    let matching finish, tell every session, snapshot, close the logs.
    log.info("shutting_down", sessions=len(gateway.sessions))
    gateway.stop_accepting()
    await journal.close()
    for m in matchers.values():
        m.drain_all()
    await gateway.say_bye("shutting down")
    await notifier.stop("shutting down")
    snapshots.cancel()
    await snapshotter.take()
    await tradelog.close()
    await writer
    log.info("stopped", last_seq=journal.durable_seq, fsyncs=journal.commits)
    return 0
