"""The Python client library (client/) and its example, against the real server."""

from __future__ import annotations

import asyncio
import random
import re
import subprocess
import sys
import time

import pytest

from client import MarketData, OrderRejected, RequestFailed, connect, market_data
from protocol import marketdata as M
from protocol import replies as R
from tests.harness import PASSWORD, ROOT, Client, Server


def test_orders_pipeline_and_each_answer_finds_its_request(server: Server) -> None:
    async def main() -> None:
        async with connect("127.0.0.1", server.port, account="t1", password=PASSWORD) as a, connect("127.0.0.1", server.port, account="t2", password=PASSWORD) as b:
            acks = await asyncio.gather(*[a.sell("AAPL", "1", f"{150 + i % 10}.00") for i in range(200)])  # sent before any ACK is read
            assert [ack.order_id for ack in acks] == list(range(61, 261))
            assert (acks[0].side, acks[0].price, acks[0].tif) == ("SELL", "150.00", "GTC")
            with pytest.raises(OrderRejected) as refused:
                await a.buy("AAPL", "1", "150.001")
            assert refused.value.reason == "bad_tick"
            taken = await b.buy("AAPL", "3", tif="IOC")
            assert taken.price == "MKT"
            canceled = await a.cancel(acks[-1].order_id)
            assert canceled == R.CanceledReport(acks[-1].order_id, "1", "user", acks[-1].id)
            replaced = await a.replace(acks[-2].order_id, "1", "170.00")
            assert (replaced.price, replaced.priority) == ("170.00", "lost")
            with pytest.raises(OrderRejected) as unknown:
                await a.cancel(999_999)
            assert unknown.value.reason == "unknown_order"
            with pytest.raises(OrderRejected):
                await a.book("NOPE")
            # Execution reports arrive in order, the fills of the three price-time-first sells first.
            seen: list[R.FillReport | R.CanceledReport | R.ReplacedReport | R.Reject] = []
            async for report in a.reports():
                seen.append(report)
                if len(seen) == 6:
                    break
            assert [(type(r).__name__, r.order_id) for r in seen] == [
                ("FillReport", 61), ("FillReport", 71), ("FillReport", 81),
                ("CanceledReport", acks[-1].order_id), ("ReplacedReport", acks[-2].order_id), ("Reject", 999_999),
            ]  # fmt: skip
            assert (await a.ticker("AAPL")).volume == "3"
            assert [c.trades for c in (await a.klines("AAPL", "1m")).candles] == [3]
            assert (await a.stats())["trades_total"] == 3

    asyncio.run(main())


def random_stream(seed: int, n: int) -> list[tuple[str, ...]]:
    """Orders, cancels and replaces on AAPL around 100.00 (ids resolved as it runs)."""
    rng = random.Random(seed)
    out: list[tuple[str, ...]] = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.65:
            out.append(("order", rng.choice(["buy", "sell"]), str(rng.randint(1, 20)), f"{rng.randint(9_900, 10_100) / 100:.2f}"))
        elif roll < 0.7:
            out.append(("market", rng.choice(["buy", "sell"]), str(rng.randint(1, 10))))
        elif roll < 0.85:
            out.append(("cancel",))
        else:
            out.append(("replace", str(rng.randint(1, 20)), f"{rng.randint(9_900, 10_100) / 100:.2f}"))
    return out


async def run_stream(server: Server, stream: list[tuple[str, ...]], md: MarketData) -> None:
    """Play the stream from two accounts, in bursts that do not wait for each answer."""
    rng = random.Random(len(stream))
    async with connect("127.0.0.1", server.port, account="t3", password=PASSWORD) as a, connect("127.0.0.1", server.port, account="t4", password=PASSWORD) as b:
        open_orders: list[tuple[object, int]] = []
        pending: list[asyncio.Future] = []
        for i, step in enumerate(stream):
            ex = a if i % 2 else b
            if step[0] == "order":
                pending.append((ex.buy if step[1] == "buy" else ex.sell)("AAPL", step[2], step[3]))
            elif step[0] == "market":
                pending.append((ex.buy if step[1] == "buy" else ex.sell)("AAPL", step[2]))
            elif open_orders:
                owner, order_id = open_orders.pop(rng.randrange(len(open_orders)))
                if step[0] == "cancel":
                    pending.append(owner.cancel(order_id))  # type: ignore[attr-defined]
                else:
                    pending.append(owner.replace(order_id, step[1], step[2]))  # type: ignore[attr-defined]
                    open_orders.append((owner, order_id))
            if len(pending) >= 25 or i == len(stream) - 1:  # a burst: then learn the new ids
                results = await asyncio.gather(*pending, return_exceptions=True)
                for result in results:
                    if isinstance(result, R.Ack) and result.price != "MKT":
                        open_orders.append((a if result.id and result.id.startswith(a._prefix) else b, result.order_id))
                pending = []
        await replica_matches(md, a)


