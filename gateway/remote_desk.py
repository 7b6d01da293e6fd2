"""The order desk of a cluster gateway: risk and sequencing are elsewhere (risk shards).

A command is forwarded with a token of this gateway; its outcome comes back later: the
risk shard's sequenced copy (read from the stream, with its order id) or a refusal.
`durable_seq()` is the last token up to which every outcome is in, so the Connection
releases each ACK or REJ in request order, after the command is on a quorum of the
stream. The books are a read replica of the engine shards (the same stream applied by
the same matching code), so BOOK, ORDERS and reports read local state, as in
`tickline serve`; balances are asked of the account's risk shard.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from exchange.book import Book
from exchange.instruments import Instrument
from exchange.risk import Risk
from exchange.sequencer import Sequencer
from gateway.desk import OrderDesk
from protocol import replies as R
from protocol.messages import Command, NewOrder, Problem, Reason
from protocol.requests import BalancesQuery

# (account) -> its (asset, available, locked) rows, from its risk shard
BalancesSource = Callable[[str], Awaitable[list[tuple[str, int, int]]]]


class RemoteDesk(OrderDesk):
    deferred = True
    fetched = (*OrderDesk.fetched, BalancesQuery)

    def __init__(
        self,
        instruments: dict[str, Instrument],
        books: dict[str, Book],
        name: str,
        forward: Callable[[int, Command], None],
        balances_source: BalancesSource,
        **options: object,
    ) -> None:
        self.name = name  # this gateway (its incarnation): sequenced commands carry it
        self.forward = forward  # (token, command) -> to the account's risk shard
        self.balances_source = balances_source
        self.tokens = 0  # the last token given
        self.through = 0  # every token up to this has its outcome
        self.outcomes: dict[int, int | Problem] = {}  # token -> seq or refusal, until its reply takes it
        self.forms: dict[int, bool] = {}  # token -> JSON form, until sequenced
        self.latest = 0  # the highest seq applied here
        super().__init__(
            # No sequencer here: submit (below) forwards to the accounts' risk shards, whose
            # Sequencers decide; this one is never stepped (its Risk only names the assets).
            instruments, books, Sequencer(Risk(instruments), lambda: 0, lambda cmd: None), lambda: self.through,
            lambda token: token <= self.through, **options,  # type: ignore[arg-type]
        )  # fmt: skip

    def submit(self, cmd: Command, json: bool = False) -> int | Problem:
        if type(cmd) is NewOrder:
            if cmd.price is None:
                cmd = self.books[cmd.symbol].budgeted(cmd)
            self._orders.inc()
        self.tokens += 1
        token = self.tokens
        self.forms[token] = json
        self.forward(token, cmd)
        return token

    def outcome(self, token: int) -> int | Problem:
        return self.outcomes.pop(token)

    # ------------------------------------------------------------------ from the stream

    def sequenced(self, gateway: str, token: int, seq: int, cmd: Command) -> None:
        """A risk shard accepted a command (it is on the stream's quorum) with this seq."""
        self.latest = max(self.latest, seq)
        json = False
        if gateway == self.name:
            self.outcomes[token] = seq
            json = self.forms.pop(token, False)
        if type(cmd) is NewOrder:
            self.orders.add(seq, cmd, json)

    def turned_down(self, token: int, reason: str, text: str) -> None:
        if token in self.forms:
            del self.forms[token]
            self.outcomes[token] = Problem(Reason(reason), text)

    def advance(self) -> int:
        """Move `through` past every token with an outcome; returns it."""
        while self.through < self.tokens and self.through + 1 not in self.forms:  # out of forms: decided
            self.through += 1
        return self.through

    def fetch_balances(self, owner: str, done: Callable[[R.Reply], None]) -> None:
        async def fetch() -> R.Reply:
            rows = await self.balances_source(owner)
            assets = self.risk.assets
            return R.BalancesReply(owner, [R.Balance(a, assets[a].format(avail), assets[a].format(locked)) for a, avail, locked in rows])

        self._lookup(fetch(), done, "balances", owner, "the balances")
