"""Interpreter settings for a long-running exchange, with the measurements behind them,
and which modules of the hot path run compiled.

    python -m tickline.tuning     # the source files `make native` compiles, one per line
"""

from __future__ import annotations

import gc
import importlib.util
import sys
from pathlib import Path

import structlog

# The modules every order passes through, compiled with mypyc by `make install` (`make
# native`; `make pure` removes the compiled files, TICKLINE_NATIVE=0 skips them). The same
# source runs either way; compiled, the closed loop's main thread took ~18% less CPU per
# order, and at 10,000/s 0-10% less (docs/PERFORMANCE.md, "twenty-third session").
# exchange/book.py compiled was no faster (bench/engine.py 749k against 756k commands/s
# pure, 2026-12-07): its time goes to reading and writing Structs' fields either way.
# Left out: modules that define msgspec Structs (mypyc drops a Struct's class options:
# gc=False, frozen, tags; compiled, notifier/feed.py's Update crashed the server), which
# is why exchange/holds.py, exchange/instrument_spec.py and gateway/queries.py are modules
# of their own, and protocol/reply_text.py formats what protocol/replies.py defines; and
# cluster/risk_shard.py, whose NamedTuple msgspec could no longer read from a snapshot
# (with it moved out, the compiled shard was no faster: 4 us per order either way, its
# work being exchange/risk.py's; docs/SCALING.md, 2026-12-08).
NATIVE_MODULES = (
    "protocol.text",
    "protocol.reply_text",
    "exchange.instruments",
    "exchange.rules",
    "exchange.risk",
    "exchange.matching",
    "gateway.intake",
    "gateway.orders",
    "gateway.desk",
    "gateway.connection",
    "gateway.server",
    "journal.records",
    "journal.journal",
    "journal.tradelog",
    "notifier.server",
    "cluster.stream",
    "cluster.submitter",
    "cluster.replica",
    "cluster.engine_shard",
    "cluster.market_data",
    "cluster.trade_log",
)
ROOT = Path(__file__).resolve().parent.parent
log = structlog.get_logger()


def before_recovery() -> None:
    """Call before the books are rebuilt: the collector is off while recovery builds their
    hundreds of thousands of long-lived objects (rescanning them as they come was a quarter
    of reading a 600,000-order snapshot); tune_runtime turns it back on and freezes them."""
    gc.disable()


def tune_runtime() -> None:
    """Call once the books are rebuilt, before serving.

    Garbage collector: the books hold hundreds of thousands of long-lived, acyclic objects,
    and every order allocates a dozen short-lived ones. With the default thresholds the
    collector spends a quarter of the server's time rescanning the books (bench/load.py
    closed loop: 60k -> 76k req/s with it off). So: freeze what recovery built, and
    collect young objects less often.

    Switch interval: set when the journal was written by a thread that needed the GIL
    whenever the disk answered (ACK p50 2.3 ms at the default 5 ms, ~1.1 ms at 0.5 ms, at
    10,000 orders/s). The journal is now a process of its own (journal/journal_writer.py);
    the threads left (snapshot writing, password hashing, SQLite lookups) are made to give
    the GIL back to the loop within 0.5 ms rather than 5, so it stays. Not re-measured.

    No collection before the freeze: it walked every dict of the books and holds (~0.1 s a
    restart per million open orders) to free the few cycles recovery may leave, once.

    Many long-lived objects (orders, open-order entries, market-data updates, messages)
    are msgspec Structs with gc=False: the collector never looks at them at all.

    A cluster role (tickline/cluster.py) calls it as it starts: its replica is rebuilt with
    the collector on, at these thresholds. With the defaults a cluster gateway spent
    4-7 us more per order (`python -m bench.compare`, 2026-12-04).
    """
    gc.enable()  # (off while recovery built them: before_recovery)
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    sys.setswitchinterval(0.0005)
    compiled, stale = native_modules()
    log.info("hot_path", compiled=f"{len(compiled)} of {len(NATIVE_MODULES)} modules")
    if stale:
        log.warning("hot_path_stale", modules=",".join(stale), fix="make native (or make pure): the compiled files run, not the edited sources")


def native_modules() -> tuple[list[str], list[str]]:
    """(the hot modules that import compiled, those whose compiled file is older than
    their source): Python imports the compiled file whenever one is there, so an edit to
    the source does nothing until `make native` (or `make pure`)."""
    compiled, stale = [], []
    for name in NATIVE_MODULES:
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin) if spec is not None and spec.origin else None
        if origin is None or origin.suffix != ".so":
            continue
        compiled.append(name)
        source = source_of(name)
        if source.exists() and source.stat().st_mtime > origin.stat().st_mtime:
            stale.append(name)
    return compiled, stale


def source_of(name: str) -> Path:
    """A module's source file, beside its compiled one (under the tree's root, ROOT)."""
    return ROOT.joinpath(*name.split(".")).with_suffix(".py")


if __name__ == "__main__":
    for name in NATIVE_MODULES:
        print(source_of(name).relative_to(ROOT))
