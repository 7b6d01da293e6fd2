"""The snapshot replica: a process that follows the journal and writes the periodic snapshots.

    python -m journal.snapshot_replica <data dir> <every> <interval ms> [<instruments file>]
    (started by journal.snapshotter.Snapshotter once the server listens)

Why not a forked child of the server: while a child shares the server's memory, every
page the server writes (a reference count is a write) is copied in the server's thread.
At 10,000 orders/s that was 7,000-15,000 page faults in the second after each fork and a
spike of the ACK p99 every snapshot: a five-minute soak's ACK p99 was 114.7 ms with a
forked snapshot every 50,000 commands, 22.5 ms with none (docs/PERFORMANCE.md). Here the
server pays nothing: this process keeps its own copy of the books, rebuilt as a restart
rebuilds them (the newest snapshot, then the journal), and applies each command the
journal's writer appends, as replay does; replay gives the same books bit for bit.

It tells the server on stdout, one line each:

    ready <seq>                   caught up with the journal (until then the server forks
                                  for its snapshots, as a crash loop needs them at once)
    <seq> <orders> <us>           a snapshot at seq is written: its resting orders, and the
                                  microseconds it took to capture and write

every `every` commands, or `interval` seconds (given in milliseconds) if any came. A snapshot claims every command
up to its seq: before writing one this process syncs the journal segment it read (the
server's writer may not have yet). The server prunes old ones and may drop covered journal
segments. This process dies with the server (as a forked child would) and exits 1 on
anything it cannot read; the server then forks again.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from exchange.instruments import load_instruments
from journal.forked import die_with
from journal.journal import JournalTail
from journal.layout import DataDir
from journal.recovery import load_state
from journal.snapshots import capture, write_snapshot

POLL = 0.02  # seconds between reads of the journal when it had nothing new
# Below the server and its writers: a snapshot is a burst of CPU (~0.1-0.5 s with 100,000+
# resting orders) that at the same priority took a core from them, the load generator too.
NICENESS = 10
TEMPORARY = ".replica-tmp"  # its files being written (the server's prune deletes its own strays, .tmp)


def follow(data_dir: Path, every: int, interval: float, instruments_file: str | None, alive: int, report: TextIO) -> int:
    instruments = load_instruments(instruments_file)
    gc.disable()  # (as a restart rebuilds the books: no rescans of them as they come)
    engine, applied = load_state(data_dir, instruments)
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)  # (the server's, tickline/tuning.py: young objects less often)
    gc.enable()
    data = DataDir(data_dir)
    tail = JournalTail(data.journal, after=applied)
    for stray in data.snapshots.glob(f"snap-*{TEMPORARY}"):  # (one being written when the last server died)
        stray.unlink()
    snapshotted, last_time, ready = applied, time.monotonic(), False
    while os.getppid() == alive:
        batches = tail.read()
        if not batches and not ready:  # caught up: the server stops forking for snapshots
            report.write(f"ready {applied}\n")
            ready = True
        for first_seq, cmds, _ in batches:
            for seq, cmd in enumerate(cmds, first_seq):
                if seq > applied:
                    engine.apply(seq, cmd)
                    applied = seq
        now = time.monotonic()
        if applied - snapshotted >= every or (applied > snapshotted and now - last_time >= interval):
            tail.sync()
            started = time.perf_counter()
            write_snapshot(data.snapshots, capture(engine.books, engine.risk, applied), TEMPORARY)
            took = int((time.perf_counter() - started) * 1e6)
            orders = sum(len(book.orders) for book in engine.books.values())
            report.write(f"{applied} {orders} {took}\n")
            snapshotted, last_time = applied, now
        elif not batches:
            time.sleep(POLL)
    return 0


def replica_command(data_dir: Path, every: int, interval: float, instruments_file: Path | None) -> list[str]:
    """How the server starts this process (from the project's root: the paths made absolute)."""
    paths = [data_dir.resolve(), *([instruments_file.resolve()] if instruments_file else [])]
    return [sys.executable, "-m", "journal.snapshot_replica", str(paths[0]), str(every), str(round(interval * 1000)), *map(str, paths[1:])]


def main(argv: list[str]) -> int:
    os.nice(NICENESS)
    parent = os.getppid()
    die_with(parent)
    report = os.fdopen(os.dup(1), "w", buffering=1)  # one line per snapshot, to the server
    os.dup2(2, 1)  # anything else printed (structlog's default logger: a skipped snapshot) goes to stderr
    data_dir, every, interval = Path(argv[0]), int(argv[1]), int(argv[2]) / 1000  # (ms: whole numbers on the command line)
    try:
        return follow(data_dir, every, interval, argv[3] if len(argv) > 3 else None, parent, report)
    except BrokenPipeError:  # the server is gone (killed: this process is about to be) or stopping
        os._exit(0)  # (without flushing the report into the closed pipe once more)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
