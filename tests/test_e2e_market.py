"""TICKER, KLINES, TRADES and STATS against the real server: answers from the trade log."""

from __future__ import annotations

import re
import sqlite3
import time
from datetime import datetime
from pathlib import Path

import msgspec

from protocol import replies as R
from tests.harness import Client, Server

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z")


def trade(server: Server, maker: Client, taker: Client) -> None:
    """Two trades on AAPL (10 @ 150.00, 2 @ 150.50 by a BUY of 12) and a resting bid of 3 @ 149.00."""
    assert maker.ask("SELL AAPL 10 150.00")[0].startswith("ACK")
    assert maker.ask("SELL AAPL 5 150.50")[0].startswith("ACK")
    assert maker.ask("BUY AAPL 3 149.00")[0].startswith("ACK")
    taker.ask("BUY AAPL 12 151.00", 3)


def minute_of(iso: str) -> str:
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return moment.replace(second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_ticker_klines_and_trades_show_what_traded(server: Server) -> None:
    maker, taker = server.client(), server.client()
    trade(server, maker, taker)
    q = server.client()  # another connection: what the log says, not what this session did
    ticker = q.ask("TICKER AAPL")[0]
    assert TIME.sub("<t>", ticker) == (
        "TICKER AAPL last=150.50 open=150.00 high=150.50 low=150.00 change=+0.50 change_pct=+0.33 volume=12 "
        "quote_volume=1801.0000000 vwap=150.0833 trades=2 bid=149.00 bid_qty=3 ask=150.50 ask_qty=3 since=<t> time=<t>"
    )
    trades = q.ask("TRADES AAPL", 4)
    assert [TIME.sub("<t>", line) for line in trades] == [
        "TRADES AAPL count=2", "TRADE 64-2 <t> 2 150.50 BUY", "TRADE 64-1 <t> 10 150.00 BUY", "END",
    ]  # fmt: skip
    minute = minute_of(trades[1].split()[2])
    assert q.ask("KLINES AAPL 1m", 3) == [
        "KLINES AAPL 1m count=1", f"CANDLE {minute} 150.00 150.50 150.00 150.50 12 quote=1801.0000000 trades=2", "END",
    ]  # fmt: skip
    day = minute[:10] + "T00:00:00Z"
    assert q.ask("KLINES AAPL 1d", 3)[1] == f"CANDLE {day} 150.00 150.50 150.00 150.50 12 quote=1801.0000000 trades=2"
    # Paging back, from/to, and a symbol that never traded.
    assert q.ask("TRADES AAPL limit=1 before=64-2", 3)[1:] == [trades[2], "END"]
    assert q.ask("TRADES AAPL before=64-1", 2) == ["TRADES AAPL count=0", "END"]
    later_ms = int(datetime.fromisoformat(minute.replace("Z", "+00:00")).timestamp() * 1000) + 60_000
    assert q.ask(f"KLINES AAPL 1m from={later_ms}", 2) == ["KLINES AAPL 1m count=0", "END"]
    assert q.ask("KLINES AAPL 1m to=2020-01-01T00:00:00Z", 2) == ["KLINES AAPL 1m count=0", "END"]
    assert q.ask(f"KLINES AAPL 5m from={minute} to={minute} limit=5", 3)[0] == "KLINES AAPL 5m count=1"
    assert TIME.sub("<t>", q.ask("TICKER ES")[0]) == (
        "TICKER ES last=- open=- high=- low=- change=- change_pct=- volume=0 quote_volume=0.0000000 vwap=- trades=0 "
        "bid=- bid_qty=- ask=- ask_qty=- since=<t> time=<t>"
    )


def test_market_queries_in_json_decode_into_the_protocol_structs(server: Server) -> None:
    maker, taker = server.client(), server.client()
    trade(server, maker, taker)
    q = Client(server.port)  # no login: market history is public
    decode = msgspec.json.Decoder(R.Reply).decode
    q.send('{"op":"ticker","symbol":"aapl"}\n')
    ticker = decode(q.line())
    assert isinstance(ticker, R.TickerReply) and (ticker.last, ticker.volume, ticker.trades, ticker.bid) == ("150.50", "12", 2, "149.00")
    q.send('{"op":"klines","symbol":"AAPL","interval":"1m","limit":10}\n')
    klines = decode(q.line())
    assert isinstance(klines, R.KlinesReply) and [(c.open, c.close, c.volume, c.trades) for c in klines.candles] == [("150.00", "150.50", "12", 2)]
    q.send('{"op":"trades","symbol":"AAPL","limit":1}\n')
    trades = decode(q.line())
    assert isinstance(trades, R.TradesReply) and [(t.trade_id, t.qty, t.price, t.aggressor) for t in trades.trades] == [("64-2", "2", "150.50", "BUY")]


def test_bad_market_queries_get_one_line_each_and_the_session_goes_on(server: Server) -> None:
    q = server.client()
    assert q.ask("TICKER NOPE") == ["REJ unknown_symbol no such symbol 'NOPE'; type SYMBOLS"]
    assert q.ask("KLINES AAPL 7m") == ["ERR bad_request interval '7m' is not one of 1m 5m 15m 1h 1d"]
    assert q.ask("KLINES AAPL 1m from=yesterday") == ["ERR bad_request from=yesterday is not a time: ISO-8601 (UTC) or unix milliseconds"]
    assert q.ask("KLINES AAPL 1m limit=0") == ["ERR bad_request limit must be 1..1000"]
    assert q.ask("KLINES AAPL 1m size=3") == ["ERR bad_request unexpected 'size=3'; expected from=... to=... limit=..."]
    assert q.ask("TRADES AAPL before=x") == ["ERR bad_request before=x is not a trade id (<seq>-<n>, as TRADES prints them)"]
    assert q.ask("TRADES AAPL before=1-1") == ["REJ unknown_trade no AAPL trade 1-1"]
    assert q.ask("TICKER") == ["ERR bad_request usage: TICKER <symbol>"]
    assert q.ask("PING") == ["PONG"]


def test_stats_counts_orders_rejects_and_trades(server: Server) -> None:
    maker, taker = server.client(), server.client()
    trade(server, maker, taker)
    assert taker.ask("BUY AAPL 1 150.001")[0].startswith("REJ bad_tick")
    stats = dict(token.split("=") for token in taker.ask("STATS")[0].split()[1:])
    assert (stats["orders_total"], stats["rejects_total"], stats["rejects.bad_tick"], stats["trades_total"]) == ("4", "1", "1", "2")
    assert stats["journal_seq"] == "64" and stats["gateway_sessions"] == "2"
    assert stats["book_orders"] == "2"  # the rest of the SELL at 150.50 and the bid at 149.00
    assert int(stats["journal_fsyncs_total"]) >= 1 and int(stats["memory_rss_bytes"]) > 10_000_000


def test_candles_are_counted_once_across_a_kill_9_and_a_replay(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data, "--snapshot-every", "1000000", "--snapshot-interval", "3600").start()
    maker, taker = server.client(), server.client()
    trade(server, maker, taker)
    time.sleep(0.5)  # the trade log has them: the replay after the kill hands them over again
    server.kill()
    server = Server(data).start()
    try:
        assert server.client().ask("KLINES AAPL 1h", 3)[1].endswith(" 150.00 150.50 150.00 150.50 12 quote=1801.0000000 trades=2")
    finally:
        server.stop()


def test_a_trade_log_from_before_candles_gets_them_on_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Server(data).start()
    trade(server, server.client(), server.client())
    assert server.stop() == 0
    with sqlite3.connect(data / "trades.sqlite") as db:
        db.execute("DELETE FROM candles")  # as a log written before the writer kept them
    server = Server(data).start()
    try:
        assert server.client().ask("KLINES AAPL 15m", 3)[1].endswith(" 150.00 150.50 150.00 150.50 12 quote=1801.0000000 trades=2")
    finally:
        server.stop()

