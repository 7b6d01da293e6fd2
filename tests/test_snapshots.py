"""Snapshots: what is restored from one goes on exactly as the engine it was taken from.

A restart checks a snapshot's state hash over the bytes it read, not over the books and
balances rebuilt from them (that would re-encode a million orders): these tests are what
says the rebuilding is faithful.
"""

from __future__ import annotations

import tempfile
import zlib
from pathlib import Path

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.engine import Engine
from journal.snapshots import HEADER, MAGIC, capture, newest_valid, read_snapshot, write_snapshot
from protocol.messages import TIF, Command, Side, Transfer
from tests.test_risk import ACCOUNTS, INITIAL, INSTRUMENTS, command_of, streams


def serial_journal(stream: list[tuple]) -> list[Command]:
    """The commands a serial exchange would have journaled for the stream (held, matched, settled in turn)."""
    engine, journal = Engine(INSTRUMENTS), list[Command]()

    def sequence(cmd: Command | None) -> None:
        seq = len(journal) + 1
        if cmd is not None and engine.risk.hold(seq, cmd) is None:
            journal.append(cmd)
            if not isinstance(cmd, Transfer):
                engine.risk.settle(engine.books[cmd.symbol].apply(seq, cmd))

    for account in ACCOUNTS:
        for asset, amount in INITIAL.items():
            sequence(Transfer(account, asset, amount, f"{account}:{asset}"))
    for item in stream:  # (each command is made from the state the ones before it left)
        sequence(command_of(item, engine.books, journal))
    return journal


def restored(engine: Engine, seq: int, directory: Path) -> Engine:
    write_snapshot(directory, capture(engine.books, engine.risk, seq))
    return next(newest_valid(directory, INSTRUMENTS))[1]


@settings(max_examples=120, deadline=None)
@given(stream=streams(), cut=st.integers(0, 80))
def test_an_engine_restored_from_a_snapshot_goes_on_as_the_one_it_was_taken_from(stream: list[tuple], cut: int) -> None:
    # Stops, icebergs, OCO pairs, holds of several accounts: after the cut, every command
    # gives the same events on both, and both end in the same state.
    journal = serial_journal(stream)
    cut = min(cut, len(journal))
    live = Engine(INSTRUMENTS)
    for seq, cmd in enumerate(journal[:cut], 1):
        live.apply(seq, cmd)
    with tempfile.TemporaryDirectory() as tmp:
        copy = restored(live, cut, Path(tmp))
    assert copy.state_hash() == live.state_hash()
    for seq, cmd in enumerate(journal[cut:], cut + 1):
        assert copy.apply(seq, cmd) == live.apply(seq, cmd), (seq, cmd)
    assert copy.state_hash() == live.state_hash()
    assert copy.risk.state() == live.risk.state()
    for symbol, book in live.books.items():
        assert list(copy.books[symbol].resting()) == list(book.resting())


def test_a_snapshot_whose_state_hash_does_not_match_what_it_holds_is_skipped(tmp_path: Path) -> None:
    stream = [("new", "a", "AAPL", Side.BUY, 5, 40_000, TIF.GTC, 0), ("iceberg", "b", "AAPL", Side.SELL, 4, 44_000, TIF.GTC, 1)]
    live = Engine(INSTRUMENTS)
    journal = serial_journal(stream)
    for seq, cmd in enumerate(journal, 1):
        live.apply(seq, cmd)
    path = write_snapshot(tmp_path, capture(live.books, live.risk, len(journal)))
    assert next(newest_valid(tmp_path, INSTRUMENTS))[1].state_hash() == live.state_hash()
    snap = read_snapshot(path)
    assert snap is not None
    forged = msgspec.msgpack.encode(msgspec.structs.replace(snap, state_hash="0" * 32))  # a whole file: its checksum fits
    path.write_bytes(MAGIC + HEADER.pack(zlib.crc32(forged), len(forged)) + forged)
    assert list(newest_valid(tmp_path, INSTRUMENTS)) == []
