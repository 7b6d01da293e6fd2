"""The market-data protocol: subscription requests in, sequenced updates out. No I/O.

Requests (text, case-insensitive, or a JSON object with "op"):
    SUB <symbol|*> [trades|quotes|book|all] [json]       {"op":"sub","symbol":"AAPL","kinds":"all"}
    UNSUB <symbol|*> [trades|quotes|book|all]
    REPLAY <symbol> from=<seq>                           trades from that sequence number on
    PING | HELP | QUIT
Updates, one line each, the symbol's sequence number last:
    TRADE <symbol> <qty> <price> <BUY|SELL> trade=<id> prev=<p> seq=<n>
    QUOTE <symbol> <bid> <bid-qty> <ask> <ask-qty> prev=<p> seq=<n>      (- for an empty side)
    BOOK <symbol> <BUY|SELL> <price> <total-qty> prev=<p> seq=<n>        (0: the level is gone)
    SNAPSHOT <symbol> seq=<n> bids=<k> asks=<m>, then BID/ASK <price> <qty> lines, then END
seq numbers a symbol's trades, quotes and book changes together; prev is the seq of the
previous update of the same kind (its channel), so a subscriber to any subset tells a
lost update (prev greater than the last seq it saw in that channel) from one it did not
ask for. Replies (SUBSCRIBED, REPLAY, PONG, ERR, ...) are typed Structs with a text and
a JSON form (every reply to a JSON request is JSON).
"""

from __future__ import annotations

import msgspec

from protocol.requests import BadRequest, Number, is_number
from protocol.text import ORDER_ENTRY_VERBS

KINDS = ("trades", "quotes", "book")


class Subscribe(msgspec.Struct, frozen=True, tag="sub", tag_field="op", forbid_unknown_fields=True):
    symbol: str  # a symbol or "*"
    kinds: str = "all"
    json: bool = False


class Unsubscribe(msgspec.Struct, frozen=True, tag="unsub", tag_field="op", forbid_unknown_fields=True):
    symbol: str
    kinds: str = "all"


class ReplayTrades(msgspec.Struct, frozen=True, tag="replay", tag_field="op", forbid_unknown_fields=True):
    symbol: str
    from_seq: Number = msgspec.field(name="from", default=1)


class MdPing(msgspec.Struct, frozen=True, tag="ping", tag_field="op"):
    pass


class MdHelp(msgspec.Struct, frozen=True, tag="help", tag_field="op"):
    pass


class MdQuit(msgspec.Struct, frozen=True, tag="quit", tag_field="op"):
    pass


MdRequest = Subscribe | Unsubscribe | ReplayTrades | MdPing | MdHelp | MdQuit
_decode_json = msgspec.json.Decoder(MdRequest).decode

MD_HELP = [
    "SUB <symbol|*> [trades|quotes|book|all] [json]   book and quote subscriptions start with a SNAPSHOT / QUOTE",
    "UNSUB <symbol|*> [trades|quotes|book|all]",
    "REPLAY <symbol> from=<seq>                        resend trades from a sequence number (gap recovery)",
    "PING | HELP | QUIT",
    "Every update ends in prev=<p> seq=<n>: seq numbers a symbol's updates; prev is the seq of the",
    "previous update of the same kind. Lost one: prev > the last seq you saw of that kind; REPLAY or SUB again.",
]


def kinds_of(text: str) -> frozenset[str] | None:
    text = text.lower()
    if text == "all":
        return frozenset(KINDS)
    return frozenset((text,)) if text in KINDS else None


