"""The gateway's view of open orders: who owns what, by exchange id and by client id.

It lets the gateway route a CANCEL to its symbol, refuse one for someone else's order
before journaling it, keep client order ids unique per owner, and answer ORDERS. It is
kept up to date from the ACKs the gateway sends and the events the matching tasks return.
"""

from __future__ import annotations

from protocol.messages import TIF, Side


class OpenOrder:
    __slots__ = ("order_id", "owner", "symbol", "side", "price", "leaves", "tif", "client_id", "json")

    def __init__(
        self,
        order_id: int,
        owner: str,
        symbol: str,
        side: Side,
        price: int | None,
        leaves: int,
        tif: TIF,
        client_id: str | None,
        json: bool,
    ) -> None:
        self.order_id = order_id
        self.owner = owner
        self.symbol = symbol
        self.side = side
        self.price = price
        self.leaves = leaves
        self.tif = tif
        self.client_id = client_id
        self.json = json  # its execution reports go out as JSON lines


class OpenOrders:
    def __init__(self) -> None:
        self.by_id: dict[int, OpenOrder] = {}
        self.by_owner: dict[str, dict[int, OpenOrder]] = {}
        self.by_client_id: dict[tuple[str, str], int] = {}

    def add(self, order: OpenOrder) -> None:
        self.by_id[order.order_id] = order
        self.by_owner.setdefault(order.owner, {})[order.order_id] = order
        if order.client_id is not None:
            self.by_client_id[(order.owner, order.client_id)] = order.order_id

    def remove(self, order_id: int) -> OpenOrder | None:
        order = self.by_id.pop(order_id, None)
        if order is None:
            return None
        mine = self.by_owner[order.owner]
        del mine[order_id]
        if not mine:
            del self.by_owner[order.owner]
        if order.client_id is not None:
            self.by_client_id.pop((order.owner, order.client_id), None)
        return order

    def find_client_id(self, owner: str, client_id: str) -> int | None:
        return self.by_client_id.get((owner, client_id))

    def of_owner(self, owner: str) -> list[OpenOrder]:
        return list(self.by_owner.get(owner, {}).values())
