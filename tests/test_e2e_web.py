"""The dashboard against the real server: its JSON endpoints, /metrics, the WebSocket feed,
and the page itself in a real browser (headless Chromium)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aiohttp import ClientSession, TCPConnector, WSMsgType

from bench.browser import available, chromium
from tests.harness import Client, Server
from tests.test_e2e_market import trade


def get(server: Server, path: str) -> tuple[int, dict | str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.web_port}{path}", timeout=10) as res:
            status, body, kind = res.status, res.read().decode(), res.headers.get_content_type()
    except urllib.error.HTTPError as err:
        status, body, kind = err.code, err.read().decode(), err.headers.get_content_type()
    return status, json.loads(body) if kind == "application/json" else body


def test_json_endpoints_answer_as_the_order_entry_port_does(server: Server) -> None:
    maker, taker = server.client(), server.client()
    trade(server, maker, taker)
    status, ticker = get(server, "/api/ticker?symbol=AAPL")
    assert status == 200 and isinstance(ticker, dict)
    assert (ticker["type"], ticker["last"], ticker["volume"], ticker["vwap"], ticker["bid"], ticker["ask"]) == ("ticker", "150.50", "12", "150.0833", "149.00", "150.50")
    assert get(server, "/api/depth?symbol=AAPL&levels=5") == (200, {"type": "book", "symbol": "AAPL", "bids": [["149.00", "3"]], "asks": [["150.50", "3"]]})
    status, klines = get(server, "/api/klines?symbol=AAPL&interval=1h")
    assert status == 200 and isinstance(klines, dict) and [(c["open"], c["close"], c["volume"]) for c in klines["candles"]] == [("150.00", "150.50", "12")]
    status, trades = get(server, "/api/trades?symbol=AAPL&limit=1&before=64-2")
    assert status == 200 and isinstance(trades, dict) and [t["trade_id"] for t in trades["trades"]] == ["64-1"]
    status, symbols = get(server, "/api/symbols")
    assert isinstance(symbols, dict) and [s["symbol"] for s in symbols["symbols"]] == ["AAPL", "BTC-USD", "ES", "EUR-USD"]
    status, stats = get(server, "/api/stats")
    assert isinstance(stats, dict) and (stats["figures"]["orders_total"], stats["figures"]["trades_total"]) == (4, 2)
    # Bad requests: a status and the same one-line error as on port 7001.
    assert get(server, "/api/klines?symbol=AAPL&interval=7m") == (400, {"type": "err", "code": "bad_request", "text": "interval '7m' is not one of 1m 5m 15m 1h 1d"})
    assert get(server, "/api/ticker?symbol=NOPE")[0] == 404
    assert get(server, "/api/ticker")[0] == 400  # no symbol
    assert get(server, "/api/nothing")[0] == 404


def test_metrics_are_prometheus_text_with_the_servers_counts(server: Server) -> None:
    maker, taker = server.client(), server.client()
    trade(server, maker, taker)
    taker.ask("BUY AAPL 1 150.001")
    status, text = get(server, "/metrics")
    assert status == 200 and isinstance(text, str)
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert samples["tickline_orders_total"] == "4.0"
    assert samples['tickline_rejects_total{reason="bad_tick"}'] == "1.0"
    assert samples["tickline_trades_total"] == "2.0"
    assert float(samples["tickline_journal_fsyncs_total"]) >= 1
    assert samples["tickline_gateway_sessions"] == "2.0"
    assert float(samples["tickline_tradelog_backlog_rows"]) >= 0
    assert float(samples["tickline_gateway_ack_seconds_count"]) >= 4  # an ACK latency per order
    assert samples['tickline_gateway_ack_seconds_bucket{le="+Inf"}'] == samples["tickline_gateway_ack_seconds_count"]
    assert "tickline_journal_batch_orders_bucket" in text and "process_resident_memory_bytes" in text
    assert "# TYPE tickline_gateway_ack_seconds histogram" in text


async def _ws_and_tcp_feeds(server: Server) -> tuple[list[str], list[str]]:
    """The same subscription over /ws and over port 7002 (JSON), while orders trade."""
    tcp = Client(server.md_port)
    tcp.send('{"op":"sub","symbol":"AAPL","kinds":"all"}\n')
    async with ClientSession() as http, http.ws_connect(f"http://127.0.0.1:{server.web_port}/ws") as ws:
        await ws.send_str('{"op":"sub","symbol":"AAPL","kinds":"all"}')
        got: list[str] = []
        while not any('"type":"quote"' in line for line in got):  # HELLO, SUBSCRIBED, SNAPSHOT, QUOTE
            got += (await ws.receive_str(timeout=10)).splitlines()
        maker, taker = server.client(), server.client()
        await asyncio.to_thread(trade, server, maker, taker)
        while sum('"type":"trade"' in line for line in got) < 2 or not got[-1].startswith('{"type":"quote"'):
            msg = await ws.receive(timeout=10)
            assert msg.type == WSMsgType.TEXT, msg
            got += msg.data.splitlines()
    tcp_lines = [tcp.line() for _ in range(len(got) - 1)]
    return got[1:], tcp_lines  # the WebSocket's first line is the market-data HELLO (text)


def test_the_websocket_is_a_market_data_session_with_the_same_sequence(server: Server) -> None:
    ws_lines, tcp_lines = asyncio.run(_ws_and_tcp_feeds(server))
    assert ws_lines == tcp_lines
    kinds = [json.loads(line)["type"] for line in ws_lines]
    assert kinds[:3] == ["subscribed", "snapshot", "quote"] and kinds.count("trade") == 2
    seqs = [json.loads(line)["seq"] for line in ws_lines[3:]]
    assert seqs == list(range(1, len(seqs) + 1))  # gap-free, from the snapshot's seq on


def small_receive_buffer(addr_info: tuple) -> socket.socket:
    sock = socket.socket(addr_info[0], addr_info[1], addr_info[2])
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tab that stops reading fills up fast
    return sock


async def _slow_tab(server: Server) -> tuple[bool, int]:
    async with (
        ClientSession(connector=TCPConnector(socket_factory=small_receive_buffer)) as http,
        http.ws_connect(f"http://127.0.0.1:{server.web_port}/ws", max_msg_size=0) as ws,
    ):
        await ws.send_str('{"op":"sub","symbol":"ES","kinds":"book"}')
        await asyncio.sleep(0.2)
        # It never reads again. A TCP subscriber that does keeps getting every update.
        tcp = Client(server.md_port)
        tcp.send("SUB ES book\n")
        maker = server.client()
        n = 10_000
        maker.send("".join(f"SELL ES 1 {5000 + i * 0.25:.2f}\n" for i in range(n)))
        await asyncio.to_thread(maker.lines, n, 30)
        lines = await asyncio.to_thread(lambda: [tcp.line() for _ in range(n + 3)])  # SUBSCRIBED, SNAPSHOT, END + n levels
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("subscriber_dropped" in line for line in server.log):
            await asyncio.sleep(0.1)
        return any("subscriber_dropped" in line for line in server.log), sum(line.startswith("BOOK ES") for line in lines)


def test_a_tab_that_stops_reading_is_dropped_and_never_slows_the_feed(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", "--md-hard-cap", "100000", "--md-pause-deadline", "1").start()
    try:
        dropped, updates = asyncio.run(_slow_tab(server))
        assert updates == 10_000  # the TCP subscriber got every one of them
        assert dropped
    finally:
        server.kill()


# ---------------------------------------------------------------------- the page, in Chromium

browser = pytest.mark.skipif(
    not available() and not os.environ.get("TICKLINE_REQUIRE_BROWSER"),
    reason="SKIPPED: the dashboard's browser test needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)",
)


def text_of(driver, selector: str, expected: str, timeout: float = 10.0) -> str:  # type: ignore[no-untyped-def]
    """The element's text once it equals `expected` (or what it was at the deadline)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    text = ""
    while True:
        try:  # rows are repainted whole: an element may be gone between finding and reading it
            text = driver.find_element(By.CSS_SELECTOR, selector).text
        except (NoSuchElementException, StaleElementReferenceException):
            pass
        if text == expected or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