async def replica_matches(md: MarketData, ex: object, timeout: float = 10.0) -> None:
    book = await md.synced("AAPL")
    deadline = time.monotonic() + timeout
    while True:
        truth = await ex.book("AAPL", 1000)  # type: ignore[attr-defined]
        bids, asks = book.levels(1000)
        if (bids, asks) == (truth.bids, truth.asks) or time.monotonic() > deadline:
            assert (bids, asks) == (truth.bids, truth.asks)
            return
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("seed", [1, 2])
def test_the_book_replica_equals_book_after_a_random_stream(server: Server, seed: int) -> None:
    async def main() -> None:
        async with market_data("127.0.0.1", server.md_port, ["AAPL"]) as md:
            await run_stream(server, random_stream(seed, 600), md)
            assert md.gaps == 0
            assert md.books["AAPL"].bids and md.books["AAPL"].asks  # a book worth comparing

    asyncio.run(main())


def test_a_lost_update_is_noticed_and_the_replica_recovers_by_itself(server: Server) -> None:
    async def main() -> None:
        async with market_data("127.0.0.1", server.md_port, ["AAPL"]) as md:
            receive, levels = md.receive, [0]

            def lossy(m: M.MdMessage) -> None:  # the 20th level change never arrives
                if isinstance(m, M.LevelUpdate):
                    levels[0] += 1
                    if levels[0] == 20:
                        return
                receive(m)

            md.receive = lossy  # type: ignore[method-assign]
            await run_stream(server, random_stream(3, 300), md)
            assert md.gaps == 1

    asyncio.run(main())


def book(client: Client) -> list[str]:
    client.send("BOOK AAPL 1\n")
    return client.until("END")


def test_the_example_market_maker_quotes_trades_and_cleans_up(server: Server) -> None:
    cmd = [
        sys.executable, "examples/market_maker.py", "--port", str(server.port), "--md-port", str(server.md_port),
        "--account", "t5", "--password", PASSWORD, "--symbol", "AAPL", "--qty", "5", "--spread", "10",
        "--reference", "100.00", "--every", "0.1", "--duration", "3",
    ]  # fmt: skip
    maker = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    taker = server.client("t6")
    deadline = time.monotonic() + 10
    while "ASK 100.05 5" not in book(taker) and time.monotonic() < deadline:
        time.sleep(0.1)
    ack, fill = taker.ask("BUY AAPL 5", 2)
    assert re.fullmatch(r"FILL (\d+) AAPL BUY 5 100.05 leaves=0 trade=\1-1 liq=R", fill), (ack, fill)
    out, err = maker.communicate(timeout=20)
    assert maker.returncode == 0, err
    assert "quoting AAPL mid=100.00 bid=99.95 ask=100.05" in out
    assert "FILL SELL 5 @ 100.05 leaves=0" in out  # the taker's buy, seen by the maker
    assert out.rstrip().endswith("done: 1 fills, 0 gaps in the feed")
    assert book(taker) == ["BOOK AAPL bids=0 asks=0", "END"]  # it canceled its quotes


def test_every_connection_gets_reports_in_its_own_form_and_the_client_never_dies_of_a_line(server: Server) -> None:
    """Reported: reports followed the form of the order's request, so a JSON connection got
    text FILL lines for orders its owner placed from nc, and the client raised and exited."""

    async def main() -> None:
        typed = Client(server.port)
        typed.login("t1")
        assert typed.ask("BUY AAPL 2 150.00", 1)[0].startswith("ACK")
        async with connect("127.0.0.1", server.port, account="t1", password=PASSWORD) as algo:
            reports = algo.reports()
            seller = Client(server.port)
            seller.login("t2")
            seller.ask("SELL AAPL 2 150.00", 2)
            fill = await asyncio.wait_for(reports.__anext__(), 10)
            assert isinstance(fill, R.FillReport) and (fill.qty, fill.price, fill.leaves) == ("2", "150.00", "0")
            assert typed.line().startswith("FILL ")  # the text connection: in text
            algo._line(b"FILL 61 AAPL BUY 2 150.00 leaves=0 trade=62-1 liq=R\n")  # a line it cannot read: skipped
            algo._line(b'{"type":"err","code":"unknown_command","text":"never asked about"}\n')  # nothing waits for it: ignored
            await algo.ping()  # and the connection goes on
            assert algo.unexpected_lines == 1
            assert (await algo.orders()).orders == []

    asyncio.run(main())


