"""Balances and pre-trade risk: every account's available and locked amount of every asset.

Two steps, as exchange-core's risk engine has them:
- `hold` (R1) at the sequencing point, in journal order, before a command is journaled:
  a new order locks what it can cost its owner (a limit BUY qty x price of the quote
  asset, a SELL qty of the base, a market BUY its `budget`), a replace locks the whole
  of its new order, a withdrawal takes what it takes. If the owner cannot pay, the
  command is refused and never journaled. Deposits are credited here too.
- `settle` (R2) after matching, from the book's events: a fill pays each side (fees to
  FEE_ACCOUNT), a cancel (user, IOC remainder, FOK kill, self-trade, market remainder)
  releases what is left of its order's hold, a replace swaps the old hold for the new.

Why this is deterministic although matching drains per-symbol queues in its own order:
the accept/refuse decisions are all made in `hold`, in journal order, and recorded by
the journal itself (only accepted commands are in it, each with what it locked). What
`settle` does is fixed per order by its own symbol's events; and settlement never lowers
anyone's `available`. So a replay applying each command's hold and settlement in
journal order reaches the same balances as the live server, and never goes below zero
where the live server did not. tests/test_risk.py replays live-like interleavings.

The state is keyed by account and never reads a book: a later step can run it apart
from matching. No clock, no I/O, integers only.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import Iterable

from exchange.instruments import Asset, Instrument, assets_of
from protocol.messages import (
    Canceled,
    Command,
    Event,
    Fill,
    Liquidity,
    NewOrder,
    Problem,
    Rejected,
    RejectReason,
    Replace,
    Replaced,
    Side,
    Transfer,
)

FEE_ACCOUNT = "@fees"  # where fees go; "@" is not allowed in account names
BUY = Side.BUY
MAKER = Liquidity.ADDED


class Hold:
    """What is locked for one open order, in the asset it pays with."""

    __slots__ = ("account", "asset", "held", "price", "buy", "inst")

    def __init__(self, account: str, asset: str, held: int, price: int | None, buy: bool, inst: Instrument) -> None:
        self.account, self.asset, self.held, self.price, self.buy, self.inst = account, asset, held, price, buy, inst


# (account, asset, available, locked), sorted; (order id, account, asset, held, price);
# (ref, seq): the state a snapshot holds.
BalanceRow = tuple[str, str, int, int]
HoldRow = tuple[int, str, str, int, int | None]
RiskState = tuple[list[BalanceRow], list[HoldRow], list[tuple[str, int]]]


class Risk:
    def __init__(self, instruments: dict[str, Instrument]) -> None:
        self.instruments = instruments
        self.assets: dict[str, Asset] = assets_of(instruments)
        self.balances: dict[tuple[str, str], list[int]] = {}  # (account, asset) -> [available, locked]
        self.holds: dict[int, Hold] = {}  # open order id -> its hold
        self.pending: dict[int, tuple[str, str, int]] = {}  # a replace's seq -> (account, asset, locked) until it takes effect
        self.refs: dict[str, int] = {}  # transfer ref -> its seq
        # Holds made live and not yet durable, (seq, command): a snapshot at a durable seq
        # leaves them out (see state()). Replay leaves this empty.
        self.recent: deque[tuple[int, Command]] = deque()

    # ------------------------------------------------------------------ R1: hold (journal order)

    def hold(self, seq: int, cmd: Command, *, replay: bool = False) -> Problem | None:
        """Lock what cmd (about to be journaled as seq) needs, or say why it cannot be paid.

        On replay every command was accepted when it was journaled: it is applied as is.
        """
        t = type(cmd)
        if t is NewOrder:
            assert type(cmd) is NewOrder
            inst = self.instruments[cmd.symbol]
            buy = cmd.side is BUY
            asset, amount = self._need(inst, buy, cmd.qty, cmd.price, cmd.budget)
            problem = self._lock(cmd.owner, asset, amount, replay)
            if problem is None:
                self.holds[seq] = Hold(cmd.owner, asset, amount, cmd.price, buy, inst)
        elif t is Replace:
            assert type(cmd) is Replace
            h = self.holds.get(cmd.order_id)
            if h is None or h.account != cmd.owner or cmd.shrink:
                self._recent(seq, cmd, replay)  # the book refuses it, or it locks nothing
                return None
            amount = self._need(h.inst, h.buy, cmd.qty, cmd.price if cmd.price is not None else h.price, None)[1]
            problem = self._lock(h.account, h.asset, amount, replay)
            if problem is None:
                self.pending[seq] = (h.account, h.asset, amount)
        elif t is Transfer:
            assert type(cmd) is Transfer
            problem = self._transfer(seq, cmd, replay)
        else:
            problem = None  # a cancel locks nothing
        if problem is None:
            self._recent(seq, cmd, replay)
        return problem

    def _recent(self, seq: int, cmd: Command, replay: bool) -> None:
        if not replay:
            self.recent.append((seq, cmd))

    @staticmethod
    def _need(inst: Instrument, buy: bool, qty: int, price: int | None, budget: int | None) -> tuple[str, int]:
        if not buy:
            return inst.base, qty * inst.base_per_lot
        if price is None:
            return inst.quote, (budget or 0) * inst.quote_per_lot_tick
        return inst.quote, qty * price * inst.quote_per_lot_tick

    def _lock(self, account: str, asset: str, amount: int, replay: bool) -> Problem | None:
        bal = self.balances.get((account, asset))
        if bal is None:
            bal = self.balances[(account, asset)] = [0, 0]
        if bal[0] < amount and not replay:
            a = self.assets[asset]
            return Problem(RejectReason.INSUFFICIENT_FUNDS, f"needs {a.format(amount)} {asset}, {a.format(bal[0])} available")
        bal[0] -= amount
        bal[1] += amount
        return None

    def _transfer(self, seq: int, cmd: Transfer, replay: bool) -> Problem | None:
        bal = self.balances.get((cmd.account, cmd.asset))
        if bal is None:
            bal = self.balances[(cmd.account, cmd.asset)] = [0, 0]
        if bal[0] + cmd.amount < 0 and not replay:
            a = self.assets[cmd.asset]
            return Problem(RejectReason.INSUFFICIENT_FUNDS, f"needs {a.format(-cmd.amount)} {cmd.asset}, {a.format(bal[0])} available")
        bal[0] += cmd.amount
        self.refs[cmd.ref] = seq
        return None

    def durable(self, seq: int) -> None:
        """The journal has everything up to seq on disk."""
        recent = self.recent
        while recent and recent[0][0] <= seq:
            recent.popleft()

    # ------------------------------------------------------------------ R2: settle (after matching)

    def settle(self, events: list[Event]) -> None:
        """Move the money of a matched batch: fills, cancels, replaces, refused replaces."""
        holds, balances = self.holds, self.balances
        for e in events:
            t = type(e)
            if t is Fill:
                assert type(e) is Fill
                h = holds[e.order_id]
                inst = h.inst
                gross_quote = e.qty * e.price * inst.quote_per_lot_tick
                bps = inst.maker_fee_bps if e.liquidity is MAKER else inst.taker_fee_bps
                if h.buy:
                    # Locked at the order's price (a market BUY: its budget); paid at the trade's.
                    taken = gross_quote if h.price is None else e.qty * h.price * inst.quote_per_lot_tick
                    got_asset, got = inst.base, e.qty * inst.base_per_lot
                else:
                    taken = e.qty * inst.base_per_lot
                    got_asset, got = inst.quote, gross_quote
                h.held -= taken
                paid = balances[(h.account, h.asset)]
                paid[1] -= taken
                paid[0] += taken - (gross_quote if h.buy else taken)  # a BUY's price improvement comes back
                fee = got * bps // 10_000
                self._credit(h.account, got_asset, got - fee)
                if fee:
                    self._credit(FEE_ACCOUNT, got_asset, fee)
                if not e.leaves:
                    self._release(holds.pop(e.order_id))
            elif t is Canceled:
                assert type(e) is Canceled
                h2 = holds.pop(e.order_id, None)
                if h2 is not None:
                    self._release(h2)
            elif t is Replaced:
                assert type(e) is Replaced
                h = holds[e.order_id]
                extra = self.pending.pop(e.seq, None)
                total = h.held + (extra[2] if extra is not None else 0)
                need = self._need(h.inst, h.buy, e.qty, e.price, None)[1]
                bal = balances[(h.account, h.asset)]
                bal[0] += total - need
                bal[1] -= total - need
                h.held, h.price = need, e.price
            elif t is Rejected:
                assert type(e) is Rejected
                extra = self.pending.pop(e.seq, None)  # a refused replace gives its lock back
                if extra is not None:
                    bal = balances[(extra[0], extra[1])]
                    bal[0] += extra[2]
                    bal[1] -= extra[2]
                if e.order_id == e.seq:  # a new order the book refused
                    h3 = holds.pop(e.seq, None)
                    if h3 is not None:
                        self._release(h3)

    def _credit(self, account: str, asset: str, amount: int) -> None:
        bal = self.balances.get((account, asset))
        if bal is None:
            self.balances[(account, asset)] = [amount, 0]
        else:
            bal[0] += amount

    def _release(self, h: Hold) -> None:
        bal = self.balances[(h.account, h.asset)]
        bal[0] += h.held
        bal[1] -= h.held
        h.held = 0

    # ------------------------------------------------------------------ views and state

    def of(self, account: str) -> list[tuple[str, int, int]]:
        """(asset, available, locked) of one account, by asset."""
        return sorted((asset, b[0], b[1]) for (acct, asset), b in self.balances.items() if acct == account)

    def state(self, through: int | None = None) -> RiskState:
        """Plain rows of the state after exactly the commands up to `through` (default: all
        held so far): holds made for later, not yet durable commands are taken out."""
        balances = {k: list(v) for k, v in self.balances.items()}
        holds = {oid: (h.account, h.asset, h.held, h.price) for oid, h in self.holds.items()}
        refs = dict(self.refs)
        for seq, cmd in reversed(self.recent):
            if through is None or seq <= through:
                break
            if type(cmd) is NewOrder:
                held = holds.pop(seq, None)
                if held is not None:
                    bal = balances[(held[0], held[1])]
                    bal[0] += held[2]
                    bal[1] -= held[2]
            elif type(cmd) is Replace and seq in self.pending:
                account, asset, amount = self.pending[seq]
                bal = balances[(account, asset)]
                bal[0] += amount
                bal[1] -= amount
            elif type(cmd) is Transfer:
                balances[(cmd.account, cmd.asset)][0] -= cmd.amount
                refs.pop(cmd.ref, None)
        rows = sorted((acct, asset, b[0], b[1]) for (acct, asset), b in balances.items() if b[0] or b[1])
        return rows, sorted((oid, *h) for oid, h in holds.items()), sorted(refs.items())

    def load(self, state: RiskState, price_of: dict[int, tuple[str, bool]]) -> None:
        """Restore a snapshot's state; price_of maps each held order id to (symbol, is_buy)."""
        balances, holds, refs = state
        self.balances = {(acct, asset): [avail, locked] for acct, asset, avail, locked in balances}
        self.holds = {}
        for oid, acct, asset, held, price in holds:
            symbol, buy = price_of[oid]
            self.holds[oid] = Hold(acct, asset, held, price, buy, self.instruments[symbol])
        self.refs = dict(refs)

    def state_hash(self) -> str:
        return hash_risk(self.state())


def hash_risk(state: RiskState) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in state:
        for row in part:
            h.update(repr(row).encode())
        h.update(b"/")
    return h.hexdigest()


def totals(rows: Iterable[BalanceRow]) -> dict[str, int]:
    """Per asset, available + locked over every account (the fee account included)."""
    out: dict[str, int] = {}
    for _, asset, avail, locked in rows:
        out[asset] = out.get(asset, 0) + avail + locked
    return out
