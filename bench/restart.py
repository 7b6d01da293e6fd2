"""Restart time with a long journal: full replay, and from a snapshot.

    python -m bench.restart [--commands 1000000]

Writes a journal of N commands (the exchange-core mix, seeded), then times what the
server does on start: (1) replay the whole journal into fresh books, (2) the same while
rebuilding the trade log and order audit (a restart whose trade log is lost), (3) load the
snapshot taken at the end, verify its hash, and replay the (empty) tail; (4) the same
with the last 10% of the journal as tail.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import structlog

from bench.mix import BENCH_INSTRUMENT, generate
from exchange.engine import Engine
from exchange.instruments import DEFAULT_INSTRUMENTS_TOML, load_instruments
from journal import forked
from journal.layout import DataDir
from journal.records import encode_batch
from journal.recovery import recover
from journal.snapshots import capture, snapshot_now, write_snapshot
from journal.tradelog import TradeLog

ROOT = Path(__file__).resolve().parent.parent


def write_journal(directory: Path, stream: list, batch: int = 1000) -> None:
    directory.mkdir(parents=True)
    with open(directory / f"seg-{1:020d}.tlj", "wb") as f:
        for i in range(0, len(stream), batch):
            chunk = stream[i : i + batch]
            f.write(encode_batch(chunk[0][0], [cmd for _, cmd in chunk], time.time_ns()))


async def timed_recover(data: Path, instruments: dict, with_log: bool) -> tuple[float, int]:
    tradelog = None
    if with_log:
        tradelog = TradeLog(DataDir(data).trades, instruments, max_rows=10**9)
        await tradelog.open()
        writer = asyncio.create_task(tradelog.run())
    t0 = time.perf_counter()
    rec = await recover(data, instruments, tradelog)
    took = time.perf_counter() - t0
    if tradelog is not None:
        await tradelog.close()
        await writer
    return took, rec.replayed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--snapshot-every", type=int, default=50_000, help="the server's default: the longest tail a crash leaves")
    parser.add_argument("--resting", type=int, default=600_000, help="open orders in the big-book snapshot phase")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # quiet recovery logs
    instruments = {**load_instruments(), "BENCH": BENCH_INSTRUMENT}
    root = Path(tempfile.mkdtemp(prefix="tickline-restart-"))
    try:
        t0 = time.perf_counter()
        stream = generate(args.commands, args.seed)
        data = root / "data"
        write_journal(DataDir(data).journal, stream)
        size = sum(p.stat().st_size for p in (DataDir(data).journal).iterdir())
        print(f"journal: {args.commands:,} commands, {size / 1e6:.0f} MB, written in {time.perf_counter() - t0:.1f}s")
        full, n = asyncio.run(timed_recover(data, instruments, with_log=False))
        print(f"full replay, books only:                 {full:6.2f}s  ({n / full:,.0f} commands/s)")
        full_log, _ = asyncio.run(timed_recover(data, instruments, with_log=True))
        print(f"full replay, rebuilding the trade log:   {full_log:6.2f}s")

        engine = asyncio.run(recover(data, instruments, None)).engine
        snapshot_now(DataDir(data).snapshots, engine.books, engine.risk, args.commands)
        snap_size = next((DataDir(data).snapshots).iterdir()).stat().st_size
        from_snap, n = asyncio.run(timed_recover(data, instruments, with_log=True))
        print(f"from the snapshot at {args.commands:,} ({snap_size / 1e3:.0f} kB), empty tail: {from_snap:6.2f}s  (target < 3 s)")

        shutil.rmtree(DataDir(data).snapshots)
        tail_at = args.commands - args.commands // 10
        engine = asyncio.run(_replay_until(data, instruments, tail_at))
        snapshot_now(DataDir(data).snapshots, engine.books, engine.risk, tail_at)
        with_tail, n = asyncio.run(timed_recover(data, instruments, with_log=True))
        print(f"from a snapshot at {tail_at:,} + {n:,} tail commands: {with_tail:6.2f}s")

        # The worst case after kill -9: the crash comes just before the next snapshot is
        # due, so the tail is a whole snapshot interval (--snapshot-every) long. Timed on
        # the real server process, from its start to listening.
        shutil.rmtree(DataDir(data).snapshots)
        tail_at = args.commands - args.snapshot_every
        engine = asyncio.run(_replay_until(data, instruments, tail_at))
        snapshot_now(DataDir(data).snapshots, engine.books, engine.risk, tail_at)
        took = time_to_listen(data, root / "instruments.toml")
        print(f"worst case after kill -9 (snapshot at {tail_at:,}, {args.snapshot_every:,} tail commands): {took:6.2f}s to listening  (target < 3 s)")
        big_book(root / "big", instruments, args.resting)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def big_book(directory: Path, instruments: dict, resting: int) -> None:
    """A snapshot of one book with `resting` open orders of one account: how fast it is
    captured and written, how long a fork for it pauses the server, then how fast it is
    read and restored (as a restart does)."""
    import gc

    from journal.snapshots import newest_valid
    from protocol.messages import TIF, NewOrder, Side, Transfer

    engine = Engine(instruments)
    engine.apply(1, Transfer("big", "USD", 10**15, "big"))
    for seq in range(2, resting + 2):
        engine.apply(seq, NewOrder("AAPL", Side.BUY, 1, 5000 + seq % 4000, TIF.GTC, "big"))
    gc.collect()
    gc.disable()  # as during recovery
    try:
        t0 = time.perf_counter()
        captured = capture(engine.books, engine.risk, resting + 1)
        t1 = time.perf_counter()
        write_snapshot(directory, captured)
        t2 = time.perf_counter()
        del captured
        child = forked.start(functools.partial(snapshot_now, directory, engine.books, engine.risk, resting + 2))
        t_forked = time.perf_counter()
        assert child is not None and os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
        t_child = time.perf_counter()
        del engine
        restored = next(newest_valid(directory, instruments))
        t3 = time.perf_counter()
    finally:
        gc.enable()
    assert sum(len(b.orders) for b in restored[1].books.values()) == resting
    print(
        f"snapshot of {resting:,} resting orders: captured in {t1 - t0:.2f}s, hashed and written in {t2 - t1:.2f}s "
        f"({resting / (t2 - t0):,.0f} orders/s); read, restored and checked in {t3 - t_child:.2f}s ({resting / (t3 - t_child):,.0f} orders/s)\n"
        f"the server's event loop pauses for a fork only: {(t_forked - t2) * 1000:.1f} ms (its child captured and wrote the snapshot in {t_child - t_forked:.2f}s)"
    )


def time_to_listen(data: Path, instruments_file: Path) -> float:
    """Start `tickline serve` on the data directory; seconds until it listens."""
    spec = BENCH_INSTRUMENT
    instruments_file.write_text(
        DEFAULT_INSTRUMENTS_TOML
        + f'\n[instruments.BENCH]\ntick = "{spec.tick.text}"\nlot = "{spec.lot.text}"\n'
        + f'max_qty = "{spec.format_qty(spec.max_qty)}"\nmin_price = "{spec.format_price(spec.min_price)}"\nmax_price = "{spec.format_price(spec.max_price)}"\n'
    )
    cmd = [sys.executable, "-m", "tickline.cli", "serve", "--port", "0", "--md-port", "0", "--web-port", "0", "--data-dir", str(data), "--instruments", str(instruments_file)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        for raw in proc.stderr:
            if b"order_entry_listening" in raw:
                return time.perf_counter() - t0
        raise RuntimeError("the server exited before listening")
    finally:
        proc.terminate()
        proc.wait(30)


async def _replay_until(data: Path, instruments: dict, last: int):
    from journal.journal import read_journal

    engine = Engine(instruments)
    for seq, cmd in read_journal(DataDir(data).journal):
        if seq > last:
            break
        engine.apply(seq, cmd)
    return engine


if __name__ == "__main__":
    raise SystemExit(main())
