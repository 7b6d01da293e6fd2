"""Order entry against the real server process, byte for byte."""

from __future__ import annotations

import json
import re
import time

from tests.harness import Client, Server


def test_the_readme_netcat_session(server: Server) -> None:
    alice, bob = server.client(), server.client()
    assert re.fullmatch(r"HELLO tickline \S+ log in with LOGIN <name> <password>; type HELP for commands", alice.hello)
    assert alice.ask("SELL AAPL 10 150.25\r") == ["ACK 61 SELL AAPL 10 150.25 GTC"]
    assert bob.ask("buy aapl 4 151 id=b1\r", 2) == [
        "ACK 62 BUY AAPL 4 151.00 GTC id=b1",
        "FILL 62 AAPL BUY 4 150.25 leaves=0 trade=62-1 liq=R id=b1",
    ]
    assert alice.line() == "FILL 61 AAPL SELL 4 150.25 leaves=6 trade=62-1 liq=A"
    assert bob.ask("BOOK AAPL", 3) == ["BOOK AAPL bids=0 asks=1", "ASK 150.25 6", "END"]
    assert alice.ask("ORDERS", 3) == ["ORDERS 1", "ORDER 61 SELL AAPL 6 150.25 GTC", "END"]
    assert bob.ask("ORDERS", 2) == ["ORDERS 0", "END"]
    assert alice.ask("CANCEL 61") == ["CANCELED 61 leaves=6 reason=user"]
    assert alice.ask("QUIT") == ["BYE goodbye"]
    assert alice.closed()


def test_json_requests_get_json_replies_and_reports(server: Server) -> None:
    maker, taker = server.client(), server.client()
    maker.ask("SELL BTC-USD 0.5 64000.01")
    req = {"op": "buy", "symbol": "BTC-USD", "qty": "0.2", "price": "64000.01", "tif": "IOC", "id": "j1"}
    taker.send(json.dumps(req) + "\n")
    assert [json.loads(line) for line in taker.lines(2)] == [
        {"type": "ack", "order_id": 62, "side": "BUY", "symbol": "BTC-USD", "qty": "0.20000", "price": "64000.01", "tif": "IOC", "id": "j1"},
        {"type": "fill", "order_id": 62, "symbol": "BTC-USD", "side": "BUY", "qty": "0.20000", "price": "64000.01", "leaves": "0.00000", "trade": "62-1", "liq": "R", "id": "j1"},
    ]
    assert maker.line() == "FILL 61 BTC-USD SELL 0.20000 64000.01 leaves=0.30000 trade=62-1 liq=A"
    assert taker.ask('{"op":"ping"}') == ['{"type":"pong"}']
    assert json.loads(taker.ask('{"op":"book","symbol":"BTC-USD","levels":1}')[0]) == {
        "type": "book", "symbol": "BTC-USD", "bids": [], "asks": [["64000.01", "0.30000"]]
    }
    assert json.loads(taker.ask('{"op":"cancel","order_id":61}')[0])["reason"] == "not_owner"
    assert json.loads(taker.ask('{"op":"buy","symbol":"BTC-USD","qty":1}')[0]) == {
        "type": "err", "code": "bad_request", "text": "Expected `str`, got `int` - at `$.qty`"
    }
    assert json.loads(taker.ask('{"op":')[0])["code"] == "bad_json"
    # The text form still works on the same connection.
    assert taker.ask("PING") == ["PONG"]


