// The tickline dashboard: no framework, no build. Market data arrives over /ws, which speaks
// port 7002's protocol (JSON lines): SUB gives a snapshot, then increments with seq/prev; a
// gap (prev > the last seq seen of that kind) means resubscribe. Everything that arrives
// only marks what is dirty; the page paints at most once per animation frame and at most
// PAINTS_PER_SECOND times a second: a busy book is thousands of updates a second, and a
// repaint of the whole page on every frame cost the machine (and the exchange beside it)
// most of a core.
"use strict";

const $ = (id) => document.getElementById(id);
const INTERVALS = ["1m", "5m", "15m", "1h", "1d"];
const BOOK_ROWS = 10, TRADE_ROWS = 30, DEPTH_LEVELS = 50;
const DEPTH_RANGE = 0.05;  // the depth chart shows prices within 5% of the mid: one far order must not squash it
const PAINTS_PER_SECOND = 4;
const CANDLE_PAINT_MS = 1000;  // the chart is the costliest paint: once a second is enough
const TICKER_EVERY_MS = 2000, KLINES_EVERY_MS = 10000;  // refetched while trades come

const state = {
  symbol: null, interval: "1m", ws: null, live: false, resync: false,
  bids: new Map(), asks: new Map(),     // price text -> qty text
  last: {},                             // kind -> last seq seen (book, trades, quotes)
  trades: [],                           // newest first: {time, price, qty, aggressor}
  ticker: null, dirty: new Set(), frame: 0, painted: 0, candlePainted: 0,
  refresh: { ticker: 0, klines: 0 },   // when a refetch is due (ms), 0: none
  lastStats: null,
};

// ------------------------------------------------------------------ HTTP

async function api(name, params) {
  const query = new URLSearchParams(params).toString();
  const res = await fetch(`/api/${name}?${query}`);
  return res.json();
}

// ------------------------------------------------------------------ the live feed

function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  state.ws = ws;
  ws.onopen = () => { setFeed("live", true); if (state.symbol) subscribe(state.symbol); };
  ws.onclose = () => { setFeed("disconnected, retrying…", false); setTimeout(connect, 1000); };
  ws.onmessage = (msg) => {
    for (const line of msg.data.split("\n")) {
      if (line.startsWith("{")) handle(JSON.parse(line));  // the greeting is a text line (HELLO)
    }
  };
}

function setFeed(text, live) {
  state.live = live;
  $("feed").textContent = text;
  $("feed").className = live ? "status live" : "status";
}

function send(obj) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj));
}

function subscribe(symbol) {
  send({ op: "sub", symbol, kinds: "all" });
}

function handle(m) {
  if (m.symbol !== undefined && m.symbol !== state.symbol && m.type !== "unsubscribed") return;
  switch (m.type) {
    case "subscribed":
      state.last = { book: m.seq, trades: m.seq, quotes: m.seq };
      state.resync = false;
      break;
    case "snapshot":
      state.bids = new Map(m.bids);
      state.asks = new Map(m.asks);
      state.last.book = m.seq;
      mark("book");
      break;
    case "book":
      if (!inOrder("book", m)) return;
      const side = m.side === "BUY" ? state.bids : state.asks;
      if (m.qty === "0" || Number(m.qty) === 0) side.delete(m.price); else side.set(m.price, m.qty);
      mark("book");
      break;
    case "quote":
      if (!inOrder("quotes", m)) return;
      if (state.ticker) {
        state.ticker.bid = m.bid; state.ticker.bid_qty = m.bid_qty;
        state.ticker.ask = m.ask; state.ticker.ask_qty = m.ask_qty;
        mark("ticker");
      }
      break;
    case "trade":
      if (!inOrder("trades", m)) return;
      state.trades.unshift({ time: new Date().toISOString(), price: m.price, qty: m.qty, aggressor: m.aggressor });
      state.trades.length = Math.min(state.trades.length, TRADE_ROWS);
      if (state.ticker) { state.ticker.last = m.price; mark("ticker"); }
      mark("trades");
      onCandle(Number(m.price), Number(m.qty));
      due("ticker", TICKER_EVERY_MS);
      due("klines", KLINES_EVERY_MS);
      break;
    case "err":
      console.warn("market data:", m.code, m.text);
      break;
  }
}

