"""Promises docs/PROTOCOL.md and OPERATIONS.md make, each against the real server process.

Each test here reproduced a broken promise first (issue: step 7), then the fix made it pass.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.harness import ROOT, Client, Server


def read_all(sock: socket.socket, timeout: float = 10.0) -> list[str]:
    """Everything until the server closes the connection."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(1 << 16):
        data += chunk
    return data.decode().splitlines()


def test_a_client_that_half_closes_gets_every_reply_then_the_close(server: Server) -> None:
    # What `printf '...' | nc -q 2 localhost 7001` does: send, shut the write side, read.
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"LOGIN t1 pw\nBUY AAPL 1 100.10 IOC\nPING\nQUIT\n")
    sock.shutdown(socket.SHUT_WR)
    lines = read_all(sock)
    assert lines[1:] == ["LOGGED_IN account=t1 open=0", "ACK 61 BUY AAPL 1 100.10 IOC", "CANCELED 61 leaves=1 reason=expired", "PONG", "BYE goodbye"]


def test_a_half_close_without_quit_still_gets_replies_and_reports(server: Server) -> None:
    maker = server.client()
    maker.ask("SELL AAPL 5 100")
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"LOGIN t2 pw\nBUY AAPL 2 100\nBUY AAPL 1")  # the last line never ends
    sock.shutdown(socket.SHUT_WR)
    assert read_all(sock)[1:] == [
        "LOGGED_IN account=t2 open=0",
        "ACK 62 BUY AAPL 2 100.00 GTC",
        "ERR incomplete_line the connection closed in the middle of a line; it was not executed",  # replies in order
        "FILL 62 AAPL BUY 2 100.00 leaves=0 trade=62-1 liq=R",  # the order's report, once matched
    ]
    assert maker.line() == "FILL 61 AAPL SELL 2 100.00 leaves=3 trade=62-1 liq=A"


def test_pipelined_replies_come_in_request_order_and_read_the_sessions_own_writes(server: Server) -> None:
    c = server.client()
    c.send("BUY AAPL 1 96.00 id=o1\nCANCEL id=o1\nORDERS\nBOOK AAPL 10\nPING\n")
    assert c.lines(7) == [
        "ACK 61 BUY AAPL 1 96.00 GTC id=o1",
        "CANCELED 61 leaves=1 reason=user id=o1",
        "ORDERS 0", "END",
        "BOOK AAPL bids=0 asks=0", "END",
        "PONG",
    ]  # fmt: skip


def test_a_query_between_commands_sees_exactly_the_commands_before_it(server: Server) -> None:
    c = server.client()
    c.send("BUY AAPL 1 96.00 id=a\nORDERS\nCANCEL id=a\nORDERS\n")
    assert c.lines(7) == [
        "ACK 61 BUY AAPL 1 96.00 GTC id=a",
        "ORDERS 1", "ORDER 61 BUY AAPL 1 96.00 GTC id=a", "END",
        "CANCELED 61 leaves=1 reason=user id=a",
        "ORDERS 0", "END",
    ]  # fmt: skip