REPLIES = [
    ("FROB", "ERR unknown_command unknown command 'FROB'; type HELP"),
    ("SUB AAPL", "ERR unknown_command SUB is a market-data command: this is the order-entry port (market data is on its own port, 7002 by default)"),
    ("BUY", "ERR bad_request usage: BUY <symbol> <qty> [<price>] [STOP=<price>] [SHOW=<qty>] [GTC|IOC|FOK|POST] [id=<client-order-id>] [oco=<client-order-id>]"),
    ("BUY AAPL 1 100 GTC IOC", "ERR bad_request time in force given twice (GTC and IOC)"),
    ("BUY AAPL 1 100 id=a id=b", "ERR bad_request id= given twice"),
    ("BUY AAPL 1 GTC 100", "ERR bad_request unexpected '100'; expected [<price>] [STOP=<price>] [SHOW=<qty>] [GTC|IOC|FOK|POST] [id=...] [oco=<id>]"),
    ("CANCEL", "ERR bad_request usage: CANCEL <order-id> | CANCEL id=<client-order-id> | CANCEL ALL [<symbol>]"),
    ("CANCEL x1", "ERR bad_request order id 'x1' is not a number"),
    ("REPLACE 61", "ERR bad_request usage: REPLACE <order-id> <qty> [<price>] | REPLACE id=<client-order-id> <qty> [<price>]"),
    ("BOOK", "ERR bad_request usage: BOOK <symbol> [<levels>]"),
    ("BOOK AAPL 0", "ERR bad_request levels must be 1..1000"),
    ("PING now", "ERR bad_request PING takes no arguments"),
    ("LOGIN nope", "ERR bad_request usage: LOGIN <name> <password> [cancel_on_disconnect]"),
    ("BUY NOPE 1 1", "REJ unknown_symbol no such symbol NOPE; type SYMBOLS"),
    ("BOOK NOPE", "REJ unknown_symbol no such symbol NOPE; type SYMBOLS"),
    ("BUY AAPL 1 150.001 id=t1", "REJ bad_tick id=t1 price 150.001 is not on the tick 0.01"),
    ("BUY ES 1 4500.10", "REJ bad_tick price 4500.10 is not on the tick 0.25"),
    ("BUY AAPL 1.5 150", "REJ bad_lot quantity 1.5 is not a multiple of the lot 1"),
    ("BUY EUR-USD 1500 1.1", "REJ bad_lot quantity 1500 is not a multiple of the lot 1000"),
    ("BUY AAPL 0 150", "REJ bad_qty quantity 0 is not a positive decimal number"),
    ("BUY AAPL -5 150", "REJ bad_qty quantity -5 is not a positive decimal number"),
    ("BUY AAPL 1 NaN", "REJ bad_price price NaN is not a positive decimal number"),
    ("BUY AAPL 1 1e3", "REJ bad_price price 1e3 is not a positive decimal number"),
    ("BUY AAPL 2000000 150", "REJ qty_range quantity 2000000 is outside 1..1000000"),
    # A number too large for any order is out of range too, said with the text as typed.
    ("BUY AAPL 99999999999999999999999 150", "REJ qty_range quantity 99999999999999999999999 is outside 1..1000000"),
    ("BUY AAPL 1 20000000000000", "REJ price_band price 20000000000000 is outside the band 0.01..10000000000000.00"),
    ("BUY AAPL 1 150 STOP=99999999999999999999", "REJ price_band stop price 99999999999999999999 is outside the band 0.01..10000000000000.00"),
    ("BUY AAPL 1234567890123456789012345 150", "REJ bad_qty quantity 123456789012345678901... is longer than 24 characters"),
    ("BUY AAPL 10 @", "ERR bad_request '@' must be followed by a price"),
    ("BUY AAPL 10 @ IOC", "ERR bad_request '@' must be followed by a price"),
    ("BUY AAPL 1 GTC", "REJ bad_tif a market order cannot be GTC"),
    ("BUY AAPL 1 POST", "REJ bad_tif a market order cannot be POST"),
    ("BUY AAPL 1 150 id=has/slash", "REJ bad_id a client order id is 1-32 of A-Z a-z 0-9 . _ : -"),
    ("CANCEL 1059", "REJ unknown_order order=1059 order 1059 is not open"),
    ("CANCEL id=zz", "REJ unknown_order id=zz no open order has id zz"),
    ("REPLACE id=zz 5", "REJ unknown_order id=zz no open order has id zz"),
    ("REPLACE 1059 1", "REJ unknown_order order=1059 order 1059 is not open"),
]


def test_every_err_and_rej_is_one_clear_line_and_the_session_goes_on(server: Server) -> None:
    client = server.client()
    for request, reply in REPLIES:
        assert client.ask(request) == [reply], request
    assert client.ask("PING") == ["PONG"]
    assert client.quiet()


