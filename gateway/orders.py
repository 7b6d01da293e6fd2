"""The gateway's view of open orders: who owns what, by exchange id and by client id.

It lets the gateway route a CANCEL to its symbol, refuse one for someone else's order
before journaling it, keep client order ids unique per owner, and answer ORDERS. An entry
is the order's NewOrder command; the live quantity and price are the book's. Entries come
in with ACKs and leave with the final FILL or CANCELED.

The orders a restart finds resting get no entry of their own until one is asked for: a
restart restores every resting order, and making a million commands again (the book has
all they say) was a third of its time. They are known by id and symbol; `get` makes an
entry from the book's order the first time it is needed.
"""

from __future__ import annotations

from itertools import compress
from operator import attrgetter
from typing import Mapping, cast

import msgspec

from exchange.book import Book, Order
from protocol.messages import NewOrder


class OwnerOrders:
    __slots__ = ("symbols", "by_client_id", "in_order", "last")

    def __init__(self) -> None:
        self.symbols: dict[int, str] = {}  # order id -> symbol, as added: in id order, unless in_order says not
        self.by_client_id: dict[str, int] = {}
        self.in_order = True  # False once an id came after a larger one (restored from the books, a cluster's shards)
        self.last = 0


class OpenOrders:
    def __init__(self) -> None:
        self.by_id: dict[int, NewOrder] = {}  # (a NewOrder is untracked by the collector: one per open order)
        self.restored: dict[int, str] = {}  # resting at the restart, no entry made yet: id -> symbol
        self.books: Mapping[str, Book] = {}  # where a restored order's entry is made from
        self.owners: dict[str, OwnerOrders] = {}

    def add(self, order_id: int, cmd: NewOrder) -> None:
        self.by_id[order_id] = cmd
        mine = self.owners.get(cmd.owner)
        if mine is None:
            mine = self.owners[cmd.owner] = OwnerOrders()
        mine.symbols[order_id] = cmd.symbol
        if order_id < mine.last:
            mine.in_order = False
        mine.last = order_id
        if cmd.client_id is not None:
            mine.by_client_id[cmd.client_id] = order_id

    def restore(self, book: Book) -> None:
        """A book's open orders at start, by id and owner (per order only C, but one pass
        in Python when they have more than one owner); their entries are made as asked for."""
        self.books = {**self.books, book.symbol: book}
        symbol, resting = book.symbol, [*book.orders.values(), *book.stops.values()]
        ids, owners, client_ids = (list(map(attrgetter(f), resting)) for f in ("order_id", "owner", "client_id"))
        self.restored.update(dict.fromkeys(ids, symbol))
        mines = {owner: self.owners.setdefault(owner, OwnerOrders()) for owner in set(owners)}
        for mine in mines.values():
            mine.in_order = False  # priority order, not id order
        if len(mines) == 1:
            mines[owners[0]].symbols.update(dict.fromkeys(ids, symbol))
        else:
            for order_id, owner in zip(ids, owners, strict=True):
                mines[owner].symbols[order_id] = symbol
        for order_id, client_id, owner in compress(zip(ids, client_ids, owners, strict=True), client_ids):
            mines[owner].by_client_id[cast(str, client_id)] = order_id  # (compress: only those with one)

    def get(self, order_id: int) -> NewOrder | None:
        """An open order's entry (None: not open, or not accepted yet)."""
        cmd = self.by_id.get(order_id)
        if cmd is not None or order_id not in self.restored:
            return cmd
        symbol = self.restored[order_id]
        order = self.books[symbol].order(order_id)
        if order is None:  # (gone from the book: its FILL or CANCELED is on its way here)
            return None
        del self.restored[order_id]
        cmd = self.by_id[order_id] = _entry(symbol, order)
        return cmd

    def is_open(self, order_id: int) -> bool:
        return order_id in self.by_id or order_id in self.restored

    def fired(self, order_id: int) -> None:
        """A stop fired: the order is a plain limit or market order from now on (an entry
        yet to be made is made from the book's order, which says so)."""
        cmd = self.by_id.get(order_id)
        if cmd is not None:
            self.by_id[order_id] = msgspec.structs.replace(cmd, stop=None)

    def remove(self, order_id: int, owner: str, client_id: str | None) -> None:
        """The owner's order is done (filled, canceled, refused): its event names it."""
        cmd = self.by_id.pop(order_id, None)
        if cmd is None and self.restored.pop(order_id, None) is None:
            return
        if cmd is not None:
            client_id = cmd.client_id
        mine = self.owners[owner]
        del mine.symbols[order_id]
        if client_id is not None and mine.by_client_id.get(client_id) == order_id:
            del mine.by_client_id[client_id]
        if not mine.symbols:
            del self.owners[owner]

    def find_client_id(self, owner: str, client_id: str) -> int | None:
        mine = self.owners.get(owner)
        return None if mine is None else mine.by_client_id.get(client_id)

    def symbols_of(self, owner: str) -> list[str]:
        """The symbols the owner has open orders in, sorted."""
        mine = self.owners.get(owner)
        return [] if mine is None else sorted(set(mine.symbols.values()))

    def count(self, owner: str) -> int:
        mine = self.owners.get(owner)
        return 0 if mine is None else len(mine.symbols)

    def of_owner(self, owner: str) -> dict[int, str]:
        """The owner's open orders' ids and symbols, in order id order (ORDERS pages by id)."""
        mine = self.owners.get(owner)
        if mine is None:
            return {}
        if not mine.in_order:
            mine.symbols = dict(sorted(mine.symbols.items()))
            mine.in_order, mine.last = True, max(mine.symbols, default=0)
        return mine.symbols


def _entry(symbol: str, o: Order) -> NewOrder:
    """A restored order's entry: what its command would have been, as it stands now."""
    return NewOrder(symbol, o.side, o.leaves + o.hidden, o.price, o.tif, o.owner, o.client_id, None, o.stop, o.cod, o.show)
