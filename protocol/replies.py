"""Order-entry replies: one Struct per kind, formatted as a text line or a JSON line.

Text replies are one line each, the kind first, the order id second where there is one,
key=value tokens next, a human sentence (if any) last. Multi-line replies (BOOK, ORDERS,
SYMBOLS, HELP) end with a line `END`. Quantities and prices are already decimal strings
formatted by the symbol's instrument. docs/PROTOCOL.md shows every form.
"""

from __future__ import annotations

import msgspec

from protocol.reply_text import _id, _oco, _opt, _show, _stop, ack_text, canceled_text, fill_text, reject_text, replaced_text, triggered_text


class _Reply(msgspec.Struct, frozen=True, tag_field="type", omit_defaults=True):
    """Every reply is a JSON object tagged by "type"; absent optional fields are left out."""


class Ack(_Reply, frozen=True, tag="ack"):
    order_id: int
    side: str
    symbol: str
    qty: str
    price: str  # "MKT" for a market order
    tif: str
    id: str | None = None
    stop: str | None = None  # a stop: its trigger (pending until a trade reaches it)
    show: str | None = None  # an iceberg: the quantity shown at a time
    oco: int | None = None  # the order it is paired with (one cancels the other)


class TriggeredReport(_Reply, frozen=True, tag="triggered"):
    """A stop fired: a limit order (price) or a market order (MKT) from now on."""

    order_id: int
    symbol: str
    side: str
    qty: str
    price: str
    stop: str
    id: str | None = None


class CanceledAll(_Reply, frozen=True, tag="canceled_all"):
    """CANCEL ALL is done: how many orders it canceled (each had its CANCELED line first)."""

    count: int


class FillReport(_Reply, frozen=True, tag="fill"):
    order_id: int
    symbol: str
    side: str
    qty: str
    price: str
    leaves: str
    trade: str
    liq: str  # A: added liquidity (maker), R: removed it (taker)
    id: str | None = None


class CanceledReport(_Reply, frozen=True, tag="canceled"):
    order_id: int
    leaves: str
    reason: str
    id: str | None = None


class ReplacedReport(_Reply, frozen=True, tag="replaced"):
    order_id: int
    qty: str
    price: str
    priority: str  # kept | lost
    id: str | None = None


class Reject(_Reply, frozen=True, tag="rej"):
    reason: str
    text: str
    id: str | None = None
    order_id: int | None = None


class Error(_Reply, frozen=True, tag="err"):
    code: str
    text: str


class Hello(_Reply, frozen=True, tag="hello"):
    version: str


class LoggedIn(_Reply, frozen=True, tag="logged_in"):
    account: str
    open_orders: int


class Balance(msgspec.Struct, frozen=True):
    asset: str
    available: str
    locked: str


class BalancesReply(_Reply, frozen=True, tag="balances"):
    account: str
    balances: list[Balance]


class Pong(_Reply, frozen=True, tag="pong"):
    pass


class Bye(_Reply, frozen=True, tag="bye"):
    text: str


class BookReply(_Reply, frozen=True, tag="book"):
    symbol: str
    bids: list[tuple[str, str]]  # (price, total qty), best first
    asks: list[tuple[str, str]]


class OpenOrder(msgspec.Struct, frozen=True, omit_defaults=True):
    order_id: int
    side: str
    symbol: str
    qty: str  # open (leaves) quantity
    price: str
    tif: str
    id: str | None = None
    stop: str | None = None  # a pending stop's trigger
    show: str | None = None  # an iceberg's slice
    oco: int | None = None  # the order it is paired with


class OrdersReply(_Reply, frozen=True, tag="orders"):
    orders: list[OpenOrder]
    next: int | None = None  # more open orders: ask ORDERS after=<next> for them


class SymbolInfo(msgspec.Struct, frozen=True):
    symbol: str
    tick: str
    lot: str
    min_qty: str
    max_qty: str
    min_price: str
    max_price: str