def test_rejects_that_need_an_open_order(server: Server) -> None:
    alice, bob = server.client(), server.client()
    assert alice.ask("BUY AAPL 5 100 id=x") == ["ACK 61 BUY AAPL 5 100.00 GTC id=x"]
    assert alice.ask("BUY AAPL 5 100 id=x") == ["REJ duplicate_id id=x an open order already has id x"]
    assert bob.ask("CANCEL 61") == ["REJ not_owner order=61 order 61 is not yours"]
    assert bob.ask("REPLACE 61 3") == ["REJ not_owner order=61 order 61 is not yours"]
    assert alice.ask("REPLACE 61 3 100.001") == ["REJ bad_tick order=61 id=x price 100.001 is not on the tick 0.01"]
    assert alice.ask("REPLACE 61 3") == ["REPLACED 61 3 100.00 priority=kept id=x"]
    assert alice.ask("REPLACE id=x 4 101") == ["REPLACED 61 4 101.00 priority=lost id=x"]
    assert alice.ask("CANCEL id=x") == ["CANCELED 61 leaves=4 reason=user id=x"]
    # Once the order is gone its client id may be used again (cancel and replaces took 2-4).
    assert alice.ask("SELL AAPL 1 120 id=x") == ["ACK 65 SELL AAPL 1 120.00 GTC id=x"]
    # A client id no order can have is refused as a BUY's is (was: "no open order has id ").
    assert alice.ask("CANCEL id=") == ["REJ bad_id a client order id is 1-32 of A-Z a-z 0-9 . _ : -"]
    assert alice.ask("REPLACE id=a/b 1") == ["REJ bad_id a client order id is 1-32 of A-Z a-z 0-9 . _ : -"]
    assert alice.ask("CANCEL id=y") == ["REJ unknown_order id=y no open order has id y"]


def test_a_price_may_follow_an_at_sign_as_people_write_it(server: Server) -> None:
    alice, bob = server.client(), server.client()
    assert alice.ask("BUY AAPL 10 @ 150.25") == ["ACK 61 BUY AAPL 10 150.25 GTC"]
    assert alice.ask("sell aapl 3 @151 id=s1") == ["ACK 62 SELL AAPL 3 151.00 GTC id=s1"]
    assert bob.ask("BUY AAPL 2 @ MKT", 2) == ["ACK 63 BUY AAPL 2 MKT IOC", "FILL 63 AAPL BUY 2 151.00 leaves=0 trade=63-1 liq=R"]
    assert alice.line() == "FILL 62 AAPL SELL 2 151.00 leaves=1 trade=63-1 liq=A id=s1"
    # and in a REPLACE (seen at nc: "REPLACE id=s1 2 @ 152" answered the usage line)
    assert alice.ask("REPLACE id=s1 2 @ 152") == ["REPLACED 62 2 152.00 priority=lost id=s1"]
    assert alice.ask("REPLACE 61 5 @150.30") == ["REPLACED 61 5 150.30 priority=lost"]
    assert alice.ask("REPLACE 61 5 @") == ["ERR bad_request '@' must be followed by a price"]


def test_order_types_over_the_wire(server: Server) -> None:
    maker, taker = server.client(), server.client()
    maker.ask("SELL ES 3 4500.25")
    assert taker.ask("BUY ES 5 4500.25 FOK", 2) == ["ACK 62 BUY ES 5 4500.25 FOK", "CANCELED 62 leaves=5 reason=fok_unfilled"]
    assert taker.ask("BUY ES 5 4500.25 POST", 2) == ["ACK 63 BUY ES 5 4500.25 POST", "CANCELED 63 leaves=5 reason=would_cross"]
    assert taker.ask("BUY ES 5", 3) == [
        "ACK 64 BUY ES 5 MKT IOC",
        "FILL 64 ES BUY 3 4500.25 leaves=2 trade=64-1 liq=R",
        "CANCELED 64 leaves=2 reason=no_liquidity",
    ]
    assert maker.line() == "FILL 61 ES SELL 3 4500.25 leaves=0 trade=64-1 liq=A"
    assert maker.ask("BUY ES 1 4400 IOC", 2) == ["ACK 65 BUY ES 1 4400.00 IOC", "CANCELED 65 leaves=1 reason=expired"]
    assert maker.ask("SELL ES 1 4600") == ["ACK 66 SELL ES 1 4600.00 GTC"]
    assert maker.ask("BUY ES 1 4600", 2) == ["ACK 67 BUY ES 1 4600.00 GTC", "CANCELED 66 leaves=1 reason=self_trade"]
    assert maker.ask("BOOK ES", 3) == ["BOOK ES bids=1 asks=0", "BID 4600.00 1", "END"]


