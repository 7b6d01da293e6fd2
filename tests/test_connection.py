"""The order-entry Connection as a state machine: no sockets, no event loop.

A Bench wires the real desk, books and matching with a fake journal (durable when the
test says so) and a manual scheduler (matching runs when the test says so), and plays
the server's part: it routes reports to the connection and tells it about progress.
"""

from __future__ import annotations

from typing import Callable

from exchange.engine import Engine
from exchange.instruments import load_instruments
from exchange.matching import Durable, Matching
from exchange.sequencer import Sequencer
from gateway.connection import Connection
from gateway.desk import OrderDesk, report_fields
from gateway.intake import JournalIntake
from protocol import replies as R
from protocol.messages import TIF, Command, Event, NewOrder, Refusal, Side, Transfer


class Bench:
    def __init__(self, max_inflight: int = 20_000, journal: list[Command] = []) -> None:  # noqa: B006 (read only)
        """journal: what a process before this one journaled (this one restarts after it)."""
        self.max_inflight = max_inflight
        self.engine = Engine(load_instruments())
        for seq, cmd in enumerate(journal, 1):
            self.engine.apply(seq, cmd)
        self.journaled: list[Command] = list(journal)
        self.durable = len(journal)
        self.steps: list[Callable[[], None]] = []
        self.matching = Matching(self.engine.books, self.steps.append)
        self.refusals: list[Refusal] = []
        sequencer = Sequencer(self.engine.risk, lambda: len(self.journaled) + 1, self.journaled.append)
        intake = JournalIntake(sequencer, lambda: self.durable, self.matching.applied)
        self.desk = OrderDesk(self.engine.instruments, self.engine.books, self.engine.risk, intake, version="test", refused=self.refusals.append)
        self.conns: list[Connection] = []
        self.durable_batch = Durable(self.matching, [self.release], lambda first, count, record: None, lambda: None)
        self.matching.send_to([self.engine.risk.settle, self.deliver])
        self.out: dict[Connection, bytes] = {}

    def connect(self) -> Connection:
        """A connection logged in as a new, funded account (LOGIN itself is tested end to end)."""
        conn = Connection(self.desk, max_inflight=self.max_inflight)
        conn.owner = f"acct{len(self.conns)}"
        for asset in self.engine.risk.assets:  # funded outside the journal: order ids start at 1
            self.engine.risk.hold(0, Transfer(conn.owner, asset, 10**18, f"{conn.owner}:{asset}"), replay=True)
        self.conns.append(conn)
        self.out[conn] = b""
        return conn

    def sync(self, match: bool = True) -> None:
        """The journal commits everything appended, and hands the batch on as the server
        does (exchange/matching.py Durable); match=False: as if matching were behind, it
        waits for match()."""
        first = self.durable + 1
        self.durable = len(self.journaled)
        batch = self.journaled[first - 1 :]
        if match:
            self.durable_batch(first, batch, 0, b"")
        else:
            self.durable_batch.release(first, batch)

    def release(self, through: int) -> None:
        for conn in self.conns:
            self.out[conn] += conn.released(through)

    def match(self) -> None:
        """Run what matching has left: the batch sync(match=False) held, the scheduled steps."""
        self.matching.apply_now()
        while self.steps:
            self.steps.pop(0)()

    def deliver(self, events: list[Event]) -> None:
        for e in self.desk.reports(events):
            text_of, struct, fields = report_fields(e, self.desk.instruments)
            for conn in self.conns:
                if conn.owner == e.owner:
                    self.out[conn] += conn.report(R.to_json(struct(*fields)) if conn.json_mode else text_of(*fields))
        for conn in self.conns:
            self.out[conn] += conn.settle()

    def send(self, conn: Connection, text: str) -> None:
        self.out[conn] += conn.receive(text.encode())

    def take(self, conn: Connection) -> list[str]:
        data, self.out[conn] = self.out[conn], b""
        return data.decode().splitlines()


def test_an_ack_goes_out_only_once_the_order_is_durable() -> None:
    b = Bench()
    c = b.connect()
    b.send(c, "BUY AAPL 10 150.25 id=a\n")
    assert b.take(c) == []  # journaled, not yet on disk
    assert c.waiting
    b.sync()
    assert b.take(c) == ["ACK 1 BUY AAPL 10 150.25 GTC id=a"]