def test_a_second_server_on_a_data_directory_in_use_exits_with_one_line(tmp_path: Path) -> None:
    first = Server(tmp_path / "data").start()
    try:
        c = first.client()
        assert c.ask("BUY AAPL 1 99") == ["ACK 61 BUY AAPL 1 99.00 GTC"]
        second = subprocess.run(
            [sys.executable, "-m", "tickline.cli", "serve", "--port", "0", "--md-port", "0", "--web-port", "0", "--data-dir", str(tmp_path / "data")],
            cwd=ROOT, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert second.returncode != 0
        errors = second.stderr.strip().splitlines()
        assert len(errors) == 1, second.stderr
        assert str(tmp_path / "data") in errors[0] and f"pid {first.proc.pid}" in errors[0]  # type: ignore[union-attr]
        assert "Traceback" not in second.stderr
        # The first server is untouched: it goes on, with the next sequence number.
        assert c.ask("BUY AAPL 1 98") == ["ACK 62 BUY AAPL 1 98.00 GTC"]
        # Read-only tools work beside it.
        orders = subprocess.run([sys.executable, "-m", "tickline.cli", "orders", "--data-dir", str(tmp_path / "data")], cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert orders.returncode == 0, orders.stderr
    finally:
        first.kill()


def tickline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tickline.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_operator_errors_are_one_line_and_a_nonzero_exit(tmp_path: Path) -> None:
    gold = tmp_path / "gold.toml"
    gold.write_text('[instruments.GOLD]\ntick = "0.1"\nlot = "1"\n[instruments.AAPL]\ntick = "0.01"\nlot = "1"\n')
    aapl = tmp_path / "aapl.toml"
    aapl.write_text('[instruments.AAPL]\ntick = "0.01"\nlot = "1"\n')
    srv = Server(tmp_path / "data", "--instruments", str(gold)).start()
    assert srv.client().ask("BUY GOLD 1 100") == ["ACK 25 BUY GOLD 1 100.0 GTC"]  # 12 test accounts x 2 assets deposited first
    srv.stop()
    runs = {
        "journal names a dropped instrument": tickline("serve", "--port", "0", "--md-port", "0", "--data-dir", str(tmp_path / "data"), "--instruments", str(aapl)),
        "no trade log": tickline("trades", "--data-dir", str(tmp_path / "nowhere")),
        "no instruments file": tickline("serve", "--data-dir", str(tmp_path / "d2"), "--instruments", str(tmp_path / "missing.toml")),
        "verify with a dropped instrument": tickline("replay", "--verify", "--data-dir", str(tmp_path / "data"), "--instruments", str(aapl)),
    }
    for what, run in runs.items():
        assert run.returncode == 1, what
        assert "Traceback" not in run.stderr, what
        assert len(run.stderr.strip().splitlines()) == 1 and run.stderr.startswith("tickline: "), (what, run.stderr)
    assert "GOLD" in runs["journal names a dropped instrument"].stderr
    assert "nowhere" in runs["no trade log"].stderr


def test_killing_the_server_leaves_no_traceback_from_the_trade_log_writer(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data").start()
    c = srv.client()
    c.send("".join(f"BUY AAPL 1 {90 + i % 10}\n" for i in range(2000)))
    c.lines(1000)
    srv.kill()
    time.sleep(1.0)  # the writer notices its parent is gone
    assert not any("Traceback" in line or "Error" in line for line in srv.log), "\n".join(srv.log[-20:])


def test_market_data_replies_keep_request_order_and_quit_waits_for_a_replay(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data").start()
    a, b = srv.client(), srv.client()
    a.ask("SELL AAPL 3 100")
    b.ask("BUY AAPL 3 100", 2)
    srv.stop()
    srv.start()  # memory holds no trades now: a REPLAY from 1 reads the trade log
    try:
        sub = srv.subscriber()
        sub.send("REPLAY AAPL from=1\nPING\n")
        assert sub.lines(4) == ["REPLAY AAPL from=1 count=1", "TRADE AAPL 3 100.00 BUY trade=62-1 prev=0 seq=3", "END", "PONG"]
        quitter = srv.subscriber()
        quitter.send("REPLAY AAPL from=1\nQUIT\n")
        assert quitter.lines(4) == ["REPLAY AAPL from=1 count=1", "TRADE AAPL 3 100.00 BUY trade=62-1 prev=0 seq=3", "END", "BYE goodbye"]
        assert quitter.closed()
    finally:
        srv.kill()


def channel_gaps(lines: list[str], start: int) -> list[str]:
    """Lost updates by the documented rule: an update whose prev is above the last seq seen
    in its channel (its kind) means one was lost; the subscription's seq starts each channel."""
    last: dict[str, int] = {}
    gaps = []
    for line in lines:
        kind = line.split()[0]
        if kind not in ("TRADE", "BOOK", "QUOTE"):
            continue
        fields = dict(f.split("=") for f in line.split() if "=" in f and not f.startswith("trade="))
        prev, seq = int(fields["prev"]), int(fields["seq"])
        if prev > last.get(kind, start):
            gaps.append(line)
        last[kind] = seq
    return gaps


def test_a_subscriber_to_a_subset_sees_no_false_gaps_and_a_real_one_shows(server: Server) -> None:
    subs = {kinds: server.subscriber() for kinds in ("book", "trades", "quotes", "book,trades")}
    starts = {}
    for kinds, sub in subs.items():
        for kind in kinds.split(","):
            sub.send(f"SUB ES {kind}\n")
        head = sub.until("END") if "book" in kinds else [sub.line()]
        if kinds == "quotes":
            head.append(sub.line())
        starts[kinds] = int(head[0].rsplit("seq=", 1)[1])
        if kinds == "book,trades":
            sub.line()  # the second SUBSCRIBED
    a, b = server.client(), server.client()
    for i in range(30):
        a.ask(f"SELL ES 1 {4500 + (i % 3) * 0.25:.2f}")
        b.ask(f"BUY ES 1 {4500 + (i % 4) * 0.25:.2f}", 1)
    for c in (a, b):  # (an ask above may have read a FILL for its ACK: a's last SELL can trail b's)
        c.send("PING\n")
        c.until("PONG")
    last = int(server.subscriber().ask("SUB ES book", 1)[0].rsplit("seq=", 1)[1])
    got = {}
    for kinds, sub in subs.items():
        lines = []
        while not sub.quiet(0.5):
            lines.append(sub.line())
        got[kinds] = lines
        assert channel_gaps(lines, starts[kinds]) == [], kinds
    assert any(line.startswith("TRADE") for line in got["trades"]) and all(line.startswith("TRADE") for line in got["trades"])
    assert all(line.startswith("BOOK") for line in got["book"]) and len(got["book"]) > 10
    # Numbers are shared by the symbol's kinds: a book-only subscriber skips seqs, yet sees no gap.
    seqs = [int(line.rsplit("seq=", 1)[1]) for line in got["book"]]
    assert seqs != list(range(seqs[0], seqs[0] + len(seqs))) and seqs[-1] <= last
    # A real loss shows: drop one book update from the stream.
    assert channel_gaps(got["book"][:3] + got["book"][4:], starts["book"]) == [got["book"][4]]


def test_json_is_a_full_second_protocol_on_both_ports(server: Server) -> None:
    import json

    c = server.client()
    c.ask("BUY AAPL 1 99 id=t1")
    assert json.loads(c.ask('{"op":"cancel","id":"t1"}')[0]) == {"type": "canceled", "order_id": 61, "leaves": "1", "reason": "user", "id": "t1"}
    assert json.loads(c.ask('{"op":"help"}')[0])["type"] == "help"
    md = server.subscriber()
    assert json.loads(md.ask('{"op":"sub","symbol":"es","kinds":"trades"}')[0]) == {"type": "subscribed", "symbol": "ES", "kinds": "trades", "seq": 0}
    assert json.loads(md.ask('{"op":"sub","symbol":"NOPE"}')[0]) == {"type": "err", "code": "unknown_symbol", "text": "no such symbol NOPE"}
    assert json.loads(md.ask('{"op":"ping"}')[0]) == {"type": "pong"}
    assert json.loads(md.ask('{"op":"help"}')[0])["type"] == "help"
    assert json.loads(md.ask('{"op":"unsub","symbol":"ES","kinds":"trades"}')[0]) == {"type": "unsubscribed", "symbol": "ES", "kinds": "trades"}
    assert json.loads(md.ask("{nonsense")[0])["code"] == "bad_json"
    c.ask("SELL ES 1 4500")
    c2 = server.client()
    c2.ask("BUY ES 1 4500")
    md.send('{"op":"sub","symbol":"ES","kinds":"trades"}\n{"op":"replay","symbol":"ES","from":1}\n')
    md.line()
    assert [json.loads(x)["type"] for x in md.lines(3)] == ["replay", "trade", "end"]


def test_an_account_back_after_a_disconnect_gets_the_reports_it_missed_in_the_live_format(server: Server) -> None:
    alice = server.client()
    assert alice.ask("SELL AAPL 10 150.25 id=a1") == ["ACK 61 SELL AAPL 10 150.25 GTC id=a1"]
    assert alice.ask("SELL AAPL 5 151 id=a2") == ["ACK 62 SELL AAPL 5 151.00 GTC id=a2"]
    alice.close()
    bob = server.client()
    bob.ask("BUY AAPL 4 150.25", 2)  # fills a1 while alice is away
    back = server.client(alice.owner)
    back.send("CANCEL id=a2\nREPORTS since=0\n")
    assert back.until("END") == [
        "CANCELED 62 leaves=5 reason=user id=a2",
        "REPORTS since=0 through=64 count=2",
        "FILL 61 AAPL SELL 4 150.25 leaves=6 trade=63-1 liq=A id=a1",
        "CANCELED 62 leaves=5 reason=user id=a2",
        "END",
    ]
    assert back.ask("REPORTS since=64", 2) == ["REPORTS since=64 through=64 count=0", "END"]
    assert bob.ask("REPORTS since=0", 3) == ["REPORTS since=0 through=64 count=1", "FILL 63 AAPL BUY 4 150.25 leaves=0 trade=63-1 liq=R", "END"]


def test_the_audit_lists_every_request_with_its_outcome(server: Server) -> None:
    c = server.client()
    c.ask("SELL AAPL 10 150.25 id=s1")
    c.ask("REPLACE id=s1 8 150.30")
    c.ask("CANCEL 99")  # refused by the gateway: no such open order
    c.ask("BUY AAPL 1 150.255")  # refused: off the tick
    c.ask("CANCEL id=s1")
    server.client().ask("BUY AAPL 2 150.25 IOC", 2)
    time.sleep(0.5)  # the trade log commits every 20 ms
    run = tickline("orders", "--data-dir", str(server.data_dir))
    rows = sorted(line.split(" ", 4)[:4:3] + line.split(" ", 4)[1:2] for line in run.stdout.splitlines() if not line.startswith("DEPOSIT"))
    assert sorted((kind, oid, rest.split()[0]) for kind, rest, oid in rows) == [
        ("CANCEL", "-", "rejected"), ("CANCEL", "63", "accepted"),
        ("ORDER", "-", "rejected"), ("ORDER", "61", "accepted"), ("ORDER", "64", "accepted"), ("REPLACE", "62", "accepted"),
    ]  # fmt: skip
    text = run.stdout
    assert "CANCEL - " in text and "order=99" in text and "reason=unknown_order" in text
    assert "order=61 qty=8 price=150.30" in text and "-> replaced 8@150.30" in text
    assert "reason=bad_tick" in text
    assert "CANCEL 63" in text and "-> canceled user" in text
    assert "-> canceled expired" in text  # the IOC met nothing at 150.25 any more
    # docs/OPERATIONS.md shows this very session's audit: the same lines, times and owners aside.
    doc = (ROOT / "docs" / "OPERATIONS.md").read_text().split("prints one line per request, oldest first:")[1].split("```")[1]

    def masked(lines: str) -> list[str]:  # the test accounts' 60 deposits come first
        out = [re.sub(r"\S+\+00:00", "<ts>", line) for line in lines.strip().splitlines() if not line.startswith(("DEPOSIT", "..."))]
        owners: dict[str, str] = {}
        return [re.sub(r"owner=(\w+)", lambda m: f"owner={owners.setdefault(m.group(1), str(len(owners)))}", line) for line in out]

    assert masked(text) == masked(doc)

    # --since: a time in any ISO-8601 form is compared as the log stores it; anything else is refused.
    first, last = (line.split()[2] for line in (text.splitlines()[0], text.splitlines()[-1]))  # <kind> <id> <time> ...
    in_z = tickline("orders", "--since", last.replace("+00:00", "Z"), "--data-dir", str(server.data_dir))
    assert text.splitlines()[-1] in in_z.stdout.splitlines() and len(in_z.stdout.splitlines()) < len(text.splitlines())
    assert tickline("orders", "--since", first[:10], "--data-dir", str(server.data_dir)).stdout == text
    for bad in ("yesterday", "2026-13-45"):
        refused = tickline("orders", "--since", bad, "--data-dir", str(server.data_dir))
        assert refused.returncode == 2 and "is neither a sequence number nor an ISO-8601 time" in refused.stderr, refused


def test_the_audit_shows_stops_icebergs_and_pairs_as_entered_and_a_cancel_all_by_its_symbol(server: Server) -> None:
    # Seen by hand: a stop, an iceberg and an OCO pair were audited as plain orders, and
    # CANCEL ALL as `CANCEL_ALL 18 <ts> accepted  AAPL   - owner=alice -> ...`.
    c = server.client()
    assert c.ask("SELL AAPL 10 151 SHOW=2 id=i1") == ["ACK 61 SELL AAPL 10 151.00 GTC show=2 id=i1"]
    assert c.ask("BUY AAPL 5 STOP=152") == ["ACK 62 BUY AAPL 5 MKT IOC stop=152.00"]
    assert c.ask("BUY AAPL 5 149 STOP=152 id=p1 oco=i1") == ["ACK 63 BUY AAPL 5 149.00 GTC stop=152.00 id=p1 oco=61"]
    assert c.ask("CANCEL ALL", 4)[-1] == "CANCELED_ALL 3"
    time.sleep(0.5)  # the trade log commits every 100 ms
    lines = [line for line in tickline("orders", "--data-dir", str(server.data_dir)).stdout.splitlines() if not line.startswith("DEPOSIT")]
    owner = c.owner
    assert [re.sub(r" \S+\+00:00 ", " <ts> ", line) for line in lines] == [
        f"ORDER 61 <ts> accepted SELL AAPL 10 151.00 GTC show=2 owner={owner} id=i1",  # (what later commands did to an
        f"ORDER 62 <ts> accepted BUY AAPL 5 MKT IOC stop=152.00 owner={owner}",  # order is on their lines)
        f"ORDER 63 <ts> accepted BUY AAPL 5 149.00 GTC stop=152.00 oco=61 owner={owner} id=p1",
        f"CANCEL_ALL 64 <ts> accepted AAPL owner={owner} -> canceled user order=61, canceled user order=62, canceled user order=63",
    ]


def test_the_audit_names_the_order_each_outcome_is_about(server: Server) -> None:
    # Reported: `ORDER 62 -> canceled self_trade, canceled no_liquidity` put resting order 61's
    # self-trade cancel on order 62, and a cancel by an unknown client id printed order=None.
    c = server.client()
    assert c.ask("BUY AAPL 1 100.00", 1) == ["ACK 61 BUY AAPL 1 100.00 GTC"]
    assert c.ask("SELL AAPL 1", 3)[0] == "ACK 62 SELL AAPL 1 MKT IOC"
    c.ask("CANCEL id=nothing")
    time.sleep(0.5)  # the trade log commits every 20 ms
    lines = [line for line in tickline("orders", "--data-dir", str(server.data_dir)).stdout.splitlines() if not line.startswith("DEPOSIT")]
    assert lines[1].startswith("ORDER 62 ") and lines[1].endswith("-> canceled self_trade order=61, canceled no_liquidity"), lines[1]
    assert lines[2].startswith("CANCEL - ") and " order=- " in lines[2] and "reason=unknown_order" in lines[2], lines[2]
    assert "None" not in "\n".join(lines)


def test_snapshots_come_on_time_too_and_segments_rotate_at_a_set_size(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = Server(data, "--snapshot-every", "1000000", "--snapshot-interval", "1", "--segment-mb", "1").start()
    try:
        c = srv.client()
        c.send("".join(f"BUY AAPL 1 {50 + i % 400}.00 id=c{i}\n" for i in range(20_000)))
        acks = c.lines(20_000, timeout=60)
        assert acks[-1].startswith("ACK 20060 ")
        deadline = time.monotonic() + 10
        while not list((data / "snapshots").glob("snap-*.tls")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list((data / "snapshots").glob("snap-*.tls")), "no snapshot within the interval"
        assert len(list((data / "journal").glob("seg-*.tlj"))) >= 2, "the journal did not rotate at 1 MiB"
    finally:
        srv.kill()
    srv.start()  # after kill -9: from the snapshot, every acknowledged order is back
    try:
        assert Client(srv.port).login(c.owner) == f"LOGGED_IN account={c.owner} open=20000"
    finally:
        srv.kill()
    verify = tickline("replay", "--verify", "--data-dir", str(data))
    assert verify.returncode == 0, verify.stdout + verify.stderr