def test_symbols_help_and_case_insensitive_keywords(server: Server) -> None:
    client = server.client()
    assert client.ask("symbols", 6) == [
        "SYMBOLS 4",
        "SYMBOL AAPL tick=0.01 lot=1 min_qty=1 max_qty=1000000 min_price=0.01 max_price=10000000000000.00",
        "SYMBOL BTC-USD tick=0.01 lot=0.00001 min_qty=0.00001 max_qty=1000.00000 min_price=0.01 max_price=10000000000000.00",
        "SYMBOL ES tick=0.25 lot=1 min_qty=1 max_qty=10000 min_price=0.25 max_price=250000000000000.00",
        "SYMBOL EUR-USD tick=0.00001 lot=1000 min_qty=1000 max_qty=100000000 min_price=0.00001 max_price=10000000000.00000",
        "END",
    ]
    help_lines = client.ask("Help", 1)
    assert help_lines == ["HELP"]
    rest = client.until("END")
    assert rest[0].strip().startswith("BUY  <symbol> <qty>")
    assert client.ask("pInG") == ["PONG"]
    assert client.ask("\n\r\n   \nPING") == ["PONG"]  # blank lines get no reply


def test_an_account_trades_from_every_session_and_sees_only_its_own(server: Server) -> None:
    first = server.client()
    first.ask("BUY AAPL 5 100")
    other = server.client()
    assert other.ask("CANCEL 61") == ["REJ not_owner order=61 order 61 is not yours"]
    assert other.ask("ORDERS", 2) == ["ORDERS 0", "END"]
    assert other.ask("REPLACE 61 1") == ["REJ not_owner order=61 order 61 is not yours"]
    assert other.ask("REPORTS since=0", 2) == ["REPORTS since=0 through=61 count=0", "END"]
    second = server.client(first.owner)  # the same account, another connection
    assert second.ask("ORDERS", 3) == ["ORDERS 1", "ORDER 61 BUY AAPL 5 100.00 GTC", "END"]
    # Reports go to every live session of the account.
    assert second.ask("CANCEL 61") == ["CANCELED 61 leaves=5 reason=user"]
    assert first.line() == "CANCELED 61 leaves=5 reason=user"
    assert other.quiet()


def test_orders_need_a_login_and_a_wrong_password_never_logs_in(server: Server) -> None:
    anon = Client(server.port)
    assert anon.ask("BUY AAPL 1 100") == ["REJ not_logged_in log in first: LOGIN <name> <password>"]
    assert anon.ask("CANCEL 1") == ["REJ not_logged_in log in first: LOGIN <name> <password>"]
    assert anon.ask("BALANCES") == ["REJ not_logged_in log in first: LOGIN <name> <password>"]
    assert anon.ask("PING") == ["PONG"]  # the connection stays usable; market queries need no account
    assert anon.ask("LOGIN t1 wrong") == ["REJ bad_login wrong name or password"]
    assert anon.ask("LOGIN nobody pw") == ["REJ bad_login wrong name or password"]  # the same reply
    assert anon.ask('{"op":"login","name":"t1","password":"nope"}') == ['{"type":"rej","reason":"bad_login","text":"wrong name or password"}']
    assert anon.ask("BUY AAPL 1 100") == ["REJ not_logged_in log in first: LOGIN <name> <password>"]
    assert anon.ask("LOGIN t1 pw") == ["LOGGED_IN account=t1 open=0"]
    assert anon.ask("BUY AAPL 1 100") == ["ACK 61 BUY AAPL 1 100.00 GTC"]
    assert not any("nope" in line or "wrong" in line for line in server.log)  # passwords are never logged


