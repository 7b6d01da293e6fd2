"""The gateway's view of open orders: who owns what, by exchange id and by client id.

It lets the gateway route a CANCEL to its symbol, refuse one for someone else's order
before journaling it, keep client order ids unique per owner, and answer ORDERS. An entry
is the order's NewOrder command; the live quantity and price are the book's. Entries come in with ACKs and leave with the final FILL or CANCELED.
"""

from __future__ import annotations

import msgspec

from protocol.messages import NewOrder


class Entry(msgspec.Struct, gc=False):
    """An open order as the gateway knows it: its command. Untracked by the collector
    (refers to nothing that refers back): one per open order."""

    cmd: NewOrder


class OwnerOrders:
    __slots__ = ("by_id", "by_client_id", "in_order", "last")

    def __init__(self) -> None:
        self.by_id: dict[int, NewOrder] = {}  # as added: in order id order, unless in_order says not
        self.by_client_id: dict[str, int] = {}
        self.in_order = True  # False once an id came after a larger one (restored from the books, a cluster's shards)
        self.last = 0


class OpenOrders:
    def __init__(self) -> None:
        self.by_id: dict[int, Entry] = {}
        self.owners: dict[str, OwnerOrders] = {}

    def add(self, order_id: int, cmd: NewOrder) -> None:
        self.by_id[order_id] = Entry(cmd)
        mine = self.owners.get(cmd.owner)
        if mine is None:
            mine = self.owners[cmd.owner] = OwnerOrders()
        mine.by_id[order_id] = cmd
        if order_id < mine.last:
            mine.in_order = False
        mine.last = order_id
        if cmd.client_id is not None:
            mine.by_client_id[cmd.client_id] = order_id

    def remove(self, order_id: int) -> Entry | None:
        entry = self.by_id.pop(order_id, None)
        if entry is None:
            return None
        cmd = entry.cmd
        mine = self.owners[cmd.owner]
        del mine.by_id[order_id]
        if cmd.client_id is not None:
            del mine.by_client_id[cmd.client_id]
        if not mine.by_id:
            del self.owners[cmd.owner]
        return entry

    def find_client_id(self, owner: str, client_id: str) -> int | None:
        mine = self.owners.get(owner)
        return None if mine is None else mine.by_client_id.get(client_id)

    def of_owner(self, owner: str) -> dict[int, NewOrder]:
        """The owner's open orders, in order id order (ORDERS pages by id)."""
        mine = self.owners.get(owner)
        if mine is None:
            return {}
        if not mine.in_order:
            mine.by_id = dict(sorted(mine.by_id.items()))
            mine.in_order, mine.last = True, max(mine.by_id, default=0)
        return mine.by_id