@browser
def test_the_page_shows_depth_ticker_and_trades_live(server: Server, tmp_path: Path) -> None:
    driver = chromium(tmp_path / "chromium-profile")
    try:
        driver.get(f"http://127.0.0.1:{server.web_port}/?symbol=AAPL")
        assert text_of(driver, "#feed", "live") == "live"
        maker, taker = server.client(), server.client()
        trade(server, maker, taker)  # while the page is open: what it shows arrives live
        assert text_of(driver, "#book tbody tr:first-child", "3 149.00 150.50 3") == "3 149.00 150.50 3"
        assert text_of(driver, "#trades tbody tr:first-child td:nth-child(2)", "150.50") == "150.50"
        assert text_of(driver, "#tk-last", "150.50") == "150.50"
        assert text_of(driver, "#tk-volume", "12") == "12"  # the ticker refetched after the trades
        assert text_of(driver, "#tk-bid", "149.00 × 3") == "149.00 × 3"
        assert text_of(driver, "#sv-trade-count", "2") == "2"
        # Reloaded, it shows the same from the HTTP endpoints and the snapshot.
        driver.refresh()
        assert text_of(driver, "#trades tbody tr:nth-child(2) td:nth-child(2)", "150.00") == "150.00"
        assert text_of(driver, "#book tbody tr:first-child", "3 149.00 150.50 3") == "3 149.00 150.50 3"
        assert re.fullmatch(r"\+0\.50 \(\+0\.33%\)", text_of(driver, "#tk-change", "+0.50 (+0.33%)"))
        assert driver.execute_script("return typeof LightweightCharts") == "object"  # the chart library, served locally
        driver.save_screenshot(str(tmp_path / "dashboard.png"))
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == []
    finally:
        driver.quit()
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000