def parse_md_line(line: bytes) -> MdRequest | BadRequest | None:
    if line[:1] == b"{":
        try:
            req = _decode_json(line)
            if isinstance(req, (Subscribe, Unsubscribe, ReplayTrades)):
                return msgspec.structs.replace(req, symbol=req.symbol.upper())
            return req
        except msgspec.ValidationError as exc:
            return BadRequest("bad_request", str(exc))
        except msgspec.DecodeError as exc:
            return BadRequest("bad_json", str(exc))
    try:
        args = line.decode("ascii").split()
    except UnicodeDecodeError:
        return BadRequest("bad_encoding", "the line is not ASCII text")
    if not args:
        return None
    verb = args.pop(0).upper()
    if verb in ("SUB", "UNSUB"):
        as_json = bool(args) and args[-1].lower() == "json" and verb == "SUB"
        if as_json:
            args.pop()
        if len(args) not in (1, 2) or (len(args) == 2 and kinds_of(args[1]) is None):
            return BadRequest("bad_request", f"usage: {verb} <symbol|*> [trades|quotes|book|all]" + (" [json]" if verb == "SUB" else ""))
        kinds = args[1].lower() if len(args) == 2 else "all"
        return Subscribe(args[0].upper(), kinds, as_json) if verb == "SUB" else Unsubscribe(args[0].upper(), kinds)
    if verb == "REPLAY":
        if len(args) != 2 or not args[1].lower().startswith("from=") or not is_number(args[1][5:]):
            return BadRequest("bad_request", "usage: REPLAY <symbol> from=<seq>")
        return ReplayTrades(args[0].upper(), int(args[1][5:]))
    simples: dict[str, MdPing | MdHelp | MdQuit] = {"PING": MdPing(), "HELP": MdHelp(), "QUIT": MdQuit()}
    simple = simples.get(verb)
    if simple is not None and not args:
        return simple
    if verb in ORDER_ENTRY_VERBS:
        return BadRequest("unknown_command", f"{verb} is an order-entry command: this is the market-data port (order entry is on its own port, 7001 by default)")
    return BadRequest("unknown_command", f"unknown command {verb[:24]!r}; type HELP")


# ---------------------------------------------------------------- replies


class MdReply(msgspec.Struct, frozen=True, tag_field="type", omit_defaults=True):
    """A reply on the market-data port: text and JSON forms (md_text, md_json)."""


class MdHello(MdReply, frozen=True, tag="hello"):
    version: str


class Subscribed(MdReply, frozen=True, tag="subscribed"):
    symbol: str  # a symbol, or "*"
    kinds: str  # comma-separated, sorted
    seq: int | None = None  # the symbol's sequence the subscription starts after
    symbols: int | None = None  # for "*": how many symbols


class Unsubscribed(MdReply, frozen=True, tag="unsubscribed"):
    symbol: str
    kinds: str


class ReplayHead(MdReply, frozen=True, tag="replay"):
    """Followed by `count` TRADE updates and an End."""

    symbol: str
    from_seq: int = msgspec.field(name="from")
    count: int = 0


class End(MdReply, frozen=True, tag="end"):
    pass


class MdError(MdReply, frozen=True, tag="err"):
    code: str
    text: str


class MdPong(MdReply, frozen=True, tag="pong"):
    pass


class MdBye(MdReply, frozen=True, tag="bye"):
    text: str


class MdHelpReply(MdReply, frozen=True, tag="help"):
    lines: list[str]


def md_text(r: MdReply) -> bytes:
    if type(r) is Subscribed:
        tail = f"symbols={r.symbols}" if r.symbols is not None else f"seq={r.seq}"
        s = f"SUBSCRIBED {r.symbol} {r.kinds} {tail}\n"
    elif type(r) is Unsubscribed:
        s = f"UNSUBSCRIBED {r.symbol} {r.kinds}\n"
    elif type(r) is ReplayHead:
        s = f"REPLAY {r.symbol} from={r.from_seq} count={r.count}\n"
    elif type(r) is End:
        s = "END\n"
    elif type(r) is MdError:
        s = f"ERR {r.code} {r.text}\n"
    elif type(r) is MdPong:
        s = "PONG\n"
    elif type(r) is MdBye:
        s = f"BYE {r.text}\n"
    elif type(r) is MdHello:
        s = f"HELLO tickline-md {r.version} type HELP for commands\n"
    elif type(r) is MdHelpReply:
        s = "HELP\n" + "".join(f"  {line}\n" for line in r.lines) + "END\n"
    else:
        raise TypeError(f"not a market-data reply: {r!r}")
    return s.encode()


def md_json(r: MdReply) -> bytes:
    return _json.encode(r) + b"\n"


# ---------------------------------------------------------------- updates, text and JSON


def trade_text(symbol: str, qty: str, price: str, aggressor: str, trade_id: str, prev: int, seq: int) -> bytes:
    return f"TRADE {symbol} {qty} {price} {aggressor} trade={trade_id} prev={prev} seq={seq}\n".encode()


