"""The notifier's share of an order when nobody subscribes: what `tickline serve`'s main
thread pays per order to keep its feeds current (notifier/server.py on_events).

    python -m bench.follow [--orders 100000]

Makes one book's events from a seeded stream of limit orders (5 events per order), then
times Notifier.on_events over them, best of five.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from exchange.book import Book
from exchange.instruments import load_instruments
from notifier.feed import feeds_of
from notifier.server import Notifier
from protocol.messages import TIF, Event, NewOrder, Side


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=100_000)
    args = parser.parse_args(argv)
    aapl = load_instruments()["AAPL"]
    rng = random.Random(1)
    book = Book(aapl)
    batches: list[list[Event]] = []
    for seq in range(1, args.orders + 1):
        side = rng.choice([Side.BUY, Side.SELL])
        batches.append(book.apply(seq, NewOrder("AAPL", side, rng.randint(1, 9), 15_000 + rng.randint(-20, 20), TIF.GTC, f"o{rng.randint(1, 50)}")))
    best = float("inf")
    for _ in range(5):
        notifier = Notifier(feeds_of({"AAPL": Book(aapl)}), None, version="bench")
        started = time.perf_counter()
        for events in batches:
            notifier.on_events(events)
        best = min(best, time.perf_counter() - started)
    per_order = sum(map(len, batches)) / len(batches)
    print(f"notifier, nobody subscribed: {best / len(batches) * 1e6:.3f} us per order ({per_order:.1f} events per order, best of 5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
