"""`tickline replay --verify`: the journal, the snapshots and the trade log must agree.

1. Replay the whole journal from its first command: the reference books and trades.
2. Restore the newest valid snapshot and replay the journal after it: same state hash.
3. The trade log holds exactly the replayed trades (same ids, symbols, sizes, prices, sides).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from exchange.engine import Engine
from exchange.instruments import Instrument
from journal.journal import read_journal
from journal.layout import DataDir
from journal.queries import connect_readonly
from journal.recovery import latest_state
from protocol.messages import Trade


@dataclass
class Verdict:
    commands: int = 0
    full_hash: str = ""
    snapshot_seq: int = 0
    snapshot_hash: str = ""
    trades_replayed: int = 0
    trades_logged: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(data_dir: Path, instruments: dict[str, Instrument]) -> Verdict:
    v = Verdict()
    journal_dir = DataDir(data_dir).journal
    # No repair(): this runs beside a live server, and only reads. A torn last record
    # (a write in progress) is simply not read: read_journal stops before it.
    full = Engine(instruments)
    expected: dict[str, tuple] = {}
    for seq, cmd in read_journal(journal_dir):
        if v.commands == 0 and seq != 1:
            v.problems.append(f"the journal starts at {seq}, not 1: a full replay is impossible (retention deleted it)")
            return v
        v.commands += 1
        for e in full.apply(seq, cmd):
            if type(e) is Trade:
                inst = instruments[e.symbol]
                expected[e.trade_id] = (e.symbol, inst.format_qty(e.qty), inst.format_price(e.price), e.aggressor.value, e.maker_order_id, e.taker_order_id)
    v.full_hash = full.state_hash()
    v.trades_replayed = len(expected)

    engine, v.snapshot_seq, _ = latest_state(data_dir, instruments)
    if v.snapshot_seq:
        v.snapshot_hash = engine.state_hash()
        if v.snapshot_hash != v.full_hash:
            v.problems.append(f"snapshot {v.snapshot_seq} + tail gives state {v.snapshot_hash}, full replay {v.full_hash}")

    db = DataDir(data_dir).trades
    if not db.exists():
        v.problems.append(f"no trade log at {db}")
        return v
    with connect_readonly(db) as conn:
        logged = {
            row[0]: tuple(row[1:])
            for row in conn.execute("SELECT trade_id, symbol, qty, price, aggressor, maker_order_id, taker_order_id FROM trades")
        }
    v.trades_logged = len(logged)
    missing = expected.keys() - logged.keys()
    extra = logged.keys() - expected.keys()
    differ = [t for t in expected.keys() & logged.keys() if expected[t] != logged[t]]
    if missing:
        v.problems.append(f"{len(missing)} replayed trades missing from the trade log, e.g. {sorted(missing)[:3]}")
    if extra:
        v.problems.append(f"{len(extra)} logged trades that replay does not produce, e.g. {sorted(extra)[:3]}")
    if differ:
        v.problems.append(f"{len(differ)} trades differ from their replay, e.g. {differ[:3]}")
    return v
