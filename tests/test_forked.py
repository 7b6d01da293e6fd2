"""Snapshots are written by a forked child: what it sees, what it keeps, when it dies."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from journal import forked

if TYPE_CHECKING:
    from exchange.engine import Engine
    from exchange.instruments import Instrument
    from journal.snapshotter import Snapshotter

ROOT = Path(__file__).resolve().parent.parent


def test_the_child_sees_the_memory_of_the_moment_it_was_started(tmp_path: Path) -> None:
    state = {"seq": 1}
    out = tmp_path / "seen"

    def work() -> None:
        time.sleep(0.2)  # the parent has moved on by now
        out.write_text(str(state["seq"]))

    pid = forked.start(work)
    assert pid is not None
    state["seq"] = 2
    assert asyncio.run(forked.wait(pid)) == 0
    assert out.read_text() == "1" and state["seq"] == 2


def test_a_child_whose_work_raises_exits_1_and_says_why(capfd: pytest.CaptureFixture[str]) -> None:
    def work() -> None:
        raise RuntimeError("disk full")

    pid = forked.start(work)
    assert pid is not None and asyncio.run(forked.wait(pid)) == 1
    assert "RuntimeError: disk full" in capfd.readouterr().err


def test_the_child_keeps_no_descriptor_of_the_parent() -> None:
    # A listening socket or the data directory's lock held by a child would outlive a killed server.
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        pid = forked.start(lambda: time.sleep(1.0))
        assert pid is not None
        time.sleep(0.3)
        kept = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
        assert asyncio.run(forked.wait(pid)) == 0
    finally:
        listener.close()
    assert [fd for fd in kept if fd > 2] == []  # (stdin, stdout and stderr stay, whatever they are)


def test_a_child_dies_with_its_parent() -> None:
    # kill -9 of the server takes the snapshot in progress with it, as a thread's would be.
    parent = subprocess.Popen(
        [sys.executable, "-c", "import time; from journal import forked; print(forked.start(lambda: time.sleep(60)), flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie is dead, waiting for its (new) parent to reap it
    except FileNotFoundError:
        return False


def _an_engine() -> tuple[dict[str, Instrument], Engine]:
    """An engine after two commands: alice funded, and her order resting."""
    from exchange.engine import Engine
    from exchange.instruments import load_instruments
    from protocol.messages import TIF, NewOrder, Side, Transfer

    instruments = load_instruments(None)
    engine = Engine(instruments)
    engine.apply(1, Transfer("alice", "USD", 10**9, "fund"))
    engine.apply(2, NewOrder("AAPL", Side.BUY, 3, 15000, TIF.GTC, "alice"))
    return instruments, engine


def test_the_snapshotter_writes_through_a_child_and_says_when_one_failed(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from structlog.testing import capture_logs

    from journal.snapshots import newest_valid
    from journal.snapshotter import Snapshotter

    instruments, engine = _an_engine()
    seq = [2]
    snapshotter = Snapshotter(tmp_path, engine.books, engine.risk, lambda: seq[0], lambda: True, SimpleNamespace(committed_through=0))  # type: ignore[arg-type]

    path = asyncio.run(snapshotter.take(fork=True))
    assert path is not None and path.name == "snap-00000000000000000002.tls"
    restored, copy = next(newest_valid(tmp_path / "snapshots", instruments))
    assert restored.seq == 2 and copy.state_hash() == engine.state_hash()

    (tmp_path / "snapshots").rename(tmp_path / "kept")
    (tmp_path / "snapshots").write_text("not a directory")  # the child cannot write
    seq[0] = 3
    with capture_logs() as logs:
        assert asyncio.run(snapshotter.take(fork=True)) is None
    assert [(e["event"], e["seq"], e["exit_code"]) for e in logs] == [("snapshot_failed", 3, 1)]


@pytest.mark.parametrize("fork", [False, True], ids=["thread", "child"])
def test_a_snapshot_canceled_while_it_is_written_is_let_finish_before_the_shutdown_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fork: bool
) -> None:
    """Found by test_recovery.py's refill test, about 1 run in 60: shutdown cancels the
    snapshot task and takes one of its own, at the same seq. The canceled one's thread (or
    child) went on writing snap-<seq>.tmp, the two renamed the same file, and the second
    rename failed: the server exited 1 after a clean SIGTERM."""
    from types import SimpleNamespace

    from structlog.testing import capture_logs

    import journal.snapshots
    from journal.snapshots import newest_valid
    from journal.snapshotter import Snapshotter

    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(0.3)  # long enough for the cancel and the second take to come meanwhile
        real_fsync(fd)

    monkeypatch.setattr(journal.snapshots.os, "fsync", slow_fsync)  # (the child inherits it)
    instruments, engine = _an_engine()
    snapshotter = Snapshotter(tmp_path, engine.books, engine.risk, lambda: 2, lambda: True, SimpleNamespace(committed_through=0))  # type: ignore[arg-type]

    async def shutdown_during_a_periodic_one() -> Path | None:
        periodic = asyncio.create_task(snapshotter.take(fork=fork))
        await asyncio.sleep(0.1)  # captured; its writer is at work
        periodic.cancel()
        return await snapshotter.take()

    with capture_logs() as logs:
        assert asyncio.run(shutdown_during_a_periodic_one()) is None  # the canceled one wrote seq 2: nothing new
    assert [(e["event"], e["seq"]) for e in logs] == [("snapshot_written", 2)]
    assert [p.name for p in (tmp_path / "snapshots").iterdir()] == ["snap-00000000000000000002.tls"]
    restored, copy = next(newest_valid(tmp_path / "snapshots", instruments))
    assert restored.seq == 2 and copy.state_hash() == engine.state_hash()


def _with_a_replica(tmp_path: Path, seq: list[int], code: str, **options: float) -> Snapshotter:
    """A snapshotter of _an_engine()'s books whose replica is this Python code."""
    from types import SimpleNamespace

    from journal.snapshotter import Snapshotter

    _, engine = _an_engine()
    return Snapshotter(
        tmp_path, engine.books, engine.risk, lambda: seq[0], lambda: True, SimpleNamespace(committed_through=0),  # type: ignore[arg-type]
        replica=[sys.executable, "-c", code], **options,  # type: ignore[arg-type]
    )  # fmt: skip


