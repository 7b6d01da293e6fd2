"""The text line codec: bytes in, lines out; a line in, a typed request out. No I/O.

One request per line, ASCII, LF or CRLF; keywords and symbols are case-insensitive;
tokens are separated by spaces. Telnet option negotiation (IAC ...) is dropped.
"""

from __future__ import annotations

import re
from typing import Sequence

from protocol.requests import (
    MAX_DIGITS,
    BadRequest,
    BalancesQuery,
    BookQuery,
    Buy,
    CancelAll,
    CancelOrder,
    Help,
    KlinesQuery,
    Login,
    OrdersQuery,
    Ping,
    Quit,
    ReplaceOrder,
    ReportsQuery,
    Request,
    Sell,
    StatsQuery,
    SymbolsQuery,
    TickerQuery,
    TradesQuery,
    is_number,
)

MAX_LINE = 4096
TOO_LONG = None  # the marker LineSplitter.feed emits for a line over MAX_LINE

# IAC SB ... IAC SE | IAC WILL/WONT/DO/DONT <option> | IAC <command>
_TELNET = re.compile(rb"\xff\xfa.*?\xff\xf0|\xff[\xfb-\xfe].|\xff[\xf0-\xff]", re.DOTALL)
TIFS = frozenset(("GTC", "IOC", "FOK", "POST"))
# Single bytes looked for as ints: `b"\r" in data` makes CPython 3.11's bytes.__contains__
# try the needle as an int first, raise a TypeError and clear it (~2,000 instructions,
# 3 a packet: 4% of an order at 10,000/s by callgrind); `13 in data` is a memchr.
NUL, CR, IAC = 0, 13, 255


class LineSplitter:
    """Splits a byte stream into lines, bounded: no line grows past MAX_LINE in memory.

    feed() returns the complete lines (without CR/LF); a line that passes the limit yields
    one TOO_LONG marker as soon as it does, and the rest of it is discarded up to its LF.
    """

    __slots__ = ("limit", "_partial", "_discarding")

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self._partial = b""
        self._discarding = False

    def feed(self, data: bytes) -> Sequence[bytes | None]:
        if NUL in data:  # telnet's bare Enter is CR NUL (RFC 854): an end of line
            data = data.replace(b"\r\x00", b"\n")
            if data[:1] == b"\x00" and self._partial.endswith(b"\r"):  # CR at the end of the last packet
                data = b"\n" + data[1:]
        parts = data.split(b"\n")
        tail = parts.pop()  # after the last LF: an incomplete line (often b"")
        if (
            parts and not self._partial and not self._discarding and not tail
            and CR not in data and IAC not in data
            and (len(data) <= self.limit or max(map(len, parts)) <= self.limit)
        ):  # fmt: skip
            return parts  # the common case: whole plain lines, none too long
        out: list[bytes | None] = []
        if parts:
            first = self._partial + parts[0] if self._partial else parts[0]
            parts[0] = first
            self._partial = b""
            for line in parts:
                if self._discarding:
                    self._discarding = False  # this LF ends the long line
                    continue
                if line.endswith(b"\r"):
                    line = line[:-1]
                if len(line) > self.limit:
                    out.append(TOO_LONG)
                    continue
                if IAC in line:
                    line = _TELNET.sub(b"", line)
                out.append(line)
        if self._discarding:
            return out
        partial = self._partial + tail if self._partial else tail
        if len(partial) > self.limit:
            out.append(TOO_LONG)
            self._partial = b""
            self._discarding = True
        else:
            self._partial = partial
        return out

    @property
    def pending(self) -> int:
        """Bytes held for an incomplete line."""
        return len(self._partial)


