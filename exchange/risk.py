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
from bisect import bisect_right
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import Iterable

import msgspec

from exchange.holds import Hold
from exchange.idmap import IdMap
from exchange.instruments import Asset, Instrument, assets_of
from protocol.messages import (
    Canceled,
    Command,
    Event,
    Fill,
    Liquidity,
    NewOrder,
    Problem,
    Reason,
    Rejected,
    Replace,
    Replaced,
    Side,
    Transfer,
)

FEE_ACCOUNT = "@fees"  # where fees go; "@" is not allowed in account names
# Open orders one account may have (resting, pending stops, entered and not yet matched):
# what bounds the memory and the restart time one client can cause (~650 bytes and ~2 us of
# restart per resting order here). `tickline serve --max-open-orders`, `cluster up` the same.
MAX_OPEN_ORDERS = 1_000_000
BUY = Side.BUY
MAKER = Liquidity.ADDED
_seq_of = itemgetter(0)
_hold_key = attrgetter("account", "asset", "inst.symbol", "buy")
SETTLED = frozenset((Replaced, Fill, Canceled, Rejected))  # the events that move money


# (account, asset, available, locked), sorted; the holds by (account, asset, symbol, buy), as
# columns (order ids ascending, held, price, oco); (ref, seq): the state a snapshot holds.
BalanceRow = tuple[str, str, int, int]
HoldGroup = tuple[str, str, str, bool, list[int], list[int], list[int | None], list[int | None]]
RiskState = tuple[list[BalanceRow], list[HoldGroup], list[tuple[str, int]]]


