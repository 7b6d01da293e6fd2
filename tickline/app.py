"""The composition root: the one module that wires every package, in the order data flows.

    clients --TCP lines--> gateway --journal (fsync, group commit)--> ACK
                               |--> per-symbol queue --> matching task
                                                          |--> execution reports to sessions
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import structlog

from exchange.engine import Engine
from exchange.instruments import load_instruments
from exchange.matching import SymbolMatcher
from gateway.server import Gateway
from journal.journal import Journal, read_journal
from protocol.messages import Command
from tickline import __version__

log = structlog.get_logger("tickline")


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 7001
    data_dir: Path = Path("var")
    instruments: Path | None = None


async def serve(config: Config) -> int:
    # 1. Instruments, and one empty book per symbol.
    engine = Engine(load_instruments(config.instruments))

    # 2. Open the journal (cutting a torn tail) and replay it: the journal is the truth.
    def on_durable(first_seq: int, cmds: list[Command]) -> None:
        # Queue the commands for matching and release their ACKs. Matching tasks run
        # later in this loop iteration, so an order's FILL never overtakes its ACK, and
        # the session's flush (scheduled by the release, after the tasks) sends both in
        # one write.
        for seq, cmd in enumerate(cmds, first_seq):
            matchers[cmd.symbol].submit(seq, cmd)
        gateway.on_durable(first_seq + len(cmds) - 1)

    stop = asyncio.Event()  # set by SIGINT/SIGTERM, or by a journal that can no longer write
    journal = Journal(config.data_dir / "journal", on_durable, on_failure=lambda exc: stop.set())
    replayed = 0
    for seq, cmd in read_journal(journal.directory):
        engine.apply(seq, cmd)
        replayed += 1
    log.info("journal_replayed", commands=replayed, next_seq=journal.next_seq, state=engine.state_hash())
    # The books hold hundreds of thousands of long-lived, acyclic objects, and every order
    # allocates a dozen short-lived ones: with the default thresholds the collector spends
    # a quarter of the server's time rescanning the books (bench/load.py: 60k -> 76k req/s
    # with it off). Freeze what replay built, and collect young objects less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    # The journal's writer thread needs the GIL for a moment when the disk answers. With
    # the default 5 ms switch interval a busy event loop makes it wait up to 5 ms, and
    # every ACK with it (bench/load.py at 10,000 orders/s: ACK p50 2.3 ms at 5 ms, ~1.1 ms
    # at 0.5 ms).
    sys.setswitchinterval(0.0005)

    # 3. The gateway: sessions, validation, open orders rebuilt from the books.
    def settled(seq: int) -> bool:
        return journal.durable_seq >= seq and not any(m.inbox for m in matchers.values())

    gateway = Gateway(engine.instruments, engine.books, journal.append, settled, version=__version__)

    # 4. One matching task per symbol; its events go back to the owners' sessions.
    matchers = {symbol: SymbolMatcher(book, [gateway.deliver]) for symbol, book in engine.books.items()}
    tasks = [asyncio.create_task(m.run(), name=f"match-{s}") for s, m in matchers.items()]
    journal.start()

    # 5. Listen, and wait for SIGINT or SIGTERM.
    host, port = await gateway.start(config.host, config.port)
    log.info("order_entry_listening", host=host, port=port, data_dir=str(config.data_dir))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    # 6. Shut down in reverse: stop taking requests, make everything received durable,
    #    let matching finish, tell every session, close.
    log.info("shutting_down", sessions=len(gateway.sessions))
    gateway.stop_accepting()
    await journal.close()
    for m in matchers.values():
        m.stop()
    await asyncio.gather(*tasks)
    await gateway.say_bye("shutting down")
    log.info("stopped", last_seq=journal.durable_seq, fsyncs=journal.commits)
    return 0
