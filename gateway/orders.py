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
    __slots__ = ("by_id", "by_client_id")

    def __init__(self) -> None:
        self.by_id: dict[int, NewOrder] = {}  # in order id order: ORDERS lists them so
        self.by_client_id: dict[str, int] = {}


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
        mine = self.owners.get(owner)
        return {} if mine is None else mine.by_id
