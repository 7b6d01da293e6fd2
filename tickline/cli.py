"""The command line: serve, replay --verify, trades, orders, accounts, balances. Flags
default from TICKLINE_* env."""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from exchange.risk import MAX_OPEN_ORDERS
from journal.layout import DataDir
from tickline import __version__

if TYPE_CHECKING:
    from tickline.cluster import ClusterConfig


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
    serve.add_argument("--port", type=_port, default=env("TICKLINE_PORT", "7001"), help="order-entry port, 0 for any (TICKLINE_PORT)")
    serve.add_argument("--md-host", default=env("TICKLINE_MD_HOST", "127.0.0.1"), help="market-data address (TICKLINE_MD_HOST)")
    serve.add_argument("--md-port", type=_port, default=env("TICKLINE_MD_PORT", "7002"), help="market-data port, 0 for any (TICKLINE_MD_PORT)")
    serve.add_argument("--web-host", default=env("TICKLINE_WEB_HOST", "127.0.0.1"), help="dashboard address (TICKLINE_WEB_HOST)")
    serve.add_argument("--web-port", type=_port, default=env("TICKLINE_WEB_PORT", "7080"), help="dashboard port, 0 for any (TICKLINE_WEB_PORT)")
    serve.add_argument("--no-web", action="store_true", help="no dashboard, no /metrics")
    serve.add_argument("--md-hard-cap", type=_at_least_one, default=8 * 1024 * 1024, help="unread bytes before a subscriber is disconnected")
    serve.add_argument("--md-pause-deadline", type=float, default=10.0, help="seconds a subscriber may stop reading")
    serve.add_argument("--snapshot-every", type=int, default=env("TICKLINE_SNAPSHOT_EVERY", "50000"), help="commands between snapshots, at most")
    serve.add_argument(
        "--snapshot-interval", type=float, default=env("TICKLINE_SNAPSHOT_INTERVAL", "10"), help="seconds between snapshots, at most (when busy)"
    )
    serve.add_argument(
        "--snapshots-by", choices=["replica", "fork"], default=env("TICKLINE_SNAPSHOTS_BY", "replica"),
        help="who writes the periodic snapshots: a process following the journal (a copy of the books) or a forked child (no copy; it slows the server while it lives)",
    )  # fmt: skip
    serve.add_argument("--segment-mb", type=_at_least_one, default=env("TICKLINE_SEGMENT_MB", "64"), help="journal segment size in MiB before rotating")
    serve.add_argument("--retention", choices=["keep", "delete"], default=env("TICKLINE_RETENTION", "keep"), help="journal segments covered by snapshots")
    serve.add_argument(
        "--max-backlog", type=_at_least_one, default=env("TICKLINE_MAX_BACKLOG", "8000"),
        help="commands accepted and not yet matched before the server stops reading from clients (until half that)",
    )  # fmt: skip
    serve.add_argument(
        "--log-recovered-state", action="store_true",
        help="log the recovered state's hash at start, as `tickline replay` prints it (about 1 s per million open orders)",
    )  # fmt: skip
    serve.add_argument("--max-connections", type=_at_least_one, default=5000, help="order-entry connections in all")
    serve.add_argument("--max-connections-per-address", type=_at_least_one, default=500, help="order-entry connections from one client address")
    serve.add_argument("--login-timeout", type=float, default=60.0, help="seconds an order-entry connection may stay without logging in (0: no limit)")
    serve.add_argument("--max-open-orders", type=_at_least_one, default=MAX_OPEN_ORDERS, help="open orders one account may have (resting, pending stops)")
    serve.add_argument("--tradelog-max-rows", type=_at_least_one, default=env("TICKLINE_TRADELOG_MAX_ROWS", "500000"), help="trade log queue bound")
    serve.add_argument("--log-level", default=env("TICKLINE_LOG_LEVEL", "info"))
    serve.add_argument("--tls-cert", type=Path, default=env("TICKLINE_TLS_CERT"), help="certificate chain (PEM): both ports speak TLS")
    serve.add_argument("--tls-key", type=Path, default=env("TICKLINE_TLS_KEY"), help="its private key (PEM)")
    serve.add_argument("--insecure", action="store_true", help="allow a non-loopback address without TLS (passwords would cross the network in clear)")
    serve.add_argument("--demo", action="store_true", help="on a data directory with no accounts: create alice and bob, funded")

    accounts = commands.add_parser("accounts", help="add, disable, list accounts; deposit and withdraw (through the running server)")
    acts = accounts.add_subparsers(dest="action", required=True)
    add = acts.add_parser("add", help="a new account (password from a prompt, or --password-stdin)")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    _common(add)
    for verb in ("disable", "enable"):
        toggle = acts.add_parser(verb, help=f"{verb} logging in")
        toggle.add_argument("name")
        _common(toggle)
    _common(acts.add_parser("list", help="every account"))
    for verb in ("deposit", "withdraw"):
        move = acts.add_parser(verb, help=f"{verb} an amount (journaled by the running server; the same --ref twice changes nothing)")
        _common(move)
        move.add_argument("name")
        move.add_argument("asset")
        move.add_argument("amount")
        move.add_argument("--ref", required=True, help="your unique id for this transfer (1-64 of A-Z a-z 0-9 . _ : -)")

    cluster = commands.add_parser("cluster", help="the exchange as processes over a NATS JetStream cluster (docs/SCALING.md)")
    steps = cluster.add_subparsers(dest="action", required=True)
    up = steps.add_parser("up", help="start 3 NATS nodes and every role in the background")
    up.add_argument("--gateways", type=_at_least_one, default=1, help="gateway processes (all on --port)")
    up.add_argument("--notifiers", type=_at_least_one, default=1, help="market-data processes (all on --md-port)")
    up.add_argument("--risk-shards", type=_at_least_one, default=1, help="accounts are spread over these by hash")
    up.add_argument("--engine", action="append", default=[], metavar="SYMBOL=SHARD", help="a symbol's engine shard (default 0); repeat")
    up.add_argument("--port", type=_port, default=env("TICKLINE_PORT", "7001"))
    up.add_argument("--md-port", type=_port, default=env("TICKLINE_MD_PORT", "7002"))
    up.add_argument("--nats-port", type=_port, default=4222, help="the first NATS node's client port (+1, +2 for the others; routes at +2000)")
    up.add_argument("--instruments", default=env("TICKLINE_INSTRUMENTS"))
    up.add_argument("--demo", action="store_true", help="with no accounts yet: create alice and bob, funded (as serve --demo)")
    up.add_argument("--max-open-orders", type=_at_least_one, help="open orders one account may have: set when the cluster is first brought up (default 1000000)")
    up.add_argument("--snapshot-every", type=int, default=100_000, help="commands each role applies between its snapshots (0: none written)")
    up.add_argument(
        "--max-backlog", type=_at_least_one, default=env("TICKLINE_MAX_BACKLOG", "8000"),
        help="a gateway's commands not decided yet past which it stops reading from its clients (TICKLINE_MAX_BACKLOG)",
    )  # fmt: skip
    up.add_argument(
        "--compact-every", type=float, default=env("TICKLINE_COMPACT_EVERY", "60"), metavar="SECONDS",
        help="the supervisor runs `cluster compact` this often (default 60; 0: never; TICKLINE_COMPACT_EVERY)",
    )  # fmt: skip
    up.add_argument("--no-supervise", action="store_true", help="start the roles and leave them: a role that dies stays down (by default a supervisor process restarts it)")
    down = steps.add_parser("down", help="stop what `up` started")
    role = steps.add_parser("role", help="run one role in the foreground (what `up` starts)")
    role.add_argument("role", choices=["gateway", "risk", "engine", "notifier", "tradelog"])
    role.add_argument("index", type=int)
    role.add_argument("--log-level", default=env("TICKLINE_LOG_LEVEL", "info"))
    supervise = steps.add_parser("supervise", help="what `up` leaves running: starts the roles, restarts one that dies (log: <dir>/supervisor.log)")
    supervise.add_argument("--log-level", default=env("TICKLINE_LOG_LEVEL", "info"))
    deposit = steps.add_parser("deposit", help="credit (a negative amount: debit) an account through its risk shard")
    deposit.add_argument("name")
    deposit.add_argument("asset")
    deposit.add_argument("amount")
    deposit.add_argument("--ref", required=True, help="your unique id for this transfer")
    deposits = steps.add_parser("deposits", help="many at once: lines of <name> <asset> <amount> <ref> on stdin, a verdict line each")
    compact = steps.add_parser("compact", help="drop the stream's messages that every role's snapshots cover (docs/SCALING.md, Retention)")
    status = steps.add_parser("status", help="each process: running or not, restarts, snapshots; the stream (exit 1 if anything is down)")
    for step in (up, down, status, role, supervise, deposit, deposits, compact):
        step.add_argument("--dir", default=env("TICKLINE_CLUSTER_DIR", "var/cluster"), help="the cluster's files (TICKLINE_CLUSTER_DIR)")

    telemetry = commands.add_parser("telemetry", help="the running server's own figures: each stage's latency histogram (docs/PERFORMANCE.md)")
    _common(telemetry)
    telemetry.add_argument("--reset", action="store_true", help="then start the figures again")
    telemetry.add_argument("--json", action="store_true", help="one line of JSON, as the admin channel says it")

    balances = commands.add_parser("balances", help="every account's balances, from the journal (offline: the server may run or not; a cluster's from its running risk shards)")
    _common(balances)
    balances.add_argument("--account")

    replay = commands.add_parser("replay", help="rebuild state from the journal")
    _common(replay)
    replay.add_argument("--verify", action="store_true", help="check snapshot + tail and the trade log against a full replay")

    trades = commands.add_parser("trades", help="print trades from the trade log")
    _common(trades)
    trades.add_argument("--symbol")
    trades.add_argument("--since", type=_since, help="a journal sequence number or an ISO-8601 time (UTC unless it says)")
    trades.add_argument("--limit", type=_at_least_one)

    orders = commands.add_parser("orders", help="print the audit: every request (new, cancel, replace), journaled or refused, with its outcome")
    _common(orders)
    orders.add_argument("--owner")
    orders.add_argument("--symbol")
    orders.add_argument("--status", choices=["accepted", "rejected"])
    orders.add_argument("--since", type=_since, help="an order id or an ISO-8601 time (UTC unless it says)")
    orders.add_argument("--limit", type=_at_least_one)

    args = parser.parse_args(argv)
    from tickline.logs import configure

    configure(getattr(args, "log_level", "warning"))
    from exchange.instruments import InstrumentsFileError, MissingInstrument
    from journal.accounts import AccountError
    from journal.journal import JournalCorrupt
    from journal.layout import DataDirInUse
    from journal.queries import NoTradeLog
    from netio.plumbing import CannotListen

    try:
        return _run(args)
    except (DataDirInUse, JournalCorrupt, MissingInstrument, InstrumentsFileError, NoTradeLog, AccountError, OperatorError, CannotListen) as exc:
        # Conditions an operator can name and fix: one line, no traceback.
        sys.stderr.write(f"tickline: {exc}\n")
        return 1