@browser
def test_the_page_says_so_for_an_unknown_symbol_and_one_far_order_does_not_squash_the_depth(server: Server, tmp_path: Path) -> None:
    """Reported: /?symbol=NOPE was a blank page; one far bid (100.00) squashed the depth chart
    into a block; the volume label covered the price axis."""
    driver = chromium(tmp_path / "chromium-profile")
    try:
        driver.get(f"http://127.0.0.1:{server.web_port}/?symbol=NOPE")
        assert text_of(driver, "#notice", "no such symbol NOPE; showing AAPL") == "no such symbol NOPE; showing AAPL"
        assert text_of(driver, "#tk-symbol", "AAPL") == "AAPL"
        maker = server.client()
        maker.send("BUY AAPL 1 100.00\nBUY AAPL 2 149.00\nBUY AAPL 2 149.50\nSELL AAPL 2 150.50\nSELL AAPL 1 151.00\n")
        assert all(line.startswith("ACK") for line in maker.lines(5))
        assert text_of(driver, "#book tbody tr:first-child", "2 149.50 150.50 2") == "2 149.50 150.50 2"
        deadline = time.monotonic() + 10
        while driver.execute_script("return document.getElementById('depth').dataset.range") != "149.00 151.00" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert driver.execute_script("return document.getElementById('depth').dataset.range") == "149.00 151.00"  # 100.00 is left off
        assert driver.execute_script("return charts.volume.options().lastValueVisible") is False
        driver.get(f"http://127.0.0.1:{server.web_port}/?symbol=es")  # any case
        assert text_of(driver, "#tk-symbol", "ES") == "ES"
        assert not driver.find_element("id", "notice").is_displayed()
    finally:
        driver.quit()
