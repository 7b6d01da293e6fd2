"""The order types beyond plain limit and market orders, against the real server process."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness import Client, Server


def test_a_stop_waits_unseen_then_fires_on_a_trade_at_its_trigger(server: Server) -> None:
    alice, bob, carol = server.client("t1"), server.client("t2"), server.client("t3")
    assert alice.ask("BUY ES 5 4510 STOP=4505 id=s1") == ["ACK 61 BUY ES 5 4510.00 GTC stop=4505.00 id=s1"]
    assert alice.ask("SELL ES 2 STOP=4400") == ["ACK 62 SELL ES 2 MKT IOC stop=4400.00"]
    assert alice.ask("BOOK ES", 2) == ["BOOK ES bids=0 asks=0", "END"]  # pending stops are not on the book
    assert alice.ask("ORDERS", 4) == ["ORDERS 2", "ORDER 61 BUY ES 5 4510.00 GTC stop=4505.00 id=s1", "ORDER 62 SELL ES 2 MKT IOC stop=4400.00", "END"]
    assert alice.ask("BALANCES", 7)[5] == "BALANCE USD available=9977450.0000000 locked=22550.0000000"  # 5 x 4510
    assert bob.ask("SELL ES 10 4505") == ["ACK 63 SELL ES 10 4505.00 GTC"]
    assert alice.ask("REPLACE 61 3 4511") == ["REJ stop_pending order=61 id=s1 order 61 is a pending stop: cancel it and place another"]

    # A trade at 4505 reaches the BUY stop: it fires and buys at once, in the same command.
    assert carol.ask("BUY ES 1 4505", 2) == ["ACK 64 BUY ES 1 4505.00 GTC", "FILL 64 ES BUY 1 4505.00 leaves=0 trade=64-1 liq=R"]
    assert alice.lines(2) == ["TRIGGERED 61 ES BUY 5 4510.00 stop=4505.00 id=s1", "FILL 61 ES BUY 5 4505.00 leaves=0 trade=64-2 liq=R id=s1"]
    assert bob.lines(2) == ["FILL 63 ES SELL 1 4505.00 leaves=9 trade=64-1 liq=A", "FILL 63 ES SELL 5 4505.00 leaves=4 trade=64-2 liq=A"]
    assert alice.ask("ORDERS", 3) == ["ORDERS 1", "ORDER 62 SELL ES 2 MKT IOC stop=4400.00", "END"]

    # The last trade (4505) has reached a SELL stop at 4506: refused before it is journaled.
    assert alice.ask("SELL ES 1 4490 STOP=4506") == ["REJ would_trigger the last trade (4505.00) has reached the stop price 4506.00"]
    assert alice.ask("SELL ES 1 STOP=4400.10") == ["REJ bad_tick stop price 4400.10 is not on the tick 0.25"]
    assert alice.ask("CANCEL 62") == ["CANCELED 62 leaves=2 reason=user"]
    assert alice.ask("REPORTS since=60", 5) == [
        "REPORTS since=60 through=65 count=3",
        "TRIGGERED 61 ES BUY 5 4510.00 stop=4505.00 id=s1",
        "FILL 61 ES BUY 5 4505.00 leaves=0 trade=64-2 liq=R id=s1",
        "CANCELED 62 leaves=2 reason=user",
        "END",
    ]


def test_stops_in_json(server: Server) -> None:
    alice, bob, carol = server.client("t1"), server.client("t2"), server.client("t3")
    alice.send(json.dumps({"op": "sell", "symbol": "AAPL", "qty": "3", "stop": "149.50", "id": "j1"}) + "\n")
    assert json.loads(alice.line()) == {
        "type": "ack", "order_id": 61, "side": "SELL", "symbol": "AAPL", "qty": "3", "price": "MKT", "tif": "IOC", "id": "j1", "stop": "149.50",
    }  # fmt: skip
    bob.ask("BUY AAPL 5 149.50")
    assert carol.ask("SELL AAPL 1 149.50", 2)[0] == "ACK 63 SELL AAPL 1 149.50 GTC"
    assert json.loads(alice.line()) == {
        "type": "triggered", "order_id": 61, "symbol": "AAPL", "side": "SELL", "qty": "3", "price": "MKT", "stop": "149.50", "id": "j1",
    }  # fmt: skip
    assert json.loads(alice.line()) == {
        "type": "fill", "order_id": 61, "symbol": "AAPL", "side": "SELL", "qty": "3", "price": "149.50", "leaves": "0", "trade": "63-2", "liq": "R", "id": "j1",
    }  # fmt: skip


def test_pending_stops_survive_kill_9_with_and_without_a_snapshot(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", "--snapshot-every", "3").start()
    try:
        alice, bob = server.client("t1"), server.client("t2")
        assert alice.ask("BUY ES 2 4510 STOP=4505") == ["ACK 61 BUY ES 2 4510.00 GTC stop=4505.00"]
        assert alice.ask("SELL AAPL 1 STOP=140") == ["ACK 62 SELL AAPL 1 MKT IOC stop=140.00"]
        assert bob.ask("BUY AAPL 1 140") == ["ACK 63 BUY AAPL 1 140.00 GTC"]
        server.logged("snapshot_written")  # 61-63 are in a snapshot
        assert alice.ask("SELL ES 1 STOP=4400") == ["ACK 64 SELL ES 1 MKT IOC stop=4400.00"]  # only in the journal
        server.kill()
        server.start()
        alice, bob, carol = server.client("t1"), server.client("t2"), server.client("t3")
        assert alice.ask("ORDERS", 5) == [
            "ORDERS 3",
            "ORDER 61 BUY ES 2 4510.00 GTC stop=4505.00",
            "ORDER 62 SELL AAPL 1 MKT IOC stop=140.00",
            "ORDER 64 SELL ES 1 MKT IOC stop=4400.00",
            "END",
        ]
        assert bob.ask("SELL ES 5 4505") == ["ACK 65 SELL ES 5 4505.00 GTC"]
        assert carol.ask("BUY ES 1 4505", 2) == ["ACK 66 BUY ES 1 4505.00 GTC", "FILL 66 ES BUY 1 4505.00 leaves=0 trade=66-1 liq=R"]
        assert alice.lines(2) == ["TRIGGERED 61 ES BUY 2 4510.00 stop=4505.00", "FILL 61 ES BUY 2 4505.00 leaves=0 trade=66-2 liq=R"]
        assert bob.lines(2) == ["FILL 65 ES SELL 1 4505.00 leaves=4 trade=66-1 liq=A", "FILL 65 ES SELL 2 4505.00 leaves=2 trade=66-2 liq=A"]
        carol.ask("SELL AAPL 1 140", 2)  # trades with bob's bid at 140: alice's SELL stop fires, finds no bid
        assert alice.lines(2) == ["TRIGGERED 62 AAPL SELL 1 MKT stop=140.00", "CANCELED 62 leaves=1 reason=no_liquidity"]
        assert bob.lines(1) == ["FILL 63 AAPL BUY 1 140.00 leaves=0 trade=67-1 liq=A"]
        assert bob.ask("BUY ES 1 4400") == ["ACK 68 BUY ES 1 4400.00 GTC"]
        assert carol.ask("SELL ES 1 4400", 2) == ["ACK 69 SELL ES 1 4400.00 GTC", "FILL 69 ES SELL 1 4400.00 leaves=0 trade=69-1 liq=R"]
        assert alice.lines(2) == ["TRIGGERED 64 ES SELL 1 MKT stop=4400.00", "CANCELED 64 leaves=1 reason=no_liquidity"]
        assert alice.ask("ORDERS", 2) == ["ORDERS 0", "END"]
    finally:
        server.kill()


def test_cancel_all_cancels_every_open_order_of_the_account_and_counts_them(server: Server) -> None:
    alice, other = server.client("t1"), server.client("t1")  # one account, two connections
    alice.ask("BUY ES 1 4400")
    alice.ask("BUY ES 2 4401 STOP=4500")
    other.ask("SELL AAPL 3 200 id=a1")
    assert alice.ask("CANCEL ALL es", 3) == ["CANCELED 61 leaves=1 reason=user", "CANCELED 62 leaves=2 reason=user", "CANCELED_ALL 2"]
    assert alice.ask("CANCEL ALL", 2) == ["CANCELED 63 leaves=3 reason=user id=a1", "CANCELED_ALL 1"]
    assert other.lines(3) == ["CANCELED 61 leaves=1 reason=user", "CANCELED 62 leaves=2 reason=user", "CANCELED 63 leaves=3 reason=user id=a1"]
    assert alice.ask("CANCEL ALL") == ["CANCELED_ALL 0"]
    assert alice.ask('{"op":"cancel_all","symbol":"NOPE"}') == ['{"type":"rej","reason":"unknown_symbol","text":"no such symbol NOPE; type SYMBOLS"}']
    assert alice.ask('{"op":"cancel_all"}') == ['{"type":"canceled_all","count":0}']


def test_cancel_on_disconnect_cancels_that_connections_orders_when_it_closes_or_the_server_dies(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    try:
        maker, plain, watcher = (Client(server.port) for _ in range(3))
        assert maker.login("t1", cancel_on_disconnect=True) == "LOGGED_IN account=t1 open=0"
        plain.login("t1")
        watcher.login("t1")
        assert maker.ask("BUY ES 1 4400") == ["ACK 61 BUY ES 1 4400.00 GTC"]
        assert maker.ask("SELL AAPL 2 STOP=100") == ["ACK 62 SELL AAPL 2 MKT IOC stop=100.00"]
        assert plain.ask("BUY ES 1 4300") == ["ACK 63 BUY ES 1 4300.00 GTC"]
        maker.close()  # its two orders go; the account's others stay
        assert watcher.lines(2) == ["CANCELED 62 leaves=2 reason=disconnect", "CANCELED 61 leaves=1 reason=disconnect"]
        assert watcher.ask("ORDERS", 3) == ["ORDERS 1", "ORDER 63 BUY ES 1 4300.00 GTC", "END"]

        maker = Client(server.port)
        maker.login("t1", cancel_on_disconnect=True)
        assert maker.ask("SELL ES 1 4600") == ["ACK 66 SELL ES 1 4600.00 GTC"]
        server.kill()  # kill -9: no connection survives it, so the restart cancels it
        server.start()
        watcher = server.client("t1")
        assert watcher.ask("ORDERS", 3) == ["ORDERS 1", "ORDER 63 BUY ES 1 4300.00 GTC", "END"]
        assert watcher.ask("REPORTS since=66", 3) == ["REPORTS since=66 through=67 count=1", "CANCELED 66 leaves=1 reason=disconnect", "END"]
    finally:
        server.kill()


def test_an_iceberg_shows_a_slice_and_refreshes_it_behind_later_orders(server: Server) -> None:
    iceberg, other, buyer = server.client("t1"), server.client("t2"), server.client("t3")
    assert iceberg.ask("SELL ES 100 5000 SHOW=10") == ["ACK 61 SELL ES 100 5000.00 GTC show=10"]
    assert other.ask("SELL ES 5 5000") == ["ACK 62 SELL ES 5 5000.00 GTC"]
    assert buyer.ask("BOOK ES", 3) == ["BOOK ES bids=0 asks=1", "ASK 5000.00 15", "END"]
    assert buyer.ask("BUY ES 25 5000 IOC", 4)[1:] == [
        "FILL 63 ES BUY 10 5000.00 leaves=15 trade=63-1 liq=R",
        "FILL 63 ES BUY 5 5000.00 leaves=10 trade=63-2 liq=R",
        "FILL 63 ES BUY 10 5000.00 leaves=0 trade=63-3 liq=R",
    ]
    assert buyer.ask("BOOK ES", 3) == ["BOOK ES bids=0 asks=1", "ASK 5000.00 10", "END"]
    assert iceberg.lines(2) == ["FILL 61 ES SELL 10 5000.00 leaves=90 trade=63-1 liq=A", "FILL 61 ES SELL 10 5000.00 leaves=80 trade=63-3 liq=A"]
    assert iceberg.ask("ORDERS", 3) == ["ORDERS 1", "ORDER 61 SELL ES 80 5000.00 GTC show=10", "END"]
    assert iceberg.ask("SELL ES 5 5000 SHOW=0") == ["REJ bad_show show quantity 0 is not a positive decimal number"]
    assert iceberg.ask("SELL ES 5 SHOW=1") == ["REJ bad_show an iceberg (SHOW=) needs a price: a market order never rests"]
    assert iceberg.ask("SELL ES 5 5000 SHOW=1.5") == ["REJ bad_show show quantity 1.5 is not a multiple of the lot 1"]
    iceberg.send(json.dumps({"op": "sell", "symbol": "ES", "qty": "20", "price": "5001", "show": "4"}) + "\n")
    assert json.loads(iceberg.line()) == {"type": "ack", "order_id": 64, "side": "SELL", "symbol": "ES", "qty": "20", "price": "5001.00", "tif": "GTC", "show": "4"}
    assert iceberg.ask("CANCEL 61") == ["CANCELED 61 leaves=80 reason=user"]


def test_icebergs_stops_and_cancel_on_disconnect_orders_survive_kill_9_and_snapshots(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", "--snapshot-every", "3").start()
    try:
        alice, bob, carol = server.client("t1"), server.client("t2"), Client(server.port)
        assert alice.ask("SELL ES 30 5000 SHOW=10") == ["ACK 61 SELL ES 30 5000.00 GTC show=10"]
        assert bob.ask("BUY ES 12 5000", 3)[1:] == [  # a slice of 10, then 2 of the next one
            "FILL 62 ES BUY 10 5000.00 leaves=2 trade=62-1 liq=R",
            "FILL 62 ES BUY 2 5000.00 leaves=0 trade=62-2 liq=R",
        ]
        assert alice.lines(2) == ["FILL 61 ES SELL 10 5000.00 leaves=20 trade=62-1 liq=A", "FILL 61 ES SELL 2 5000.00 leaves=18 trade=62-2 liq=A"]
        assert alice.ask("SELL AAPL 2 STOP=140") == ["ACK 63 SELL AAPL 2 MKT IOC stop=140.00"]
        carol.login("t3", cancel_on_disconnect=True)
        assert carol.ask("BUY ES 1 4000") == ["ACK 64 BUY ES 1 4000.00 GTC"]
        server.logged("snapshot_written")
        assert bob.ask("BUY AAPL 1 140") == ["ACK 65 BUY AAPL 1 140.00 GTC"]  # after the snapshot: the journal has it
        server.kill()
        server.start()
        alice, bob, carol = server.client("t1"), server.client("t2"), server.client("t3")
        assert bob.ask("BOOK ES", 3) == ["BOOK ES bids=0 asks=1", "ASK 5000.00 8", "END"]
        assert carol.ask("REPORTS since=64", 3) == ["REPORTS since=64 through=66 count=1", "CANCELED 64 leaves=1 reason=disconnect", "END"]
        assert alice.ask("ORDERS", 4) == ["ORDERS 2", "ORDER 61 SELL ES 18 5000.00 GTC show=10", "ORDER 63 SELL AAPL 2 MKT IOC stop=140.00", "END"]
        assert bob.ask("BUY ES 10 5000", 3)[1:] == [  # the rest of the slice (8), then 2 of the next (the last 10)
            "FILL 67 ES BUY 8 5000.00 leaves=2 trade=67-1 liq=R",
            "FILL 67 ES BUY 2 5000.00 leaves=0 trade=67-2 liq=R",
        ]
        assert bob.ask("BOOK ES", 3) == ["BOOK ES bids=0 asks=1", "ASK 5000.00 8", "END"]  # the last slice: 10, 2 taken
        assert carol.ask("SELL AAPL 1 140", 2)[1] == "FILL 68 AAPL SELL 1 140.00 leaves=0 trade=68-1 liq=R"
        assert alice.lines(4) == [
            "FILL 61 ES SELL 8 5000.00 leaves=10 trade=67-1 liq=A",
            "FILL 61 ES SELL 2 5000.00 leaves=8 trade=67-2 liq=A",
            "TRIGGERED 63 AAPL SELL 2 MKT stop=140.00",
            "CANCELED 63 leaves=2 reason=no_liquidity",
        ]
    finally:
        server.kill()


def test_an_oco_pair_locks_one_lot_of_funds_and_one_cancels_the_other_across_a_kill_9(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", "--snapshot-every", "2").start()
    try:
        alice, bob = server.client("t1"), server.client("t2")
        assert alice.ask("SELL BTC-USD 2 70000 id=tp") == ["ACK 61 SELL BTC-USD 2.00000 70000.00 GTC id=tp"]
        assert alice.ask("SELL BTC-USD 2 STOP=60000 id=sl oco=tp") == ["ACK 62 SELL BTC-USD 2.00000 MKT IOC stop=60000.00 id=sl oco=61"]
        assert alice.ask("BALANCES", 7)[2] == "BALANCE BTC available=998.00000000 locked=2.00000000"  # one lock for the pair
        assert alice.ask("SELL BTC-USD 1 65000 oco=tp") == ["REJ bad_oco order 61 is one of an OCO pair already"]
        assert alice.ask("SELL BTC-USD 1 65000 oco=nope") == ["REJ bad_oco no open order has id nope"]
        assert alice.ask("SELL AAPL 1 200 oco=tp") == ["REJ bad_oco order 61 trades BTC-USD: an OCO pair is in one symbol"]
        server.logged("snapshot_written")
        server.kill()
        server.start()
        alice, bob, carol = server.client("t1"), server.client("t2"), server.client("t3")
        assert alice.ask("ORDERS", 4) == [
            "ORDERS 2",
            "ORDER 61 SELL BTC-USD 2.00000 70000.00 GTC id=tp oco=62",
            "ORDER 62 SELL BTC-USD 2.00000 MKT IOC stop=60000.00 id=sl oco=61",
            "END",
        ]
        assert bob.ask("BUY BTC-USD 5 59000") == ["ACK 63 BUY BTC-USD 5.00000 59000.00 GTC"]
        assert carol.ask("SELL BTC-USD 1 59000", 2)[1] == "FILL 64 BTC-USD SELL 1.00000 59000.00 leaves=0.00000 trade=64-1 liq=R"
        assert alice.lines(3) == [  # the stop-loss fired and sold: the take-profit goes with it
            "TRIGGERED 62 BTC-USD SELL 2.00000 MKT stop=60000.00 id=sl",
            "FILL 62 BTC-USD SELL 2.00000 59000.00 leaves=0.00000 trade=64-2 liq=R id=sl",
            "CANCELED 61 leaves=2.00000 reason=oco id=tp",
        ]
        assert alice.ask("BALANCES", 7)[2] == "BALANCE BTC available=998.00000000 locked=0.00000000"
        assert alice.ask("SELL BTC-USD 1 70000 id=a") == ["ACK 65 SELL BTC-USD 1.00000 70000.00 GTC id=a"]
        assert alice.ask("SELL BTC-USD 1 71000 oco=a") == ["ACK 66 SELL BTC-USD 1.00000 71000.00 GTC oco=65"]
        assert alice.ask("CANCEL 66", 2) == ["CANCELED 66 leaves=1.00000 reason=user", "CANCELED 65 leaves=1.00000 reason=oco id=a"]
    finally:
        server.kill()


def test_an_order_whose_oco_partner_was_canceled_by_its_partial_fill_is_a_plain_order_after_a_restart_too(tmp_path: Path) -> None:
    """Found trying the server by hand: the order of a pair that traded in part kept naming
    its canceled partner (ORDERS said oco=<dead id>, REPLACE was refused "one of an OCO
    pair"), and once a snapshot held it so, its next fill after a restart crashed matching."""
    server = Server(tmp_path / "data", "--snapshot-every", "2").start()
    try:
        alice, bob = server.client("t1"), server.client("t2")
        assert alice.ask("BUY ES 5 4490 id=lo") == ["ACK 61 BUY ES 5 4490.00 GTC id=lo"]
        assert alice.ask("SELL ES 5 4520 oco=lo id=hi") == ["ACK 62 SELL ES 5 4520.00 GTC id=hi oco=61"]
        assert bob.ask("SELL ES 1 4490", 2)[1] == "FILL 63 ES SELL 1 4490.00 leaves=0 trade=63-1 liq=R"
        assert alice.lines(2) == ["FILL 61 ES BUY 1 4490.00 leaves=4 trade=63-1 liq=A id=lo", "CANCELED 62 leaves=5 reason=oco id=hi"]
        assert alice.ask("ORDERS", 3) == ["ORDERS 1", "ORDER 61 BUY ES 4 4490.00 GTC id=lo", "END"]
        server.logged("snapshot_written")
        server.kill()
        server.start()
        alice, bob = server.client("t1"), server.client("t2")
        assert alice.ask("ORDERS", 3) == ["ORDERS 1", "ORDER 61 BUY ES 4 4490.00 GTC id=lo", "END"]
        assert bob.ask("SELL ES 1 4490", 2)[1] == "FILL 64 ES SELL 1 4490.00 leaves=0 trade=64-1 liq=R"
        assert alice.line() == "FILL 61 ES BUY 1 4490.00 leaves=3 trade=64-1 liq=A id=lo"
        assert alice.ask("REPLACE id=lo 2") == ["REPLACED 61 2 4490.00 priority=kept id=lo"]
        # No longer "one of an OCO pair already": refused, as any order that traded is.
        assert alice.ask("SELL ES 1 4600 oco=lo") == ["REJ bad_oco order 61 has traded or been replaced: pair an untouched order"]
    finally:
        server.kill()


def test_a_sweep_through_both_orders_of_an_oco_pair_trades_only_the_first(server: Server) -> None:
    """Found trying the server by hand: a BUY that reached both sells of a pair (at two
    prices, or at one) traded both, though the pair had locked the funds of one: the other
    was canceled only once the whole sweep was done."""
    alice, bob = server.client("t1"), server.client("t2")
    assert alice.ask("SELL ES 6 4500 id=a") == ["ACK 61 SELL ES 6 4500.00 GTC id=a"]
    assert alice.ask("SELL ES 6 4501 id=b oco=a") == ["ACK 62 SELL ES 6 4501.00 GTC id=b oco=61"]
    assert alice.ask("BALANCES", 7)[3] == "BALANCE ES available=99994 locked=6"  # one lock for the pair
    assert bob.ask("BUY ES 10 4501", 2) == ["ACK 63 BUY ES 10 4501.00 GTC", "FILL 63 ES BUY 6 4500.00 leaves=4 trade=63-1 liq=R"]
    assert alice.lines(2) == ["FILL 61 ES SELL 6 4500.00 leaves=0 trade=63-1 liq=A id=a", "CANCELED 62 leaves=6 reason=oco id=b"]
    assert bob.ask("BOOK ES", 3) == ["BOOK ES bids=1 asks=0", "BID 4501.00 4", "END"]  # the rest of the BUY rests

    # The same at one price: the pair's second order is next in the level's queue.
    assert alice.ask("SELL ES 3 4510 id=c") == ["ACK 64 SELL ES 3 4510.00 GTC id=c"]
    assert alice.ask("SELL ES 3 4510 SHOW=1 id=d oco=c") == ["ACK 65 SELL ES 3 4510.00 GTC show=1 id=d oco=64"]
    assert bob.ask("SELL ES 1 4510") == ["ACK 66 SELL ES 1 4510.00 GTC"]
    assert bob.ask("BUY ES 5 4510", 3) == [
        "ACK 67 BUY ES 5 4510.00 GTC",
        "FILL 67 ES BUY 3 4510.00 leaves=2 trade=67-1 liq=R",
        "CANCELED 66 leaves=1 reason=self_trade",
    ]
    assert alice.lines(2) == ["FILL 64 ES SELL 3 4510.00 leaves=0 trade=67-1 liq=A id=c", "CANCELED 65 leaves=3 reason=oco id=d"]
    assert bob.ask("BOOK ES", 4) == ["BOOK ES bids=2 asks=0", "BID 4510.00 2", "BID 4501.00 4", "END"]
    assert alice.ask("BALANCES", 7)[3] == "BALANCE ES available=99991 locked=0"  # sold 6 + 3, as locked


def test_a_fok_and_a_market_buy_count_an_oco_pair_once(server: Server) -> None:
    """Once a sweep cancels a pair's other order, a FOK that counted both orders filled in
    part (1 of 2 here), and a market BUY budgeted for both came up short of the liquidity
    behind them."""
    alice, bob, carol = server.client("t1"), server.client("t2"), server.client("t3")
    assert alice.ask("SELL ES 1 4500 id=a") == ["ACK 61 SELL ES 1 4500.00 GTC id=a"]
    assert alice.ask("SELL ES 1 4501 id=b oco=a") == ["ACK 62 SELL ES 1 4501.00 GTC id=b oco=61"]
    assert bob.ask("BUY ES 2 4501 FOK", 2) == ["ACK 63 BUY ES 2 4501.00 FOK", "CANCELED 63 leaves=2 reason=fok_unfilled"]
    assert carol.ask("SELL ES 1 4502") == ["ACK 64 SELL ES 1 4502.00 GTC"]
    assert bob.ask("BUY ES 2", 3) == [
        "ACK 65 BUY ES 2 MKT IOC",
        "FILL 65 ES BUY 1 4500.00 leaves=1 trade=65-1 liq=R",
        "FILL 65 ES BUY 1 4502.00 leaves=0 trade=65-2 liq=R",  # budgeted 4500 + 4502, not 4500 + 4501
    ]
    assert alice.lines(2) == ["FILL 61 ES SELL 1 4500.00 leaves=0 trade=65-1 liq=A id=a", "CANCELED 62 leaves=1 reason=oco id=b"]