def _at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _port(text: str) -> int:
    """A TCP port, 0 for any (bind would take 99999 as 34463: the lowest 16 bits)."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: 0 (any) to 65535")
    return int(text)


def _since(text: str) -> str:
    from journal.queries import since_value

    try:
        return since_value(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class OperatorError(Exception):
    """A command line mistake an operator fixes: said in one line."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _not_a_cluster(data_dir: Path, why: str) -> None:
    """Refuse a `tickline cluster` directory where a serve data directory is meant."""
    if (Path(data_dir) / "cluster.json").exists():
        raise OperatorError(f"{data_dir} is a `tickline cluster` directory: {why}")


def _has_journal(data_dir: Path) -> None:
    """Refuse a directory no server has written (a mistyped --data-dir read as empty)."""
    if not DataDir(data_dir).journal.is_dir():
        raise OperatorError(f"no journal in {data_dir}: is --data-dir (or TICKLINE_DATA) the server's data directory?")


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        _not_a_cluster(args.data_dir, f"its journal is its JetStream stream; start it with `tickline cluster up --dir {args.data_dir}`")
        if (args.tls_cert is None) != (args.tls_key is None):
            raise OperatorError("--tls-cert and --tls-key go together")
        exposed = [h for h in (args.host, args.md_host) if not _loopback(h)]
        if exposed and args.tls_cert is None and not args.insecure:
            raise OperatorError(
                f"{exposed[0]} is not a loopback address and LOGIN sends a password: give --tls-cert and --tls-key, or --insecure to send it in clear"
            )
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
            retention=args.retention, snapshots_by=args.snapshots_by, tradelog_max_rows=args.tradelog_max_rows, max_backlog=args.max_backlog,
            md_host=args.md_host, md_port=args.md_port, md_hard_cap=args.md_hard_cap, md_pause_deadline=args.md_pause_deadline,
            tls_cert=args.tls_cert, tls_key=args.tls_key, demo=args.demo,
            web_host=args.web_host, web_port=None if args.no_web else args.web_port, max_connections=args.max_connections,
            max_connections_per_address=args.max_connections_per_address, login_timeout=args.login_timeout,
            max_open_orders=args.max_open_orders, log_recovered_state=args.log_recovered_state,
        )  # fmt: skip
        return uvloop.run(run_server(config))
    if args.command == "cluster":
        return _cluster(args)
    if args.command == "replay":
        return _replay(args)
    if args.command == "accounts":
        return _accounts(args)
    if args.command == "telemetry":
        return _telemetry(args)
    if args.command == "balances":
        return _balances(args)
    if args.command == "trades":
        from journal.queries import trade_line, trades

        for row in trades(DataDir(args.data_dir).trades, args.symbol, args.since, args.limit):
            sys.stdout.write(trade_line(row) + "\n")
        return 0
    if args.command == "orders":
        from journal.queries import order_line, orders

        for order in orders(DataDir(args.data_dir).trades, args.owner, args.symbol, args.status, args.since, args.limit):
            sys.stdout.write(order_line(order) + "\n")
        return 0
    raise AssertionError(f"unknown command {args.command}")