// A lost update: subscribe again (a fresh snapshot and sequence).
function inOrder(kind, m) {
  if (state.resync) return false;  // what was in flight before the new subscription
  if (m.prev > state.last[kind]) {
    state.resync = true;
    console.warn(`gap in ${kind}: prev=${m.prev} > ${state.last[kind]}; resubscribing`);
    send({ op: "unsub", symbol: state.symbol, kinds: "all" });
    subscribe(state.symbol);
    return false;
  }
  state.last[kind] = m.seq;
  return true;
}

// ------------------------------------------------------------------ painting, once per frame

function mark(what) {
  state.dirty.add(what);
  if (state.frame) return;
  const wait = Math.max(0, state.painted + 1000 / PAINTS_PER_SECOND - performance.now());
  state.frame = setTimeout(() => requestAnimationFrame(paint), wait);
}

function due(what, ms) {
  if (!state.refresh[what]) state.refresh[what] = Date.now() + ms;
}

function paint() {
  state.frame = 0;
  state.painted = performance.now();
  const dirty = state.dirty;
  state.dirty = new Set();
  if (dirty.has("book")) { paintBook(); paintDepth(); }
  if (dirty.has("trades")) paintTrades();
  if (dirty.has("ticker")) paintTicker();
  if (dirty.has("candle")) {
    if (state.painted - state.candlePainted >= CANDLE_PAINT_MS) { state.candlePainted = state.painted; paintCandle(); }
    else mark("candle");  // for a later paint
  }
}

function sortedLevels() {
  const bids = [...state.bids].sort((a, b) => Number(b[0]) - Number(a[0]));
  const asks = [...state.asks].sort((a, b) => Number(a[0]) - Number(b[0]));
  return [bids, asks];
}

function paintBook() {
  const [bids, asks] = sortedLevels();
  const rows = [];
  for (let i = 0; i < Math.min(BOOK_ROWS, Math.max(bids.length, asks.length)); i++) {
    const b = bids[i] || ["", ""], a = asks[i] || ["", ""];
    rows.push(`<tr><td class="bid">${b[1]}</td><td class="bid">${b[0]}</td><td class="ask">${a[0]}</td><td class="ask">${a[1]}</td></tr>`);
  }
  setHTML(document.querySelector("#book tbody"), rows.join(""));
}

function paintDepth() {
  const canvas = $("depth"), ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  let [bids, asks] = sortedLevels();
  bids = bids.slice(0, DEPTH_LEVELS); asks = asks.slice(0, DEPTH_LEVELS);
  if (!bids.length && !asks.length) return;
  // Clamp around the mid (or the one side's best): levels further away are left off the
  // chart (the book table lists them), but the best of each side always shows.
  const best = [bids[0], asks[0]].filter(Boolean).map((l) => Number(l[0]));
  const mid = best.reduce((a, b) => a + b, 0) / best.length;
  const near = (levels) => levels.filter((l, i) => i === 0 || Math.abs(Number(l[0]) - mid) <= mid * DEPTH_RANGE);
  bids = near(bids); asks = near(asks);
  const cum = (levels) => { let t = 0; return levels.map(([p, q]) => [Number(p), (t += Number(q))]); };
  const cb = cum(bids), ca = cum(asks);
  const texts = [...bids, ...asks].map((x) => x[0]);  // the prices as the server prints them
  const prices = texts.map(Number);
  const lo = Math.min(...prices), hi = Math.max(...prices), span = hi - lo || 1;
  const loText = texts[prices.indexOf(lo)], hiText = texts[prices.indexOf(hi)];
  canvas.dataset.range = `${loText} ${hiText}`;  // (what the axis shows, for tests and tools)
  const top = Math.max(cb.length ? cb[cb.length - 1][1] : 0, ca.length ? ca[ca.length - 1][1] : 0) || 1;
  const x = (p) => 10 + ((p - lo) / span) * (w - 20), y = (q) => h - 18 - (q / top) * (h - 30);
  const area = (points, color) => {
    if (!points.length) return;
    ctx.beginPath();
    ctx.moveTo(x(points[0][0]), y(0));
    let prev = 0;
    for (const [p, q] of points) { ctx.lineTo(x(p), y(prev)); ctx.lineTo(x(p), y(q)); prev = q; }
    ctx.lineTo(x(points[points.length - 1][0]), y(0));
    ctx.closePath();
    ctx.fillStyle = color + "55"; ctx.fill();
    ctx.strokeStyle = color; ctx.stroke();
  };
  area(cb, "#26a69a");
  area(ca, "#ef5350");
  ctx.fillStyle = "#7b8797"; ctx.font = "11px system-ui";
  ctx.fillText(loText, 4, h - 4);
  ctx.fillText(hiText, w - ctx.measureText(hiText).width - 4, h - 4);
}

