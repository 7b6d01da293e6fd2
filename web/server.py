"""The dashboard: one page, its HTTP JSON endpoints, /metrics, and a live WebSocket.

    GET /                     the page (web/static/index.html; no build step)
    GET /vendor/charts.js     TradingView lightweight-charts, installed by npm into web/node_modules
    GET /api/symbols          the same answers as port 7001's SYMBOLS, BOOK, TICKER, KLINES,
    GET /api/depth            TRADES and STATS, as the JSON form of those replies
    GET /api/ticker
    GET /api/klines
    GET /api/trades
    GET /api/stats
    GET /metrics              Prometheus text format (web/metrics.py)
    GET /ws                   a market-data session (port 7002's protocol, JSON), bridged

Nothing here knows the exchange: it is handed an `answer` for queries, a factory of
market-data sessions and the telemetry registry (tickline/app.py wires them).
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Awaitable, Callable

import msgspec
from aiohttp import web

from netio.plumbing import CannotListen
from protocol import replies as R
from protocol.requests import BookQuery, KlinesQuery, Request, StatsQuery, SymbolsQuery, TickerQuery, TradesQuery
from telemetry.registry import Telemetry
from web.bridge import SocketBridge
from web.metrics import metrics_registry, render

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
CHARTS = HERE / "node_modules" / "lightweight-charts" / "dist" / "lightweight-charts.standalone.production.js"
MAX_WEB_SOCKETS = 1_000
# /api/<name>: the query each builds from its URL's parameters.
QUERIES: dict[str, type] = {
    "symbols": SymbolsQuery, "depth": BookQuery, "ticker": TickerQuery, "klines": KlinesQuery, "trades": TradesQuery, "stats": StatsQuery,
}  # fmt: skip
Answer = Callable[[Request], Awaitable[R.Reply]]


class Dashboard:
    def __init__(self, answer: Answer, new_session: Callable[[], asyncio.Protocol], telemetry: Telemetry) -> None:
        self.answer = answer
        self.new_session = new_session
        self.metrics = metrics_registry(telemetry)
        self.sockets: set[web.WebSocketResponse] = set()
        telemetry.gauge("web_sockets", lambda: len(self.sockets), "dashboard pages connected")
        self.app = web.Application(client_max_size=64 * 1024)
        self.app.add_routes(
            [
                web.get("/", self.page),
                web.get("/vendor/charts.js", self.charts),
                web.get("/api/{name}", self.api),
                web.get("/metrics", self.prometheus),
                web.get("/ws", self.socket),
                web.static("/static", STATIC),
            ]
        )
        self.runner: web.AppRunner | None = None

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> tuple[str, int]:
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self.runner.setup()
        try:
            await web.TCPSite(self.runner, host, port, reuse_address=True, ssl_context=tls).start()
        except OSError as exc:
            await self.runner.cleanup()
            raise CannotListen(host, port, exc) from None
        address = self.runner.addresses[0]
        return address[0], address[1]

    async def close(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        if self.runner is not None:
            await self.runner.cleanup()

    # ------------------------------------------------------------ handlers

    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def charts(self, request: web.Request) -> web.StreamResponse:
        if not CHARTS.exists():  # the page draws everything else without it
            return web.Response(status=404, text="lightweight-charts is not installed: run `make install` (npm ci in web/)")
        return web.FileResponse(CHARTS, headers={"Cache-Control": "max-age=3600"})

    async def api(self, request: web.Request) -> web.Response:
        kind = QUERIES.get(request.match_info["name"])
        if kind is None:
            return _json(R.Error("not_found", f"no endpoint /api/{request.match_info['name'][:32]}; try " + ", ".join(QUERIES)), 404)
        params: dict[str, object] = {k: v for k, v in request.query.items()}
        for key in ("levels", "limit"):  # numbers in a URL are text
            value = params.get(key)
            if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 10:
                params[key] = int(value)
        try:
            query: Request = msgspec.convert(params, kind, strict=False)
        except msgspec.ValidationError as exc:
            return _json(R.Error("bad_request", str(exc)), 400)
        reply = await self.answer(query)
        status = 400 if type(reply) is R.Error else 404 if type(reply) is R.Reject else 200
        return _json(reply, status)

    async def prometheus(self, request: web.Request) -> web.Response:
        # ~9 ms of formatting: in a thread, so a scrape never holds the event loop that long.
        body = await asyncio.to_thread(render, self.metrics)
        return web.Response(body=body, content_type="text/plain", charset="utf-8", headers={"X-Content-Type-Options": "nosniff"})

    async def socket(self, request: web.Request) -> web.StreamResponse:
        if len(self.sockets) >= MAX_WEB_SOCKETS:
            return web.Response(status=503, text="too many dashboard connections")
        ws = web.WebSocketResponse(max_msg_size=4096, heartbeat=30.0, compress=False)
        await ws.prepare(request)
        self.sockets.add(ws)
        try:
            await SocketBridge(ws, request).run(self.new_session())
        finally:
            self.sockets.discard(ws)
        return ws


def _json(reply: R.Reply, status: int = 200) -> web.Response:
    return web.Response(body=R.to_json(reply), status=status, content_type="application/json")
