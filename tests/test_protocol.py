"""The sans-I/O codecs: bytes to lines, lines to requests, replies to bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import replies as R
from protocol.requests import BadRequest, BookQuery, Buy, CancelOrder, ReplaceOrder, Sell, decode_json
from protocol.text import TOO_LONG, LineSplitter, parse_line, parse_words


def test_splitter_joins_lines_across_feeds_and_strips_cr() -> None:
    s = LineSplitter()
    assert s.feed(b"PI") == []
    assert s.feed(b"NG\r\nBU") == [b"PING"]
    assert s.feed(b"Y\n\n") == [b"BUY", b""]
    assert s.pending == 0


def test_splitter_bounds_a_long_line_and_resynchronises_at_its_end() -> None:
    s = LineSplitter(limit=10)
    assert s.feed(b"x" * 8) == []
    assert s.feed(b"x" * 8) == [TOO_LONG]
    assert s.pending == 0
    assert s.feed(b"y" * 1000) == []  # still discarding, nothing held
    assert s.pending == 0
    assert s.feed(b"z\nPING\n") == [b"PING"]
    assert s.feed(b"0123456789\n" + b"a" * 11 + b"\nok\n") == [b"0123456789", TOO_LONG, b"ok"]


@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"").replace(b"\xff", b"")), max_size=20), st.data())
def test_splitter_gives_the_same_lines_however_the_stream_is_cut(lines: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    s, got, last = LineSplitter(), [], 0
    for cut in cuts + [len(stream)]:
        got += s.feed(stream[last:cut])
        last = cut
    assert got == lines


def test_text_requests() -> None:
    assert parse_line(b"buy aapl 10 150.25 ioc id=c1") == Buy("AAPL", "10", "150.25", "IOC", "c1")
    assert parse_line(b"SELL es 2") == Sell("ES", "2", None, None, None)
    assert parse_line(b"SELL es 2 MKT FOK") == Sell("ES", "2", None, "FOK", None)
    assert parse_line(b"  CANCEL   42 ") == CancelOrder(42)
    assert parse_line(b"cancel ID=abc") == CancelOrder(None, "abc")
    assert parse_line(b"REPLACE 7 5 99.5") == ReplaceOrder("5", 7, "99.5")
    assert parse_line(b"REPLACE id=x 5") == ReplaceOrder("5", id="x")
    assert parse_line(b"book btc-usd 3") == BookQuery("BTC-USD", 3)
    assert parse_line(b"") is None
    assert parse_line(b"   ") is None
    assert isinstance(parse_line(b"\xe2\x82\xac"), BadRequest)


def test_the_lines_algorithms_send_most_read_as_the_general_parser_reads_them() -> None:
    """parse_line matches the commonest lines whole (one regular expression); these are its
    cases, each with what the general way gives."""
    cases = {
        b"BUY AAPL 10 150.25": Buy("AAPL", "10", "150.25"),
        b"SELL BTC-USD 0.5 64000.00 IOC id=c-1": Sell("BTC-USD", "0.5", "64000.00", "IOC", "c-1"),
        b"BUY ES 1 id=m1": Buy("ES", "1", None, None, "m1"),
        b"SELL AAPL 3 POST": Sell("AAPL", "3", None, "POST"),
        b"CANCEL id=c9": CancelOrder(None, "c9"),
        b"CANCEL 0042": CancelOrder(42),
        b"REPLACE id=c9 5 99.50": ReplaceOrder("5", None, "99.50", "c9"),
        b"REPLACE 7 5": ReplaceOrder("5", 7),
        b"SELL aapl 10 150.25 fok ID=c1": Sell("AAPL", "10", "150.25", "FOK", "c1"),  # (and near them, the general way)
        b"BUY  AAPL 10 150.25": Buy("AAPL", "10", "150.25"),
    }
    for line, want in cases.items():
        assert parse_line(line) == want == parse_words(line.decode()), line
    assert isinstance(parse_line(b"CANCEL 1234567890123456789"), BadRequest)  # (19 digits: too large, as ever)


_NUMBERS = st.sampled_from(["1", "10", "0.5", "150.25", "007", ".5", "1.", "-1", "1e3", "12345678901234567890"])
_IDS = st.sampled_from(["c1", "a=b", "", "x\x7fy", "7"])
_WORDS = st.sampled_from(["AAPL", "es", "1A", "MKT", "@", "@150", "ALL", "GTC", "fok", "ID=c2", "stop=100", "show=2", "oco=c1", "\x7f"])


@st.composite
def _lines(draw: st.DrawFn) -> str:
    """A line as an algorithm writes it (what parse_line matches whole), or one change from it."""
    kind = draw(st.sampled_from(["order", "cancel", "replace"]))
    if kind == "order":
        words = [draw(st.sampled_from(["BUY", "SELL"])), draw(st.sampled_from(["AAPL", "BTC-USD", "ES", "X1"])), draw(_NUMBERS)]
        words += [draw(_NUMBERS)] * draw(st.booleans()) + [draw(st.sampled_from(["GTC", "IOC", "FOK", "POST"]))] * draw(st.booleans())
        words += ["id=" + draw(_IDS)] * draw(st.booleans())
    else:
        target = draw(st.sampled_from(["id=" + draw(_IDS), draw(_NUMBERS)]))
        words = ["CANCEL", target] if kind == "cancel" else ["REPLACE", target, draw(_NUMBERS)] + [draw(_NUMBERS)] * draw(st.booleans())
    at = draw(st.integers(0, len(words)))
    change = draw(st.sampled_from(["none", "lower", "lower", "insert", "drop", "spaces"]))
    if change == "lower" and at < len(words):
        words[at] = words[at].lower()
    elif change == "insert":
        words.insert(at, draw(_WORDS))
    elif change == "drop" and at < len(words):
        del words[at]
    return (draw(st.sampled_from(["  ", "\t", " "])) if change == "spaces" else " ").join(words)


@settings(max_examples=1000)
@given(_lines())
def test_parse_line_reads_any_line_as_the_general_parser_does(text: str) -> None:
    assert parse_line(text.encode()) == parse_words(text)


def test_json_requests_decode_into_the_same_structs() -> None:
    assert decode_json(b'{"op":"buy","symbol":"AAPL","qty":"10","price":"150.25","tif":"IOC","id":"c1"}') == Buy(
        "AAPL", "10", "150.25", "IOC", "c1"
    )
    assert decode_json(b'{"op":"cancel","order_id":3}') == CancelOrder(3)
    assert decode_json(b'{"op":"replace","id":"c1","qty":"5"}') == ReplaceOrder("5", id="c1")
    assert decode_json(b'{"op":"buy","symbol":"AAPL","qty":"1","colour":"red"}') == BadRequest(
        "bad_request", "Object contains unknown field `colour`"
    )


def test_replies_as_text_and_json() -> None:
    ack = R.Ack(5, "BUY", "AAPL", "10", "150.25", "GTC", "c1")
    assert R.to_text(ack) == b"ACK 5 BUY AAPL 10 150.25 GTC id=c1\n"
    assert R.to_json(ack) == b'{"type":"ack","order_id":5,"side":"BUY","symbol":"AAPL","qty":"10","price":"150.25","tif":"GTC","id":"c1"}\n'
    assert R.to_text(R.Reject("bad_tick", "price 1.001 is not on the tick 0.01", "c2")) == (
        b"REJ bad_tick id=c2 price 1.001 is not on the tick 0.01\n"
    )
    assert R.to_text(R.BookReply("ES", [("4500.00", "3")], [])) == b"BOOK ES bids=1 asks=0\nBID 4500.00 3\nEND\n"


def test_formatted_market_data_json_is_what_the_json_encoder_writes() -> None:
    """The updates' JSON is formatted by hand for speed; it must equal the encoder's, and
    decode into the Structs a client uses (protocol.marketdata.MdMessage)."""
    import msgspec

    from protocol import marketdata as M

    encode = msgspec.json.encode
    decode = msgspec.json.Decoder(M.MdMessage).decode
    level = M.level_json("BTC-USD", "BUY", "64000.01", "0.50000", 7, 9)
    assert level == encode({"type": "book", "symbol": "BTC-USD", "side": "BUY", "price": "64000.01", "qty": "0.50000", "prev": 7, "seq": 9}) + b"\n"
    assert decode(level) == M.LevelUpdate("BTC-USD", "BUY", "64000.01", "0.50000", 7, 9)
    trade = M.trade_json("ES", "3", "4500.25", "SELL", "12-1", 0, 1)
    assert trade == encode({"type": "trade", "symbol": "ES", "qty": "3", "price": "4500.25", "aggressor": "SELL", "trade": "12-1", "prev": 0, "seq": 1}) + b"\n"
    assert decode(trade) == M.TradeUpdate("ES", "3", "4500.25", "SELL", "12-1", 0, 1)
    quote = M.quote_json("AAPL", "-", "-", "150.25", "10", 3, 4)
    assert quote == encode({"type": "quote", "symbol": "AAPL", "bid": None, "bid_qty": None, "ask": "150.25", "ask_qty": "10", "prev": 3, "seq": 4}) + b"\n"
    assert decode(quote) == M.QuoteUpdate("AAPL", None, None, "150.25", "10", 3, 4)