function paintTrades() {
  setHTML(document.querySelector("#trades tbody"), state.trades.map((t) =>
    `<tr><td>${t.time.slice(11, 19)}</td><td class="${t.aggressor}">${t.price}</td><td>${t.qty}</td><td class="${t.aggressor}">${t.aggressor}</td></tr>`
  ).join(""));
}

// Only a change costs a layout.
function setHTML(element, html) {
  if (element.dataset.html !== html) { element.innerHTML = html; element.dataset.html = html; }
}

function paintTicker() {
  const t = state.ticker;
  if (!t) return;
  const show = (v) => (v === null || v === undefined ? "-" : v);
  $("tk-symbol").textContent = t.symbol;
  $("tk-last").textContent = show(t.last);
  $("tk-change").textContent = t.change === null ? "" : `${t.change} (${t.change_pct}%)`;
  $("tk-change").className = t.change && t.change.startsWith("-") ? "down" : "up";
  for (const k of ["open", "high", "low", "volume", "vwap", "trades"]) $(`tk-${k}`).textContent = show(t[k]);
  $("tk-quote").textContent = show(t.quote_volume);
  $("tk-bid").textContent = t.bid ? `${t.bid} × ${t.bid_qty}` : "-";
  $("tk-ask").textContent = t.ask ? `${t.ask} × ${t.ask_qty}` : "-";
}

// ------------------------------------------------------------------ candles

const charts = {};

function makeChart() {
  if (typeof LightweightCharts === "undefined") { $("charts-missing").hidden = false; return; }
  const L = LightweightCharts;
  const chart = L.createChart($("candles"), {
    autoSize: true,
    layout: { background: { color: "#171d26" }, textColor: "#d8dee9" },
    grid: { vertLines: { color: "#1f2733" }, horzLines: { color: "#1f2733" } },
    timeScale: { timeVisible: true, secondsVisible: false },
  });
  charts.candles = chart.addSeries(L.CandlestickSeries, { upColor: "#26a69a", downColor: "#ef5350", wickUpColor: "#26a69a", wickDownColor: "#ef5350", borderVisible: false });
  // Volume on its own overlay scale, with no label of its own on the price axis (it covered the prices).
  charts.volume = chart.addSeries(L.HistogramSeries, {
    priceScaleId: "", priceFormat: { type: "volume" }, color: "#3a4a5e", lastValueVisible: false, priceLineVisible: false,
  });
  charts.volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
}

