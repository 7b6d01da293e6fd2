"""Refills the trade log after a restart, in a process of its own, while the server serves.

    python -m journal.refill <data dir> <through> <to> [<instruments file>]

Snapshots do not wait for the trade log, so a restart may start from a snapshot (seq `to`)
newer than what the log has whole (`through`, its meta row). The trades and reports of the
commands in between are matching's output: this process rebuilds them by replaying the
journal from the newest kept snapshot at or before `through` (the snapshotter keeps one) or
from the first command, and writes the rows of (through, to] in frames (INSERT OR IGNORE),
raising the log's `through` as it goes: killed midway, the next restart refills less.
Exit 0: the log is whole through `to`; 1: it cannot be (the journal no longer reaches back).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator

import msgspec
import structlog

from exchange.engine import Engine
from exchange.instruments import Instrument, assets_of, load_instruments
from journal.journal import read_batches
from journal.layout import DataDir, first_seq_of, segment_paths
from journal.snapshots import newest_valid
from journal.tradelog import FRAME_UNITS, replayed_piece
from journal.tradelog_writer import Frame, Writer
from protocol.messages import Command

log = structlog.get_logger("refill")


def anchor(data_dir: Path, instruments: dict[str, Instrument], through: int) -> tuple[Engine, int] | None:
    """The engine at the newest valid snapshot at or before `through`, or empty if the
    journal still starts at the first command; None if neither."""
    for snap, engine in newest_valid(DataDir(data_dir).snapshots, instruments, at_most=through):
        return engine, snap.seq
    segments = segment_paths(DataDir(data_dir).journal)
    if segments and first_seq_of(segments[0]) == 1:
        return Engine(instruments), 0
    return None


def refill(data_dir: Path, instruments: dict[str, Instrument], through: int, to: int) -> bool:
    start = anchor(data_dir, instruments, through)
    if start is None:
        log.error("refill_impossible", through=through, to=to, why="no snapshot at or before it, and the journal starts later")
        return False
    engine, first = start
    writer = Writer(str(DataDir(data_dir).trades))
    writer.instruments, writer.assets = instruments, assets_of(instruments)
    parent = os.getppid()
    alive = lambda: os.getppid() == parent  # noqa: E731 (the server was killed: its restart refills, from where this one got)
    for frame in replayed_frames(engine, read_batches(DataDir(data_dir).journal, after=first), first, through, to, alive):
        writer.write(frame)
    writer.conn.close()
    if not alive():
        return False
    log.info("refilled", through=through, to=to, replayed_from=first)
    return True


def replayed_frames(
    engine: Engine, batches: Iterable[tuple[int, list[Command], int]], first: int, through: int, to: int | None, alive: Callable[[], bool] = lambda: True
) -> Iterator[Frame]:
    """The trade log's frames for the commands in (through, to] of these journal batches,
    as the server would hand them over (FRAME_UNITS rows each), replayed on engine from
    seq `first` (the commands up to `through` only move its state). Stops, without the
    frame in progress, once alive() says no."""
    encode = msgspec.msgpack.Encoder().encode
    pieces: list[msgspec.Raw] = []
    units, last = 0, first
    for first_seq, cmds, ts_ns in batches:
        if to is not None and first_seq > to:
            break
        if not alive():
            return
        events = []
        for seq, cmd in enumerate(cmds, first_seq):
            if first < seq and (to is None or seq <= to):
                events += engine.apply(seq, cmd)
        last = first_seq + len(cmds) - 1 if to is None else min(first_seq + len(cmds) - 1, to)
        if last <= through:
            continue  # the log has these rows: replayed for the state only
        count, piece = replayed_piece(first_seq, cmds[: last - first_seq + 1], ts_ns, events)
        pieces.append(msgspec.Raw(encode(piece)))
        units += count
        if units >= FRAME_UNITS:
            yield Frame(units, pieces, through=last)
            pieces, units = [], 0
    if pieces:
        yield Frame(units, pieces, through=last)


def main(argv: list[str]) -> int:
    os.nice(19)  # derived data: the server's own work goes first
    data_dir, through, to = Path(argv[0]), int(argv[1]), int(argv[2])
    instruments = load_instruments(argv[3] if len(argv) > 3 else None)
    return 0 if refill(data_dir, instruments, through, to) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
