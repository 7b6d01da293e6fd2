"""Restart: the newest valid snapshot, then the journal tail after it.

The trade log and the order audit get the rows of every replayed command past what the log
records it has whole (its `through`; INSERT OR IGNORE), so rows lost with a crash reappear
exactly once and a restart does not hand the log's writer what it has already. Rows
between the log's `through` and the snapshot (snapshots do not wait for the log; a new
log has none) are refilled after listening, by journal/refill.py: `Recovered.refill_to`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from exchange.engine import Engine
from exchange.instruments import Instrument
from journal.journal import JournalCorrupt, read_batches, read_journal
from journal.layout import DataDir
from journal.snapshots import newest_valid
from journal.tradelog import TradeLog
from protocol.messages import Event

log = structlog.get_logger("recovery")


@dataclass(frozen=True)
class Recovered:
    engine: Engine
    snapshot_seq: int  # 0: none used
    replayed: int  # commands replayed after it
    last_seq: int
    seconds: float
    refill_to: int | None = None  # the trade log lacks rows up to this seq (the snapshot's): refill them


def load_state(data_dir: Path, instruments: dict[str, Instrument]) -> tuple[Engine, int]:
    """The engine from the newest valid snapshot (or empty) and the seq it covers."""
    for snap, engine in newest_valid(DataDir(data_dir).snapshots, instruments):
        return engine, snap.seq
    return Engine(instruments), 0


def latest_state(data_dir: Path, instruments: dict[str, Instrument]) -> tuple[Engine, int, int]:
    """The state after every command on disk, read only: the newest valid snapshot and the
    journal tail. (engine, the snapshot's seq or 0, the last seq)."""
    engine, start = load_state(data_dir, instruments)
    last = start
    for seq, cmd in read_journal(DataDir(data_dir).journal, after=start):
        engine.apply(seq, cmd)
        last = seq
    return engine, start, last


async def recover(
    data_dir: Path, instruments: dict[str, Instrument], tradelog: TradeLog | None, *, log_state: bool = False
) -> Recovered:
    t0 = time.perf_counter()
    journal_dir = DataDir(data_dir).journal
    journal_dir.mkdir(parents=True, exist_ok=True)
    engine, start = load_state(data_dir, instruments)
    refill_to = start if tradelog is not None and tradelog.recorded_through < start else None
    if tradelog is not None and refill_to is not None:
        tradelog.capped_at = tradelog.recorded_through  # its `through` stays there until the refill is done
    replayed, last, first_batch = 0, start, True
    for first_seq, cmds, ts_ns in read_batches(journal_dir, after=start):
        if first_batch and first_seq > start + 1:
            raise JournalCorrupt(f"the journal starts at {first_seq}; the state needs everything after {start}")
        first_batch = False
        events: list[Event] = []
        for seq, cmd in enumerate(cmds, first_seq):
            if seq > start:
                events += engine.apply(seq, cmd)
                replayed += 1
        last = first_seq + len(cmds) - 1
        if tradelog is not None and last <= tradelog.recorded_through:
            tradelog.skip_batch(first_seq, len(cmds))  # its rows are committed (the log says so)
        elif tradelog is not None:
            tradelog.recover_batch(first_seq, cmds, ts_ns, events)
            if tradelog.queued - tradelog.committed > 1_000_000:
                await tradelog.wait_committed()  # bound memory: let the writer catch up
    # The trade log catches up in the background: the server listens as soon as the books
    # are rebuilt; the rows before the snapshot it lacks are refilled then.
    took = time.perf_counter() - t0
    # The state's hash (what `tickline replay` prints) costs ~1 s per million open orders: on request.
    state = {"state": engine.state_hash()} if log_state else {}
    log.info("recovered", snapshot_seq=start, replayed=replayed, last_seq=last, seconds=round(took, 3), **state)
    return Recovered(engine, start, replayed, last, took, refill_to)