def test_a_bad_line_answers_at_once_when_nothing_is_held() -> None:
    b = Bench()
    c = b.connect()
    b.send(c, "BUY AAPL 10 150.255\nFLY\n")
    assert b.take(c) == [
        "REJ bad_tick price 150.255 is not on the tick 0.01",
        "ERR unknown_command unknown command 'FLY'; type HELP",
    ]
    assert [r.reason for r in b.refusals] == ["bad_tick"]
    assert not c.waiting


def test_replies_keep_request_order_and_queries_read_the_sessions_own_writes() -> None:
    b = Bench()
    c = b.connect()
    b.send(c, "BUY AAPL 1 96.00 id=o1\nCANCEL id=o1\nORDERS\nBOOK AAPL 10\nPING\n")
    assert b.take(c) == []
    assert b.journaled and len(b.journaled) == 2  # the BUY and the CANCEL; ORDERS waits
    b.sync()  # durable, and matched in the same step: the ACK first, then what matching said
    assert b.take(c) == [
        "ACK 1 BUY AAPL 1 96.00 GTC id=o1",
        "CANCELED 1 leaves=1 reason=user id=o1",
        "ORDERS 0", "END",
        "BOOK AAPL bids=0 asks=0", "END",
        "PONG",
    ]  # fmt: skip


def test_commands_after_a_waiting_query_are_not_journaled_before_it_answers() -> None:
    b = Bench()
    c = b.connect()
    b.send(c, "BUY AAPL 1 96.00 id=o1\nORDERS\nCANCEL id=o1\nORDERS\n")
    assert len(b.journaled) == 1
    assert c.over_inflight  # reading stops while lines wait behind the query
    b.sync()
    b.match()
    assert b.take(c) == ["ACK 1 BUY AAPL 1 96.00 GTC id=o1", "ORDERS 1", "ORDER 1 BUY AAPL 1 96.00 GTC id=o1", "END"]
    assert len(b.journaled) == 2 and not c.over_inflight
    b.sync()
    b.match()
    assert b.take(c) == ["CANCELED 1 leaves=1 reason=user id=o1", "ORDERS 0", "END"]


def test_quit_says_bye_after_the_reports_of_everything_before_it() -> None:
    b = Bench()
    seller, buyer = b.connect(), b.connect()
    b.send(seller, "SELL AAPL 5 100\n")
    b.sync()
    b.match()
    b.send(buyer, "BUY AAPL 5 100 IOC\nQUIT\nBUY AAPL 1 1\n")
    assert len(b.journaled) == 2  # nothing after QUIT
    assert b.take(buyer) == [] and not buyer.done
    b.sync(match=False)  # matching behind: durable now, matched a step later
    assert b.take(buyer) == ["ACK 2 BUY AAPL 5 100.00 IOC"]
    assert not buyer.done  # the fill has not happened yet
    b.match()
    assert b.take(buyer) == ["FILL 2 AAPL BUY 5 100.00 leaves=0 trade=2-1 liq=R", "BYE goodbye"]
    assert buyer.done
    assert b.take(seller) == ["ACK 1 SELL AAPL 5 100.00 GTC", "FILL 1 AAPL SELL 5 100.00 leaves=0 trade=2-1 liq=A"]


def test_eof_delivers_every_reply_and_report_then_closes_without_bye() -> None:
    b = Bench()
    c = b.connect()
    b.send(c, "BUY AAPL 1 100.10 IOC\n")
    b.out[c] += c.eof()
    assert not c.done and c.waiting
    b.sync()
    b.match()
    assert b.take(c) == ["ACK 1 BUY AAPL 1 100.10 IOC", "CANCELED 1 leaves=1 reason=expired"]
    assert c.done


def test_eof_in_the_middle_of_a_line_refuses_it() -> None:
    b = Bench()
    c = b.connect()
    b.send(c, "PING\nBUY AAPL 10")
    b.out[c] += c.eof()
    assert b.take(c) == ["PONG", "ERR incomplete_line the connection closed in the middle of a line; it was not executed"]
    assert b.journaled == [] and c.done


def test_reading_pauses_past_the_inflight_bound_and_resumes_when_durable() -> None:
    b = Bench(max_inflight=3)
    c = b.connect()
    b.send(c, "".join(f"BUY AAPL 1 {90 + i}\n" for i in range(4)))
    assert c.over_inflight
    b.sync()
    assert not c.over_inflight
    assert len(b.take(c)) == 4


