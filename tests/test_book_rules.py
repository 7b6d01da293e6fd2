"""The exchange rulebook as a table: book before, command, events, book after.

Notation in tests/rulebook.py. Every rule runs against both books of the contract
(exchange/orderbook.py): the fast exchange.book.Book and the naive reference. Order ids are the command's sequence number, so in each
scenario the orders of `before` are 1, 2, ... and the command under test is the next one.
"""

from __future__ import annotations

import pytest

from tests.rulebook import BOOKS, Runner, book_lines

SCENARIOS: list[tuple[str, list[str], str, list[str], list[str]]] = [
    # (rule, book before, command, events, book after)
    ("a stop waits off the book, out of its depth, until a trade reaches its trigger",
     ["a SELL 5 @100"], "b BUY 3 @101 STOP=100",
     ["accepted 2 stop=100"],
     ["SELL 100: 1a:5", "STOP BUY 2b:3@101 at 100"]),
    ("a trade at the trigger fires the stop: a limit order now, matching at once",
     ["a SELL 5 @100", "b BUY 3 @101 STOP=100"], "c BUY 1 @100",
     ["accepted 3", "trade 3-1 1@100 maker=1 taker=3", "fill 1 1@100 leaves=4 A", "fill 3 1@100 leaves=0 R",
      "triggered 2", "trade 3-2 3@100 maker=1 taker=2", "fill 1 3@100 leaves=1 A", "fill 2 3@100 leaves=0 R"],
     ["SELL 100: 1a:1"]),
    ("a sell stop fires on a trade at or below its trigger, a buy stop at or above",
     ["a BUY 5 @100", "b SELL 2 @99 STOP=100", "c BUY 2 @110 STOP=101"], "d SELL 1 @100",
     ["accepted 4", "trade 4-1 1@100 maker=1 taker=4", "fill 1 1@100 leaves=4 A", "fill 4 1@100 leaves=0 R",
      "triggered 2", "trade 4-2 2@100 maker=1 taker=2", "fill 1 2@100 leaves=2 A", "fill 2 2@100 leaves=0 R"],
     ["BUY 100: 1a:2", "STOP BUY 3c:2@110 at 101"]),
    ("stops one trade reaches fire in the order they were accepted",
     ["a SELL 10 @100", "c BUY 2 @102 STOP=100", "b BUY 2 @101 STOP=99"], "d BUY 1 @100",
     ["accepted 4", "trade 4-1 1@100 maker=1 taker=4", "fill 1 1@100 leaves=9 A", "fill 4 1@100 leaves=0 R",
      "triggered 2", "trade 4-2 2@100 maker=1 taker=2", "fill 1 2@100 leaves=7 A", "fill 2 2@100 leaves=0 R",
      "triggered 3", "trade 4-3 2@100 maker=1 taker=3", "fill 1 2@100 leaves=5 A", "fill 3 2@100 leaves=0 R"],
     ["SELL 100: 1a:5"]),
    ("a fired stop's own trades fire further stops",
     ["a SELL 2 @100", "a SELL 5 @103", "b BUY 2 @103 STOP=100", "c BUY 1 @104 STOP=103"], "d BUY 1 @100",
     ["accepted 5", "trade 5-1 1@100 maker=1 taker=5", "fill 1 1@100 leaves=1 A", "fill 5 1@100 leaves=0 R",
      "triggered 3", "trade 5-2 1@100 maker=1 taker=3", "fill 1 1@100 leaves=0 A", "fill 3 1@100 leaves=1 R",
      "trade 5-3 1@103 maker=2 taker=3", "fill 2 1@103 leaves=4 A", "fill 3 1@103 leaves=0 R",
      "triggered 4", "trade 5-4 1@103 maker=2 taker=4", "fill 2 1@103 leaves=3 A", "fill 4 1@103 leaves=0 R"],
     ["SELL 103: 2a:3"]),
    ("a fired stop that cannot trade rests behind what was there when it fired",
     ["b SELL 1 @100", "c SELL 3 @101 STOP=100", "e SELL 2 @101"], "d BUY 1 @100",
     ["accepted 4", "trade 4-1 1@100 maker=1 taker=4", "fill 1 1@100 leaves=0 A", "fill 4 1@100 leaves=0 R", "triggered 2"],
     ["SELL 101: 3e:2 2c:3"]),
    ("a fired stop-market order takes what there is and the rest is canceled",
     ["a BUY 2 @100", "a BUY 1 @99", "b SELL 5 MKT STOP=100"], "c SELL 1 @100",
     ["accepted 4", "trade 4-1 1@100 maker=1 taker=4", "fill 1 1@100 leaves=1 A", "fill 4 1@100 leaves=0 R",
      "triggered 3", "trade 4-2 1@100 maker=1 taker=3", "fill 1 1@100 leaves=0 A", "fill 3 1@100 leaves=4 R",
      "trade 4-3 1@99 maker=2 taker=3", "fill 2 1@99 leaves=0 A", "fill 3 1@99 leaves=3 R", "canceled 3 leaves=3 no_liquidity"],
     []),
    ("a stop the last trade has already reached is refused",
     ["a SELL 1 @100", "b BUY 1 @100"], "c SELL 2 @95 STOP=100",
     ["rejected would_trigger"],
     []),
    ("a pending stop cannot be replaced",
     ["a BUY 3 @105 STOP=104"], "a REPLACE 1 2 @106",
     ["rejected stop_pending"],
     ["STOP BUY 1a:3@105 at 104"]),
    ("CANCEL ALL cancels every open order of its owner, pending stops too, oldest first",
     ["a BUY 5 @100", "b SELL 3 @105", "a SELL 2 @106", "a BUY 1 @110 STOP=108"], "a CANCEL ALL",
     ["canceled 1 leaves=5 user", "canceled 3 leaves=2 user", "canceled 4 leaves=1 user"],
     ["SELL 105: 2b:3"]),
    ("a mass cancel naming orders (a closed connection's) cancels only those of its owner",
     ["a BUY 5 @100", "b SELL 3 @105", "a SELL 2 @106"], "a CANCEL ALL 2 3",
     ["canceled 3 leaves=2 user"],
     ["BUY 100: 1a:5", "SELL 105: 2b:3"]),
    ("a mass cancel with nothing to cancel is no error",
     ["b SELL 3 @105"], "a CANCEL ALL",
     [],
     ["SELL 105: 1b:3"]),
    ("an iceberg shows its slice; the book's depth is what is shown",
     [], "a SELL 100 @5000 SHOW=10",
     ["accepted 1"],
     ["SELL 5000: 1a:10+90"]),
    ("an iceberg's next slice goes to the back of its level: a later order trades before it",
     ["a SELL 100 @5000 SHOW=10", "b SELL 5 @5000"], "c BUY 25 @5000 IOC",
     ["accepted 3",
      "trade 3-1 10@5000 maker=1 taker=3", "fill 1 10@5000 leaves=90 A", "fill 3 10@5000 leaves=15 R",
      "trade 3-2 5@5000 maker=2 taker=3", "fill 2 5@5000 leaves=0 A", "fill 3 5@5000 leaves=10 R",
      "trade 3-3 10@5000 maker=1 taker=3", "fill 1 10@5000 leaves=80 A", "fill 3 10@5000 leaves=0 R"],
     ["SELL 5000: 1a:10+70"]),
    ("an incoming iceberg trades its whole quantity, then rests a slice",
     ["a SELL 3 @100"], "b BUY 20 @100 SHOW=5",
     ["accepted 2", "trade 2-1 3@100 maker=1 taker=2", "fill 1 3@100 leaves=0 A", "fill 2 3@100 leaves=17 R"],
     ["BUY 100: 2b:5+12"]),
    ("an iceberg's last slice is what is left",
     ["a SELL 12 @100 SHOW=5"], "b BUY 10 @100",
     ["accepted 2",
      "trade 2-1 5@100 maker=1 taker=2", "fill 1 5@100 leaves=7 A", "fill 2 5@100 leaves=5 R",
      "trade 2-2 5@100 maker=1 taker=2", "fill 1 5@100 leaves=2 A", "fill 2 5@100 leaves=0 R"],
     ["SELL 100: 1a:2"]),
    ("canceling an iceberg cancels all of it",
     ["a SELL 100 @5000 SHOW=10"], "a CANCEL 1",
     ["canceled 1 leaves=100 user"],
     []),
    ("a smaller iceberg at its price keeps priority, its hidden part going first",
     ["a SELL 100 @5000 SHOW=10", "b SELL 5 @5000"], "a REPLACE 1 15",
     ["replaced 1 15@5000 kept"],
     ["SELL 5000: 1a:10+5 2b:5"]),
    ("a larger iceberg goes to the back with a new slice",
     ["a SELL 12 @5000 SHOW=10", "b SELL 5 @5000"], "a REPLACE 1 30",
     ["replaced 1 30@5000 lost"],
     ["SELL 5000: 2b:5 1a:10+20"]),
    ("a bracket: when the stop-loss fires and trades, the take-profit goes",
     ["b BUY 20 @94", "a SELL 10 @110", "a SELL 10 MKT STOP=95 OCO=2"], "c SELL 1 @94",
     ["accepted 4", "trade 4-1 1@94 maker=1 taker=4", "fill 1 1@94 leaves=19 A", "fill 4 1@94 leaves=0 R",
      "triggered 3", "trade 4-2 10@94 maker=1 taker=3", "fill 1 10@94 leaves=9 A", "fill 3 10@94 leaves=0 R",
      "canceled 2 leaves=10 oco"],
     ["BUY 94: 1b:9"]),
    ("when one order of a pair trades, even partly, the other is canceled",
     ["a SELL 10 @110", "a BUY 5 @90 OCO=1"], "b SELL 2 @90",
     ["accepted 3", "trade 3-1 2@90 maker=2 taker=3", "fill 2 2@90 leaves=3 A", "fill 3 2@90 leaves=0 R", "canceled 1 leaves=10 oco"],
     ["BUY 90: 2a:3"]),
    ("the order of a pair that traded in part is a plain order once the other is canceled",
     ["a SELL 10 @110", "a BUY 5 @90 OCO=1", "b SELL 2 @90"], "a REPLACE 2 2",
     ["replaced 2 2@90 kept"],
     ["BUY 90: 2a:2"]),
    ("canceling one order of a pair cancels the other",
     ["a SELL 10 @110", "a SELL 10 @120 OCO=1"], "a CANCEL 2",
     ["canceled 2 leaves=10 user", "canceled 1 leaves=10 oco"],
     []),
    ("oco= names an open order of the sender's in the same book",
     ["b SELL 10 @110"], "a SELL 1 @120 OCO=1",
     ["rejected bad_oco"],
     ["SELL 110: 1b:10"]),
    ("an order is in one pair at most",
     ["a SELL 10 @110", "a SELL 1 @120 OCO=1"], "a SELL 1 @130 OCO=1",
     ["rejected bad_oco"],
     ["SELL 110: 1a:10", "SELL 120: 2a:1"]),
    ("an order of a pair cannot be replaced",
     ["a SELL 10 @110", "a SELL 1 @120 OCO=1"], "a REPLACE 1 5",
     ["rejected bad_oco"],
     ["SELL 110: 1a:10", "SELL 120: 2a:1"]),
    ("a pending stop can be canceled",
     ["a BUY 3 @105 STOP=104"], "a CANCEL 1",
     ["canceled 1 leaves=3 user"],
     []),
    ("a GTC limit that meets nothing rests",
     [], "a BUY 10 @100",
     ["accepted 1"],
     ["BUY 100: 1a:10"]),
    ("a crossing buy trades at the resting order's price, not its own",
     ["a SELL 10 @100"], "b BUY 4 @105",
     ["accepted 2", "trade 2-1 4@100 maker=1 taker=2", "fill 1 4@100 leaves=6 A", "fill 2 4@100 leaves=0 R"],
     ["SELL 100: 1a:6"]),
    ("a buy sweeps levels best price first and rests its remainder at its limit",
     ["a SELL 3 @101", "b SELL 3 @100", "c SELL 3 @103"], "d BUY 8 @102",
     ["accepted 4",
      "trade 4-1 3@100 maker=2 taker=4", "fill 2 3@100 leaves=0 A", "fill 4 3@100 leaves=5 R",
      "trade 4-2 3@101 maker=1 taker=4", "fill 1 3@101 leaves=0 A", "fill 4 3@101 leaves=2 R"],
     ["BUY 102: 4d:2", "SELL 103: 3c:3"]),
    ("at one price the older order fills first (time priority)",
     ["a SELL 5 @100", "b SELL 5 @100"], "c BUY 7 @100",
     ["accepted 3",
      "trade 3-1 5@100 maker=1 taker=3", "fill 1 5@100 leaves=0 A", "fill 3 5@100 leaves=2 R",
      "trade 3-2 2@100 maker=2 taker=3", "fill 2 2@100 leaves=3 A", "fill 3 2@100 leaves=0 R"],
     ["SELL 100: 2b:3"]),
    ("a sell takes the highest bid first",
     ["a BUY 5 @99", "b BUY 5 @98"], "c SELL 6 @90",
     ["accepted 3",
      "trade 3-1 5@99 maker=1 taker=3", "fill 1 5@99 leaves=0 A", "fill 3 5@99 leaves=1 R",
      "trade 3-2 1@98 maker=2 taker=3", "fill 2 1@98 leaves=4 A", "fill 3 1@98 leaves=0 R"],
     ["BUY 98: 2b:4"]),
    ("an IOC fills what it can and its remainder expires",
     ["a SELL 3 @100"], "b BUY 5 @100 IOC",
     ["accepted 2", "trade 2-1 3@100 maker=1 taker=2", "fill 1 3@100 leaves=0 A", "fill 2 3@100 leaves=2 R",
      "canceled 2 leaves=2 expired"],
     []),
    ("an IOC that meets nothing expires whole",
     ["a SELL 3 @101"], "b BUY 5 @100 IOC",
     ["accepted 2", "canceled 2 leaves=5 expired"],
     ["SELL 101: 1a:3"]),
    ("a FOK that can fill completely does",
     ["a SELL 3 @100", "b SELL 3 @101"], "c BUY 5 @101 FOK",
     ["accepted 3",
      "trade 3-1 3@100 maker=1 taker=3", "fill 1 3@100 leaves=0 A", "fill 3 3@100 leaves=2 R",
      "trade 3-2 2@101 maker=2 taker=3", "fill 2 2@101 leaves=1 A", "fill 3 2@101 leaves=0 R"],
     ["SELL 101: 2b:1"]),
    ("a FOK that cannot fill completely is killed before any fill",
     ["a SELL 3 @100", "b SELL 3 @102"], "c BUY 5 @101 FOK",
     ["accepted 3", "canceled 3 leaves=5 fok_unfilled"],
     ["SELL 100: 1a:3", "SELL 102: 2b:3"]),
    ("a FOK does not count its own owner's orders as liquidity",
     ["c SELL 3 @100", "b SELL 3 @100"], "c BUY 5 @100 FOK",
     ["accepted 3", "canceled 3 leaves=5 fok_unfilled"],
     ["SELL 100: 1c:3 2b:3"]),
    ("a market order takes liquidity at any price and never rests",
     ["a SELL 2 @100", "b SELL 2 @500"], "c BUY 3 MKT",
     ["accepted 3",
      "trade 3-1 2@100 maker=1 taker=3", "fill 1 2@100 leaves=0 A", "fill 3 2@100 leaves=1 R",
      "trade 3-2 1@500 maker=2 taker=3", "fill 2 1@500 leaves=1 A", "fill 3 1@500 leaves=0 R"],
     ["SELL 500: 2b:1"]),
    ("a market order's remainder is canceled for lack of liquidity",
     ["a BUY 2 @100"], "b SELL 5 MKT",
     ["accepted 2", "trade 2-1 2@100 maker=1 taker=2", "fill 1 2@100 leaves=0 A", "fill 2 2@100 leaves=3 R",
      "canceled 2 leaves=3 no_liquidity"],
     []),
    ("a market order on an empty book is canceled whole",
     [], "b SELL 5 MKT",
     ["accepted 1", "canceled 1 leaves=5 no_liquidity"],
     []),
    ("a post-only order that would take is canceled",
     ["a SELL 5 @100"], "b BUY 5 @100 POST",
     ["accepted 2", "canceled 2 leaves=5 would_cross"],
     ["SELL 100: 1a:5"]),
    ("a post-only order that would not take rests",
     ["a SELL 5 @100"], "b BUY 5 @99 POST",
     ["accepted 2"],
     ["BUY 99: 2b:5", "SELL 100: 1a:5"]),
    ("self-trade prevention cancels the resting order of the same owner (cancel-oldest) and goes on",
     ["a SELL 2 @100", "b SELL 2 @100"], "a BUY 3 @100",
     ["accepted 3", "canceled 1 leaves=2 self_trade",
      "trade 3-1 2@100 maker=2 taker=3", "fill 2 2@100 leaves=0 A", "fill 3 2@100 leaves=1 R"],
     ["BUY 100: 3a:1"]),
    ("the owner cancels a resting order",
     ["a BUY 5 @99"], "a CANCEL 1",
     ["canceled 1 leaves=5 user"],
     []),
    ("nobody else can cancel it",
     ["a BUY 5 @99"], "b CANCEL 1",
     ["rejected not_owner"],
     ["BUY 99: 1a:5"]),
    ("a filled order cannot be canceled",
     ["a BUY 5 @99", "b SELL 5 @99"], "a CANCEL 1",
     ["rejected unknown_order"],
     []),
    ("a quantity decrease at the same price keeps time priority",
     ["a BUY 5 @99", "b BUY 5 @99"], "a REPLACE 1 3",
     ["replaced 1 3@99 kept"],
     ["BUY 99: 1a:3 2b:5"]),
    ("a replace to the same quantity and price keeps time priority",
     ["a BUY 5 @99", "b BUY 5 @99"], "a REPLACE 1 5",
     ["replaced 1 5@99 kept"],
     ["BUY 99: 1a:5 2b:5"]),
    ("a quantity increase loses time priority",
     ["a BUY 5 @99", "b BUY 5 @99"], "a REPLACE 1 6",
     ["replaced 1 6@99 lost"],
     ["BUY 99: 2b:5 1a:6"]),
    ("a price change loses time priority",
     ["a BUY 5 @99", "b BUY 5 @98"], "a REPLACE 1 5 @98",
     ["replaced 1 5@98 lost"],
     ["BUY 98: 2b:5 1a:5"]),
    ("a replace to a crossing price trades, with trade ids from the replace's sequence",
     ["a BUY 5 @99", "b SELL 3 @100"], "a REPLACE 1 5 @100",
     ["replaced 1 5@100 lost", "trade 3-1 3@100 maker=2 taker=1", "fill 2 3@100 leaves=0 A",
      "fill 1 3@100 leaves=2 R"],
     ["BUY 100: 1a:2"]),
    ("a post-only order replaced to a crossing price is canceled",
     ["a BUY 5 @99 POST", "b SELL 3 @100"], "a REPLACE 1 5 @100",
     ["replaced 1 5@100 lost", "canceled 1 leaves=5 would_cross"],
     ["SELL 100: 2b:3"]),
    ("a replace of a filled order is rejected",
     ["a BUY 5 @99", "b SELL 5 @99"], "a REPLACE 1 3",
     ["rejected unknown_order"],
     []),
    ("a replace by someone else is rejected",
     ["a BUY 5 @99"], "b REPLACE 1 3",
     ["rejected not_owner"],
     ["BUY 99: 1a:5"]),
    ("a replace to zero quantity is rejected (cancel instead)",
     ["a BUY 5 @99"], "a REPLACE 1 0",
     ["rejected bad_qty"],
     ["BUY 99: 1a:5"]),
    ("a replace outside the price band is rejected and changes nothing",
     ["a BUY 5 @99"], "a REPLACE 1 5 @10001",
     ["rejected price_band"],
     ["BUY 99: 1a:5"]),
    ("a zero quantity is rejected",
     [], "a BUY 0 @100",
     ["rejected bad_qty"],
     []),
    ("a quantity over the instrument's maximum is rejected",
     [], "a BUY 1001 @100",
     ["rejected qty_range"],
     []),
    ("a price outside the band is rejected",
     [], "a SELL 1 @10001",
     ["rejected price_band"],
     []),
    ("a GTC market order is rejected",
     [], "a BUY 1 MKT GTC",
     ["rejected bad_tif"],
     []),
    ("a post-only market order is rejected",
     [], "a BUY 1 MKT POST",
     ["rejected bad_tif"],
     []),
]