def _cluster(args: argparse.Namespace) -> int:
    import asyncio

    from tickline import cluster

    if args.action == "up":
        engines = {}
        for item in args.engine:
            symbol, _, shard = item.partition("=")
            engines[symbol.upper()] = int(shard)
        base = args.nats_port
        was = cluster.ClusterConfig.load(args.dir) if (Path(args.dir) / "cluster.json").exists() else None
        recorded = was.max_open_orders if was is not None else None
        if None not in (recorded, args.max_open_orders) and recorded != args.max_open_orders:
            raise OperatorError(f"{args.dir} was brought up with --max-open-orders {recorded}; a cluster keeps the limit it started with")
        if was is not None and (was.risk_shards, was.engines) != (args.risk_shards, engines):  # (the stream and snapshots are by shard)
            options = " ".join([f"--risk-shards {was.risk_shards}", *(f"--engine {s}={e}" for s, e in sorted(was.engines.items()))])
            raise OperatorError(
                f"{args.dir} was brought up with {options}; a cluster keeps the layout it started with"
                " (its stream and snapshots are by shard): give the same options, or another --dir"
            )
        config = cluster.ClusterConfig(
            args.dir, port=args.port, md_port=args.md_port, gateways=args.gateways, notifiers=args.notifiers,
            risk_shards=args.risk_shards, engines=engines, engine_shards=max(engines.values(), default=0) + 1,
            nats_ports=[(base + i, base + 2000 + i) for i in range(3)], instruments=args.instruments, supervise=not args.no_supervise,
            snapshot_every=args.snapshot_every, max_open_orders=args.max_open_orders or recorded or MAX_OPEN_ORDERS,  # (each at least 1 when given)
            max_backlog=args.max_backlog, compact_every=args.compact_every,
        )  # fmt: skip
        return cluster.up(config, demo=args.demo)
    if args.action == "down":
        return cluster.down(Path(args.dir))
    if not (Path(args.dir) / "cluster.json").exists():
        raise OperatorError(f"no cluster in {args.dir} (no cluster.json): `tickline cluster up --dir {args.dir}` makes one")
    config = cluster.ClusterConfig.load(args.dir)
    if args.action == "status":
        lines, well = cluster.status(config)
        sys.stdout.write("".join(line + "\n" for line in lines))
        return 0 if well else 1
    if args.action == "supervise":
        return cluster.supervise(config)
    if args.action in ("deposit", "deposits"):
        if args.action == "deposit":
            moves = [[args.name, args.asset, args.amount, args.ref]]
        else:  # a malformed line gets its own ERR line (exchange/transfers.py)
            moves = [line.split() for line in sys.stdin if line.strip()]
        return _cluster_transfers(config, moves, "DEPOSIT", args.dir)
    if args.action == "compact":
        try:
            said = asyncio.run(cluster.compact_stream(config))
        except cluster.ClusterDown as exc:
            raise OperatorError(f"the cluster in {args.dir} is not running, {exc}: `tickline cluster up --dir {args.dir}`") from None
        sys.stdout.write(said + "\n")
        return 0
    import uvloop

    try:
        claim = cluster.claim_role(Path(args.dir), args.role, args.index)  # (held until this process ends)
    except cluster.RoleRunning as exc:
        raise OperatorError(str(exc)) from None
    try:
        return uvloop.run(cluster.run_role(config, args.role, args.index))
    finally:
        claim.close()