def _until_the_replica_stops_then_to(snapshotter: Snapshotter, seq: list[int], stopped_at: int, then: int) -> list[dict[str, object]]:
    """Run it until the replica has stopped with the newest snapshot at `stopped_at`; then
    until one at `then` (a forked child's); the log events but the replica's start."""
    from structlog.testing import capture_logs

    async def run() -> None:
        task = asyncio.create_task(snapshotter.run())
        while snapshotter.replica is not None or snapshotter.last_seq < stopped_at:
            await asyncio.sleep(0.01)
        seq[0] = then
        while snapshotter.last_seq < then:
            await asyncio.sleep(0.01)
        task.cancel()

    with capture_logs() as logs:
        asyncio.run(asyncio.wait_for(run(), 10))
    return [e for e in logs if e["event"] != "snapshot_replica_started"]


def test_the_snapshotter_takes_the_replicas_snapshots_and_forks_once_it_stops(tmp_path: Path) -> None:
    seq = [2]
    snapshotter = _with_a_replica(tmp_path, seq, "print('7 1 250', flush=True)", every=1, interval=0.05)  # one snapshot (at 7), then it exits
    events = [(e["event"], e.get("seq", e.get("exit_code"))) for e in _until_the_replica_stops_then_to(snapshotter, seq, 7, 9)]
    assert events == [("snapshot_written", 2), ("snapshot_written", 7), ("snapshot_replica_stopped", 0), ("snapshot_written", 9)]
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["snap-00000000000000000002.tls", "snap-00000000000000000009.tls"]


def test_a_replica_that_says_something_else_is_stopped_and_forked_children_take_over(tmp_path: Path) -> None:
    seq = [2]
    confused = "import time; print('snapshot 7 written', flush=True); time.sleep(60)"
    events = _until_the_replica_stops_then_to(_with_a_replica(tmp_path, seq, confused, every=1, interval=0.05), seq, 2, 4)
    assert [(e["event"], e.get("seq")) for e in events] == [("snapshot_written", 2), ("snapshot_replica_failed", None), ("snapshot_written", 4)]
    assert "ValueError" in str(events[1]["error"])


def test_a_replica_that_falls_a_period_behind_is_helped_out_by_a_forked_snapshot(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    from journal.snapshotter import REPLICA_LAG

    seq = [3]
    snapshotter = _with_a_replica(tmp_path, seq, "import time; print('ready 3', flush=True); time.sleep(60)", every=3, interval=3600)  # caught up, then nothing

    async def run() -> int:
        task = asyncio.create_task(snapshotter.run())
        while not snapshotter.replica_ready:
            await asyncio.sleep(0.01)
        seq[0] = 3 + 3 * REPLICA_LAG - 1  # not yet a whole period more behind: the replica's to take
        await asyncio.sleep(0.5)
        assert snapshotter.last_seq == 3
        seq[0] = 3 + 3 * REPLICA_LAG
        while snapshotter.last_seq < seq[0]:
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return snapshotter.last_seq

    with capture_logs() as logs:
        assert asyncio.run(asyncio.wait_for(run(), 10)) == 3 + 3 * REPLICA_LAG
    assert [(e["event"], e.get("seq")) for e in logs if e["event"] != "snapshot_replica_started"] == [
        ("snapshot_written", 3), ("snapshot_replica_ready", 3), ("snapshot_written", 3 + 3 * REPLICA_LAG),
    ]  # fmt: skip