class SymbolsReply(_Reply, frozen=True, tag="symbols"):
    symbols: list[SymbolInfo]


class HelpReply(_Reply, frozen=True, tag="help"):
    lines: list[str]


ReportStruct = FillReport | CanceledReport | ReplacedReport | TriggeredReport | Reject


class ReportsReply(_Reply, frozen=True, tag="reports"):
    """Execution reports caused by commands with seq in (since, through], oldest first."""

    since: int
    through: int  # pass it as since= next time to get only what is newer
    reports: list[ReportStruct]
    more: bool = False  # a page (journal/queries.py MAX_REPORTS_PAGE): there are reports after through


class TickerReply(_Reply, frozen=True, tag="ticker"):
    """A symbol over the window [since, time]: 24 hours of one-minute candles. Prices are
    None (text: -) where there is nothing to show: no trade in the window, an empty side."""

    symbol: str
    time: str  # when it was computed (UTC)
    since: str  # the window's start: the one-minute candle 24 h back
    last: str | None  # the last trade's price, however old
    open: str | None
    high: str | None
    low: str | None
    change: str | None  # last - open
    change_pct: str | None  # in percent, two decimals
    volume: str  # base quantity traded in the window
    quote_volume: str  # in the quote asset
    vwap: str | None  # quote volume / volume, two more decimals than the tick
    trades: int
    bid: str | None
    bid_qty: str | None
    ask: str | None
    ask_qty: str | None


class Candle(msgspec.Struct, frozen=True):
    time: str  # the interval's start, UTC
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    trades: int


class KlinesReply(_Reply, frozen=True, tag="klines"):
    """Candles oldest first; an interval without trades has no candle."""

    symbol: str
    interval: str
    candles: list[Candle]


class PublicTrade(msgspec.Struct, frozen=True):
    trade_id: str
    time: str
    qty: str
    price: str
    aggressor: str  # BUY or SELL: the taker's side


class TradesReply(_Reply, frozen=True, tag="trades"):
    """Trades newest first; ask again with before=<the last one's trade_id> for older ones."""

    symbol: str
    trades: list[PublicTrade]


class StatsReply(_Reply, frozen=True, tag="stats"):
    """The server's figures (the same as /metrics), by name."""

    figures: dict[str, int]


Reply = (
    Ack | FillReport | CanceledReport | ReplacedReport | TriggeredReport | CanceledAll | Reject | Error | Hello | LoggedIn | Pong | Bye
    | BookReply | OrdersReply | SymbolsReply | HelpReply | ReportsReply | BalancesReply
    | TickerReply | KlinesReply | TradesReply | StatsReply
)  # fmt: skip