@pytest.mark.parametrize(
    "before, cmd, events, after", [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS]
)
@pytest.mark.parametrize("book", BOOKS)
def test_rulebook(book: str, before: list[str], cmd: str, events: list[str], after: list[str]) -> None:
    run = Runner(BOOKS[book]())
    for text in before:
        run(text)
    assert run(cmd) == events
    assert book_lines(run.book) == after


def test_level_changes_are_one_per_level_per_command_with_the_final_total() -> None:
    run = Runner()
    run("a SELL 2 @100")
    run("b SELL 3 @100")
    run("c SELL 4 @101")
    events = run("d BUY 6 @101", levels=True)
    assert [e for e in events if e.startswith("level")] == ["level SELL 100=0", "level SELL 101=3"]


def test_a_journaled_command_for_an_unknown_symbol_stops_replay() -> None:
    from exchange.engine import Engine
    from exchange.instruments import MissingInstrument, load_instruments
    from protocol.messages import TIF, NewOrder, Side

    engine = Engine(load_instruments())
    with pytest.raises(MissingInstrument, match="journal command 1 trades NOPE"):
        engine.apply(1, NewOrder("NOPE", Side.BUY, 1, 100, TIF.GTC, "a"))


@pytest.mark.parametrize("book", BOOKS)
def test_depth_bbo_and_state_hash(book: str) -> None:
    run = Runner(BOOKS[book]())
    for text in ["a BUY 5 @98", "b BUY 2 @99", "c BUY 1 @99", "a SELL 4 @101", "b SELL 6 @103"]:
        run(text)
    book = run.book
    assert book.depth(1) == ([(99, 3)], [(101, 4)])
    assert book.depth() == ([(99, 3), (98, 5)], [(101, 4), (103, 6)])
    assert book.bbo() == ((99, 3), (101, 4))
    before = book.state_hash()
    run("c REPLACE 3 1")  # same quantity, same price: nothing changes
    assert book.state_hash() == before
    run("c REPLACE 3 1 @98")
    assert book.state_hash() != before


def test_a_snapshot_that_names_a_partner_long_gone_loads_as_a_plain_order() -> None:
    """Snapshots written before the fix above kept the link of a pair's surviving order to
    the canceled one; rebuilt into the book's pairs, its next fill raised KeyError in matching."""
    from exchange.book import Book, Order
    from exchange.instruments import load_instruments
    from protocol.messages import TIF, NewOrder, Side

    book = Book(load_instruments()["ES"])
    survivor = Order(61, Side.BUY, 4490 * 4, 4, TIF.GTC, "alice", "lo", oco=62, touched=True)
    pair = [Order(70, Side.SELL, 4600 * 4, 1, TIF.GTC, "alice", None, oco=71), Order(71, Side.SELL, 4700 * 4, 1, TIF.GTC, "alice", None, oco=70)]
    book.load([survivor, *pair], md_seq=9)
    assert (survivor.oco, book.pairs) == (None, {70: 71, 71: 70})
    events = book.apply(80, NewOrder("ES", Side.SELL, 1, 4490 * 4, TIF.GTC, "bob"))
    assert [type(e).__name__ for e in events if type(e).__name__ in ("Fill", "Canceled")] == ["Fill", "Fill"]
    assert survivor.leaves == 3
