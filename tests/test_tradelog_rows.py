"""The trade-log writer's rows: candles, times and the audit as the log has always had them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from journal.queries import order_line, orders, reports_of, reports_page
from journal.records import encode_batch
from journal.tradelog_writer import INTERVALS, Frame, IsoClock, Piece, Writer, create_tables, fold_candles, iso
from protocol.messages import TIF, Cancel, Canceled, NewOrder, Reason, Refusal, Side, Transfer

DAY_NS = 86_400 * 10**9
# An audit row as the writer added them to orders before audit_batches and refusal_batches.
INSERT_ORDER = (
    "INSERT OR IGNORE INTO orders (order_id, ts, owner, symbol, side, qty, price, tif, client_id, status, reason, text, kind, target) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
T0 = 1_780_000_000 * 10**9  # 2026-05-28

trades = st.lists(
    st.tuples(st.sampled_from(["AAPL", "BTC-USD"]), st.integers(1, 10**6), st.integers(T0, T0 + 3 * DAY_NS), st.integers(1, 10**7), st.integers(1, 10**4)),
    max_size=60,
    unique_by=lambda t: t[1],  # a trade's key is unique
)


def candles_one_by_one(rows: list[tuple[str, int, int, int, int]]) -> dict[tuple[str, int, int], list[int]]:
    """The definition: for every interval, the trades in each (symbol, start) bucket in key order."""
    out: dict[tuple[str, int, int], list[int]] = {}
    for interval in INTERVALS.values():
        buckets: dict[tuple[str, int, int], list[tuple[int, int, int]]] = {}
        for symbol, key, ts_ns, price, qty in rows:
            sec = ts_ns // 10**9
            buckets.setdefault((symbol, interval, sec - sec % interval), []).append((key, price, qty))
        for at, found in buckets.items():
            found.sort()
            prices = [p for _, p, _ in found]
            out[at] = [prices[0], max(prices), min(prices), prices[-1], sum(q for *_, q in found), sum(p * q for _, p, q in found), len(found), found[0][0], found[-1][0]]
    return out


@settings(max_examples=300, deadline=None)
@given(trades)
def test_candles_of_every_interval_are_those_of_their_trades_in_key_order(rows: list[tuple[str, int, int, int, int]]) -> None:
    assert fold_candles(rows) == candles_one_by_one(rows)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(st.integers(T0, T0 + 10 * DAY_NS), st.integers(0, 10**7).map(lambda us: T0 + us * 1000 + 500)), max_size=40))
def test_a_clock_formats_every_time_as_iso_does_including_microsecond_rounding(times: list[int]) -> None:
    clock = IsoClock()
    assert [clock(t) for t in times] == [iso(t) for t in times]


def test_the_audit_of_a_log_from_before_audit_batches_lists_each_request_once_in_time_order(tmp_path: Path) -> None:
    db = tmp_path / "trades.sqlite"
    conn = create_tables(db)  # as written by the writer before audit_batches: a row per journaled command
    conn.executemany(INSERT_ORDER, [
        (1, iso(T0), "alice", "USD", "", "1000.00", "", "", "alice-usd", "accepted", None, None, "deposit", None),
        (2, iso(T0 + 1000), "alice", "AAPL", "BUY", "5", "150.00", "GTC", "b1", "accepted", None, None, "new", None),
    ])  # fmt: skip
    conn.close()
    writer = Writer(str(db))
    writer.write(Frame(0, [], {"AAPL": ("0.01", "1")}, {"USD": "0.01", "AAPL": "1"}))
    # After the upgrade, recovery hands over the batch of 2 again (the log's `through` was before it).
    cmds = [NewOrder("AAPL", Side.BUY, 5, 15000, TIF.GTC, "alice", client_id="b1"), Cancel("AAPL", 2, "alice"), Transfer("bob", "USD", -500, "bob-out")]
    refused = Refusal("bob", "AAPL", "SELL", "1", "150.001", "GTC", None, "bad_tick", "price 150.001 is not on the tick 0.01")
    piece = Piece(records=[(2, encode_batch(2, cmds, T0 + 2000))], refusals=[(T0 + 3000, refused)])
    writer.write(Frame(4, [msgspec.Raw(msgspec.msgpack.encode(piece))]))
    writer.write(Frame(1, [msgspec.Raw(msgspec.msgpack.encode(Piece(records=[(5, encode_batch(5, [Transfer("bob", "USD", 300, "bob-in")], T0 + 4000))])))]))
    writer.conn.close()

    lines = [order_line(row) for row in orders(db)]
    assert [line.split(" ", 2)[:2] for line in lines] == [["DEPOSIT", "1"], ["ORDER", "2"], ["CANCEL", "3"], ["WITHDRAWAL", "4"], ["ORDER", "-"], ["DEPOSIT", "5"]]
    assert lines[2].endswith(" accepted AAPL order=2 owner=alice")
    assert lines[3].endswith(" accepted USD 5.00 account=bob ref=bob-out") and lines[5].endswith(" accepted USD 3.00 account=bob ref=bob-in")
    assert lines[4].endswith(" rejected SELL AAPL 1 150.001 GTC owner=bob reason=bad_tick price 150.001 is not on the tick 0.01")
    # Filters apply to both kinds of rows.
    assert [row["order_id"] for row in orders(db, owner="bob")] == [4, None, 5]
    assert [row["order_id"] for row in orders(db, since="3")] == [3, 4, 5]
    assert [row["order_id"] for row in orders(db, status="rejected")] == [None]
    assert [row["order_id"] for row in orders(db, owner="alice", limit=2)] == [1, 2]
    assert [row["order_id"] for row in orders(db, symbol="usd")] == [1, 4, 5]


def canceled(seq: int, owner: str) -> Canceled:
    return Canceled(seq, "AAPL", Side.BUY, 1, Reason.USER, owner, None, seq)


def test_an_owners_reports_and_audit_span_parts_and_a_log_written_before_parts_keeps_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "trades.sqlite"
    conn = create_tables(db)  # then reports and audit_owners as they were before parts: keyed by owner
    conn.executescript("""
        CREATE TABLE reports (seq INTEGER NOT NULL, n INTEGER NOT NULL, owner TEXT NOT NULL, report BLOB NOT NULL, PRIMARY KEY (owner, seq, n)) WITHOUT ROWID;
        CREATE TABLE audit_owners (owner TEXT NOT NULL, first_seq INTEGER NOT NULL, PRIMARY KEY (owner, first_seq)) WITHOUT ROWID;
    """)
    conn.execute("INSERT INTO audit_batches VALUES (?,?,?)", (2, iso(T0), encode_batch(2, [NewOrder("AAPL", Side.BUY, 1, 15000, TIF.GTC, "alice")], T0)))
    conn.execute("INSERT INTO audit_owners VALUES (?,?)", ("alice", 2))
    conn.executemany("INSERT INTO reports VALUES (?,?,?,?)", [(2, n, owner, msgspec.msgpack.encode(canceled(2, owner))) for n, owner in ((1, "alice"), (2, "bob"))])
    conn.commit()
    conn.close()

    writer = Writer(str(db))  # upgrades the log, then writes batches whose seqs cross parts
    writer.write(Frame(0, [], {"AAPL": ("0.01", "1")}, {"USD": "0.01", "AAPL": "1"}))
    batches = {4095: ["alice", "bob", "alice"], 8192: ["bob"], 12289: ["alice"]}
    for first, owners in batches.items():
        cmds = [NewOrder("AAPL", Side.BUY, 1, 15000, TIF.GTC, owner) for owner in owners]
        reports = [canceled(seq, owner) for seq, owner in enumerate(owners, first)] + [canceled(first, "carol")]
        piece = Piece(records=[(first, encode_batch(first, cmds, T0 + first))], reports=reports)
        writer.write(Frame(len(cmds), [msgspec.Raw(msgspec.msgpack.encode(piece))]))
    writer.conn.close()

    def seqs(owner: str, since: int, through: int) -> list[int]:
        return [r.seq for r in reports_of(db, owner, since, through)]

    assert seqs("alice", 0, 20_000) == [2, 4095, 4097, 12289]
    assert seqs("bob", 0, 20_000) == [2, 4096, 8192]
    assert seqs("carol", 0, 20_000) == [4095, 8192, 12289]
    assert seqs("alice", 4095, 12_289) == [4097, 12289] and seqs("carol", 4094, 8191) == [4095] and seqs("bob", 8192, 20_000) == []
    assert [(row["order_id"], row["result"]) for row in orders(db, owner="alice")] == [
        (2, "canceled user"), (4095, "canceled user"), (4097, "canceled user"), (12289, "canceled user")
    ]  # fmt: skip
    assert [row["order_id"] for row in orders(db, owner="bob", since="4096")] == [4096, 8192]
    assert [row["order_id"] for row in orders(db, owner="carol")] == []


def test_refused_requests_are_kept_per_frame_and_listed_one_by_one_in_time_order_with_every_filter(tmp_path: Path) -> None:
    db = tmp_path / "trades.sqlite"
    conn = create_tables(db)  # a refusal as written before refusal_batches: a row of orders
    conn.execute(INSERT_ORDER, (None, iso(T0), "carol", "AAPL", "BUY", "1", "1.001", "GTC", None, "rejected", "bad_tick", "old", "new", None))
    conn.commit()
    conn.close()

    def refusal(owner: str, symbol: str, text: str) -> Refusal:
        return Refusal(owner, symbol, "", "", None, None, None, "unknown_order", text, "cancel", 7)

    writer = Writer(str(db))
    writer.write(Frame(0, [], {"AAPL": ("0.01", "1")}, {"USD": "0.01", "AAPL": "1"}))
    first = [(T0 + 1000, refusal("alice", "AAPL", "a1")), (T0 + 2000, refusal("bob", "MSFT", "b1")), (T0 + 3000, refusal("alice", "MSFT", "a2"))]
    second = [(T0 + 4000, refusal("bob", "AAPL", "b2"))]
    for ticks in ([first[:2], first[2:]], [second]):  # two writer frames, the first with the refusals of two ticks
        writer.write(Frame(sum(map(len, ticks)), [msgspec.Raw(msgspec.msgpack.encode(Piece(refusals=refusals))) for refusals in ticks]))
    writer.conn.close()

    def texts(**filters: Any) -> list[str]:
        return [row["text"] for row in orders(db, **filters)]

    assert texts() == ["old", "a1", "b1", "a2", "b2"]
    assert order_line(next(orders(db, owner="bob"))).endswith(" rejected MSFT order=7 owner=bob reason=unknown_order b1")
    assert texts(owner="alice") == ["a1", "a2"] and texts(owner="bob") == ["b1", "b2"] and texts(owner="dave") == []
    assert texts(symbol="msft") == ["b1", "a2"] and texts(status="rejected", owner="carol") == ["old"] and texts(status="accepted") == []
    assert texts(since=iso(T0 + 2000)) == ["b1", "a2", "b2"] and texts(since=iso(T0 + 3000), owner="bob") == ["b2"]
    assert texts(since="1") == [] and texts(limit=2) == ["old", "a1"]


def test_a_reader_upgrades_a_log_of_an_older_layout_before_it_reads(tmp_path: Path) -> None:
    db = tmp_path / "trades.sqlite"
    conn = create_tables(db)  # then as a log from before parts: keyed by owner, no layout number
    conn.executescript("""
        CREATE TABLE reports (seq INTEGER NOT NULL, n INTEGER NOT NULL, owner TEXT NOT NULL, report BLOB NOT NULL, PRIMARY KEY (owner, seq, n)) WITHOUT ROWID;
        PRAGMA user_version = 0;
    """)
    conn.execute("INSERT INTO reports VALUES (?,?,?,?)", (5000, 1, "alice", msgspec.msgpack.encode(canceled(5000, "alice"))))
    conn.commit()
    conn.close()
    assert [r.seq for r in reports_of(db, "alice", 0, 10_000)] == [5000]
    assert [r.seq for r in reports_of(db, "alice", 4999, 5000)] == [5000]


def test_a_log_with_a_row_per_report_keeps_every_report_in_order_when_grouped(tmp_path: Path) -> None:
    db = tmp_path / "trades.sqlite"
    conn = create_tables(db)  # then as layout 1 had them: a row per report, by part
    conn.executescript("""
        CREATE TABLE reports (part INTEGER NOT NULL, seq INTEGER NOT NULL, n INTEGER NOT NULL, owner TEXT NOT NULL, report BLOB NOT NULL,
                              PRIMARY KEY (part, owner, seq, n)) WITHOUT ROWID;
        PRAGMA user_version = 1;
    """)
    old = [(4095, 1, "alice", 1), (4095, 2, "alice", 3), (4095, 3, "bob", 9), (4097, 1, "alice", 2), (7, 1, "alice", 5)]
    rows = [(seq >> 12, seq, n, owner, msgspec.msgpack.encode(Canceled(seq, "AAPL", Side.BUY, qty, Reason.USER, owner, None, seq))) for seq, n, owner, qty in old]
    conn.executemany("INSERT INTO reports VALUES (?,?,?,?,?)", rows)
    conn.commit()
    conn.close()
    assert [(r.seq, r.leaves) for r in reports_of(db, "alice", 0, 10_000)] == [(7, 5), (4095, 1), (4095, 3), (4097, 2)]
    assert [(r.seq, r.leaves) for r in reports_of(db, "bob", 4094, 4095)] == [(4095, 9)]
    conn = create_tables(db)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'reports'").fetchall() == []
    groups = conn.execute("SELECT part, owner, first_seq, last_seq FROM report_groups ORDER BY owner, part").fetchall()
    assert groups == [(0, "alice", 7, 4095), (1, "alice", 4097, 4097), (0, "bob", 4095, 4095)]  # one per owner and part


def test_a_log_with_a_row_per_batch_and_owner_lists_the_same_audit_when_grouped(tmp_path: Path) -> None:
    db = tmp_path / "trades.sqlite"
    conn = create_tables(db)  # then as layouts 1 and 2 had them: a row per batch and owner, by part
    conn.executescript("""
        CREATE TABLE audit_owners (part INTEGER NOT NULL, owner TEXT NOT NULL, first_seq INTEGER NOT NULL, PRIMARY KEY (part, owner, first_seq)) WITHOUT ROWID;
        PRAGMA user_version = 2;
        INSERT INTO instruments VALUES ('AAPL', '0.01', '1');
    """)
    owners = {2: ["alice"], 4094: ["bob", "alice"], 4096: ["alice", "alice"], 8200: ["bob"]}  # batches: their commands' owners
    for first, names in owners.items():
        cmds = [NewOrder("AAPL", Side.BUY, 1, 15000, TIF.GTC, name) for name in names]
        conn.execute("INSERT INTO audit_batches VALUES (?,?,?)", (first, iso(T0 + first), encode_batch(first, cmds, T0 + first)))
        conn.executemany("INSERT INTO audit_owners VALUES (?,?,?)", [(first >> 12, name, first) for name in set(names)])
    conn.commit()
    conn.close()
    assert [row["order_id"] for row in orders(db, owner="alice")] == [2, 4095, 4096, 4097]
    assert [row["order_id"] for row in orders(db, owner="bob", since="4095")] == [8200]
    conn = create_tables(db)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'audit_owners'").fetchall() == []
    groups = conn.execute("SELECT part, owner, first_seq, last_seq, batches FROM audit_owner_groups ORDER BY owner, part").fetchall()
    assert groups == [(0, "alice", 2, 4094, "[2,4094]"), (1, "alice", 4096, 4096, "[4096]"), (0, "bob", 4094, 4094, "[4094]"), (2, "bob", 8200, 8200, "[8200]")]


def test_reports_stored_again_by_a_refill_in_other_groups_are_read_once_in_order(tmp_path: Path) -> None:
    db = tmp_path / "trades.sqlite"
    writer = Writer(str(db))
    writer.write(Frame(0, [], {"AAPL": ("0.01", "1")}, {"USD": "0.01", "AAPL": "1"}))
    cmds = [NewOrder("AAPL", Side.BUY, 1, 15000, TIF.GTC, "alice") for _ in range(4)]
    made = {seq: [canceled(seq, "alice")] for seq in (5, 6, 7, 8)}
    made[5].append(Canceled(3, "AAPL", Side.BUY, 1, Reason.SELF_TRADE, "alice", None, 5))  # 5 canceled alice's resting 3 too

    batches = {5: (5, encode_batch(5, cmds[:2], T0 + 5)), 7: (7, encode_batch(7, cmds[2:], T0 + 7))}  # the journal's

    def frame(batch_seqs: list[int], seqs: list[int]) -> Frame:
        reports = [r for seq in seqs for r in made[seq]]
        piece = Piece(records=[batches[seq] for seq in batch_seqs], reports=reports)
        return Frame(len(reports), [msgspec.Raw(msgspec.msgpack.encode(piece))])

    writer.write(frame([5], [5, 6]))  # committed, then the server died before `through` passed them
    writer.write(frame([], [6, 7]))  # a refill's frames: 6 again, with 7 in one group
    writer.write(frame([5, 7], [5, 6, 7, 8]))  # and once more, all of them
    writer.conn.close()

    assert [(r.seq, r.order_id) for r in reports_of(db, "alice", 0, 10)] == [(5, 5), (5, 3), (6, 6), (7, 7), (8, 8)]
    assert [(r.seq, r.order_id) for r in reports_of(db, "alice", 5, 7)] == [(6, 6), (7, 7)]
    assert reports_page(db, "alice", 0, 10, 2) == (made[5], 5, True)
    assert reports_page(db, "alice", 5, 10, 2) == (made[6] + made[7], 7, True)
    assert [(row["order_id"], row["result"]) for row in orders(db, owner="alice")] == [
        (5, "canceled user, canceled self_trade order=3"), (6, "canceled user"), (7, "canceled user"), (8, "canceled user")
    ]  # fmt: skip


def test_a_refill_whose_group_spans_the_same_seqs_with_more_in_it_keeps_them_all(tmp_path: Path) -> None:
    """Found by the cluster's kill -9 test under load: a frame's rows need not hold every
    command between its first and last seq (two engine shards, or two symbols' matching
    queues, hand their outputs over in their own order). A frame committed before the trade
    log was killed held alice's reports and batches of 5 and 8; the one read again after
    the restart held 5, 6 and 8: the same first and last seq, the same key, and 6 was lost
    (INSERT OR IGNORE)."""
    db = tmp_path / "trades.sqlite"
    writer = Writer(str(db))
    writer.write(Frame(0, [], {"AAPL": ("0.01", "1")}, {"USD": "0.01", "AAPL": "1"}))

    def frame(seqs: list[int]) -> Frame:
        records = [(seq, encode_batch(seq, [NewOrder("AAPL", Side.BUY, 1, 15000, TIF.GTC, "alice")], T0 + seq)) for seq in seqs]
        piece = Piece(records=records, reports=[canceled(seq, "alice") for seq in seqs])
        return Frame(len(seqs), [msgspec.Raw(msgspec.msgpack.encode(piece))])

    writer.write(frame([5, 8]))  # engine shard 0's, committed; then the trade log was killed
    writer.write(frame([5, 6, 8]))  # read again from its snapshot: shard 1's 6 came in between
    writer.write(frame([5, 8]))  # (and the same rows again change nothing)
    writer.conn.close()

    assert [r.seq for r in reports_of(db, "alice", 0, 10)] == [5, 6, 8]
    assert [row["order_id"] for row in orders(db, owner="alice")] == [5, 6, 8]
    conn = create_tables(db)
    assert conn.execute("SELECT count(*) FROM report_groups").fetchone() == (2,)


def test_a_log_of_layout_3_keeps_its_groups_and_then_tells_a_refills_apart(tmp_path: Path) -> None:
    db = tmp_path / "trades.sqlite"
    conn = create_tables(db)  # then the groups as layout 3 keyed them: no digest
    conn.executescript("""
        DROP TABLE report_groups; DROP TABLE audit_owner_groups;
        CREATE TABLE report_groups (part INTEGER NOT NULL, owner TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
                                    reports BLOB NOT NULL, PRIMARY KEY (part, owner, first_seq, last_seq)) WITHOUT ROWID;
        CREATE TABLE audit_owner_groups (part INTEGER NOT NULL, owner TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
                                         batches TEXT NOT NULL, PRIMARY KEY (part, owner, first_seq, last_seq)) WITHOUT ROWID;
        PRAGMA user_version = 3;
        INSERT INTO instruments VALUES ('AAPL', '0.01', '1');
    """)
    for seq in (5, 8):
        conn.execute("INSERT INTO audit_batches VALUES (?,?,?)", (seq, iso(T0 + seq), encode_batch(seq, [NewOrder("AAPL", Side.BUY, 1, 15000, TIF.GTC, "alice")], T0 + seq)))
    conn.execute("INSERT INTO report_groups VALUES (0, 'alice', 5, 8, ?)", (msgspec.msgpack.encode([canceled(5, "alice"), canceled(8, "alice")]),))
    conn.execute("INSERT INTO audit_owner_groups VALUES (0, 'alice', 5, 8, '[5,8]')")
    conn.commit()
    conn.close()
    assert [r.seq for r in reports_of(db, "alice", 0, 10)] == [5, 8]  # (read after the upgrade)
    assert [row["order_id"] for row in orders(db, owner="alice")] == [5, 8]
    conn = create_tables(db)
    assert conn.execute("SELECT part, owner, first_seq, last_seq, digest FROM report_groups").fetchall() == [(0, "alice", 5, 8, 0)]
    assert conn.execute("SELECT part, owner, first_seq, last_seq, digest, batches FROM audit_owner_groups").fetchall() == [(0, "alice", 5, 8, 0, "[5,8]")]
    conn.close()

    writer = Writer(str(db))  # a refill's frame: 5 to 8 again, with 6 in between
    records = [(seq, encode_batch(seq, [NewOrder("AAPL", Side.BUY, 1, 15000, TIF.GTC, "alice")], T0 + seq)) for seq in (5, 6, 8)]
    piece = Piece(records=records, reports=[canceled(seq, "alice") for seq in (5, 6, 8)])
    writer.write(Frame(3, [msgspec.Raw(msgspec.msgpack.encode(piece))]))
    writer.conn.close()
    assert [r.seq for r in reports_of(db, "alice", 0, 10)] == [5, 6, 8]
    assert [row["order_id"] for row in orders(db, owner="alice")] == [5, 6, 8]


def test_a_page_of_reports_ends_between_commands_and_says_whether_there_are_more(tmp_path: Path) -> None:
    db = tmp_path / "trades.sqlite"
    create_tables(db).close()
    writer = Writer(str(db))
    writer.write(Frame(0, [], {"AAPL": ("0.01", "1")}, {"USD": "0.01", "AAPL": "1"}))
    counts = {5: 3, 6: 1, 7: 2, 9: 1}  # command seq -> alice's reports it caused (a sweep: several)
    reports = [canceled(seq, "alice") for seq, n in counts.items() for _ in range(n)] + [canceled(8, "bob")]
    writer.write(Frame(len(reports), [msgspec.Raw(msgspec.msgpack.encode(Piece(reports=reports)))]))
    writer.conn.close()

    def page(since: int, limit: int) -> tuple[list[int], int, bool]:
        got, through, more = reports_page(db, "alice", since, 10, limit)
        return [r.seq for r in got], through, more

    assert page(0, 2) == ([5, 5, 5], 5, True)  # one command's reports never split, even past the page
    assert page(5, 2) == ([6], 6, True)  # 6 and one of 7's would split 7
    assert page(6, 2) == ([7, 7], 8, True)  # through the command before the first one left out
    assert page(7, 2) == ([9], 10, False)
    assert page(0, 7) == ([5, 5, 5, 6, 7, 7, 9], 10, False) and page(0, 6) == ([5, 5, 5, 6, 7, 7], 8, True)
    assert page(9, 2) == ([], 10, False) and reports_page(db, "bob", 0, 10, 1) == ([canceled(8, "bob")], 10, False)
    assert page(6, 1) == ([7, 7], 7, True) and page(0, 1) == ([5, 5, 5], 5, True)  # one more command after it: more
    assert reports_page(db, "alice", 6, 7, 1) == ([canceled(7, "alice")] * 2, 7, False)  # nothing after it up to through