def quote_text(symbol: str, bid: str, bid_qty: str, ask: str, ask_qty: str, prev: int, seq: int) -> bytes:
    return f"QUOTE {symbol} {bid} {bid_qty} {ask} {ask_qty} prev={prev} seq={seq}\n".encode()


def level_text(symbol: str, side: str, price: str, qty: str, prev: int, seq: int) -> bytes:
    return f"BOOK {symbol} {side} {price} {qty} prev={prev} seq={seq}\n".encode()


def snapshot_text(symbol: str, seq: int, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> bytes:
    lines = [f"SNAPSHOT {symbol} seq={seq} bids={len(bids)} asks={len(asks)}"]
    lines += [f"BID {p} {q}" for p, q in bids]
    lines += [f"ASK {p} {q}" for p, q in asks]
    return ("\n".join(lines) + "\nEND\n").encode()


_json = msgspec.json.Encoder()


# The updates' JSON is formatted, not encoded: every field is a token that needs no
# escaping (a symbol is [A-Z0-9._-], prices and sizes are digits, ids are digits and "-"),
# and this runs for every update a JSON subscriber (every dashboard tab) gets: ~3x faster
# than a dict through the encoder. tests/test_protocol.py checks it against the encoder.


def trade_json(symbol: str, qty: str, price: str, aggressor: str, trade_id: str, prev: int, seq: int) -> bytes:
    return (
        f'{{"type":"trade","symbol":"{symbol}","qty":"{qty}","price":"{price}","aggressor":"{aggressor}",'
        f'"trade":"{trade_id}","prev":{prev},"seq":{seq}}}\n'
    ).encode()


def _str_or_null(value: str) -> str:
    return "null" if value == "-" else f'"{value}"'


def quote_json(symbol: str, bid: str, bid_qty: str, ask: str, ask_qty: str, prev: int, seq: int) -> bytes:
    """An empty side is null in JSON (the text form's "-")."""
    return (
        f'{{"type":"quote","symbol":"{symbol}","bid":{_str_or_null(bid)},"bid_qty":{_str_or_null(bid_qty)},'
        f'"ask":{_str_or_null(ask)},"ask_qty":{_str_or_null(ask_qty)},"prev":{prev},"seq":{seq}}}\n'
    ).encode()


def level_json(symbol: str, side: str, price: str, qty: str, prev: int, seq: int) -> bytes:
    return f'{{"type":"book","symbol":"{symbol}","side":"{side}","price":"{price}","qty":"{qty}","prev":{prev},"seq":{seq}}}\n'.encode()


def snapshot_json(symbol: str, seq: int, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> bytes:
    return _json.encode({"type": "snapshot", "symbol": symbol, "seq": seq, "bids": bids, "asks": asks}) + b"\n"


# ---------------------------------------------------------------- updates, decoded (clients)
# What the JSON encoders above write, as Structs a client decodes them into
# (client/marketdata.py); tests check both sides agree.


class TradeUpdate(msgspec.Struct, frozen=True, tag_field="type", tag="trade"):
    symbol: str
    qty: str
    price: str
    aggressor: str
    trade: str  # the trade id
    prev: int
    seq: int


class QuoteUpdate(msgspec.Struct, frozen=True, tag_field="type", tag="quote"):
    symbol: str
    bid: str | None
    bid_qty: str | None
    ask: str | None
    ask_qty: str | None
    prev: int
    seq: int


class LevelUpdate(msgspec.Struct, frozen=True, tag_field="type", tag="book"):
    symbol: str
    side: str  # BUY | SELL
    price: str
    qty: str  # the level's total; 0: gone
    prev: int
    seq: int


class Snapshot(msgspec.Struct, frozen=True, tag_field="type", tag="snapshot"):
    symbol: str
    seq: int
    bids: list[tuple[str, str]]  # best first
    asks: list[tuple[str, str]]


MdMessage = (
    TradeUpdate | QuoteUpdate | LevelUpdate | Snapshot
    | MdHello | Subscribed | Unsubscribed | ReplayHead | End | MdError | MdPong | MdBye | MdHelpReply
)  # fmt: skip