def _order(side: type[Buy] | type[Sell], args: list[str]) -> Request | BadRequest:
    if len(args) < 2:
        verb = side.__name__.upper()
        return BadRequest(
            "bad_request", f"usage: {verb} <symbol> <qty> [<price>] [STOP=<price>] [SHOW=<qty>] [GTC|IOC|FOK|POST] [id=<client-order-id>] [oco=<client-order-id>]"
        )
    price = tif = None
    at = False  # "@" came before the price ("BUY AAPL 10 @ 150.25", as people write it)
    options: dict[str, str] = {}  # id=, stop=, show=, oco=
    for token in args[2:]:
        if token[0] in _PRICE_START and price is None and tif is None and not options:
            price = token  # validated against the tick by the instrument
            continue
        upper = token.upper()
        key, eq, value = token.partition("=")
        if eq and key.lower() in ORDER_OPTIONS:
            if key.lower() in options:
                return BadRequest("bad_request", f"{key.lower()}= given twice")
            options[key.lower()] = value
        elif upper in TIFS:
            if tif is not None:
                return BadRequest("bad_request", f"time in force given twice ({tif} and {upper})")
            tif = upper
        elif upper == "MKT" and price is None:
            price = "MKT"
        elif token[0] == "@" and not at and price is None and tif is None and not options:
            at, rest = True, token[1:]  # (tested after the common tokens: they pay nothing for it)
            if rest:  # "@150.25"
                price = "MKT" if rest.upper() == "MKT" else rest
        elif price is None and tif is None and not options:
            price = token
        else:
            return BadRequest("bad_request", f"unexpected {_show(token)}; expected [<price>] [STOP=<price>] [SHOW=<qty>] [GTC|IOC|FOK|POST] [id=...] [oco=<id>]")
    if at and price is None:
        return BadRequest("bad_request", "'@' must be followed by a price")
    get = options.get
    return side(args[0].upper(), args[1], None if price == "MKT" else price, tif, get("id"), get("stop"), get("show"), get("oco"))


_PRICE_START = frozenset("0123456789.-+")
ORDER_OPTIONS = frozenset(("id", "stop", "show", "oco"))  # key=value tokens of an order


def _int_arg(text: str, what: str) -> int | BadRequest:
    if is_number(text):
        return int(text)
    if text.isascii() and text.isdigit():
        return BadRequest("bad_request", f"{what} {_show(text)} is too large (at most {MAX_DIGITS} digits)")
    return BadRequest("bad_request", f"{what} {_show(text)} is not a number")


# The lines an algorithm sends most, written as it writes them (upper-case words one space
# apart, a lower-case id=): one match in C instead of the tokenizer below, 27% fewer
# instructions per line. Anything else (lower case, more spaces, other options, an error)
# goes the general way, which reads these lines the same (tests/test_protocol.py checks).
_COMMON = re.compile(
    r"(BUY|SELL) ([A-Z][A-Z0-9-]*) ([0-9.]+)(?: ([0-9.]+))?(?: (GTC|IOC|FOK|POST))?(?: id=([!-~]+))?"
    rf"|CANCEL (?:id=([!-~]+)|([0-9]{{1,{MAX_DIGITS}}}))"
    rf"|REPLACE (?:id=([!-~]+)|([0-9]{{1,{MAX_DIGITS}}})) ([0-9.]+)(?: ([0-9.]+))?",
    re.ASCII,
)


