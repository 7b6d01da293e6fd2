"""Order-entry requests as they arrive on the wire: decimal strings, not yet validated.

The text codec (protocol/text.py) and the JSON codec both produce these Structs; a JSON
request is one object per line with an "op" tag, e.g.
    {"op":"buy","symbol":"AAPL","qty":"10","price":"150.25","tif":"IOC","id":"c1"}
The gateway turns them into exchange commands (integers) with the symbol's instrument.
"""

from __future__ import annotations

import msgspec

_OPTS = dict(frozen=True, tag_field="op", forbid_unknown_fields=True)


class Buy(msgspec.Struct, tag="buy", **_OPTS):  # type: ignore[call-arg]
    symbol: str
    qty: str
    price: str | None = None  # None: a market order
    tif: str | None = None  # GTC (default for limits), IOC (default for market), FOK, POST
    id: str | None = None  # the client's order id


class Sell(msgspec.Struct, tag="sell", **_OPTS):  # type: ignore[call-arg]
    symbol: str
    qty: str
    price: str | None = None
    tif: str | None = None
    id: str | None = None


class CancelOrder(msgspec.Struct, tag="cancel", **_OPTS):  # type: ignore[call-arg]
    order_id: int | None = None
    id: str | None = None  # cancel by client order id instead


class ReplaceOrder(msgspec.Struct, tag="replace", **_OPTS):  # type: ignore[call-arg]
    qty: str
    order_id: int | None = None
    price: str | None = None  # None keeps the price
    id: str | None = None  # replace by client order id instead


class BookQuery(msgspec.Struct, tag="book", **_OPTS):  # type: ignore[call-arg]
    symbol: str
    levels: int = 10


class OrdersQuery(msgspec.Struct, tag="orders", **_OPTS):  # type: ignore[call-arg]
    pass


class SymbolsQuery(msgspec.Struct, tag="symbols", **_OPTS):  # type: ignore[call-arg]
    pass


class Ping(msgspec.Struct, tag="ping", **_OPTS):  # type: ignore[call-arg]
    pass


class Help(msgspec.Struct, tag="help", **_OPTS):  # type: ignore[call-arg]
    pass


class Quit(msgspec.Struct, tag="quit", **_OPTS):  # type: ignore[call-arg]
    pass


class Resume(msgspec.Struct, tag="resume", **_OPTS):  # type: ignore[call-arg]
    token: str


Request = Buy | Sell | CancelOrder | ReplaceOrder | BookQuery | OrdersQuery | SymbolsQuery | Ping | Help | Quit | Resume
OrderRequest = Buy | Sell


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
