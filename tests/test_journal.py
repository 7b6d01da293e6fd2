"""The journal on disk: group commit, torn tails, damage, rotation."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from cluster.wire import Sequenced
from journal.journal import Batch, Journal, JournalCorrupt, JournalTail, read_journal, repair, segment_paths
from journal.layout import segment_path
from journal.records import HEADER, decode_records, encode_batch
from protocol.messages import TIF, Cancel, NewOrder, Side


def order(i: int) -> NewOrder:
    return NewOrder("AAPL", Side.BUY, 1 + i, 100 + i, TIF.GTC, "owner", f"c{i}")


def write(directory: Path, n: int, every: int = 100, pause: float = 0, **kw: int) -> list[list[int]]:
    """Append n orders in a burst; return the batches as on_durable saw them."""
    batches: list[list[int]] = []

    async def main() -> None:
        journal = Journal(directory, **kw)
        await journal.start(lambda first, cmds, ts, record: batches.append(list(range(first, first + len(cmds)))))
        for i in range(n):
            journal.append(order(i))
            if i % every == every - 1:
                await asyncio.sleep(pause)  # let a commit start while more arrive
        await journal.close()

    asyncio.run(main())
    return batches


def test_group_commit_batches_and_reads_back_in_order(tmp_path: Path) -> None:
    batches = write(tmp_path, 1000)
    assert [seq for b in batches for seq in b] == list(range(1, 1001))
    assert len(batches) < 100  # many commands per fsync
    assert list(read_journal(tmp_path)) == [(i + 1, order(i)) for i in range(1000)]
    assert [seq for seq, _ in read_journal(tmp_path, after=990)] == list(range(991, 1001))


def test_a_torn_tail_is_cut_and_sequence_continues(tmp_path: Path) -> None:
    write(tmp_path, 10)
    [segment] = segment_paths(tmp_path)
    size = segment.stat().st_size
    with open(segment, "ab") as f:
        f.write(HEADER.pack(40, 123, 11, 1, 0) + b"half a rec")  # a crash mid-write
    assert repair(tmp_path) == 11
    assert segment.stat().st_size == size
    write(tmp_path, 5)
    assert [seq for seq, _ in read_journal(tmp_path)] == list(range(1, 16))


def test_a_flipped_byte_in_the_last_record_is_detected(tmp_path: Path) -> None:
    write(tmp_path, 2)
    write(tmp_path, 1)
    [segment] = segment_paths(tmp_path)
    data = bytearray(segment.read_bytes())
    data[-2] ^= 0x01
    segment.write_bytes(bytes(data))
    assert repair(tmp_path) == 3
    assert [seq for seq, _ in read_journal(tmp_path)] == [1, 2]


def test_segments_rotate_and_damage_before_the_last_is_refused(tmp_path: Path) -> None:
    write(tmp_path, 500, every=50, pause=0.01, segment_bytes=4096)
    segments = segment_paths(tmp_path)
    assert len(segments) > 2
    assert [seq for seq, _ in read_journal(tmp_path)] == list(range(1, 501))
    data = bytearray(segments[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    segments[0].write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt):
        list(read_journal(tmp_path))


def test_cancel_records_round_trip(tmp_path: Path) -> None:
    async def main() -> None:
        journal = Journal(tmp_path)
        await journal.start(lambda first, cmds, ts, record: None)
        journal.append(Cancel("ES", 7, "o"))
        await journal.close()

    asyncio.run(main())
    assert list(read_journal(tmp_path)) == [(1, Cancel("ES", 7, "o"))]


def test_the_trade_log_can_be_read_as_soon_as_it_is_opened(tmp_path: Path) -> None:
    # Seen in the suite: a REPLAY right after a start read a file whose writer process had
    # not created its tables yet ("no such table: trades").
    from exchange.instruments import load_instruments
    from journal.queries import reports_of, trades_from
    from journal.tradelog import TradeLog

    sqlite3.connect(tmp_path / "trades.sqlite").close()  # the file as a starting writer leaves it: no tables yet

    async def main() -> tuple[list, list]:
        log = TradeLog(tmp_path / "trades.sqlite", load_instruments())
        await log.open()
        try:
            return trades_from(tmp_path / "trades.sqlite", "AAPL", 1), reports_of(tmp_path / "trades.sqlite", "alice", 0, 10)
        finally:
            task = asyncio.get_running_loop().create_task(log.run())
            await log.close()
            await task

    assert asyncio.run(main()) == ([], [])



def test_a_trade_log_whose_hand_over_fails_says_so_to_whoever_waits_for_it(tmp_path: Path) -> None:
    # A refusal naming order 10^23 (before the codec bounded JSON integers) made run() raise
    # while encoding: every later TRADES or REPORTS waited for the log forever.
    from exchange.instruments import load_instruments
    from journal.tradelog import TradeLog
    from protocol.messages import Refusal

    async def main() -> str:
        log = TradeLog(tmp_path / "trades.sqlite", load_instruments())
        await log.open()
        task = asyncio.get_running_loop().create_task(log.run())
        log.on_refusal(Refusal("bob", "AAPL", "", "", None, None, None, "unknown_order", "not open", "cancel", 10**23))
        try:
            await asyncio.wait_for(log.wait_committed(), 5)
        except RuntimeError as exc:
            return str(exc)
        finally:
            await log.close()
            await asyncio.wait_for(task, 5)
        return "committed"

    assert asyncio.run(main()) == "the trade log stopped: OverflowError(\"can't serialize ints < -2**63 or > 2**64 - 1\")"


def test_a_flood_of_refusals_is_handed_over_in_pieces_and_audited_whole(tmp_path: Path) -> None:
    # While the writer process was behind, refusals piled up and were encoded at the next
    # tick as one piece on the event loop: 86,000 of them stopped the loop for 155 ms.
    from exchange.instruments import load_instruments
    from journal.queries import orders
    from journal.tradelog import REFUSALS_PER_PIECE, TradeLog
    from protocol.messages import Refusal

    n = 2 * REFUSALS_PER_PIECE + 34

    def refusal(i: int, target: int = 7) -> Refusal:
        return Refusal(f"u{i % 3}", "AAPL", "", "", None, None, f"c{i}", "unknown_order", "not open", "cancel", target)

    async def main() -> tuple[list[int], str]:
        log = TradeLog(tmp_path / "trades.sqlite", load_instruments())
        await log.open()
        for i in range(n):  # the writer task not running yet: as if its frames waited in drain
            log.on_refusal(refusal(i))
        pieces = [units for units, _, _ in log._queue]
        task = asyncio.get_running_loop().create_task(log.run())
        await asyncio.wait_for(log.wait_committed(), 5)
        for i in range(REFUSALS_PER_PIECE - 1):  # then one piece fails to encode, at its last refusal
            log.on_refusal(refusal(i))
        log.on_refusal(refusal(0, target=10**23))  # (the gateway that refused it sees nothing)
        try:
            await asyncio.wait_for(log.wait_committed(), 5)
            stopped = "committed"
        except RuntimeError as exc:
            stopped = str(exc)
        await log.close()
        await asyncio.wait_for(task, 5)
        return pieces, stopped

    pieces, stopped = asyncio.run(main())
    assert pieces == [REFUSALS_PER_PIECE, REFUSALS_PER_PIECE]  # the 34 left wait for the tick
    assert [row["client_id"] for row in orders(tmp_path / "trades.sqlite")] == [f"c{i}" for i in range(n)]
    assert stopped == "the trade log stopped: OverflowError(\"can't serialize ints < -2**63 or > 2**64 - 1\")"

def test_a_cluster_trade_log_gets_each_command_with_its_own_id_and_time_from_a_sequenced_message() -> None:
    # (the trade-log role hands its writer journal records built from the stream's messages)
    cmds = [NewOrder("AAPL", Side.BUY, 1, 100 + i, TIF.GTC, f"u{i}") for i in range(6)]
    ids, times = [5, 6, 7, 9, 10, 11], [1, 1, 2, 2, 2, 3]  # two shards' ids leave gaps; each Submit its own time
    s = Sequenced(times, ids, list(cmds), ["g"] * 6, list(range(6)))
    assert [(first, len(run), ts) for first, run, ts in s.runs()] == [(5, 2, 1), (7, 1, 2), (9, 2, 2), (11, 1, 3)]
    records = [decode_records(encode_batch(first, run, ts), first) for first, run, ts in s.runs()]
    back = [(seq, cmd, ts) for record in records for first, _, got, ts, _ in record for seq, cmd in enumerate(got or [], first)]
    assert [(seq, ts) for seq, _, ts in back] == list(zip(ids, times, strict=True))
    assert [cmd for _, cmd, _ in back] == cmds


def test_a_tail_follows_the_writer_through_partial_writes_and_into_the_next_segment(tmp_path: Path) -> None:
    records = [encode_batch(1 + 3 * i, [order(3 * i + k) for k in range(3)], 1_000 + i) for i in range(6)]  # seqs 1..18
    tail = JournalTail(tmp_path, after=4)
    assert tail.read() == []  # no segment yet

    def firsts(batches: list[Batch]) -> list[int]:
        return [first for first, _, _ in batches]

    seen: list[Batch] = []
    first_part = b"".join(records[:2])
    with open(segment_path(tmp_path, 1), "ab") as f:
        for i in range(0, len(first_part), 7):  # a few bytes at a time: a read may end anywhere
            f.write(first_part[i : i + 7])
            f.flush()
            seen += tail.read()
        assert firsts(seen) == [4]  # the record of seqs 1..3 is wholly before `after`: skipped
        # The writer finishes this segment and starts the next before the tail looks again:
        # what it wrote here last still comes first.
        f.write(records[2])
    segment_path(tmp_path, 10).write_bytes(records[3])
    seen += tail.read() + tail.read() + tail.read()
    assert firsts(seen) == [4, 7, 10]
    with open(segment_path(tmp_path, 10), "ab") as f:
        f.write(records[4] + records[5][:20])
    seen += tail.read()
    assert tail.read() == []  # half a record: not yet
    with open(segment_path(tmp_path, 10), "ab") as f:
        f.write(records[5][20:])
    seen += tail.read()
    assert firsts(seen) == [4, 7, 10, 13, 16]
    assert [cmd for _, cmds, _ in seen for cmd in cmds] == [order(i) for i in range(3, 18)]
    assert [ts for _, _, ts in seen] == [1_001, 1_002, 1_003, 1_004, 1_005]
    tail.sync()
    tail.close()


def test_a_tail_refuses_a_segment_that_ends_in_garbage_once_another_follows(tmp_path: Path) -> None:
    segment_path(tmp_path, 1).write_bytes(encode_batch(1, [order(0)], 0) + b"garbage")
    tail = JournalTail(tmp_path, after=0)
    assert [first for first, _, _ in tail.read()] == [1]
    assert tail.read() == []  # (it may be a record being written)
    segment_path(tmp_path, 2).write_bytes(encode_batch(2, [order(1)], 0))
    with pytest.raises(JournalCorrupt):
        tail.read()