def parse_line(line: bytes) -> Request | BadRequest | None:
    """One text line to a request; None for a blank line (ignored, no reply)."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return BadRequest("bad_encoding", "the line is not ASCII text")
    common = _COMMON.fullmatch(text)
    if common is None:
        return parse_words(text)
    side, symbol, qty, price, tif, cid, cancel_cid, cancel_id, replace_cid, replace_id, new_qty, new_price = common.groups()
    if side is not None:
        return (Buy if side == "BUY" else Sell)(symbol, qty, price, tif, cid)
    if new_qty is not None:
        return ReplaceOrder(new_qty, None if replace_id is None else int(replace_id), new_price, replace_cid)
    return CancelOrder(None if cancel_id is None else int(cancel_id), cancel_cid)


def parse_words(text: str) -> Request | BadRequest | None:
    """parse_line's general way: any line, split at whitespace, words in any case."""
    args = text.split()
    if not args:
        return None
    verb = args.pop(0).upper()
    if verb == "BUY":
        return _order(Buy, args)
    if verb == "SELL":
        return _order(Sell, args)
    if verb == "CANCEL":
        if args and args[0].upper() == "ALL" and len(args) <= 2:
            return CancelAll(args[1].upper() if len(args) == 2 else None)
        if len(args) != 1:
            return BadRequest("bad_request", "usage: CANCEL <order-id> | CANCEL id=<client-order-id> | CANCEL ALL [<symbol>]")
        if args[0].upper().startswith("ID="):
            return CancelOrder(None, args[0][3:])
        order_id = _int_arg(args[0], "order id")
        return order_id if isinstance(order_id, BadRequest) else CancelOrder(order_id)
    if verb == "REPLACE":
        if len(args) > 2 and args[2][:1] == "@":  # "REPLACE 12 2 @ 101", as an order's price may be written
            args = [*args[:2], *([args[2][1:]] if args[2] != "@" else []), *args[3:]]
            if len(args) == 2:
                return BadRequest("bad_request", "'@' must be followed by a price")
        if len(args) not in (2, 3):
            return BadRequest("bad_request", "usage: REPLACE <order-id> <qty> [<price>] | REPLACE id=<client-order-id> <qty> [<price>]")
        price = args[2] if len(args) == 3 else None
        if args[0].upper().startswith("ID="):
            return ReplaceOrder(args[1], price=price, id=args[0][3:])
        order_id = _int_arg(args[0], "order id")
        if isinstance(order_id, BadRequest):
            return order_id
        return ReplaceOrder(args[1], order_id, price)
    if verb == "BOOK":
        if len(args) not in (1, 2):
            return BadRequest("bad_request", "usage: BOOK <symbol> [<levels>]")
        levels = _int_arg(args[1], "levels") if len(args) == 2 else 10
        return levels if isinstance(levels, BadRequest) else BookQuery(args[0].upper(), levels)
    if verb == "REPORTS":
        if len(args) != 1 or not args[0].lower().startswith("since="):
            return BadRequest("bad_request", "usage: REPORTS since=<seq>   (0: all; a seq from an order id, a trade id or a REPORTS reply's through=)")
        since = _int_arg(args[0][6:], "since")
        return since if isinstance(since, BadRequest) else ReportsQuery(since)
    if verb == "TICKER":
        if len(args) != 1:
            return BadRequest("bad_request", "usage: TICKER <symbol>")
        return TickerQuery(args[0].upper())
    if verb == "KLINES":
        if len(args) < 2:
            return BadRequest("bad_request", "usage: KLINES <symbol> <1m|5m|15m|1h|1d> [from=<time>] [to=<time>] [limit=<n>]")
        options = _options(args[2:], ("from", "to", "limit"))
        if isinstance(options, BadRequest):
            return options
        limit = _int_arg(options.get("limit", "500"), "limit")
        if isinstance(limit, BadRequest):
            return limit
        return KlinesQuery(args[0].upper(), args[1].lower(), options.get("from"), options.get("to"), limit)
    if verb == "TRADES":
        if not args:
            return BadRequest("bad_request", "usage: TRADES <symbol> [limit=<n>] [before=<trade-id>]")
        options = _options(args[1:], ("limit", "before"))
        if isinstance(options, BadRequest):
            return options
        limit = _int_arg(options.get("limit", "50"), "limit")
        if isinstance(limit, BadRequest):
            return limit
        return TradesQuery(args[0].upper(), limit, options.get("before"))
    if verb == "ORDERS":
        return _orders_query(args)
    if verb == "LOGIN":
        if len(args) not in (2, 3) or len(args) == 3 and args[2].lower() != "cancel_on_disconnect":
            return BadRequest("bad_request", "usage: LOGIN <name> <password> [cancel_on_disconnect]")
        return Login(args[0], args[1], len(args) == 3)
    simple = _SIMPLE.get(verb)
    if simple is not None:
        if args:
            return BadRequest("bad_request", f"{verb} takes no arguments")
        return simple
    if verb in MARKET_DATA_VERBS:
        return BadRequest("unknown_command", f"{verb} is a market-data command: this is the order-entry port (market data is on its own port, 7002 by default)")
    return BadRequest("unknown_command", f"unknown command {_show(verb)}; type HELP")


# Each port's verbs, so that one typed on the other port is answered with where it goes.
MARKET_DATA_VERBS = frozenset(("SUB", "UNSUB", "REPLAY"))
ORDER_ENTRY_VERBS = frozenset(("BUY", "SELL", "CANCEL", "REPLACE", "BOOK", "ORDERS", "LOGIN", "BALANCES", "REPORTS", "SYMBOLS", "TICKER", "KLINES", "TRADES", "STATS"))


