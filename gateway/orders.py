"""The gateway's view of open orders: who owns what, by exchange id and by client id.

It lets the gateway route a CANCEL to its symbol, refuse one for someone else's order
before journaling it, keep client order ids unique per owner, and answer ORDERS. An entry
is the order's NewOrder command; the live quantity and price are the book's. Entries come in with ACKs and leave with the final FILL or CANCELED.
"""

from __future__ import annotations

from itertools import compress
from typing import cast

import msgspec

from exchange.book import Order
from protocol.messages import NewOrder


class OwnerOrders:
    __slots__ = ("by_id", "by_client_id", "in_order", "last")

    def __init__(self) -> None:
        self.by_id: dict[int, NewOrder] = {}  # as added: in order id order, unless in_order says not
        self.by_client_id: dict[str, int] = {}
        self.in_order = True  # False once an id came after a larger one (restored from the books, a cluster's shards)
        self.last = 0


class OpenOrders:
    def __init__(self) -> None:
        self.by_id: dict[int, NewOrder] = {}  # (a NewOrder is untracked by the collector: one per open order)
        self.owners: dict[str, OwnerOrders] = {}

    def add(self, order_id: int, cmd: NewOrder) -> None:
        self.by_id[order_id] = cmd
        mine = self.owners.get(cmd.owner)
        if mine is None:
            mine = self.owners[cmd.owner] = OwnerOrders()
        mine.by_id[order_id] = cmd
        if order_id < mine.last:
            mine.in_order = False
        mine.last = order_id
        if cmd.client_id is not None:
            mine.by_client_id[cmd.client_id] = order_id

    def restore(self, symbol: str, resting: list[Order]) -> None:
        """A book's resting orders at start (a restart restores every one: per order, only
        C where it can be, and one pass in Python for their owners and client ids)."""
        cmds = [NewOrder(symbol, o.side, o.leaves + o.hidden, o.price, o.tif, o.owner, o.client_id, None, o.stop, o.cod, o.show) for o in resting]
        ids = [o.order_id for o in resting]
        owners = [o.owner for o in resting]
        self.by_id.update(zip(ids, cmds, strict=True))
        mines = {owner: self.owners.setdefault(owner, OwnerOrders()) for owner in set(owners)}
        for mine in mines.values():
            mine.in_order = False  # priority order, not id order
        if len(mines) == 1:
            mines[owners[0]].by_id.update(zip(ids, cmds, strict=True))
        else:
            for order_id, cmd, owner in zip(ids, cmds, owners, strict=True):
                mines[owner].by_id[order_id] = cmd
        client_ids = [o.client_id for o in resting]
        for order_id, client_id, owner in compress(zip(ids, client_ids, owners, strict=True), client_ids):
            mines[owner].by_client_id[cast(str, client_id)] = order_id  # (compress: only those with one)

    def fired(self, order_id: int) -> None:
        """A stop fired: the order is a plain limit or market order from now on."""
        cmd = self.by_id.get(order_id)
        if cmd is not None:
            self.by_id[order_id] = self.owners[cmd.owner].by_id[order_id] = msgspec.structs.replace(cmd, stop=None)

    def remove(self, order_id: int) -> NewOrder | None:
        cmd = self.by_id.pop(order_id, None)
        if cmd is None:
            return None
        mine = self.owners[cmd.owner]
        del mine.by_id[order_id]
        if cmd.client_id is not None:
            del mine.by_client_id[cmd.client_id]
        if not mine.by_id:
            del self.owners[cmd.owner]
        return cmd

    def find_client_id(self, owner: str, client_id: str) -> int | None:
        mine = self.owners.get(owner)
        return None if mine is None else mine.by_client_id.get(client_id)

    def symbols_of(self, owner: str) -> list[str]:
        """The symbols the owner has open orders in, sorted."""
        mine = self.owners.get(owner)
        return [] if mine is None else sorted({cmd.symbol for cmd in mine.by_id.values()})

    def count(self, owner: str) -> int:
        mine = self.owners.get(owner)
        return 0 if mine is None else len(mine.by_id)

    def of_owner(self, owner: str) -> dict[int, NewOrder]:
        """The owner's open orders, in order id order (ORDERS pages by id)."""
        mine = self.owners.get(owner)
        if mine is None:
            return {}
        if not mine.in_order:
            mine.by_id = dict(sorted(mine.by_id.items()))
            mine.in_order, mine.last = True, max(mine.by_id, default=0)
        return mine.by_id
