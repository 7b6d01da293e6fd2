"""The command line: serve, replay --verify, trades, orders. Flags default from TICKLINE_* env."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from journal.layout import DataDir
from tickline import __version__


def _common(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--data-dir", type=Path, default=Path(env("TICKLINE_DATA", "var")), help="journal, snapshots, trade log (TICKLINE_DATA)")
    parser.add_argument(
        "--instruments", type=Path, default=env("TICKLINE_INSTRUMENTS"), help="instruments TOML file (TICKLINE_INSTRUMENTS); default: built-in set"
    )


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="tickline", description="An exchange you can trade on over TCP.")
    parser.add_argument("--version", action="version", version=f"tickline {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the exchange")
    _common(serve)
    serve.add_argument("--host", default=env("TICKLINE_HOST", "127.0.0.1"), help="order-entry address (TICKLINE_HOST)")
    serve.add_argument("--port", type=int, default=int(env("TICKLINE_PORT", "7001")), help="order-entry port, 0 for any (TICKLINE_PORT)")
    serve.add_argument("--md-host", default=env("TICKLINE_MD_HOST", "127.0.0.1"), help="market-data address (TICKLINE_MD_HOST)")
    serve.add_argument("--md-port", type=int, default=int(env("TICKLINE_MD_PORT", "7002")), help="market-data port, 0 for any (TICKLINE_MD_PORT)")
    serve.add_argument("--md-hard-cap", type=int, default=8 * 1024 * 1024, help="unread bytes before a subscriber is disconnected")
    serve.add_argument("--md-pause-deadline", type=float, default=10.0, help="seconds a subscriber may stop reading")
    serve.add_argument("--snapshot-every", type=int, default=int(env("TICKLINE_SNAPSHOT_EVERY", "200000")), help="commands between snapshots, at most")
    serve.add_argument(
        "--snapshot-interval", type=float, default=float(env("TICKLINE_SNAPSHOT_INTERVAL", "10")), help="seconds between snapshots, at most (when busy)"
    )
    serve.add_argument("--segment-mb", type=int, default=int(env("TICKLINE_SEGMENT_MB", "64")), help="journal segment size in MiB before rotating")
    serve.add_argument("--retention", choices=["keep", "delete"], default=env("TICKLINE_RETENTION", "keep"), help="journal segments covered by snapshots")
    serve.add_argument("--tradelog-max-rows", type=int, default=int(env("TICKLINE_TRADELOG_MAX_ROWS", "500000")), help="trade log queue bound")
    serve.add_argument("--log-level", default=env("TICKLINE_LOG_LEVEL", "info"))

    replay = commands.add_parser("replay", help="rebuild state from the journal")
    _common(replay)
    replay.add_argument("--verify", action="store_true", help="check snapshot + tail and the trade log against a full replay")

    trades = commands.add_parser("trades", help="print trades from the trade log")
    _common(trades)
    trades.add_argument("--symbol")
    trades.add_argument("--since", help="a journal sequence number or an ISO-8601 UTC time")
    trades.add_argument("--limit", type=int)

    orders = commands.add_parser("orders", help="print the audit: every request (new, cancel, replace), journaled or refused, with its outcome")
    _common(orders)
    orders.add_argument("--owner")
    orders.add_argument("--symbol")
    orders.add_argument("--status", choices=["accepted", "rejected"])
    orders.add_argument("--since", help="an order id or an ISO-8601 UTC time")
    orders.add_argument("--limit", type=int)

    args = parser.parse_args(argv)
    from tickline.logs import configure

    configure(getattr(args, "log_level", "warning"))
    from exchange.instruments import InstrumentsFileError, MissingInstrument
    from journal.journal import JournalCorrupt
    from journal.layout import DataDirInUse
    from journal.queries import NoTradeLog

    try:
        return _run(args)
    except (DataDirInUse, JournalCorrupt, MissingInstrument, InstrumentsFileError, NoTradeLog) as exc:
        # Conditions an operator can name and fix: one line, no traceback.
        sys.stderr.write(f"tickline: {exc}\n")
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        import resource

        import uvloop

        # Thousands of subscribers and sessions are thousands of descriptors.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))

        from tickline.app import Config
        from tickline.app import serve as run_server

        config = Config(
            args.host, args.port, args.data_dir, args.instruments,
            snapshot_every=args.snapshot_every, snapshot_interval=args.snapshot_interval, segment_bytes=args.segment_mb * 1024 * 1024,
            retention=args.retention, tradelog_max_rows=args.tradelog_max_rows,
            md_host=args.md_host, md_port=args.md_port, md_hard_cap=args.md_hard_cap, md_pause_deadline=args.md_pause_deadline,
        )  # fmt: skip
        return uvloop.run(run_server(config))
    if args.command == "replay":
        return _replay(args)
    if args.command == "trades":
        from journal.queries import trade_line
        from journal.queries import trades as query

        for row in query(DataDir(args.data_dir).trades, args.symbol, args.since, args.limit):
            sys.stdout.write(trade_line(row) + "\n")
        return 0
    if args.command == "orders":
        from journal.queries import order_line
        from journal.queries import orders as query

        for row in query(DataDir(args.data_dir).trades, args.owner, args.symbol, args.status, args.since, args.limit):
            sys.stdout.write(order_line(row) + "\n")
        return 0
    raise AssertionError(f"unknown command {args.command}")


def _replay(args: argparse.Namespace) -> int:
    from exchange.instruments import load_instruments
    from journal.verify import verify

    v = verify(args.data_dir, load_instruments(args.instruments))
    out = sys.stdout.write
    out(f"journal: {v.commands:,} commands; full replay state {v.full_hash}\n")
    if v.snapshot_seq:
        out(f"snapshot {v.snapshot_seq:,} + tail: state {v.snapshot_hash}\n")
    else:
        out("no valid snapshot\n")
    out(f"trades: {v.trades_replayed:,} replayed, {v.trades_logged:,} in the trade log\n")
    if not args.verify:
        return 0
    for problem in v.problems:
        out(f"MISMATCH {problem}\n")
    out("OK: journal, snapshot and trade log agree\n" if v.ok else "FAILED\n")
    return 0 if v.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