def test_json_requests_get_json_replies_in_order() -> None:
    b = Bench()
    c = b.connect()
    b.send(c, '{"op":"buy","symbol":"AAPL","qty":"2","price":"99.5","id":"j1"}\n{"op":"ping"}\n')
    b.sync()
    b.match()
    assert b.take(c) == [
        '{"type":"ack","order_id":1,"side":"BUY","symbol":"AAPL","qty":"2","price":"99.50","tif":"GTC","id":"j1"}',
        '{"type":"pong"}',
    ]


def test_orders_resting_at_a_restart_are_listed_canceled_by_client_id_and_free_their_client_ids() -> None:
    before = [
        Transfer("acct0", "USD", 10**18, "before:USD"),
        NewOrder("AAPL", Side.BUY, 5, 9000, TIF.GTC, "acct0", "q1"),
        NewOrder("AAPL", Side.BUY, 2, 8900, TIF.GTC, "acct0"),
        NewOrder("ES", Side.BUY, 1, 18000, TIF.GTC, "acct1", "q1"),
    ]
    b = Bench(journal=before)  # the desk knows them from the books alone
    c = b.connect()
    b.send(c, "ORDERS\nCANCEL id=q1\n")
    b.sync()
    b.send(c, "BUY AAPL 1 90 id=q1\nORDERS\nCANCEL 4\n")
    b.sync()
    assert b.take(c) == [
        "ORDERS 2", "ORDER 2 BUY AAPL 5 90.00 GTC id=q1", "ORDER 3 BUY AAPL 2 89.00 GTC", "END",
        "CANCELED 2 leaves=5 reason=user id=q1",
        "ACK 6 BUY AAPL 1 90.00 GTC id=q1",
        "ORDERS 2", "ORDER 3 BUY AAPL 2 89.00 GTC", "ORDER 6 BUY AAPL 1 90.00 GTC id=q1", "END",
        "REJ not_owner order=4 order 4 is not yours",
    ]  # fmt: skip


def test_an_owner_cannot_cancel_anothers_order() -> None:
    b = Bench()
    alice, mallory = b.connect(), b.connect()
    b.send(alice, "BUY AAPL 1 99\n")
    b.sync()
    b.send(mallory, "CANCEL 1\n")
    assert b.take(mallory) == ["REJ not_owner order=1 order 1 is not yours"]
    assert len(b.journaled) == 1


def test_orders_resting_at_a_restart_are_counted_and_closed_before_their_owner_asks_for_them() -> None:
    before = [
        Transfer("acct0", "USD", 10**18, "before:USD"),
        NewOrder("AAPL", Side.BUY, 5, 9000, TIF.GTC, "acct0", "q1"),
        NewOrder("AAPL", Side.BUY, 2, 8900, TIF.GTC, "acct0", "q2"),
        Transfer("acct1", "AAPL", 10**6, "before:AAPL"),
        NewOrder("AAPL", Side.SELL, 1, 9500, TIF.GTC, "acct1", "s1"),  # two owners in one book
    ]
    b = Bench(journal=before)
    alice, bob = b.connect(), b.connect()
    assert (b.desk.orders.count("acct0"), b.desk.orders.count("acct1")) == (2, 1)  # LOGIN's open=
    b.send(bob, "SELL AAPL 5 90\n")  # fills q1 (order 2) before acct0 asked about its orders
    b.sync()
    assert (b.desk.orders.count("acct0"), b.desk.orders.count("acct1")) == (1, 1)
    b.send(alice, "BUY AAPL 1 80 id=q1\nBUY AAPL 1 80 id=q2\nORDERS\n")
    b.sync()
    assert b.take(alice) == [
        "FILL 2 AAPL BUY 5 90.00 leaves=0 trade=6-1 liq=A id=q1",
        "ACK 7 BUY AAPL 1 80.00 GTC id=q1",
        "REJ duplicate_id id=q2 an open order already has id q2",
        "ORDERS 2", "ORDER 3 BUY AAPL 2 89.00 GTC id=q2", "ORDER 7 BUY AAPL 1 80.00 GTC id=q1", "END",
    ]  # fmt: skip
    assert b.desk.orders.count("acct0") == 2
