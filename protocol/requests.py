"""Order-entry requests as they arrive on the wire: decimal strings, not yet validated.

The text codec (protocol/text.py) and the JSON codec both produce these Structs; a JSON
request is one object per line with an "op" tag, e.g.
    {"op":"buy","symbol":"AAPL","qty":"10","price":"150.25","tif":"IOC","id":"c1"}
The gateway turns them into exchange commands (integers) with the symbol's instrument.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

# An order id, a journal sequence, a page size: at most 18 digits, in JSON as in text (an
# integer past what msgpack, the journal and SQLite hold must never get past the codec).
MAX_DIGITS = 18
Number = Annotated[int, msgspec.Meta(ge=0, le=10**MAX_DIGITS - 1)]


def is_number(text: str) -> bool:
    """Text that is a Number: ASCII digits (int() takes other scripts' too), at most MAX_DIGITS."""
    return text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS


class _Request(msgspec.Struct, frozen=True, tag_field="op", forbid_unknown_fields=True):
    """Every request is a JSON object tagged by "op"; unknown fields are refused."""


class Buy(_Request, frozen=True, tag="buy"):
    symbol: str
    qty: str
    price: str | None = None  # None: a market order
    tif: str | None = None  # GTC (default for limits), IOC (default for market), FOK, POST
    id: str | None = None  # the client's order id
    stop: str | None = None  # a stop's trigger price: held off the book until a trade reaches it
    show: str | None = None  # an iceberg: the quantity shown at a time
    oco: str | None = None  # the client id of an open order of yours to pair with: one cancels the other


class Sell(_Request, frozen=True, tag="sell"):
    symbol: str
    qty: str
    price: str | None = None
    tif: str | None = None
    id: str | None = None
    stop: str | None = None
    show: str | None = None
    oco: str | None = None


class CancelOrder(_Request, frozen=True, tag="cancel"):
    order_id: Number | None = None
    id: str | None = None  # cancel by client order id instead


class CancelAll(_Request, frozen=True, tag="cancel_all"):
    symbol: str | None = None  # None: in every symbol


class ReplaceOrder(_Request, frozen=True, tag="replace"):
    qty: str
    order_id: Number | None = None
    price: str | None = None  # None keeps the price
    id: str | None = None  # replace by client order id instead


class BookQuery(_Request, frozen=True, tag="book"):
    symbol: str
    levels: Number = 10


class OrdersQuery(_Request, frozen=True, tag="orders"):
    """A page of the caller's open orders, in order id order: those after `after`, in
    `symbol` if given, at most `limit` (the reply's `next` asks for the rest)."""

    symbol: str | None = None
    limit: Number = 1000
    after: Number = 0


class SymbolsQuery(_Request, frozen=True, tag="symbols"):
    pass


class Ping(_Request, frozen=True, tag="ping"):
    pass


class Help(_Request, frozen=True, tag="help"):
    pass


class Quit(_Request, frozen=True, tag="quit"):
    pass


class Login(_Request, frozen=True, tag="login"):
    name: str
    password: str
    cancel_on_disconnect: bool = False  # the orders entered on this connection are canceled when it closes

    def __repr__(self) -> str:  # a password never reaches a log line
        return f"Login(name={self.name!r}, password=<hidden>)"


class BalancesQuery(_Request, frozen=True, tag="balances"):
    pass


class ReportsQuery(_Request, frozen=True, tag="reports"):
    """Every execution report for this owner caused by commands with a journal seq > since."""

    since: Number = 0


class TickerQuery(_Request, frozen=True, tag="ticker"):
    """The last 24 hours of a symbol: last price, open/high/low, volume, VWAP, best bid/ask."""

    symbol: str


class KlinesQuery(_Request, frozen=True, tag="klines"):
    """OHLCV candles, oldest first. from/to: ISO-8601 (UTC unless it says) or unix milliseconds."""

    symbol: str
    interval: str  # 1m 5m 15m 1h 1d
    from_: str | None = msgspec.field(name="from", default=None)
    to: str | None = None
    limit: Number = 500


class TradesQuery(_Request, frozen=True, tag="trades"):
    """A symbol's trades, newest first; before=<trade id> pages back."""

    symbol: str
    limit: Number = 50
    before: str | None = None


class StatsQuery(_Request, frozen=True, tag="stats"):
    pass


MarketQuery = TickerQuery | KlinesQuery | TradesQuery
Request = (
    Buy | Sell | CancelOrder | CancelAll | ReplaceOrder | BookQuery | OrdersQuery | SymbolsQuery | Ping | Help | Quit | Login | BalancesQuery | ReportsQuery
    | TickerQuery | KlinesQuery | TradesQuery | StatsQuery
)  # fmt: skip


class BadRequest(msgspec.Struct, frozen=True):
    """A line that could not be understood: becomes `ERR <code> <text>`."""

    code: str
    text: str


_json_decoder = msgspec.json.Decoder(Request)


def decode_json(line: bytes) -> Request | BadRequest:
    try:
        return _json_decoder.decode(line)
    except msgspec.ValidationError as exc:
        return BadRequest("bad_request", str(exc))
    except msgspec.DecodeError as exc:
        return BadRequest("bad_json", str(exc))
