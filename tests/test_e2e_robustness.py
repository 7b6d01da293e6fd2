"""What clients do to a server: pipelining, dribbling, garbage, hanging up, not reading, kill -9."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from journal.journal import read_journal, repair
from protocol.messages import NewOrder
from tests.harness import ROOT, Client, Server


def test_ten_thousand_orders_pipelined_in_one_write(server: Server) -> None:
    client = server.client()
    lines = "".join(f"BUY AAPL {1 + i % 7} {100 + (i % 50) / 100:.2f} id=p{i}\n" for i in range(10_000))
    client.send(lines + "PING\n")
    replies = client.lines(10_001, timeout=60)
    assert replies[-1] == "PONG"
    for i, reply in enumerate(replies[:-1]):
        assert reply == f"ACK {i + 61} BUY AAPL {1 + i % 7} {100 + (i % 50) / 100:.2f} GTC id=p{i}"
    assert client.ask("ORDERS limit=10000", 1) == ["ORDERS 10000"]  # (the largest page)
    assert len(client.until("END", timeout=30)) == 10_001


def test_a_line_split_one_byte_per_packet(server: Server) -> None:
    client = server.client()
    for byte in b"BUY AAPL 3 99.5 id=slow\r\n":
        client.send(bytes([byte]))
        time.sleep(0.002)
    assert client.line() == "ACK 61 BUY AAPL 3 99.50 GTC id=slow"


def test_lines_split_anywhere_across_packets(server: Server) -> None:
    client = server.client()
    stream = b"PING\r\nBUY AAPL 1 10\nSELL AAPL 1 11\r\nPING\n"
    for cut in range(1, len(stream), 5):
        client.send(stream[:cut])
        time.sleep(0.01)
        client.send(stream[cut:])
        got = client.lines(4)
        assert got[0] == "PONG" and got[3] == "PONG" and got[1].startswith("ACK") and got[2].startswith("ACK")


def test_a_ten_megabyte_line_gets_one_error_and_the_session_goes_on(server: Server) -> None:
    client = server.client()
    client.send(b"BUY AAPL " + b"9" * (10 * 1024 * 1024) + b"\nPING\n")
    assert client.lines(2) == [
        "ERR line_too_long a line may be at most 4096 bytes; discarded up to its end",
        "PONG",
    ]
    assert server.rss_kib() < 200_000


def test_garbage_bytes_get_an_error_and_the_session_goes_on(server: Server) -> None:
    client = server.client()
    client.send(b"\x80\x81\xc3\x28 junk\n\x00\x01\x02\nPING\n")
    assert client.lines(3) == [
        "ERR bad_encoding the line is not ASCII text",
        "ERR unknown_command unknown command '\\x00\\x01\\x02'; type HELP",
        "PONG",
    ]


def test_json_numbers_too_large_for_any_order_are_refused_and_the_trade_log_still_answers(server: Server) -> None:
    # Reported from a session at nc: a JSON cancel of order 10^23 was refused as unknown,
    # and its audit row (an integer msgpack cannot hold) stopped the trade log's writer
    # task: from then on TRADES, TICKER and REPORTS never answered, on any connection.
    client = server.client("t1")
    huge = 10**23
    client.send(
        f'{{"op":"cancel","order_id":{huge}}}\n{{"op":"replace","order_id":-{huge},"qty":"1"}}\n'
        f'{{"op":"orders","after":{huge}}}\n{{"op":"reports","since":-1}}\n'
        f'{{"op":"trades","symbol":"AAPL","limit":{huge}}}\n{{"op":"book","symbol":"AAPL","levels":{huge}}}\n'
    )
    assert client.lines(6) == [
        '{"type":"err","code":"bad_request","text":"Expected `int` <= 999999999999999999 - at `$.order_id`"}',
        '{"type":"err","code":"bad_request","text":"Expected `int` >= 0 - at `$.order_id`"}',
        '{"type":"err","code":"bad_request","text":"Expected `int` <= 999999999999999999 - at `$.after`"}',
        '{"type":"err","code":"bad_request","text":"Expected `int` >= 0 - at `$.since`"}',
        '{"type":"err","code":"bad_request","text":"Expected `int` <= 999999999999999999 - at `$.limit`"}',
        '{"type":"err","code":"bad_request","text":"Expected `int` <= 999999999999999999 - at `$.levels`"}',
    ]
    assert client.ask("CANCEL 1234567890123456789") == ["ERR bad_request order id '1234567890123456789' is too large (at most 18 digits)"]
    assert client.ask('{"op":"cancel","order_id":999999999999999999}') == [
        '{"type":"rej","reason":"unknown_order","text":"order 999999999999999999 is not open","order_id":999999999999999999}'
    ]
    other = server.client("t2")
    assert other.ask("TRADES AAPL", 2) == ["TRADES AAPL count=0", "END"]
    huge_time, huge_trade = "9" * 23, "9" * 23 + "-1"
    assert other.ask(f"KLINES AAPL 1m from={huge_time}") == [f"ERR bad_request from={huge_time} is not a time: ISO-8601 (UTC) or unix milliseconds"]
    assert other.ask(f"TRADES AAPL before={huge_trade}") == [f"ERR bad_request before={huge_trade} is not a trade id (<seq>-<n>, as TRADES prints them)"]
    subscriber = server.subscriber()
    assert subscriber.ask(f'{{"op":"replay","symbol":"AAPL","from":{huge}}}') == [
        '{"type":"err","code":"bad_request","text":"Expected `int` <= 999999999999999999 - at `$.from`"}'
    ]


def test_telnet_negotiation_bytes_are_ignored(server: Server) -> None:
    client = server.client()
    # IAC WILL ECHO, IAC SB NAWS ... IAC SE, then a command typed in telnet (CRLF).
    client.send(b"\xff\xfb\x01\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0PING\r\n")
    assert client.line() == "PONG"


def test_telnets_bare_carriage_return_ends_a_line(server: Server) -> None:
    # Reported: telnet sends Enter as CR NUL in some modes; it answered
    # "ERR bad_request levels '\x00' is not a number". CR NUL is an end of line, also
    # when the CR and the NUL come in separate packets.
    client = server.client()
    client.send(b"BOOK AAPL 2\r\x00PING\r")
    time.sleep(0.1)
    client.send(b"\x00PING\r\n")
    assert client.lines(4) == ["BOOK AAPL bids=0 asks=0", "END", "PONG", "PONG"]


def test_a_client_that_hangs_up_mid_line_changes_nothing(server: Server) -> None:
    quitter = server.client()
    quitter.send("BUY AAPL 5 100\nSELL AAPL 7 1")
    assert quitter.line() == "ACK 61 BUY AAPL 5 100.00 GTC"
    quitter.close()
    other = server.client()
    assert other.ask("BOOK AAPL", 3) == ["BOOK AAPL bids=1 asks=0", "BID 100.00 5", "END"]
    assert other.ask("SELL AAPL 1 200") == ["ACK 62 SELL AAPL 1 200.00 GTC"]


def test_a_client_that_never_reads_is_paused_and_bounded(server: Server) -> None:
    hog = socket.create_connection(("127.0.0.1", server.port))
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.setblocking(False)
    request = b"SYMBOLS\n" * 1000  # ~600 bytes of reply per 8 bytes sent
    sent = 0
    deadline = time.monotonic() + 10
    stalled_since = None
    while time.monotonic() < deadline:
        try:
            sent += hog.send(request)
            stalled_since = None
        except BlockingIOError:
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 1.0:
                break  # the server stopped reading from us
            time.sleep(0.01)
    assert stalled_since is not None, "the server kept reading from a client that never reads"
    # Unread replies are bounded: the server holds a few hundred KiB for it, not gigabytes.
    assert server.rss_kib() < 200_000
    other = server.client()
    start = time.monotonic()
    assert other.ask("PING") == ["PONG"]
    assert time.monotonic() - start < 1.0
    hog.close()


def _acked_ids(client: Client, n: int) -> set[int]:
    ids = set()
    try:
        for _ in range(n):
            m = re.match(r"ACK (\d+) ", client.line(timeout=5))
            if m:
                ids.add(int(m.group(1)))
    except (EOFError, TimeoutError, ConnectionResetError):
        pass
    return ids


def test_every_acked_order_survives_kill_9(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data).start()
    client = server.client()
    acked: set[int] = set()
    batches = 0
    try:
        while batches < 200:
            client.send("".join(f"BUY AAPL 1 {10 + i % 90}.00\n" for i in range(200)))
            batches += 1
            if batches == 20:
                server.proc.kill()  # type: ignore[union-attr]  # kill -9 while orders are in flight
                break
            acked |= _acked_ids(client, 200)
    except (BrokenPipeError, ConnectionResetError):
        pass
    acked |= _acked_ids(client, 200 * 20)
    server.kill()
    assert len(acked) >= 19 * 200
    repair(data / "journal")  # cut a torn tail, as the server does when it opens the journal
    journaled = {seq for seq, cmd in read_journal(data / "journal") if isinstance(cmd, NewOrder)}
    assert acked <= journaled
    # The restarted server rebuilds the book from the journal, and the owner can resume.
    again = Server(data).start()
    try:
        assert Client(again.port).login(client.owner) == f"LOGGED_IN account={client.owner} open={len(journaled)}"
    finally:
        again.kill()


def test_snapshots_are_still_taken_while_clients_send_more_than_matching_can_take(tmp_path: Path) -> None:
    # Above capacity the matching queues never empty by themselves, and a snapshot waits for
    # them to: the snapshotter stops order intake for a moment instead (seen: no snapshot in
    # 10 s at 100,000 orders/s offered, so a restart would have replayed without bound).
    server = Server(tmp_path / "data", "--snapshot-every", "2000", "--snapshot-interval", "0.2").start()
    snapshots = tmp_path / "data" / "snapshots"
    flooding = threading.Event()
    flooding.set()

    def flood(client: Client) -> None:
        chunk = "".join(f"BUY AAPL 1 {1 + i % 90}.00\n" for i in range(2_000)).encode()
        while flooding.is_set():
            try:
                client.sock.sendall(chunk)
            except TimeoutError:
                continue  # the server is not reading from us for now (that is the point)
            except OSError:
                return

    def drain(client: Client) -> None:
        client.sock.settimeout(0.5)
        while flooding.is_set():
            try:
                client.sock.recv(1 << 20)
            except (TimeoutError, OSError):
                pass

    try:
        clients = [server.client() for _ in range(3)]
        threads = [threading.Thread(target=f, args=(c,), daemon=True) for c in clients for f in (flood, drain)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # the queues fill and stay full
        before = {p.name for p in snapshots.glob("snap-*.tls")}
        new: set[str] = set()
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and len(new) < 2:
            new.update(p.name for p in snapshots.glob("snap-*.tls") if p.name not in before)
            time.sleep(0.05)
        assert len(new) >= 2, f"snapshots written under overload: {sorted(new)}"
    finally:
        flooding.clear()
        server.kill()


def test_more_orders_than_the_backlog_bound_then_a_half_close_gets_every_ack(tmp_path: Path) -> None:
    # 30,000 orders in one go: read a slice at a time, held back while matching is more
    # than --max-backlog behind; the half-close comes first and must wait for all of them.
    server = Server(tmp_path / "data", "--max-backlog", "50").start()
    client = server.client()
    n = 30_000
    client.send("".join(f"BUY AAPL 1 {1 + i % 50}.00 id=h{i}\n" for i in range(n)))
    client.sock.shutdown(socket.SHUT_WR)
    replies = client.lines(n, timeout=120)
    assert replies[0] == "ACK 61 BUY AAPL 1 1.00 GTC id=h0"
    assert replies[-1] == f"ACK {60 + n} BUY AAPL 1 {1 + (n - 1) % 50}.00 GTC id=h{n - 1}"
    assert client.closed(timeout=30)  # and then the server closes: nothing more was sent
    server.stop()


def test_the_server_stops_on_sigterm_after_whoever_read_its_log_is_gone(tmp_path: Path) -> None:
    # Seen: servers of an interrupted test run kept running after SIGTERM. With its stderr
    # closed, a log line raised BrokenPipeError in the shutdown, which then never closed
    # the accounts database's thread, and the process waited for that thread forever.
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "tickline.cli", "serve", "--port", "0", "--md-port", "0", "--web-port", "0", "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        while b"order_entry_listening" not in proc.stderr.readline():
            pass
        proc.stderr.close()  # the terminal, or the process that read the log, is gone
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        proc.kill()
        proc.wait()


def test_a_second_server_on_a_busy_port_says_so_and_exits(server: Server, tmp_path: Path) -> None:
    """Reproduced first: the second server raised at its listen, its account and trade-log
    readers' threads were never closed, and the process hung instead of exiting."""
    for flag, port in (("--port", server.port), ("--md-port", server.md_port), ("--web-port", server.web_port)):
        ports = {"--port": "0", "--md-port": "0", "--web-port": "0", flag: str(port)}
        args = [a for item in ports.items() for a in item]
        second = subprocess.run(
            [sys.executable, "-m", "tickline.cli", "serve", *args, "--data-dir", str(tmp_path / flag)],
            cwd=ROOT, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert second.returncode == 1
        assert second.stderr.splitlines()[-1] == f"tickline: cannot listen on 127.0.0.1:{port}: address already in use"
        assert not (tmp_path / flag / "admin.sock").exists()  # reported: a failed start left its admin socket behind