// A trade moves the last candle at once (by this browser's clock); the refetch every
// KLINES_EVERY_MS puts the server's candles back.
function onCandle(price, qty) {
  if (!charts.candles || !state.lastCandle) return;
  const seconds = { "1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400 }[state.interval];
  const start = Math.floor(Date.now() / 1000 / seconds) * seconds;
  let c = state.lastCandle;
  if (start > c.time) c = { time: start, open: price, high: price, low: price, close: price, volume: 0 };
  c.high = Math.max(c.high, price); c.low = Math.min(c.low, price); c.close = price; c.volume += qty;
  state.lastCandle = c;
  state.dirty.add("candle");
}

function paintCandle() {
  const c = state.lastCandle;
  if (!c || !charts.candles) return;
  charts.candles.update({ time: c.time, open: c.open, high: c.high, low: c.low, close: c.close });
  charts.volume.update({ time: c.time, value: c.volume, color: c.close >= c.open ? "#26a69a66" : "#ef535066" });
}

async function loadKlines() {
  const reply = await api("klines", { symbol: state.symbol, interval: state.interval, limit: 300 });
  if (!charts.candles || reply.type !== "klines" || reply.symbol !== state.symbol) return;
  const t = (c) => Date.parse(c.time) / 1000;
  charts.candles.setData(reply.candles.map((c) => ({ time: t(c), open: +c.open, high: +c.high, low: +c.low, close: +c.close })));
  const last = reply.candles[reply.candles.length - 1];
  state.lastCandle = last && { time: t(last), open: +last.open, high: +last.high, low: +last.low, close: +last.close, volume: +last.volume };
  charts.volume.setData(reply.candles.map((c) => ({ time: t(c), value: +c.volume, color: +c.close >= +c.open ? "#26a69a66" : "#ef535066" })));
}

function intervalButtons() {
  $("intervals").innerHTML = INTERVALS.map((i) => `<button data-i="${i}" class="${i === state.interval ? "on" : ""}">${i}</button>`).join("");
  for (const b of $("intervals").querySelectorAll("button")) {
    b.onclick = () => { state.interval = b.dataset.i; intervalButtons(); loadKlines(); };
  }
}

// ------------------------------------------------------------------ symbol, ticker, server figures

async function choose(symbol) {
  if (state.symbol) send({ op: "unsub", symbol: state.symbol, kinds: "all" });
  state.symbol = symbol;
  state.bids = new Map(); state.asks = new Map(); state.trades = []; state.ticker = null;
  subscribe(symbol);
  const [ticker, trades] = await Promise.all([api("ticker", { symbol }), api("trades", { symbol, limit: TRADE_ROWS })]);
  if (symbol !== state.symbol) return;
  state.ticker = ticker.type === "ticker" ? ticker : null;
  if (trades.type === "trades") {
    // What arrived live while we asked stays on top; the history follows it.
    const seen = state.trades.length;
    state.trades = state.trades.concat(trades.trades.slice(seen));
  }
  mark("ticker"); mark("trades");
  loadKlines();
}

async function loadTicker() {
  const reply = await api("ticker", { symbol: state.symbol });
  if (reply.type === "ticker" && reply.symbol === state.symbol) { state.ticker = reply; mark("ticker"); }
}

function fmtBytes(n) {
  return n > 1 << 30 ? (n / (1 << 30)).toFixed(2) + " GiB" : (n / (1 << 20)).toFixed(1) + " MiB";
}

function fmtUs(us) {
  return us >= 1000 ? (us / 1000).toFixed(1) + " ms" : us + " µs";
}

async function loadStats() {
  const reply = await api("stats", {});
  if (reply.type !== "stats") return;
  const f = reply.figures, now = performance.now();
  $("sv-sessions").textContent = f.gateway_sessions;
  $("sv-subscribers").textContent = f.md_subscribers;
  $("sv-orders").textContent = f.orders_total;
  $("sv-trade-count").textContent = f.trades_total;
  $("sv-ack").textContent = `${fmtUs(f.gateway_ack_p50_us)} / ${fmtUs(f.gateway_ack_p99_us)}`;
  $("sv-fsync").textContent = `${fmtUs(f.journal_fdatasync_p50_us)} / ${fmtUs(f.journal_fdatasync_p99_us)}`;
  $("sv-seq").textContent = f.journal_seq;
  $("sv-journal-backlog").textContent = f.journal_backlog_orders;
  $("sv-tradelog").textContent = f.tradelog_backlog_rows;
  $("sv-memory").textContent = fmtBytes(f.memory_rss_bytes);
  if (state.lastStats) {
    const seconds = (now - state.lastStats.at) / 1000;
    $("sv-rate").textContent = Math.round((f.orders_total - state.lastStats.orders) / seconds);
  }
  state.lastStats = { at: now, orders: f.orders_total };
}

function tick() {
  const now = Date.now();
  if (state.refresh.ticker && now >= state.refresh.ticker) { state.refresh.ticker = 0; loadTicker(); }
  if (state.refresh.klines && now >= state.refresh.klines) { state.refresh.klines = 0; loadKlines(); }
}

function notice(text) {
  const n = $("notice");
  n.textContent = text;
  n.hidden = !text;
}

async function main() {
  makeChart();
  intervalButtons();
  const symbols = await api("symbols", {});
  const select = $("symbol");
  select.innerHTML = symbols.symbols.map((s) => `<option>${s.symbol}</option>`).join("");
  const wanted = new URLSearchParams(location.search).get("symbol");
  if (wanted) {
    const known = symbols.symbols.some((s) => s.symbol === wanted.toUpperCase());
    if (known) select.value = wanted.toUpperCase();
    else notice(`no such symbol ${wanted.slice(0, 24)}; showing ${select.value}`);
  }
  select.onchange = () => { notice(""); choose(select.value); };
  connect();
  await choose(select.value);
  loadStats();
  setInterval(loadStats, 1000);
  setInterval(tick, 250);
}

main();