def _admin(data: DataDir, line: str, why: str) -> str:
    """One request to the running server's admin channel, its one-line reply."""
    from netio.unix_lines import send_lines

    try:
        reply = send_lines(data.admin_socket, [line])
    except (FileNotFoundError, ConnectionRefusedError):
        raise OperatorError(f"no server is running on {data.root}: start it ({why})") from None
    except PermissionError:
        raise OperatorError(f"{data.admin_socket}: only the user who runs the server may use it") from None
    return reply[0] if reply else "ERR no_reply the server closed the admin channel"


def _telemetry(args: argparse.Namespace) -> int:
    import json

    where = args.data_dir
    _not_a_cluster(where, f"its roles keep no telemetry yet (docs/SCALING.md, Not built); `tickline cluster status --dir {where}` says what runs")
    text = _admin(DataDir(args.data_dir), "TELEMETRY RESET" if args.reset else "TELEMETRY", "the figures are the server's")
    if args.json or not text.startswith("{"):
        sys.stdout.write(text + "\n")
        return 0 if text.startswith("{") else 1
    for name, value in json.loads(text).items():
        if isinstance(value, dict):
            figures = "  ".join(f"{k} {v:,}" for k, v in value.items())
            sys.stdout.write(f"{name:26} {figures}\n")
        else:
            sys.stdout.write(f"{name:26} {value:,}\n")
    return 0