_SIMPLE: dict[str, Request] = {
    "SYMBOLS": SymbolsQuery(),
    "PING": Ping(),
    "HELP": Help(),
    "QUIT": Quit(),
    "BALANCES": BalancesQuery(),
    "STATS": StatsQuery(),
    "EXIT": Quit(),
}


def _orders_query(args: list[str]) -> OrdersQuery | BadRequest:
    """ORDERS [<symbol>] [limit=<n>] [after=<order id>]"""
    symbol = args[0].upper() if args and "=" not in args[0] else None
    options = _options(args[1:] if symbol else args, ("limit", "after"))
    if isinstance(options, BadRequest):
        return options
    limit, after = _int_arg(options.get("limit", "1000"), "limit"), _int_arg(options.get("after", "0"), "after")
    if isinstance(limit, BadRequest):
        return limit
    if isinstance(after, BadRequest):
        return after
    return OrdersQuery(symbol, limit, after)


def _options(tokens: list[str], names: tuple[str, ...]) -> dict[str, str] | BadRequest:
    """key=value tokens, each of the names at most once."""
    out: dict[str, str] = {}
    for token in tokens:
        key, eq, value = token.partition("=")
        key = key.lower()
        if not eq or key not in names:
            return BadRequest("bad_request", f"unexpected {_show(token)}; expected " + " ".join(f"{n}=..." for n in names))
        if key in out:
            return BadRequest("bad_request", f"{key}= given twice")
        out[key] = value
    return out


def clip(text: str, limit: int = 24) -> str:
    """Client text fit to stand in a reply: cut short, repr'd if it could break the line."""
    shown = text if len(text) <= limit else text[: limit - 3] + "..."
    return shown if shown.isprintable() and " " not in shown else repr(shown)


def _show(token: str) -> str:
    """A token in quotes (tokens never hold spaces)."""
    shown = clip(token)
    return shown if shown[:1] in ("'", '"') else f"'{shown}'"


HELP_LINES = [
    "BUY  <symbol> <qty> [<price>] [STOP=<price>] [SHOW=<qty>] [GTC|IOC|FOK|POST] [id=<client-order-id>]   no price: market order",
    "SELL <symbol> <qty> [<price>] [STOP=<price>] [SHOW=<qty>] [GTC|IOC|FOK|POST] [id=<client-order-id>]",
    "     STOP=<price>: a stop, off the book until a trade reaches it (BUY: at or above, SELL: at or below)",
    "     SHOW=<qty>: an iceberg, showing that much at a time (each new slice at the back of its level)",
    "     oco=<cid>: paired with your open order <cid> (same symbol): when one trades or is canceled, the other is canceled",
    "CANCEL <order-id> | CANCEL id=<client-order-id>",
    "CANCEL ALL [<symbol>]                  every open order of yours (in that symbol), then CANCELED_ALL <n>",
    "REPLACE <order-id> <qty> [<price>]     qty is the new open quantity (or REPLACE id=<cid> ...)",
    "BOOK <symbol> [<levels>]               price levels, best first (default 10)",
    "ORDERS [<sym>] [limit=<n>] [after=<id>] your open orders, 1000 a page (next=<id> in the reply: there are more)",
    "SYMBOLS                                what trades here, with tick and lot sizes",
    "LOGIN <name> <password> [cancel_on_disconnect]   trade as your account (orders need it)",
    "BALANCES                               your available and locked amounts per asset",
    "REPORTS since=<seq>                    your execution reports since a journal seq (after a reconnect: what you missed)",
    "TICKER <symbol>                        last price, 24 h open/high/low/change, volume, VWAP, best bid/ask",
    "KLINES <symbol> <1m|5m|15m|1h|1d> [from=<time>] [to=<time>] [limit=<n>]   candles, oldest first",
    "TRADES <symbol> [limit=<n>] [before=<trade-id>]   recent trades, newest first",
    "STATS                                  the server's figures (as on /metrics)",
    "PING | HELP | QUIT",
    "A line starting with { is a JSON request, e.g.",
    '{"op":"buy","symbol":"AAPL","qty":"10","price":"150.25","tif":"IOC","id":"c1"}',
]