def to_text(r: Reply) -> bytes:
    """One reply as text, ending in LF (several lines for BOOK, ORDERS, SYMBOLS, HELP)."""
    # type(r) is C, not match/isinstance: this runs for every REJ and is 2.5x faster.
    if type(r) is Ack:
        return ack_text(r.order_id, r.side, r.symbol, r.qty, r.price, r.tif, r.id, r.stop, r.show, r.oco)
    elif type(r) is FillReport:
        return fill_text(r.order_id, r.symbol, r.side, r.qty, r.price, r.leaves, r.trade, r.liq, r.id)
    elif type(r) is CanceledReport:
        return canceled_text(r.order_id, r.leaves, r.reason, r.id)
    elif type(r) is ReplacedReport:
        return replaced_text(r.order_id, r.qty, r.price, r.priority, r.id)
    elif type(r) is TriggeredReport:
        return triggered_text(r.order_id, r.symbol, r.side, r.qty, r.price, r.stop, r.id)
    elif type(r) is Reject:
        return reject_text(r.reason, r.text, r.id, r.order_id)
    elif type(r) is Error:
        s = f"ERR {r.code} {r.text}\n"
    elif type(r) is Pong:
        s = "PONG\n"
    elif type(r) is CanceledAll:
        s = f"CANCELED_ALL {r.count}\n"
    elif type(r) is Hello:
        s = f"HELLO tickline {r.version} log in with LOGIN <name> <password>; type HELP for commands\n"
    elif type(r) is LoggedIn:
        s = f"LOGGED_IN account={r.account} open={r.open_orders}\n"
    elif type(r) is BalancesReply:
        lines = [f"BALANCES {r.account} {len(r.balances)}"]
        lines += [f"BALANCE {b.asset} available={b.available} locked={b.locked}" for b in r.balances]
        s = "\n".join(lines) + "\nEND\n"
    elif type(r) is Bye:
        s = f"BYE {r.text}\n"
    elif type(r) is BookReply:
        lines = [f"BOOK {r.symbol} bids={len(r.bids)} asks={len(r.asks)}"]
        lines += [f"BID {p} {q}" for p, q in r.bids]
        lines += [f"ASK {p} {q}" for p, q in r.asks]
        s = "\n".join(lines) + "\nEND\n"
    elif type(r) is OrdersReply:
        lines = [f"ORDERS {len(r.orders)}" + ("" if r.next is None else f" next={r.next}")]
        lines += [f"ORDER {o.order_id} {o.side} {o.symbol} {o.qty} {o.price} {o.tif}{_stop(o.stop)}{_show(o.show)}{_id(o.id)}{_oco(o.oco)}" for o in r.orders]
        s = "\n".join(lines) + "\nEND\n"
    elif type(r) is SymbolsReply:
        lines = [f"SYMBOLS {len(r.symbols)}"]
        lines += [f"SYMBOL {i.symbol} tick={i.tick} lot={i.lot} min_qty={i.min_qty} max_qty={i.max_qty} min_price={i.min_price} max_price={i.max_price}" for i in r.symbols]
        s = "\n".join(lines) + "\nEND\n"
    elif type(r) is HelpReply:
        s = "HELP\n" + "".join(f"  {line}\n" for line in r.lines) + "END\n"
    elif type(r) is TickerReply:
        s = (
            f"TICKER {r.symbol} last={_opt(r.last)} open={_opt(r.open)} high={_opt(r.high)} low={_opt(r.low)} "
            f"change={_opt(r.change)} change_pct={_opt(r.change_pct)} volume={r.volume} quote_volume={r.quote_volume} "
            f"vwap={_opt(r.vwap)} trades={r.trades} bid={_opt(r.bid)} bid_qty={_opt(r.bid_qty)} ask={_opt(r.ask)} ask_qty={_opt(r.ask_qty)} "
            f"since={r.since} time={r.time}\n"
        )
    elif type(r) is KlinesReply:
        lines = [f"KLINES {r.symbol} {r.interval} count={len(r.candles)}"]
        lines += [f"CANDLE {c.time} {c.open} {c.high} {c.low} {c.close} {c.volume} quote={c.quote_volume} trades={c.trades}" for c in r.candles]
        s = "\n".join(lines) + "\nEND\n"
    elif type(r) is TradesReply:
        lines = [f"TRADES {r.symbol} count={len(r.trades)}"]
        lines += [f"TRADE {t.trade_id} {t.time} {t.qty} {t.price} {t.aggressor}" for t in r.trades]
        s = "\n".join(lines) + "\nEND\n"
    elif type(r) is StatsReply:
        s = "STATS " + " ".join(f"{k}={v}" for k, v in r.figures.items()) + "\n"
    elif type(r) is ReportsReply:
        head = f"REPORTS since={r.since} through={r.through} count={len(r.reports)}{' more' if r.more else ''}\n".encode()
        return head + b"".join(to_text(x) for x in r.reports) + b"END\n"
    else:
        raise TypeError(f"not a reply: {r!r}")
    return s.encode()


_json = msgspec.json.Encoder()


def to_json(r: Reply) -> bytes:
    """One reply as a JSON object on one line, tagged by "type"."""
    return _json.encode(r) + b"\n"