def _cluster_transfers(config: ClusterConfig, moves: list[list[str]], verb: str, where: str) -> int:
    """Transfers through a cluster's risk shards (`cluster deposit(s)`, and `accounts
    deposit|withdraw` given a cluster directory): a verdict line each."""
    import asyncio

    from tickline import cluster

    try:
        lines = asyncio.run(cluster.transfers(config, moves, verb))
    except cluster.ClusterDown as exc:
        raise OperatorError(f"the cluster in {where} is not running, {exc}: `tickline cluster up --dir {where}`") from None
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0 if all(line.startswith("OK") for line in lines) else 1


def _accounts(args: argparse.Namespace) -> int:
    from journal.accounts import AccountAdmin

    data = DataDir(args.data_dir)
    if args.action in ("deposit", "withdraw"):
        if (Path(args.data_dir) / "cluster.json").exists():  # through the account's risk shard
            from tickline.cluster import ClusterConfig

            moves = [[args.name, args.asset, args.amount, args.ref]]
            return _cluster_transfers(ClusterConfig.load(args.data_dir), moves, args.action.upper(), args.data_dir)
        line = f"{args.action.upper()} {args.name} {args.asset} {args.amount} {args.ref}"
        text = _admin(data, line, "a transfer is journaled by the server")
        sys.stdout.write(text + "\n")
        return 0 if text.startswith("OK") else 1
    admin = AccountAdmin(data.accounts)
    try:
        if args.action == "add":
            if args.password_stdin:
                password = sys.stdin.readline().rstrip("\n")
            else:
                try:
                    password = getpass.getpass(f"password for {args.name}: ")
                    again = getpass.getpass("again: ")
                except EOFError:
                    sys.stderr.write("\n")  # (after the prompt)
                    raise OperatorError("no password typed (to give one on standard input: --password-stdin)") from None
                if again != password:
                    raise OperatorError("the passwords differ")
            admin.add(args.name, password)
            sys.stdout.write(f"account {args.name} added\n")
        elif args.action in ("disable", "enable"):
            admin.set_disabled(args.name, args.action == "disable")
            sys.stdout.write(f"account {args.name} {args.action}d (from its next login)\n")
        else:
            for row in admin.list():
                sys.stdout.write(f"{row.name} created={row.created}{' disabled' if row.disabled else ''}\n")
    finally:
        admin.close()
    return 0


