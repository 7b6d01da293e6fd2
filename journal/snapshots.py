"""Snapshots of every book at one journal sequence: restart = newest valid snapshot + tail.

A file is `MAGIC + header(crc32 u32, length u64) + msgpack(Snapshot)`, written to a
temporary name, fsync'd, renamed into place, and the directory fsync'd: a reader sees a
whole snapshot or none. A snapshot that fails its checksum, does not decode, or whose
books do not hash to the state it recorded is skipped for an older one, with a log line.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from pathlib import Path
from typing import Iterator

import msgspec
import structlog

from exchange.book import NO_ORDERS, Book, decode_orders, hash_book
from exchange.engine import Engine, combine_hashes
from exchange.instruments import Instrument, MissingInstrument
from exchange.risk import BalanceRow, HoldGroup, Risk, RiskState, hash_risk

log = structlog.get_logger("snapshots")

MAGIC = b"TLSNAP4\n"  # 2: balances too; 3: orders as Book encodes them, the hash over those bytes; 4: holds as columns
HEADER = struct.Struct("<IQ")


class BookState(msgspec.Struct, array_like=True, frozen=True):
    symbol: str
    md_seq: int
    # Orders as Book encodes them (decode_orders): bids best first, then asks best first,
    # FIFO within a level; hashed as read, the bytes the state hash was taken over.
    orders: msgspec.Raw
    stops: msgspec.Raw = msgspec.Raw(NO_ORDERS)  # pending stops, in the order they were accepted
    last: int | None = None  # the last trade's price


class Snapshot(msgspec.Struct, frozen=True):
    seq: int  # every command up to and including this one is applied, none after
    taken_ns: int
    state_hash: str
    books: list[BookState]
    balances: list[BalanceRow]  # (account, asset, available, locked)
    holds: list[HoldGroup]  # (account, asset, symbol, buy, [order id], [locked for it], [price], [oco])
    refs: list[tuple[str, int]]  # transfer refs already applied, with their seq
    ref_terms: list[tuple[str, str, str, int]] = []  # (ref, account, asset, amount) of those: not hashed (older snapshots have none)


_decode = msgspec.msgpack.Decoder(Snapshot).decode


Captured = tuple[int, int, list[tuple[str, int, bytes, bytes, int | None]], RiskState, list[tuple[str, str, str, int]]]


def capture(books: dict[str, Book], risk: Risk | None, seq: int, all_holds: bool = False) -> Captured:
    """The books (encoded: the copy is made in C) and the balances (plain tuples) after
    exactly the commands up to seq (every one of them matched), taken on the event loop;
    hash and write elsewhere. all_holds: every hold as it is (a cluster role's seq is a
    stream sequence, not a journal one its holds' ids could be cut at); risk None: books only
    (a cluster's engine shard or gateway)."""
    books_now = [(s, b.md_seq, b.encoded_orders(), b.encoded_stops(), b.last) for s, b in sorted(books.items())]
    if risk is None:
        return seq, time.time_ns(), books_now, ([], [], []), []
    state = risk.state() if all_holds else risk.state(through=seq)
    return seq, time.time_ns(), books_now, state, risk.terms_of(state[2])


def snapshot_now(directory: Path, books: dict[str, Book], risk: Risk, seq: int) -> Path:
    """Capture and write in one go (bench/restart.py's snapshots)."""
    return write_snapshot(directory, capture(books, risk, seq))


def path_for(directory: Path, seq: int) -> Path:
    return directory / f"snap-{seq:020d}.tls"


def write_snapshot(directory: Path, captured: Captured, temporary: str = ".tmp") -> Path:
    """Hash, encode and write a captured snapshot atomically (runs in a worker thread). The
    snapshot replica names its temporary files apart: the server's prune deletes strays of its own."""
    directory.mkdir(parents=True, exist_ok=True)
    seq, taken_ns, books, risk, ref_terms = captured
    state_hash = combine_hashes([*(hash_book(*book) for book in books), hash_risk(risk)])
    balances, holds, refs = risk
    rows = [(symbol, md_seq, msgspec.Raw(orders), msgspec.Raw(stops), last) for symbol, md_seq, orders, stops, last in books]
    payload = msgspec.msgpack.encode(
        {"seq": seq, "taken_ns": taken_ns, "state_hash": state_hash, "books": rows, "balances": balances, "holds": holds, "refs": refs,
         "ref_terms": ref_terms}
    )
    final = path_for(directory, seq)
    tmp = final.with_suffix(temporary)
    with open(tmp, "wb") as f:
        f.write(MAGIC + HEADER.pack(zlib.crc32(payload), len(payload)) + payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return final


def seq_of(snapshot: Path) -> int:
    return int(snapshot.stem.removeprefix("snap-"))


def snapshot_paths(directory: Path) -> list[Path]:
    """Newest first."""
    return sorted(directory.glob("snap-*.tls"), reverse=True) if directory.exists() else []


def read_snapshot(path: Path) -> Snapshot | None:
    data = path.read_bytes()
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + HEADER.size:
        log.warning("snapshot_skipped", file=path.name, why="truncated or not a snapshot")
        return None
    crc, length = HEADER.unpack_from(data, len(MAGIC))
    payload = data[len(MAGIC) + HEADER.size :]
    if len(payload) != length or zlib.crc32(payload) != crc:
        log.warning("snapshot_skipped", file=path.name, why="checksum or length mismatch")
        return None
    try:
        return _decode(payload)
    except msgspec.DecodeError as exc:
        log.warning("snapshot_skipped", file=path.name, why=f"does not decode: {exc}")
        return None


def restore(snap: Snapshot, instruments: dict[str, Instrument]) -> Engine | None:
    """An engine holding the snapshot's books, or None if they do not hash as recorded."""
    engine = Engine(instruments)
    books_hash: dict[str, str] = {}  # the books it holds (an instrument added since has an empty one)
    for state in snap.books:
        book = engine.books.get(state.symbol)
        if book is None:
            raise MissingInstrument(
                f"snapshot {snap.seq} holds orders of {state.symbol}, which the instruments file does not define; "
                "restore it there (an instrument cannot be removed while the journal or snapshots hold it)"
            )
        orders, stops = bytes(state.orders), bytes(state.stops)
        books_hash[state.symbol] = hash_book(state.symbol, state.md_seq, orders, stops, state.last)
        try:
            book.load(decode_orders(orders), state.md_seq, decode_orders(stops), state.last)
        except msgspec.DecodeError as exc:
            log.warning("snapshot_skipped", seq=snap.seq, why=f"{state.symbol}'s orders do not decode: {exc}")
            return None
    risk_state = (snap.balances, snap.holds, snap.refs)
    try:
        engine.risk.load(risk_state)
    except KeyError:
        log.warning("snapshot_skipped", seq=snap.seq, why="a hold names an instrument the instruments file does not define")
        return None
    engine.risk.ref_terms = {ref: (account, asset, amount) for ref, account, asset, amount in snap.ref_terms}
    # Hashed as read, not as restored: re-encoding a million orders and holds costs ~0.3 s a
    # restart. That Book.load and Risk.load rebuild what they read is tested (tests/test_snapshots.py).
    if combine_hashes([*(books_hash[symbol] for symbol in sorted(books_hash)), hash_risk(risk_state)]) != snap.state_hash:
        log.warning("snapshot_skipped", seq=snap.seq, why="books do not match the recorded state hash")
        return None
    return engine


def newest_valid(directory: Path, instruments: dict[str, Instrument], at_most: int | None = None) -> Iterator[tuple[Snapshot, Engine]]:
    """Valid snapshots (at or before seq at_most, if given) with their restored engines, newest first."""
    for path in snapshot_paths(directory):
        if at_most is not None and seq_of(path) > at_most:
            continue
        snap = read_snapshot(path)
        if snap is None:
            continue
        engine = restore(snap, instruments)
        if engine is not None:
            yield snap, engine


def prune(directory: Path, keep: int, anchor_at_most: int | None = None) -> list[Path]:
    """Delete all but the newest `keep` snapshots (and stray temporaries), and the newest
    one at or before seq anchor_at_most (what the trade log has whole: a restart refills the
    log by replaying from it); return what is kept, newest first."""
    paths = snapshot_paths(directory)
    kept = paths[:keep]
    if anchor_at_most is not None and not any(seq_of(p) <= anchor_at_most for p in kept):
        kept += [p for p in paths[keep:] if seq_of(p) <= anchor_at_most][:1]
    for old in paths:
        if old not in kept:
            old.unlink(missing_ok=True)
    for tmp in directory.glob("snap-*.tmp"):
        tmp.unlink(missing_ok=True)
    return kept