def test_balances_lock_on_order_move_on_fill_and_refuse_what_cannot_be_paid(server: Server) -> None:
    buyer, seller = server.client(), server.client()
    assert buyer.ask("BALANCES", 7)[:2] == [f"BALANCES {buyer.owner} 5", "BALANCE AAPL available=1000000 locked=0"]
    assert buyer.ask("BUY AAPL 10 150.00") == ["ACK 61 BUY AAPL 10 150.00 GTC"]
    assert buyer.ask("BALANCES", 7)[5] == "BALANCE USD available=9998500.0000000 locked=1500.0000000"
    assert seller.ask("SELL AAPL 4 149.00", 2) == ["ACK 62 SELL AAPL 4 149.00 GTC", "FILL 62 AAPL SELL 4 150.00 leaves=0 trade=62-1 liq=R"]
    assert buyer.line() == "FILL 61 AAPL BUY 4 150.00 leaves=6 trade=62-1 liq=A"
    lines = buyer.ask("BALANCES", 7)
    assert lines[1] == "BALANCE AAPL available=1000004 locked=0"
    assert lines[5] == "BALANCE USD available=9998500.0000000 locked=900.0000000"
    assert seller.ask("BALANCES", 7)[5] == "BALANCE USD available=10000600.0000000 locked=0.0000000"
    assert buyer.ask("BUY AAPL 1000000 100") == ["REJ insufficient_funds needs 100000000.0000000 USD, 9998500.0000000 available"]
    assert buyer.ask("REPLACE 61 100000 150") == ["REJ insufficient_funds order=61 needs 15000000.0000000 USD, 9998500.0000000 available"]
    assert buyer.ask("CANCEL 61") == ["CANCELED 61 leaves=6 reason=user"]
    assert buyer.ask("BALANCES", 7)[5] == "BALANCE USD available=9999400.0000000 locked=0.0000000"


def test_shutdown_says_bye_to_every_session_and_exits_zero(server: Server) -> None:
    a, b = server.client(), server.client()
    a.ask("BUY AAPL 1 100")
    assert server.stop() == 0
    assert a.line() == "BYE shutting down"
    assert b.line() == "BYE shutting down"
    assert a.closed() and b.closed()


def test_quit_waits_for_the_reports_of_what_came_before(server: Server) -> None:
    client = server.client()
    client.send("BUY AAPL 5 100\nCANCEL 61\nQUIT\n")
    assert client.lines(3) == ["ACK 61 BUY AAPL 5 100.00 GTC", "CANCELED 61 leaves=5 reason=user", "BYE goodbye"]
    assert client.closed()


def test_replies_before_a_lookup_in_the_same_write_are_not_lost(server: Server) -> None:
    # Found while adding LOGIN: a PING answered at once, then a REPORTS (a lookup off the
    # event loop) in the same read, lost the PONG.
    c = server.client()
    c.send("PING\nREPORTS since=0\nPING\n")
    assert c.lines(4) == ["PONG", "REPORTS since=0 through=60 count=0", "END", "PONG"]
    anon = Client(server.port)
    anon.send("PING\nLOGIN t3 pw\nBUY AAPL 1 100\n")
    assert anon.lines(3) == ["PONG", "LOGGED_IN account=t3 open=0", "ACK 61 BUY AAPL 1 100.00 GTC"]


def test_lines_that_come_in_a_later_read_wait_for_the_query_before_them(server: Server) -> None:
    # Found in this session's QA: LOGIN, then an order in a write of its own a moment later
    # (an algorithm that does not wait for LOGGED_IN), was refused not_logged_in, since the
    # query was the last line of its read and the order was handled while the password was
    # still being checked. The same with ORDERS: an order sent after it was journaled first.
    anon = Client(server.port)
    anon.send("LOGIN t3 pw\n")
    time.sleep(0.002)
    anon.send("BUY AAPL 1 100 id=after-login\n")
    assert anon.lines(2) == ["LOGGED_IN account=t3 open=0", "ACK 61 BUY AAPL 1 100.00 GTC id=after-login"]
    anon.send("ORDERS\n")
    time.sleep(0.002)
    anon.send("BUY AAPL 2 100\nPING\n")
    assert anon.lines(5) == ["ORDERS 1", "ORDER 61 BUY AAPL 1 100.00 GTC id=after-login", "END", "ACK 62 BUY AAPL 2 100.00 GTC", "PONG"]


