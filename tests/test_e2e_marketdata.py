"""The market-data port against the real server: fan-out, slow consumers, a local book."""

from __future__ import annotations

import random
import re
import selectors
import socket
import time
from pathlib import Path

from protocol.marketdata import MdPing, ReplayTrades, Subscribe, Unsubscribe, parse_md_line
from protocol.requests import BadRequest
from tests.harness import Server

SEQ = re.compile(r" seq=(\d+)$")


def read_until_seq(clients: list[socket.socket], last_seq: int, timeout: float = 30.0) -> list[list[str]]:
    """Read every socket until each has a line with seq >= last_seq; lines per socket."""
    sel = selectors.DefaultSelector()
    buffers = {s.fileno(): b"" for s in clients}
    lines: dict[int, list[str]] = {s.fileno(): [] for s in clients}
    done: set[int] = set()
    for s in clients:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while len(done) < len(clients) and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            fd = key.fileobj.fileno()  # type: ignore[union-attr]
            chunk = key.fileobj.recv(1 << 20)  # type: ignore[union-attr]
            if not chunk:
                sel.unregister(key.fileobj)
                done.add(fd)
                continue
            buffers[fd] += chunk
            *complete, buffers[fd] = buffers[fd].split(b"\n")
            for raw in complete:
                line = raw.decode()
                lines[fd].append(line)
                m = SEQ.search(line)
                if m and int(m.group(1)) >= last_seq:
                    done.add(fd)
    sel.close()
    return [lines[s.fileno()] for s in clients]


def seq_of(line: str) -> int:
    m = SEQ.search(line)
    assert m, line
    return int(m.group(1))


def subscribe(server: Server, request: str) -> tuple[socket.socket, list[str]]:
    sub = server.subscriber()
    sub.send(request + "\n")
    head = [sub.line()]
    if " book" in head[0] or "book," in head[0]:
        head += sub.until("END")
    if "quotes" in head[0]:
        head.append(sub.line())
    sub.sock.settimeout(None)
    return sub.sock, head


def test_md_requests_parse() -> None:
    assert parse_md_line(b"sub aapl") == Subscribe("AAPL", "all", False)
    assert parse_md_line(b"SUB * trades json") == Subscribe("*", "trades", True)
    assert parse_md_line(b"UNSUB ES book") == Unsubscribe("ES", "book")
    assert parse_md_line(b"REPLAY ES from=17") == ReplayTrades("ES", 17)
    assert parse_md_line(b'{"op":"replay","symbol":"es","from":3}') == ReplayTrades("ES", 3)
    assert parse_md_line(b'{"op":"sub","symbol":"aapl","kinds":"book","json":true}') == Subscribe("AAPL", "book", True)
    assert parse_md_line(b"PING") == MdPing()
    assert isinstance(parse_md_line(b"SUB AAPL candles"), BadRequest)


def test_snapshot_and_increments_are_exact(server: Server) -> None:
    trader, other = server.client(), server.client()
    trader.ask("SELL AAPL 10 150.25")
    trader.ask("BUY AAPL 5 150.00")
    sub = server.subscriber()
    sub.send("SUB AAPL\n")
    assert sub.lines(6) == [
        "SUBSCRIBED AAPL book,quotes,trades seq=4",
        "SNAPSHOT AAPL seq=4 bids=1 asks=1",
        "BID 150.00 5",
        "ASK 150.25 10",
        "END",
        "QUOTE AAPL 150.00 5 150.25 10 prev=4 seq=4",
    ]
    other.ask("BUY AAPL 4 151", 2)
    assert sub.lines(3) == [
        "TRADE AAPL 4 150.25 BUY trade=63-1 prev=0 seq=5",
        "BOOK AAPL SELL 150.25 6 prev=3 seq=6",
        "QUOTE AAPL 150.00 5 150.25 6 prev=4 seq=7",
    ]
    assert sub.ask("REPLAY AAPL from=1", 3) == ["REPLAY AAPL from=1 count=1", "TRADE AAPL 4 150.25 BUY trade=63-1 prev=0 seq=5", "END"]
    # from=0 is every trade too (it said "ERR unavailable the trade log has not written trade seq=0 yet; try again")
    assert sub.ask("REPLAY AAPL from=0", 3) == ["REPLAY AAPL from=0 count=1", "TRADE AAPL 4 150.25 BUY trade=63-1 prev=0 seq=5", "END"]
    assert sub.ask("SUB NOPE") == ["ERR unknown_symbol no such symbol NOPE"]
    # An order typed on this port: told where it goes (and nothing is subscribed or sent).
    assert sub.ask("BUY AAPL 1 150") == [
        "ERR unknown_command BUY is an order-entry command: this is the market-data port (order entry is on its own port, 7001 by default)"
    ]
    assert sub.ask("UNSUB AAPL book") == ["UNSUBSCRIBED AAPL book"]
    trader.ask("BUY AAPL 1 149")  # a level below the top: book only (seq 8), now unsubscribed
    other.ask("SELL AAPL 1 150.00", 2)
    assert sub.lines(2) == ["TRADE AAPL 1 150.00 SELL trade=65-1 prev=5 seq=9", "QUOTE AAPL 150.00 4 150.25 6 prev=7 seq=11"]