def _balances(args: argparse.Namespace) -> int:
    """Replays the snapshot + journal tail (read only) and prints every balance; a cluster's
    come from its risk shards (it has no journal files: it must be running)."""
    from exchange.instruments import assets_of, load_instruments

    if (Path(args.data_dir) / "cluster.json").exists():
        import asyncio

        from tickline.cluster import ClusterConfig, ClusterDown
        from tickline.cluster import balances as cluster_balances

        config = ClusterConfig.load(args.data_dir)
        try:
            rows, applied = asyncio.run(cluster_balances(config))
        except ClusterDown as exc:
            where = args.data_dir
            raise OperatorError(f"the cluster in {where} is not running, {exc}: its balances live in its risk shards; `tickline cluster up --dir {where}`") from None
        assets = assets_of(load_instruments(Path(config.instruments) if config.instruments else None))
        shards = ", ".join(f"risk shard {shard} through stream seq {seq}" for shard, seq in sorted(applied.items()))
        sys.stdout.write(f"balances from the running cluster ({shards})\n")
    else:
        from journal.recovery import latest_state

        _has_journal(args.data_dir)
        engine, _, last = latest_state(args.data_dir, load_instruments(args.instruments))
        rows, assets = engine.risk.state()[0], engine.risk.assets
        sys.stdout.write(f"balances after journal seq {last}\n")
    for account, asset, available, locked in rows:
        if args.account is None or account == args.account:
            a = assets[asset]
            sys.stdout.write(f"{account} {asset} available={a.format(available)} locked={a.format(locked)}\n")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from exchange.instruments import load_instruments
    from journal.verify import verify

    _not_a_cluster(args.data_dir, "its journal is its JetStream stream, not files here; `tickline replay` reads a `tickline serve` data directory")
    _has_journal(args.data_dir)
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
