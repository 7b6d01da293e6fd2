"""Where an order-entry connection's commands go, and how their decisions come back.

Every command a Connection submits gets a *ticket*, in submission order; its reply (ACK or
REJ, or nothing for a cancel or replace whose report comes from matching) is held until
the intake has *released* the ticket: decided, and the decision durable. Queries wait
until what came before them is *settled*: released and matched. Two intakes, one contract:

- `JournalIntake` (`tickline serve`): the core's Sequencer (exchange/sequencer.py) decides at
  once; the ticket is the journal sequence (and a new order's id); a ticket is released
  once the journal has fsync'd it, settled once matching has applied it.
- `StreamIntake` (a cluster gateway, tickline/cluster.py): a command goes to its account's
  risk shard, whose Sequencer decides; the decision comes back from the stream (accepted,
  on a quorum, with its id) or as a refusal (verdicts.<gateway>). A ticket is released
  once it and every ticket before it are decided; the books (a replica) follow the stream.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol

from exchange.sequencer import Sequencer
from gateway.orders import OpenOrders
from protocol.messages import Command, NewOrder, Problem, Reason, Replace

Decision = int | Problem  # the seq (a new order's id) the command was accepted as, or why not


class Intake(Protocol):
    orders: OpenOrders  # the open orders: an accepted new order joins them once it is decided

    def submit(self, cmd: Command) -> tuple[int, Decision | None]:
        """(its ticket, its decision if made now: None means it comes later, by decision())."""
    def decision(self, ticket: int) -> Decision:
        """A ticket's decision once released (for one that was not decided at submit)."""
    def released(self) -> int:
        """Every ticket up to this one is decided and durable."""
    def settled(self, ticket: int) -> bool:
        """The ticket is released and its command matched: state reflects it."""


class JournalIntake:
    """`tickline serve`: decided at once by the sequencer, which records to the journal."""

    def __init__(self, sequencer: Sequencer, durable_seq: Callable[[], int], applied: Callable[[int], bool]) -> None:
        self.orders = OpenOrders()
        self.step = sequencer.step
        self.durable_seq = durable_seq  # the last seq fsync'd
        self.applied = applied  # whether matching has applied every seq up to one

    def submit(self, cmd: Command) -> tuple[int, Decision | None]:
        decision = self.step(cmd)
        if not isinstance(decision, int):
            return 0, decision
        if type(cmd) is NewOrder:
            self.orders.add(decision, cmd)
        return decision, decision

    def decision(self, ticket: int) -> Decision:
        return ticket

    def released(self) -> int:
        return self.durable_seq()

    def settled(self, ticket: int) -> bool:
        return self.durable_seq() >= ticket and self.applied(ticket)


class StreamIntake:
    """A cluster gateway: tickets are this gateway's own numbers (its `name` is this
    incarnation); `forward` sends a command with its ticket to its account's risk shard."""

    def __init__(self, name: str, forward: Callable[[int, Command], None], unavailable: Callable[[Command], str | None] = lambda cmd: None) -> None:
        self.name = name
        self.forward = forward
        # Why a command's risk shard cannot decide it now (it stopped answering), or None:
        # a new order or replace for it is refused at once rather than left waiting.
        self.unavailable = unavailable
        self.waiting: dict[int, tuple[float, Command]] = {}  # forwarded new orders and replaces not decided yet: (since, command)
        self.orders = OpenOrders()  # every accepted new order joins as the stream tells of it (this gateway's or not)
        self.tickets = 0  # the last ticket given
        self.through = 0  # every ticket up to this one is decided
        self.undecided: set[int] = set()  # tickets not decided yet
        self.decisions: dict[int, Decision] = {}  # ticket -> decision, until its reply takes it
        self.latest = 0  # the highest seq heard of on the stream
        self.matched_through = 0  # every ticket up to this one is decided and its matching applied here

    def submit(self, cmd: Command) -> tuple[int, Decision | None]:
        weighed = type(cmd) is NewOrder or type(cmd) is Replace
        if weighed and (why := self.unavailable(cmd)) is not None:
            return 0, Problem(Reason.UNAVAILABLE, f"{why}: nothing was done; try again")
        self.tickets += 1
        self.undecided.add(self.tickets)
        if weighed:
            self.waiting[self.tickets] = (time.monotonic(), cmd)
        self.forward(self.tickets, cmd)
        return self.tickets, None

    def give_up(self, silent_after: float, stuck_after: float) -> bool:
        """Refuse the new orders and replaces still waiting for their risk shard's decision
        after `silent_after` seconds if the shard stopped answering, or after `stuck_after`
        whatever the reason (the stream has no quorum): their clients hear within a bound,
        and what came after them is answered. The shard still decides them from the stream
        once it can, so the refusal says they may take effect. Returns whether any was."""
        now, refused = time.monotonic(), False
        for ticket, (since, cmd) in list(self.waiting.items()):
            waited = now - since
            why = self.unavailable(cmd) if waited > silent_after else None
            if why is None and waited > stuck_after:
                why = f"its risk shard has not decided it within {stuck_after:g} s (the stream may have no quorum, or an engine shard it waits for is down)"
            if why is not None:
                self.turned_down(ticket, Reason.UNAVAILABLE.value, f"{why}; it may still take effect once it does: see ORDERS")
                refused = True
        return refused

    def decision(self, ticket: int) -> Decision:
        return self.decisions.pop(ticket)

    def released(self) -> int:
        return self.through

    def settled(self, ticket: int) -> bool:
        return ticket <= self.matched_through

    def matched(self, through: int) -> None:
        """Tickets up to through are decided and the replica has applied their matching
        (the gateway calls it after a batch's replies, before its reports)."""
        self.matched_through = through

    # ------------------------------------------------------------------ from the stream

    def sequenced(self, gateway: str, ticket: int, seq: int, cmd: Command) -> None:
        """A risk shard accepted a command (it is on the stream's quorum) as seq."""
        self.latest = max(self.latest, seq)
        if gateway == self.name and ticket in self.undecided:  # (not if it was given up on)
            self.decisions[ticket] = seq
            self.undecided.discard(ticket)
            self.waiting.pop(ticket, None)
        if type(cmd) is NewOrder:
            self.orders.add(seq, cmd)

    def turned_down(self, ticket: int, reason: str, text: str) -> None:
        if ticket in self.undecided:
            self.undecided.discard(ticket)
            self.waiting.pop(ticket, None)
            self.decisions[ticket] = Problem(Reason(reason), text)

    def advance(self) -> int:
        """Move `through` past every decided ticket; returns it."""
        while self.through < self.tickets and self.through + 1 not in self.undecided:
            self.through += 1
        return self.through
