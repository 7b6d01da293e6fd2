"""The gateway's view of open orders: who owns what, by exchange id and by client id.

It lets the gateway route a CANCEL to its symbol, refuse one for someone else's order
before journaling it, keep client order ids unique per owner, and answer ORDERS. An entry
is the order's NewOrder command; the live quantity and price are the book's. Entries come
in with ACKs and leave with the final FILL or CANCELED.

The orders a restart finds resting are not indexed until they are needed: a restart
restores every resting order, and building an entry per order, then dicts of a million ids
in the books' (random) order, was a third of its time. They are known by the books (an id
at most `restored_through` that is in no entry is looked up there) and, per owner, as the
columns the books gave (ids, client ids) with a count of those still open: LOGIN's count
costs nothing, and an owner's first ORDERS, CANCEL ALL or order with a client id indexes
that owner's orders (~0.3 s per million).
"""

from __future__ import annotations

from itertools import compress
from operator import attrgetter
from typing import cast

import msgspec

from exchange.book import Book, Order
from exchange.idmap import IdMap
from protocol.messages import NewOrder


class OwnerOrders:
    __slots__ = ("symbols", "by_client_id", "in_order", "last", "unindexed", "unindexed_open", "gone")

    def __init__(self) -> None:
        self.symbols: dict[int, str] = {}  # order id -> symbol, as added: in id order, unless in_order says not
        self.by_client_id: dict[str, int] = {}
        self.in_order = True  # False once an id came after a larger one (restored from the books, a cluster's shards)
        self.last = 0
        # Resting at the restart and not in the dicts above yet: (symbol, ids, client ids) per
        # book; how many of them are open still, and the ids of those closed since.
        self.unindexed: list[tuple[str, list[int], list[str | None] | None]] = []  # (None: no client ids)
        self.unindexed_open = 0
        self.gone: set[int] = set()


class OpenOrders:
    def __init__(self) -> None:
        self.by_id: IdMap[NewOrder] = IdMap()  # (split by id range: no long resize; a NewOrder is untracked by the collector)
        self.restored_through = 0  # the largest id resting at the restart: one not in by_id may be in a book
        self.books: dict[str, Book] = {}  # the books that had orders resting at the restart
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
        """A book's open orders at start: their columns, per owner (per order only C, but
        one pass in Python when they have more than one owner)."""
        resting = [*book.orders.values(), *book.stops.values()]
        if self.by_id:  # (never at a restart: an order with an entry is counted once)
            resting = [o for o in resting if o.order_id not in self.by_id]
        if not resting:
            return
        self.books[book.symbol] = book
        ids, owners, client_ids = (list(map(attrgetter(f), resting)) for f in ("order_id", "owner", "client_id"))
        self.restored_through = max(self.restored_through, max(ids))
        by_owner: dict[str, tuple[list[int], list[str | None]]] = {}
        if len(set(owners)) == 1:
            by_owner[owners[0]] = (ids, client_ids)
        else:
            for order_id, owner, client_id in zip(ids, owners, client_ids, strict=True):
                columns = by_owner.get(owner)
                if columns is None:
                    columns = by_owner[owner] = ([], [])
                columns[0].append(order_id)
                columns[1].append(client_id)
        for owner, (its_ids, its_client_ids) in by_owner.items():
            mine = self.owners.get(owner)
            if mine is None:
                mine = self.owners[owner] = OwnerOrders()
            mine.unindexed.append((book.symbol, its_ids, its_client_ids if any(its_client_ids) else None))
            mine.unindexed_open += len(its_ids)

    def get(self, order_id: int) -> NewOrder | None:
        """An open order's entry (None: not open, or not accepted yet)."""
        cmd = self.by_id.get(order_id)
        if cmd is not None or order_id > self.restored_through:
            return cmd
        for symbol, book in self.books.items():
            order = book.order(order_id)
            if order is not None:
                cmd = self.by_id[order_id] = _entry(symbol, order)
                return cmd
        return None  # (gone from the book: its FILL or CANCELED is on its way here, or done)

    def is_open(self, order_id: int) -> bool:
        return order_id in self.by_id or (order_id <= self.restored_through and any(b.order(order_id) for b in self.books.values()))

    def fired(self, order_id: int) -> None:
        """A stop fired: the order is a plain limit or market order from now on (an entry
        yet to be made is made from the book's order, which says so)."""
        cmd = self.by_id.get(order_id)
        if cmd is not None:
            self.by_id[order_id] = msgspec.structs.replace(cmd, stop=None)

    def remove(self, order_id: int, owner: str, client_id: str | None) -> None:
        """The owner's order is done (filled, canceled, refused): its event names it (once)."""
        cmd = self.by_id.pop(order_id, None)
        mine = self.owners.get(owner)
        if mine is None or (cmd is None and order_id > self.restored_through):
            return
        if cmd is not None:
            client_id = cmd.client_id
        if mine.symbols.pop(order_id, None) is None:  # resting since the restart, not indexed
            if not mine.unindexed_open or order_id in mine.gone:
                return
            mine.gone.add(order_id)
            mine.unindexed_open -= 1
        if client_id is not None and mine.by_client_id.get(client_id) == order_id:
            del mine.by_client_id[client_id]
        if not mine.symbols and not mine.unindexed_open:
            del self.owners[owner]

    def _indexed(self, owner: str) -> OwnerOrders | None:
        """The owner's orders, with those resting since the restart in the dicts."""
        mine = self.owners.get(owner)
        if mine is None or not mine.unindexed:
            return mine
        gone = mine.gone
        for symbol, ids, client_ids in mine.unindexed:
            mine.symbols.update(dict.fromkeys([i for i in ids if i not in gone] if gone else ids, symbol))
            for order_id, client_id in compress(zip(ids, client_ids or (), strict=bool(client_ids)), client_ids or ()):
                if order_id not in gone:
                    mine.by_client_id.setdefault(cast(str, client_id), order_id)  # (one entered since keeps its own)
        mine.unindexed, mine.unindexed_open, mine.gone = [], 0, set()
        mine.in_order = False  # priority order, not id order
        return mine

    def find_client_id(self, owner: str, client_id: str) -> int | None:
        mine = self.owners.get(owner)
        if mine is not None and mine.unindexed and any(client_ids for _, _, client_ids in mine.unindexed):
            mine = self._indexed(owner)
        return None if mine is None else mine.by_client_id.get(client_id)

    def symbols_of(self, owner: str) -> list[str]:
        """The symbols the owner has open orders in, sorted."""
        mine = self._indexed(owner)
        return [] if mine is None else sorted(set(mine.symbols.values()))

    def count(self, owner: str) -> int:
        mine = self.owners.get(owner)
        return 0 if mine is None else len(mine.symbols) + mine.unindexed_open

    def of_owner(self, owner: str) -> dict[int, str]:
        """The owner's open orders' ids and symbols, in order id order (ORDERS pages by id)."""
        mine = self._indexed(owner)
        if mine is None:
            return {}
        if not mine.in_order:
            mine.symbols = dict(sorted(mine.symbols.items()))
            mine.in_order, mine.last = True, max(mine.symbols, default=0)
        return mine.symbols


def _entry(symbol: str, o: Order) -> NewOrder:
    """A restored order's entry: what its command would have been, as it stands now."""
    return NewOrder(symbol, o.side, o.leaves + o.hidden, o.price, o.tif, o.owner, o.client_id, None, o.stop, o.cod, o.show)
