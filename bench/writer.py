"""The trade log's writer alone: its CPU per command, without a server around it.

    python -m bench.writer [--commands 200000] [--owners 1000] [--rounds 3] [--journal DATA_DIR]

Builds the frames the server hands the writer process (journal records, trades, reports:
journal/tradelog.py's pieces, FRAME_UNITS rows each) for a seeded command stream, the
exchange-core mix with stops and icebergs (bench/mix.py, 1,000 owners by default, five commands per
journal record as at 10,000 orders/s), or for the journal of a data directory (e.g. one a
`bench.load` run left), then times journal.tradelog_writer.Writer over them into a fresh
SQLite file, once per round. `make bench` measures the same process under the server at
10,000/s; this one separates the writer's own cost from the machine's other load, so an
A/B of a change to it shows in a minute.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Sized

import msgspec

from bench.mix import BENCH_INSTRUMENT, generate
from exchange.engine import Engine
from exchange.instruments import Instrument, load_instruments
from journal.journal import read_batches
from journal.layout import DataDir
from journal.queries import orders, reports_of
from journal.refill import replayed_frames
from journal.tradelog_writer import Frame, Writer, first_frame
from protocol.messages import Command, Transfer

PER_RECORD = 5  # commands per journal record (group commit) at 10,000 orders/s, as make bench shows
RECORD_NS = 500_000  # one record every 0.5 ms


def mix_batches(n: int, owners: int = 1_000) -> Iterator[tuple[int, list[Command], int]]:
    """The seeded mix as journal batches: (first seq, commands, time ns); deposits first."""
    orders = [cmd for _, cmd in generate(n, owners=owners, order_types=True)]
    names = sorted({cmd.owner for cmd in orders})  # type: ignore[union-attr]
    funding: list[Command] = [Transfer(o, a, 10**15, f"{o}:{a}") for o in names for a in (BENCH_INSTRUMENT.base, BENCH_INSTRUMENT.quote)]
    cmds = funding + orders
    ts = 1_780_000_000 * 10**9
    for i in range(0, len(cmds), PER_RECORD):
        yield i + 1, cmds[i : i + PER_RECORD], ts + i // PER_RECORD * RECORD_NS


def frames_of(batches: Iterator[tuple[int, list[Command], int]], instruments: dict[str, Instrument]) -> tuple[list[bytes], int]:
    """Encoded frames as the server sends them (journal/refill.py makes them), and the
    number of commands they hold (the journal's seqs start at 1: the last one's)."""
    frames = list(replayed_frames(Engine(instruments), batches, 0, 0, None))
    encode = msgspec.msgpack.Encoder().encode
    return [encode(frame) for frame in frames], frames[-1].through if frames else 0


def time_writer(frames: list[bytes], instruments: dict[str, Instrument], db: Path) -> float:
    """CPU seconds of decoding and committing every frame into a fresh file."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    writer = Writer(str(db))
    writer.write(first_frame(instruments))  # as the server's
    decode = msgspec.msgpack.Decoder(Frame).decode
    start = time.process_time()
    for data in frames:
        writer.write(decode(data))
    spent = time.process_time() - start
    writer.conn.close()
    return spent


READS = 5
RECENT = 5_000  # a reconnecting client's REPORTS since=: its last seq a few seconds back


def time_reads(db: Path, owner: str, last: int) -> list[tuple[str, int, float]]:
    """What one owner's reads of the log cost: REPORTS for a reconnect and for the whole
    history, and its audit (tickline orders --owner): (what, rows, median ms)."""
    reads: dict[str, Callable[[], Sized]] = {
        f"REPORTS since={last - RECENT:,}": lambda: reports_of(db, owner, last - RECENT, last),
        "REPORTS since=0": lambda: reports_of(db, owner, 0, last),
        "audit": lambda: list(orders(db, owner=owner)),
    }
    out = []
    for what, read in reads.items():
        times = []
        for _ in range(READS):
            start = time.perf_counter()
            found = len(read())
            times.append(time.perf_counter() - start)
        out.append((what, found, sorted(times)[READS // 2] * 1e3))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=200_000)
    parser.add_argument("--owners", type=int, default=1_000, help="accounts in the mix (bench.load has 8)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--journal", type=Path, help="a data directory whose journal to use instead of the mix (default instruments)")
    args = parser.parse_args(argv)
    if args.journal is not None:
        instruments = load_instruments(None)
        frames, n = frames_of(read_batches(DataDir(args.journal).journal, after=0), instruments)
        source = f"the journal of {args.journal}"
    else:
        instruments = {BENCH_INSTRUMENT.symbol: BENCH_INSTRUMENT}
        frames, n = frames_of(mix_batches(args.commands, args.owners), instruments)
        source = f"the exchange-core mix with stops and icebergs, {args.owners:,} owners,"
    with tempfile.TemporaryDirectory(prefix="tickline-writer-") as tmp:
        db = Path(tmp) / "trades.sqlite"
        spent = [time_writer(frames, instruments, db) for _ in range(args.rounds)]
        rows = Writer(str(db)).conn
        counts = {t: rows.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("audit_batches", "audit_owner_groups", "report_groups", "trades")}
        owner = rows.execute("SELECT min(owner) FROM audit_owner_groups").fetchone()[0]
        rows.close()
        reads = time_reads(db, owner, n)
    per = sorted(s / n * 1e6 for s in spent)
    print(f"trade-log writer, {n:,} commands of {source} in {len(frames)} frames (pid {os.getpid()}):")
    print(
        f"  rows per command: audit batches {counts['audit_batches'] / n:.2f} (owner groups {counts['audit_owner_groups'] / n:.2f}),"
        f" report groups {counts['report_groups'] / n:.2f}, trades {counts['trades'] / n:.2f}"
    )
    print(f"  CPU per command: {' / '.join(f'{p:.2f}' for p in per)} us (rounds, sorted); median {per[len(per) // 2]:.2f} us")
    print(f"  reads of one owner ({owner}), median of {READS}: " + ", ".join(f"{what} {found:,} rows in {ms:.1f} ms" for what, found, ms in reads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
