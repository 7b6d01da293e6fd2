"""Restarts against the real server: clean, after kill -9, with damaged files, with an overloaded trade log."""

from __future__ import annotations

import os
import random
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from journal.journal import read_journal, repair, segment_paths
from journal.queries import trades
from journal.snapshots import snapshot_paths
from journal.snapshotter import AFTER_RESTART
from protocol.messages import NewOrder
from tests.harness import ROOT, Client, Server, fills_by_owner


def replay_verify(data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tickline.cli", "replay", "--verify", "--data-dir", str(data)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def recovered_state(server: Server) -> str:
    for line in server.log:
        m = re.search(r"event='recovered' .*state='([0-9a-f]+)'", line)
        if m:
            return m.group(1)
    raise AssertionError("no recovered line:\n" + "\n".join(server.log))


def full_replay_state(data: Path) -> str:
    out = replay_verify(data).stdout
    return re.search(r"full replay state ([0-9a-f]+)", out).group(1)  # type: ignore[union-attr]


def test_clean_restart_continues_exactly_where_it_was(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data).start()
    alice, bob = server.client(), server.client()
    alice.ask("SELL AAPL 10 150.25 id=a1")
    alice.ask("SELL AAPL 5 150.50")
    bob.ask("BUY AAPL 4 150.25", 2)
    bob.ask("BUY ES 3 4500")
    book_before = bob.ask("BOOK AAPL", 4)
    assert server.stop() == 0
    assert any("snapshot_written" in line for line in server.log)

    server = Server(data).start()
    try:
        again = server.client(alice.owner)
        assert again.ask("ORDERS", 4) == ["ORDERS 2", "ORDER 61 SELL AAPL 6 150.25 GTC id=a1", "ORDER 62 SELL AAPL 5 150.50 GTC", "END"]
        assert again.ask("BOOK AAPL", 4) == book_before
        # Order ids continue; the resting order still trades with its old owner's reports.
        bob2 = server.client(bob.owner)
        assert bob2.ask("BUY AAPL 6 150.25", 2) == ["ACK 65 BUY AAPL 6 150.25 GTC", "FILL 65 AAPL BUY 6 150.25 leaves=0 trade=65-1 liq=R"]
        assert again.line() == "FILL 61 AAPL SELL 6 150.25 leaves=0 trade=65-1 liq=A id=a1"
    finally:
        server.stop()
    assert replay_verify(data).returncode == 0


def _trader(port: int, seed: int, acked: set[int], stop: threading.Event) -> None:
    """A client sending a random mix in small pipelined bursts until the server dies."""
    rng = random.Random(seed)
    try:
        client = Client(port)
        client.login(f"t{seed % 12 + 1}")
        while not stop.is_set():
            lines = []
            for _ in range(20):
                side = rng.choice(["BUY", "SELL"])
                price = 100 + rng.randint(-5, 5)
                lines.append(f"{side} AAPL {rng.randint(1, 9)} {price}.00\n" if rng.random() < 0.9 else f"{side} ES {rng.randint(1, 3)} {4500 + rng.randint(-2, 2)}\n")
            client.send("".join(lines))
            got = 0
            while got < 20:
                line = client.line(timeout=5)
                m = re.match(r"(ACK|REJ) (\d+)?", line)
                if m:
                    got += 1
                    if m.group(1) == "ACK":
                        acked.add(int(m.group(2)))
    except (OSError, EOFError, TimeoutError):
        return


@pytest.mark.parametrize("snapshots_by", ["replica", "fork"])
def test_kill_9_at_random_moments_loses_nothing_acknowledged(tmp_path: Path, snapshots_by: str) -> None:
    # Traders on AAPL and ES share their USD; snapshots are taken live, under that load,
    # every 300 commands (by the replica that follows the journal, or by forked children).
    # The state hash covers books and balances, so "recovered == full replay" says a live
    # snapshot's balances + the tail equal a serial replay's.
    data = tmp_path / "data"
    rng = random.Random(7)
    acked: set[int] = set()
    for round_no in range(3):
        server = Server(data, "--snapshot-every", "300", "--snapshots-by", snapshots_by).start()
        if round_no:
            assert recovered_state(server) == full_replay_state(data)
        stop = threading.Event()
        traders = [threading.Thread(target=_trader, args=(server.port, round_no * 10 + i, acked, stop)) for i in range(3)]
        for t in traders:
            t.start()
        time.sleep(rng.uniform(0.8, 2.0))
        server.kill()  # SIGKILL, mid-flow
        stop.set()
        for t in traders:
            t.join(10)
    assert len(acked) > 1000

    repair(data / "journal")
    journaled = {seq for seq, cmd in read_journal(data / "journal") if isinstance(cmd, NewOrder)}
    assert acked <= journaled, f"{len(acked - journaled)} acknowledged orders lost"

    # A last restart: recovery equals a fresh replay, the trade log has every trade once.
    server = Server(data).start()
    try:
        assert recovered_state(server) == full_replay_state(data)
        client = server.client()
        assert client.ask("PING") == ["PONG"]
        if any("tradelog_refill_started" in line for line in server.log):  # the log fell behind a snapshot
            server.logged("tradelog_refilled", timeout=60)
    finally:
        server.stop()
    verdict = replay_verify(data)
    assert verdict.returncode == 0, verdict.stdout
    ids = [row["trade_id"] for row in trades(data / "trades.sqlite")]
    assert len(ids) == len(set(ids)) > 0
    # and every owner's reports have one FILL per trade it was a side of (a restart's
    # refill may store some commands' reports a second time: they are read once)
    got, want = fills_by_owner(data / "trades.sqlite")
    assert got == want


def test_a_torn_journal_tail_and_a_corrupt_snapshot_are_survived(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data, "--snapshot-every", "50").start()
    client = server.client()
    for i in range(3):
        client.send("".join(f"BUY AAPL 1 {90 + i}.{j:02d}\nSELL AAPL 1 {95 + i}.{j:02d}\n" for j in range(40)))
        client.lines(80)
        time.sleep(2.2)  # let the snapshotter (it looks once a second) see each burst
    assert server.stop() == 0
    snaps = snapshot_paths(data / "snapshots")
    assert len(snaps) >= 2
    expected = full_replay_state(data)

    # The newest snapshot cut in half, the next one with a flipped byte, and half a record
    # appended to the journal (a crash mid-write).
    snaps[0].write_bytes(snaps[0].read_bytes()[: snaps[0].stat().st_size // 2])
    damaged = bytearray(snaps[1].read_bytes())
    damaged[-10] ^= 0xFF
    snaps[1].write_bytes(bytes(damaged))
    segment = segment_paths(data / "journal")[-1]
    with open(segment, "ab") as f:
        f.write(b"\x40\x00\x00\x00garbage-from-a-torn-write")

    server = Server(data).start()
    try:
        log = "\n".join(server.log)
        assert "journal_torn_tail_dropped" in log
        assert log.count("snapshot_skipped") >= 2
        assert recovered_state(server) == expected
        assert server.client().ask("BOOK AAPL 1", 3)[0] == "BOOK AAPL bids=1 asks=1"
    finally:
        server.stop()
    assert replay_verify(data).returncode == 0


def test_an_overloaded_trade_log_drops_rows_and_the_next_restart_fills_the_gap(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data, "--tradelog-max-rows", "1", "--snapshot-every", "10").start()
    maker, taker = server.client(), server.client()
    maker.send("".join(f"SELL ES 1 {4500 + i}\n" for i in range(30)))
    maker.lines(30)
    taker.send("BUY ES 30 MKT\n")
    bought = int(taker.lines(31)[0].split()[1])
    time.sleep(1.5)
    # REPORTS never claims what the log lacks: through= stops before the dropped rows (it
    # answered through= past them, with the fills left out, and a client taking up from
    # there never saw them).
    head = taker.ask("REPORTS since=0")[0]
    through, count = map(int, re.fullmatch(r"REPORTS since=0 through=(\d+) count=(\d+)", head).groups())  # type: ignore[union-attr]
    assert through < bought or count == 30, head
    assert server.stop() == 0
    log = "\n".join(server.log)
    assert "tradelog_behind" in log
    assert "snapshot_written seq=91" in log.replace("'", "").replace("event=", "")  # snapshots never wait for the log
    assert len(list(trades(data / "trades.sqlite"))) < 30  # rows were dropped at the bound

    server = Server(data).start()  # from the snapshot; the log's gap is refilled while it serves
    assert " to=91" in server.logged("tradelog_refilled")
    head = server.client(taker.owner).ask("REPORTS since=0")[0]
    through, count = map(int, re.fullmatch(r"REPORTS since=0 through=(\d+) count=(\d+)", head).groups())  # type: ignore[union-attr]
    assert through >= bought and count == 30, head
    server.stop()
    assert len(list(trades(data / "trades.sqlite"))) == 30
    assert replay_verify(data).returncode == 0


def child_processes(pid: int, module: str) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if module in Path(f"/proc/{c}/cmdline").read_text().replace("\0", " ")]


def test_the_journal_writer_runs_first_in_line_for_a_core_where_the_system_allows_it(server: Server) -> None:
    assert server.proc is not None
    [writer] = child_processes(server.proc.pid, "journal.journal_writer")
    nice = int(Path(f"/proc/{writer}/stat").read_text().rsplit(")", 1)[1].split()[16])
    allowed = os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_NICE)[0] >= 30  # (or CAP_SYS_NICE: not in CI)
    assert nice == (-10 if allowed else 0)


def test_a_dead_journal_writer_stops_the_server_and_acknowledges_nothing_more(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data).start()
    maker = server.client("t1")
    assert maker.ask("SELL ES 10 4500") == ["ACK 61 SELL ES 10 4500.00 GTC"]
    assert server.proc is not None
    [writer] = child_processes(server.proc.pid, "journal.journal_writer")
    os.kill(writer, signal.SIGKILL)
    maker.send("SELL ES 1 4501\n")  # nothing can be made durable any more
    assert server.proc.wait(10) == 1  # it stops, and says it failed
    assert maker.line() == "BYE shutting down"  # and never an ACK for what is not on disk
    assert any("journal_write_failed" in line for line in server.log)

    server = Server(data).start()  # what was acknowledged is there
    assert server.client("t1").ask("ORDERS", 3)[:2] == ["ORDERS 1", "ORDER 61 SELL ES 10 4500.00 GTC"]
    server.stop()


def test_a_bug_in_matching_stops_the_server_loudly_without_a_snapshot_and_the_restart_replays_the_order(tmp_path: Path) -> None:
    """Found with the OCO snapshot bug (test_e2e_order_types.py): a KeyError in matching left
    the server running and silent, every connection's requests unanswered forever, with
    only asyncio's traceback on stderr. Now: one critical line naming the command, a BYE
    to every client, no snapshot of the half-applied book, exit 1."""
    data = tmp_path / "data"
    server = Server(data, module="tests.faulty_server").start()
    maker, taker = server.client("t1"), server.client("t2")
    assert maker.ask("SELL ES 5 4500") == ["ACK 61 SELL ES 5 4500.00 GTC"]
    assert taker.ask("BUY ES 2 4500 id=boom") == ["ACK 62 BUY ES 2 4500.00 GTC id=boom"]  # durable, then matching fails
    assert taker.line() == "BYE shutting down after an internal error"
    assert maker.line() == "BYE shutting down after an internal error"
    assert server.proc is not None and server.proc.wait(15) == 1
    failed = [line for line in server.log if "matching_failed" in line]
    assert len(failed) == 1 and "seq=62" in failed[0] and "level='critical'" in failed[0], server.log[-20:]
    assert not any("snapshot_written" in line for line in server.log[server.log.index(failed[0]) :])

    server = Server(data, funded=False).start()  # the same journal, a book without the fault
    maker = server.client("t1")
    assert maker.ask("ORDERS", 3) == ["ORDERS 1", "ORDER 61 SELL ES 3 4500.00 GTC", "END"]  # order 62 was replayed
    server.stop()


def test_a_stalled_trade_log_writer_makes_reports_answer_unavailable_within_seconds_not_hang(tmp_path: Path) -> None:
    """Seen under load (three test runs at once on two cores): the trade-log writer, at nice
    19, got no CPU for seconds after a restart, and a REPORTS waited for it with no bound,
    holding every later request of that connection. As a cluster gateway does, the answer
    is now ERR unavailable after a bound; orders and other queries go on meanwhile."""
    server = Server(tmp_path / "data").start()
    try:
        client = server.client()
        assert server.proc is not None
        [writer] = child_processes(server.proc.pid, "journal.tradelog_writer")
        os.kill(writer, signal.SIGSTOP)
        assert client.ask("BUY AAPL 1 100") == ["ACK 61 BUY AAPL 1 100.00 GTC"]  # handed over, never committed
        started = time.monotonic()
        [answer] = client.ask("REPORTS since=0")
        assert answer.startswith("ERR unavailable the trade log has not written what this server has matched yet"), answer
        assert 2 < time.monotonic() - started < 9
        assert client.ask("PING") == ["PONG"]
        os.kill(writer, signal.SIGCONT)
        assert client.ask("REPORTS since=0", 2) == ["REPORTS since=0 through=61 count=0", "END"]
    finally:
        server.stop()


def test_a_dead_trade_log_writer_costs_no_order_and_the_restart_fills_the_log(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data).start()
    maker, taker = server.client(), server.client()
    maker.ask("SELL ES 10 4500")
    assert server.proc is not None
    [writer] = child_processes(server.proc.pid, "journal.tradelog_writer")
    os.kill(writer, signal.SIGKILL)
    time.sleep(0.2)
    assert taker.ask("BUY ES 3", 2) == ["ACK 62 BUY ES 3 MKT IOC", "FILL 62 ES BUY 3 4500.00 leaves=0 trade=62-1 liq=R"]
    assert maker.line() == "FILL 61 ES SELL 3 4500.00 leaves=7 trade=62-1 liq=A"
    assert server.stop() == 0
    assert any("tradelog_writer_died" in line for line in server.log)

    server = Server(data).start()
    server.logged("tradelog_refilled")
    server.stop()
    assert [row["trade_id"] for row in trades(data / "trades.sqlite")] == ["62-1"]
    assert replay_verify(data).returncode == 0


def test_orders_pages_list_every_open_order_once_after_a_restart(tmp_path: Path) -> None:
    # Found by bench/crashloop.py: restored from the books, open orders were listed by price
    # level, not by id, so paging with after=<id> skipped most of them.
    server = Server(tmp_path / "data").start()
    try:
        c = server.client("t1")
        c.send("".join(f"BUY {'AAPL' if i % 3 else 'ES'} 1 {100 + (i * 7) % 50}.00\n" for i in range(300)))
        acked = {int(line.split()[1]) for line in c.lines(300)}
        server.kill()
        server.start()
        c = Client(server.port)
        assert c.login("t1") == "LOGGED_IN account=t1 open=300"
        listed: list[int] = []
        after = 0
        while True:
            head = c.ask(f"ORDERS after={after} limit=7", 1)[0].split()
            listed += [int(line.split()[1]) for line in c.until("END")[:-1]]
            if len(head) < 3:
                break
            after = int(head[2].removeprefix("next="))
        assert listed == sorted(acked)
    finally:
        server.kill()


def test_in_a_crash_loop_no_restart_replays_what_the_one_before_it_did(tmp_path: Path) -> None:
    # Reported: killed every few seconds, the server never lived long enough to snapshot
    # (its snapshot waited for the trade log to take the whole replayed tail again), so
    # each restart replayed more: 1.0 s to listening, 6.5 s by the 10th, 14.5 s by the 20th.
    data = tmp_path / "data"
    server = Server(data).start()
    c = server.client("t1")
    c.send("".join(f"BUY AAPL 1 {100 + i % 400}.00\nSELL AAPL 1 {100 + i % 400}.00\n" for i in range(10_000)))
    assert c.lines(20_000 + 10_000, timeout=60)[-1].startswith(("FILL", "ACK", "CANCELED"))  # ACKs, and fills or self-trade cancels
    server.kill()
    replayed = []
    for _ in range(2):
        server.start()
        replayed += [int(m.group(1)) for line in server.log if (m := re.search(r"event='recovered' .*replayed=(\d+)", line))]
        deadline = time.monotonic() + 3  # killed again soon: the snapshot must come first
        while not any("snapshot_written" in line for line in server.log) and time.monotonic() < deadline:
            time.sleep(0.1)
        server.kill()
    assert replayed[0] >= AFTER_RESTART and replayed[1] == 0, replayed  # the first restart snapshotted at once: the second replays nothing
    server.start()
    try:
        assert recovered_state(server) == full_replay_state(data)
    finally:
        server.stop()
    verdict = replay_verify(data)  # and the trade log has every trade once: the restarts handed it only what it lacked
    assert verdict.returncode == 0, verdict.stdout


def test_a_lost_trade_log_is_refilled_while_the_server_serves_from_its_snapshot(tmp_path: Path) -> None:
    # Snapshots never wait for the trade log: a restart starts from the newest snapshot
    # and refills the rows the log lacks before it in a process of its own.
    data = tmp_path / "data"
    server = Server(data, "--snapshot-every", "10").start()
    maker, taker = server.client("t1"), server.client("t2")
    maker.send("".join(f"SELL ES 1 {4500 + i}\n" for i in range(20)))
    maker.lines(20)
    taker.ask("BUY ES 20 MKT", 21)
    assert server.stop() == 0, "\n".join(server.log[-30:])
    before = [row["trade_id"] for row in trades(data / "trades.sqlite")]
    assert len(before) == 20
    for path in data.glob("trades.sqlite*"):
        path.unlink()

    server = Server(data).start()
    try:
        assert re.search(r"event='recovered' snapshot_seq=(\d+) replayed=0 ", "\n".join(server.log))  # not a full replay
        assert server.client("t1").ask("BOOK ES 1", 2) == ["BOOK ES bids=0 asks=0", "END"]  # serving meanwhile
        server.logged("tradelog_refilled")
        assert [row["trade_id"] for row in trades(data / "trades.sqlite")] == before
    finally:
        server.stop()
    assert replay_verify(data).returncode == 0


def test_the_periodic_snapshots_come_from_the_replica_and_it_dies_with_a_killed_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data, "--snapshot-every", "20", "--snapshot-interval", "0.2").start()
    alice, bob = server.client(), server.client()
    alice.send("".join(f"SELL AAPL 2 {150 + i % 7}.25\n" for i in range(30)))  # the first snapshot: on the loop
    alice.lines(30)
    replica = int(re.search(r"pid=(\d+)", server.logged("snapshot_replica_started")).group(1))  # type: ignore[union-attr]
    bob.send("".join(f"BUY AAPL 1 {150 + i % 9}.25\n" for i in range(40)))  # some trade
    acks: list[str] = []
    while len(acks) < 40:
        line = bob.line()
        if line.startswith("ACK"):
            acks.append(line)
    last = int(acks[-1].split()[1])

    def by_replica() -> list[int]:
        since = next(i for i, line in enumerate(server.log) if "snapshot_replica_started" in line)
        return [int(m.group(1)) for line in server.log[since:] if (m := re.search(r"snapshot_written' seq=(\d+)", line))]

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and last not in by_replica():
        time.sleep(0.05)
    assert last in by_replica(), "\n".join(server.log[-20:])  # every 20 commands, and the rest within 0.2 s
    server.kill()

    def gone() -> bool:
        status = Path(f"/proc/{replica}/status")
        try:
            return "State:\tZ" in status.read_text()
        except FileNotFoundError:
            return True

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not gone():
        time.sleep(0.05)
    assert gone()  # it dies with the server, as a forked child would

    server = Server(data, "--log-recovered-state").start()
    try:
        assert f"snapshot_seq={last} replayed=0" in server.logged("recovered")
        assert recovered_state(server) == full_replay_state(data)
    finally:
        server.stop()
    assert replay_verify(data).returncode == 0