def test_two_hundred_subscribers_get_identical_gap_free_sequences(server: Server) -> None:
    subs = [subscribe(server, "SUB AAPL") for _ in range(200)]
    start = seq_of(subs[0][1][0])
    a, b = server.client(), server.client()
    rng = random.Random(3)
    burst_a = "".join(f"SELL AAPL {rng.randint(1, 9)} {150 + rng.randint(0, 20) / 100:.2f}\n" for _ in range(150))
    burst_b = "".join(f"BUY AAPL {rng.randint(1, 9)} {150 + rng.randint(0, 20) / 100:.2f}\n" for _ in range(150))
    a.send(burst_a)
    b.send(burst_b)
    a.lines(150, timeout=30)
    b.lines(150, timeout=30)
    last = seq_of(subscribe(server, "SUB AAPL")[1][0])
    received = read_until_seq([s for s, _ in subs], last)
    first = received[0]
    seqs = [int(SEQ.search(line).group(1)) for line in first if SEQ.search(line)]  # type: ignore[union-attr]
    assert seqs == list(range(start + 1, last + 1)), "gaps or disorder"
    assert sum(line.startswith("TRADE") for line in first) > 10
    for other in received[1:]:
        assert other == first


def test_a_subscriber_that_never_reads_is_cut_off_and_the_others_keep_up(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", "--md-hard-cap", "300000", "--md-pause-deadline", "2").start()
    try:
        hog = socket.socket()
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        hog.connect(("127.0.0.1", server.md_port))
        hog.sendall(b"SUB * all\n")
        readers = [subscribe(server, "SUB AAPL")[0] for _ in range(5)]
        a, b = server.client(), server.client()
        for _ in range(14):  # ~600 kB of updates: past the hog's cap, within what a reader's kernel buffers hold
            a.send("".join(f"SELL AAPL 1 {150 + i / 100:.2f}\n" for i in range(200)))
            b.send("".join(f"BUY AAPL 1 {150 + i / 100:.2f}\n" for i in range(200)))
            for client in (a, b):
                acks = 0
                while acks < 200:
                    acks += client.line().startswith(("ACK", "REJ"))
        last = seq_of(subscribe(server, "SUB AAPL")[1][0])
        start = time.monotonic()
        received = read_until_seq(readers, last, timeout=20)
        assert time.monotonic() - start < 5
        assert all(any(x.endswith(f" seq={last}") for x in lines) for lines in received), [(lines[-3:], last) for lines in received]
        time.sleep(3)  # past the pause deadline
        assert any("subscriber_dropped" in line for line in server.log)
        hog.settimeout(5)
        data = b""
        try:
            while chunk := hog.recv(1 << 20):
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        assert b"TRADE" in data  # it got what fitted, then was cut off rather than buffered forever
        # Reported: the dropped subscriber's last line was cut in half, then EOF. Every line is
        # whole, and the last one says why.
        assert data.endswith(b"\n"), data[-200:]
        assert data.splitlines()[-1].startswith(b"ERR slow_consumer "), data[-200:]
        assert server.rss_kib() < 200_000
    finally:
        server.kill()


def test_a_local_book_from_snapshot_and_increments_equals_the_servers_book(server: Server) -> None:
    sub = server.subscriber()
    sub.send("SUB ES all\n")
    head = sub.until("END")
    sub.line()  # the current QUOTE
    bids: dict[str, str] = {}
    asks: dict[str, str] = {}
    for line in head[2:-1]:
        side, price, qty = line.split()
        (bids if side == "BID" else asks)[price] = qty
    traders = [server.client() for _ in range(3)]
    rng = random.Random(11)
    open_ids: list[tuple[int, str]] = []
    for n in range(300):
        t = rng.randrange(3)
        roll = rng.random()
        price = f"{4500 + rng.randint(-8, 8) * 0.25:.2f}"
        if roll < 0.6 or not open_ids:
            traders[t].send(f"{rng.choice(['BUY', 'SELL'])} ES {rng.randint(1, 5)} {price} id=o{n}\n")
            open_ids.append((t, f"o{n}"))
        elif roll < 0.8:
            owner, cid = open_ids.pop(rng.randrange(len(open_ids)))
            traders[owner].send(f"CANCEL id={cid}\n")
        else:
            owner, cid = rng.choice(open_ids)
            traders[owner].send(f"REPLACE id={cid} {rng.randint(1, 5)} {price}\n")
    for trader in traders:  # everything sent has been handled once PONG comes back
        trader.send("PING\n")
        trader.until("PONG")
    viewer = server.client()  # a quiet connection: no execution reports in between
    expected = viewer.ask("BOOK ES 1000", 1)
    expected += viewer.until("END")
    last = seq_of(subscribe(server, "SUB ES book")[1][0])
    [lines] = read_until_seq([sub.sock], last) if last > seq_of(head[0]) else [[]]
    for line in lines:
        if not line.startswith("BOOK "):
            continue  # trades and quotes: the book's increments are enough
        kind, _, side, price, qty, _, _ = line.split()
        book = bids if side == "BUY" else asks
        if qty == "0":
            book.pop(price, None)
        else:
            book[price] = qty
    mine = [f"BID {p} {bids[p]}" for p in sorted(bids, key=float, reverse=True)] + [f"ASK {p} {asks[p]}" for p in sorted(asks, key=float)]
    assert mine == expected[1:-1]
    assert expected[0] == f"BOOK ES bids={len(bids)} asks={len(asks)}"


def test_unsub_of_a_symbol_or_kinds_that_do_not_exist_says_so(server: Server) -> None:
    # Seen at nc: `UNSUB AAPLL` (a typo) answered UNSUBSCRIBED AAPLL all while AAPL's updates
    # kept coming; a JSON unsub with kinds "bogus" answered unsubscribed too.
    sub = server.subscriber()
    assert sub.ask("SUB AAPL trades")[0] == "SUBSCRIBED AAPL trades seq=0"
    assert sub.ask("UNSUB AAPLL") == ["ERR unknown_symbol no such symbol AAPLL"]
    assert sub.ask('{"op":"unsub","symbol":"AAPL","kinds":"bogus"}') == ['{"type":"err","code":"bad_request","text":"kinds are trades, quotes, book or all"}']
    assert sub.ask("UNSUB * all") == ["UNSUBSCRIBED * all"]
    assert sub.ask("UNSUB AAPL") == ["UNSUBSCRIBED AAPL all"]


def test_a_replay_the_trade_log_cannot_complete_yet_says_so_instead_of_skipping_trades(server: Server) -> None:
    """Found in review: REPLAY joined the trade log's file to the 10,000 trades a symbol
    keeps in memory; with the log behind by more than that (its writer stopped, or a
    cluster's trade log down) the trades between them were left out without a word."""
    import os
    import signal

    seller, buyer = server.client(), server.client()
    assert seller.ask("SELL AAPL 1 1.00")[0].startswith("ACK") and buyer.ask("BUY AAPL 1 1.00", 2)[1].startswith("FILL")
    assert seller.line().startswith("FILL") and buyer.ask("TRADES AAPL")[0] == "TRADES AAPL count=1"  # (in the file)
    buyer.until("END")
    assert server.proc is not None
    children = (Path("/proc") / str(server.proc.pid) / "task" / str(server.proc.pid) / "children").read_text().split()
    writer = next(int(pid) for pid in children if b"tradelog_writer" in (Path("/proc") / pid / "cmdline").read_bytes())
    os.kill(writer, signal.SIGSTOP)
    try:
        seller.send("SELL AAPL 1 1.00\n" * 10_050)
        assert all(line.startswith("ACK") for line in seller.lines(10_050, timeout=60))
        buyer.send("BUY AAPL 10050 1.00 IOC\n")
        assert buyer.line().startswith("ACK") and len(buyer.lines(10_050, timeout=60)) == 10_050
        md = server.subscriber()
        md.send("REPLAY AAPL from=1\n")
        gap = md.line(timeout=30)
        assert re.fullmatch(r"ERR unavailable the trade log has not written trade seq=\d+ yet; try again", gap), gap
        assert md.ask("PING") == ["PONG"]
    finally:
        os.kill(writer, signal.SIGCONT)
    assert buyer.ask("TRADES AAPL limit=1")[0] == "TRADES AAPL count=1"  # (once the log has caught up)
    buyer.until("END")
    md.send("REPLAY AAPL from=1\n")
    assert md.line(timeout=30) == "REPLAY AAPL from=1 count=10051"
    trades = md.lines(10_051, timeout=30)
    known = 0
    for line in trades:  # each names the one before it: none is missing
        prev, seq = map(int, re.search(r" prev=(\d+) seq=(\d+)$", line).groups())  # type: ignore[union-attr]
        assert prev == known, line
        known = seq
    assert md.line() == "END"