class Risk:
    def __init__(self, instruments: dict[str, Instrument]) -> None:
        self.instruments = instruments
        # Set by the adapter once its state is restored (serve's flag, a cluster's config):
        # a replay applies what was accepted, whatever the limit was then.
        self.max_open_orders = MAX_OPEN_ORDERS
        self.assets: dict[str, Asset] = assets_of(instruments)
        # (account, asset) -> [available, locked]. The lists live as long as the Risk:
        # holds keep references to them (one dict lookup less per command).
        self.balances: dict[tuple[str, str], list[int]] = {}
        self.holds: IdMap[Hold] = IdMap()  # open order id -> its hold (split by id range: no long resize)
        self.open_orders: dict[str, int] = {}  # account -> its holds (derived from them: not in a snapshot)
        self.pending: dict[int, tuple[Hold, int]] = {}  # a replace's seq -> (its order's hold, what it locked) until it takes effect
        self.refs: dict[str, int] = {}  # transfer ref -> its seq
        self.ref_terms: dict[str, tuple[str, str, int]] = {}  # transfer ref -> (account, asset, amount): a reuse is told from a repeat
        # Live transfers a snapshot may have to leave out (see state()); few: operators' acts.
        self.transfers: list[tuple[int, Transfer]] = []

    def balance(self, account: str, asset: str) -> list[int]:
        bal = self.balances.get((account, asset))
        if bal is None:
            bal = self.balances[(account, asset)] = [0, 0]
        return bal

    # ------------------------------------------------------------------ R1: hold (journal order)

    def hold(self, seq: int, cmd: Command, *, replay: bool = False) -> Problem | None:
        """Lock what cmd (about to be journaled as seq) needs, or say why it cannot be paid.

        On replay every command was accepted when it was journaled: it is applied as is.
        """
        if type(cmd) is Replace:  # the busiest command of a busy book: first, and inline
            h = self.holds.get(cmd.order_id)
            if h is not None and not cmd.shrink and h.account == cmd.owner:  # else it locks nothing (or the book refuses it)
                price = cmd.price if cmd.price is not None else h.price
                amount = (0 if price is None else cmd.qty * price * h.unit) if h.buy else cmd.qty * h.unit
                bal = h.bal
                if bal[0] < amount and not replay:
                    return self._short(h.asset, amount, bal[0])
                bal[0] -= amount
                bal[1] += amount
                self.pending[seq] = (h, amount)
        elif type(cmd) is NewOrder:
            owner = cmd.owner
            n = self.open_orders.get(owner, 0)
            if n >= self.max_open_orders and not replay:
                return Problem(Reason.TOO_MANY_ORDERS, f"{owner} has {n} open orders, as many as one account may have; cancel some first")
            inst = self.instruments[cmd.symbol]
            buy = cmd.side is BUY
            if buy:
                asset = inst.quote
                amount = (cmd.budget or 0) * inst.quote_per_lot_tick if cmd.price is None else cmd.qty * cmd.price * inst.quote_per_lot_tick
            else:
                asset, amount = inst.base, cmd.qty * inst.base_per_lot
            bal = self.balance(owner, asset)
            paired = None
            if cmd.oco is not None:
                paired = self.holds.get(cmd.oco)
                if paired is not None and paired.bal is bal:  # the pair locks what the larger order needs
                    amount = max(0, amount - paired.held)
                else:
                    paired = None
            if bal[0] < amount and not replay:
                return self._short(asset, amount, bal[0])
            bal[0] -= amount
            bal[1] += amount
            self.open_orders[owner] = n + 1
            h = self.holds[seq] = Hold(owner, asset, amount, cmd.price, buy, inst, inst.quote_per_lot_tick if buy else inst.base_per_lot, bal)
            if paired is not None:
                h.oco = cmd.oco
        elif type(cmd) is Transfer:
            bal = self.balance(cmd.account, cmd.asset)
            if bal[0] + cmd.amount < 0 and not replay:
                return self._short(cmd.asset, -cmd.amount, bal[0])
            bal[0] += cmd.amount
            self.refs[cmd.ref] = seq
            self.ref_terms[cmd.ref] = (cmd.account, cmd.asset, cmd.amount)
            if not replay:
                self.transfers.append((seq, cmd))
        return None  # (a cancel locks nothing)

    def _short(self, asset: str, amount: int, available: int) -> Problem:
        a = self.assets[asset]
        return Problem(Reason.INSUFFICIENT_FUNDS, f"needs {a.format(amount)} {asset}, {a.format(available)} available")

    # ------------------------------------------------------------------ R2: settle (after matching)

    def settle(self, events: list[Event]) -> None:
        """Move the money of a matched batch: fills, cancels, replaces, refused replaces."""
        holds = self.holds
        for e in events:
            if type(e) not in SETTLED:  # most events: market data, acceptances
                continue
            if type(e) is Replaced:
                h = holds[e.order_id]
                extra = self.pending.pop(e.seq, None)
                total = h.held if extra is None else h.held + extra[1]
                need = e.qty * e.price * h.unit if h.buy else e.qty * h.unit
                if total != need:
                    bal = h.bal
                    bal[0] += total - need
                    bal[1] -= total - need
                h.held, h.price = need, e.price
            elif type(e) is Fill:
                h = holds[e.order_id]
                if h.oco is not None:
                    self._take_over(h, e)
                inst = h.inst
                gross_quote = e.qty * e.price * inst.quote_per_lot_tick
                bps = inst.maker_fee_bps if e.liquidity is MAKER else inst.taker_fee_bps
                if h.buy:
                    # Locked at the order's price (a market BUY: its budget); paid at the trade's.
                    taken = gross_quote if h.price is None else e.qty * h.price * h.unit
                    got = e.qty * inst.base_per_lot
                    if h.got is None:
                        h.got = self.balance(h.account, inst.base)
                else:
                    taken = e.qty * h.unit
                    got = gross_quote
                    if h.got is None:
                        h.got = self.balance(h.account, inst.quote)
                h.held -= taken
                paid = h.bal
                paid[1] -= taken
                if h.buy:
                    paid[0] += taken - gross_quote  # a BUY's price improvement comes back
                fee = -(-got * bps // 10_000)  # rounded up: a non-zero rate takes at least one unit
                h.got[0] += got - fee
                if fee:
                    self.balance(FEE_ACCOUNT, inst.base if h.buy else inst.quote)[0] += fee
                if not e.leaves:
                    self._release(holds.pop(e.order_id))
            elif type(e) is Canceled:
                h2 = holds.pop(e.order_id, None)
                if h2 is not None:
                    self._release(h2)
            elif type(e) is Rejected:
                extra = self.pending.pop(e.seq, None)  # a refused replace gives its lock back
                if extra is not None:
                    _unlock(extra[0].bal, extra[1])
                if e.order_id == e.seq:  # a new order the book refused
                    h3 = holds.pop(e.seq, None)
                    if h3 is not None:
                        self._release(h3)

    def _take_over(self, h: Hold, e: Fill) -> None:
        """The second order of an OCO pair trades: it takes over its first's lock (which is
        canceled in this same command) and gives back what it does not need."""
        first = None if h.oco is None else self.holds.get(h.oco)
        h.oco = None
        if first is None:
            return
        h.held += first.held
        first.held = 0
        if h.price is not None or not h.buy:  # (a market BUY keeps its budget's lock: spent or given back at its end)
            need = (e.leaves + e.qty) * (h.price * h.unit if h.buy and h.price is not None else h.unit)
            if h.held > need:
                _unlock(h.bal, h.held - need)
                h.held = need

    def _release(self, h: Hold) -> None:
        """The order is closed (its hold just popped): what it still locks is given back."""
        _unlock(h.bal, h.held)
        h.held = 0
        self.open_orders[h.account] -= 1

    # ------------------------------------------------------------------ views and state

    def of(self, account: str) -> list[tuple[str, int, int]]:
        """(asset, available, locked) of one account, by asset."""
        return sorted((asset, b[0], b[1]) for (acct, asset), b in self.balances.items() if acct == account)

    def state(self, through: int | None = None) -> RiskState:
        """Plain rows of the state after exactly the commands up to `through` (default: all
        held so far), every one of them matched and settled (a snapshot's moment).

        Commands after `through` (journaled, not yet durable, so not matched) have held
        funds already: their locks are taken out again. They are easy to find: a new
        order's hold is keyed by its seq (its order id), a replace's pending lock too,
        and transfers are listed."""
        hold_groups = self._hold_groups()
        if through is None:  # all of it: no copies to take locks out of (state_hash, a full snapshot)
            rows = sorted((acct, asset, b[0], b[1]) for (acct, asset), b in self.balances.items() if b[0] or b[1])
            return rows, hold_groups, sorted(self.refs.items())
        balances = {k: list(v) for k, v in self.balances.items()}
        refs = dict(self.refs)
        for account, asset, _, _, ids, helds, prices, ocos in hold_groups:
            later = bisect_right(ids, through)
            _unlock(balances[(account, asset)], sum(helds[later:]))
            for column in (ids, helds, prices, ocos):
                del column[later:]
        hold_groups = [group for group in hold_groups if group[4]]
        for seq, (h, amount) in self.pending.items():
            if seq > through:
                _unlock(balances[(h.account, h.asset)], amount)
        for _, t in self.transfers[bisect_right(self.transfers, through, key=_seq_of) :]:
            balances[(t.account, t.asset)][0] -= t.amount
            refs.pop(t.ref, None)
        rows = sorted((acct, asset, b[0], b[1]) for (acct, asset), b in balances.items() if b[0] or b[1])
        return rows, hold_groups, sorted(refs.items())

    def forget_transfers(self, through: int) -> None:
        """Transfers up to `through` are in a snapshot (the snapshotter says so once it
        captured one): durable for good, state() never leaves them out again."""
        del self.transfers[: bisect_right(self.transfers, through, key=_seq_of)]

    def _hold_groups(self) -> list[HoldGroup]:
        """The holds as columns, one group per (account, asset, symbol, side), ids ascending:
        a million holds are a few lists of numbers, made and read back in C (a restart
        loads every one)."""
        holds = self.holds
        by_key: dict[tuple[str, str, str, bool], list[int]] = {}
        for oid, key in zip(holds, map(_hold_key, holds.values()), strict=True):  # (the one Python step per hold)
            ids = by_key.get(key)
            if ids is None:
                by_key[key] = [oid]
            else:
                ids.append(oid)
        groups: list[HoldGroup] = []
        for (account, asset, symbol, buy), ids in sorted(by_key.items()):
            ids.sort()  # (in order already, unless restored from a snapshot's groups)
            mine = list(map(holds.__getitem__, ids))
            helds, prices, ocos = (list(map(attrgetter(f), mine)) for f in ("held", "price", "oco"))
            groups.append((account, asset, symbol, buy, ids, helds, prices, ocos))
        return groups

    def load(self, state: RiskState) -> None:
        """Restore a snapshot's state: per hold only C (map and zip over its group's columns)."""
        balances, hold_groups, refs = state
        self.balances = {(acct, asset): [avail, locked] for acct, asset, avail, locked in balances}
        self.holds = mine = IdMap[Hold]()
        self.open_orders = counts = dict[str, int]()
        for acct, asset, symbol, buy, ids, helds, prices, ocos in hold_groups:
            counts[acct] = counts.get(acct, 0) + len(ids)
            inst = self.instruments[symbol]
            unit = inst.quote_per_lot_tick if buy else inst.base_per_lot
            n, bal = len(ids), self.balance(acct, asset)
            made = map(Hold, repeat(acct, n), repeat(asset, n), helds, prices, repeat(buy, n), repeat(inst, n), repeat(unit, n), repeat(bal, n), repeat(None, n), ocos)
            mine.update_sorted(ids, made)  # (ids ascending: a group's column)
        self.refs = dict(refs)

    def state_hash(self) -> str:
        return hash_risk(self.state())

    def terms_of(self, refs: list[tuple[str, int]]) -> list[tuple[str, str, str, int]]:
        """(ref, account, asset, amount) of the given refs' transfers, where known: kept
        beside a snapshot's state (outside its hash: older snapshots have none)."""
        terms = self.ref_terms
        return [(ref, *terms[ref]) for ref, _ in refs if ref in terms]

    def describe(self, ref: str) -> str:
        """The transfer a ref was applied to, in words (a refusal's text)."""
        terms = self.ref_terms.get(ref)
        if terms is None:
            return "another transfer"
        account, asset, amount = terms
        what = "a deposit" if amount > 0 else "a withdrawal"
        return f"{what} of {self.assets[asset].format(abs(amount))} {asset} {'to' if amount > 0 else 'from'} {account}"


def _unlock(bal: list[int], amount: int) -> None:
    """Locked back to available (the hot paths do this inline)."""
    bal[0] += amount
    bal[1] -= amount


def hash_risk(state: RiskState) -> str:
    return hashlib.blake2b(msgspec.msgpack.encode(state), digest_size=16).hexdigest()


def totals(rows: Iterable[BalanceRow]) -> dict[str, int]:
    """Per asset, available + locked over every account (the fee account included)."""
    out: dict[str, int] = {}
    for _, asset, avail, locked in rows:
        out[asset] = out.get(asset, 0) + avail + locked
    return out