def test_a_request_the_server_could_not_decode_fails_at_once_and_the_next_query_gets_its_own_answer(server: Server) -> None:
    # Seen by hand: buy("AAPL", 10, "150.25") (an int quantity) or cancel(10**23) went out,
    # the server answered an ERR that names no order, and the order's future waited
    # forever, or a query waiting meanwhile took that ERR as its answer.
    async def main() -> None:
        async with connect("127.0.0.1", server.port, account="t1", password=PASSWORD) as ex:
            pending = asyncio.ensure_future(ex.balances())
            with pytest.raises(RequestFailed, match=r"^bad_request: Expected `str`, got `int` - at `\$.qty`$"):
                ex.buy("AAPL", 10, "150.25")  # type: ignore[arg-type]
            with pytest.raises(RequestFailed, match=r"^bad_request: Expected `int` <= 999999999999999999 - at `\$.order_id`$"):
                ex.cancel(10**23)
            with pytest.raises(RequestFailed, match=r"^line_too_long: a line may be at most 4096 bytes$"):
                ex.sell("AAPL", "1", "99.00", id="x" * 5000)
            with pytest.raises(RequestFailed, match=r"^bad_request: Expected `int`, got `str` - at `\$.levels`$"):
                await ex.book("AAPL", "5")  # type: ignore[arg-type]
            assert isinstance(await pending, R.BalancesReply)
            assert (await ex.buy("AAPL", "1", "99.00")).price == "99.00"
            assert isinstance(await ex.book("AAPL", 1), R.BookReply)

    asyncio.run(asyncio.wait_for(main(), 20))


def test_the_client_places_stops_and_hears_them_fire(server: Server) -> None:
    async def main() -> None:
        async with connect("127.0.0.1", server.port, account="t1", password=PASSWORD) as a, connect("127.0.0.1", server.port, account="t2", password=PASSWORD) as b:
            ack = await a.sell("AAPL", "2", stop="99.50")
            assert (ack.price, ack.tif, ack.stop) == ("MKT", "IOC", "99.50")
            await b.buy("AAPL", "5", "99.50")
            await a.sell("AAPL", "1", "99.50")  # trades at 99.50: the stop fires, sells 2 more into the bid
            seen = []
            async for report in a.reports():
                seen.append(report)
                if len(seen) == 3:
                    break
            assert [(type(r).__name__, r.order_id) for r in seen] == [("FillReport", 63), ("TriggeredReport", 61), ("FillReport", 61)]
            assert seen[1] == R.TriggeredReport(61, "AAPL", "SELL", "2", "MKT", "99.50", ack.id)

    asyncio.run(main())


def test_the_example_bracket_order_enters_then_its_stop_loss_cancels_its_take_profit(server: Server) -> None:
    seller, bidder = server.client("t6"), server.client("t7")
    seller.ask("SELL BTC-USD 0.5 60000")
    cmd = [
        sys.executable, "examples/bracket_order.py", "--port", str(server.port), "--account", "t5", "--password", PASSWORD,
        "--symbol", "BTC-USD", "--qty", "0.5", "--entry", "60000", "--take-profit", "63000", "--stop-loss", "58000", "--duration", "20",
    ]  # fmt: skip
    bracket = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert bracket.stdout is not None
    assert bracket.stdout.readline() == "entry FILL 0.50000 @ 60000.00\n"
    assert re.fullmatch(r"bracket: take-profit (\d+) @ 63000, stop-loss \d+ at 58000 \(oco=\1\)\n", bracket.stdout.readline())
    bidder.ask("BUY BTC-USD 1 57000")
    seller.ask("SELL BTC-USD 0.1 57000", 2)  # prints 57000.00: the stop-loss fires and sells into the bid
    out, err = bracket.communicate(timeout=20)
    assert bracket.returncode == 0, err
    assert out.splitlines() == [
        "stop-loss TRIGGERED at 58000.00",
        "stop-loss FILL 0.50000 @ 57000.00 leaves=0.00000",
        "take-profit CANCELED reason=oco",
        "done",
    ]
