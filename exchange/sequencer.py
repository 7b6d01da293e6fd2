"""The core's first stage: every command is held, numbered and recorded here, or refused.

    command --> Sequencer.step --> seq (recorded: journaled, or published to the stream)
                               \\-> Problem (refused: nothing recorded, nothing changed)

One object, driven by both adapters: `tickline serve` numbers with its journal's next
sequence and records by appending to it (gateway/desk.py); a cluster's risk shard numbers
its share of the ids and records by publishing to its engine shards (cluster/risk_shard.py).
Replay (exchange/engine.py) applies what was recorded, with nothing left to refuse.

The rules, each in one place:
- funds: a command's hold (exchange/risk.py, `Risk.hold`): an owner who cannot pay is refused;
- transfers: a ref is applied once (`Reason.DUPLICATE_REF`, carrying the seq it was applied
  as); the same ref for a different transfer is refused (`Reason.REF_REUSED`); a withdrawal
  needs the funds (exchange/transfers.py has the words and the reply).
No clock, no I/O: the same commands in the same order give the same numbers and refusals.
"""

from __future__ import annotations

from typing import Callable

from exchange.risk import Risk
from protocol.messages import Command, Problem, Reason, Transfer


class Sequencer:
    def __init__(self, risk: Risk, next_seq: Callable[[], int] = lambda: 0, record: Callable[[Command], object] = lambda cmd: None) -> None:
        self.risk = risk
        self.next_seq = next_seq  # the number the next accepted command gets
        self.record = record  # make an accepted command durable (the journal, the stream); replay needs neither

    def step(self, cmd: Command) -> int | Problem:
        """Hold, number and record cmd; its seq, or why it is refused."""
        if type(cmd) is Transfer:
            before = self.risk.refs.get(cmd.ref)
            if before is not None:
                return self._applied_before(cmd, before)
        seq = self.next_seq()
        problem = self.risk.hold(seq, cmd)
        if problem is not None:
            return problem
        self.record(cmd)
        return seq

    def _applied_before(self, cmd: Transfer, before: int) -> Problem:
        """A repeat of the transfer changes nothing; another transfer with its ref is refused
        (a ref names one transfer: the operator meant something else)."""
        terms = self.risk.ref_terms.get(cmd.ref)
        if terms is None or terms == (cmd.account, cmd.asset, cmd.amount):
            return Problem(Reason.DUPLICATE_REF, f"ref {cmd.ref} was applied before as {before}", before)
        return Problem(Reason.REF_REUSED, f"ref {cmd.ref} was applied as {before} to {self.risk.describe(cmd.ref)}; a new transfer needs a new ref", before)

    def replay(self, seq: int, cmd: Command) -> None:
        """A recorded command: accepted when it was recorded, so applied as it is."""
        self.risk.hold(seq, cmd, replay=True)