def test_a_lookup_answered_at_once_keeps_its_place_and_nothing_comes_after_bye(server: Server) -> None:
    # Reported: not logged in, `BUY ... REPORTS ... PING QUIT` in one write answered REJ,
    # PONG, BYE, then the REPORTS' REJ after the BYE (its refusal re-entered the session).
    anon = Client(server.port)
    anon.send("BUY AAPL 1 100\nREPORTS since=0\nPING\nQUIT\n")
    assert anon.lines(4) == [
        "REJ not_logged_in log in first: LOGIN <name> <password>",
        "REJ not_logged_in log in first: LOGIN <name> <password>",
        "PONG",
        "BYE goodbye",
    ]
    assert anon.closed()


def test_orders_come_a_page_at_a_time_so_a_big_book_never_makes_a_reply_too_big(server: Server) -> None:
    # Reported: ORDERS for ~400,000 open orders built an 18 MB reply, and the server dropped
    # the client that asked as a slow consumer. Now 1,000 a page; `next=` asks for the rest.
    c = server.client()
    c.send("".join(f"BUY {'AAPL' if i % 2 else 'ES'} 1 {100 + i % 50}.00\n" for i in range(2_500)))
    assert c.lines(2_500)[-1].startswith("ACK 2560 ")
    first = c.ask("ORDERS", 1)[0]
    assert first == "ORDERS 1000 next=1060"
    page = c.until("END")
    assert page[0].startswith("ORDER 61 ") and page[-2].startswith("ORDER 1060 ") and len(page) == 1001
    assert c.ask("ORDERS after=2060", 1) == ["ORDERS 500"] and len(c.until("END")) == 501
    assert c.ask("ORDERS es limit=2 after=61", 4) == ["ORDERS 2 next=65", "ORDER 63 BUY ES 1 102.00 GTC", "ORDER 65 BUY ES 1 104.00 GTC", "END"]
    assert c.ask("ORDERS NOPE") == ["REJ unknown_symbol no such symbol NOPE; type SYMBOLS"]
    assert c.ask("ORDERS limit=0") == ["ERR bad_request limit must be 1..10000"]
    assert c.ask('{"op":"orders","symbol":"AAPL","limit":1}') == [
        '{"type":"orders","orders":[{"order_id":62,"side":"BUY","symbol":"AAPL","qty":"1","price":"101.00","tif":"GTC"}],"next":62}'
    ]


def test_reports_come_a_page_at_a_time_of_whole_commands(server: Server) -> None:
    # Seen reading the code: REPORTS read every report of the account into one reply. An
    # account with a million fills asked for ~100 MB at once, held in memory by each such
    # request. Now at most 10,000 reports a page (of whole commands); `more` says there are
    # more, and the page's through= is the next since=.
    maker, taker = server.client("t1"), server.client("t2")
    sell = maker.ask("SELL AAPL 10001 100")[0]
    seq = int(sell.split()[1])
    taker.send("BUY AAPL 1 100 IOC\n" * 10_001)
    assert taker.lines(20_002, timeout=60)[-1] == f"FILL {seq + 10_001} AAPL BUY 1 100.00 leaves=0 trade={seq + 10_001}-1 liq=R"
    assert maker.lines(10_001, timeout=60)[-1] == f"FILL {seq} AAPL SELL 1 100.00 leaves=0 trade={seq + 10_001}-1 liq=A"  # (live)
    assert maker.ask("REPORTS since=0") == [f"REPORTS since=0 through={seq + 10_000} count=10000 more"]
    page = maker.until("END", timeout=30)
    assert len(page) == 10_001 and page[0] == f"FILL {seq} AAPL SELL 1 100.00 leaves=10000 trade={seq + 1}-1 liq=A"
    assert maker.ask(f"REPORTS since={seq + 10_000}", 3) == [
        f"REPORTS since={seq + 10_000} through={seq + 10_001} count=1",
        f"FILL {seq} AAPL SELL 1 100.00 leaves=0 trade={seq + 10_001}-1 liq=A",
        "END",
    ]
    assert maker.ask(f'{{"op":"reports","since":{seq + 9_999}}}')[0].startswith(f'{{"type":"reports","since":{seq + 9_999},"through":{seq + 10_001},"reports":[')
