"""The cluster against the single process, in one run (make bench-cluster).

    python -m bench.cluster [--orders 40000] [--window 200] [--connections 8]

For `tickline serve` and for `tickline cluster up` with 1 or 2 gateways and 1 or 2 engine
shards (3 NATS nodes, every write fsync'd, all on this machine): the same seeded
closed-loop stream as `make bench` (bench/workload.py), durable orders/s, ACK p50/p99,
and the CPU each process spent per order (from /proc, its child processes included: the
journal's and the trade log's writers), so what each stage costs per order can be read off. Then market-data fan-out to 1,000 subscribers with 1 and 2
notifier processes (bench/fanout.py's measurement: kernel receive timestamps).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.fanout import measure_fanout
from bench.load import BENCH_PASSWORD, ROOT, ServerProcess, bench_accounts, fund_accounts, run_phase, tree_cpu_seconds
from bench.workload import make_stream
from cluster.nats import free_nats_base, free_ports, process_alive

FUNDS = [("USD", "100000000")] * 10 + [("AAPL", "100000000"), ("BTC", "1000000"), ("ES", "100000000"), ("EUR", "1000000000000")]
SPLIT = ["--engine", "AAPL=0", "--engine", "EUR-USD=0", "--engine", "BTC-USD=1", "--engine", "ES=1"]  # two shards, about half the flow each


class ClusterProcesses:
    """`tickline cluster up` in a temporary directory, on free ports."""

    def __init__(self, directory: Path, options: list[str]) -> None:
        self.dir = directory
        self.port, self.md_port = free_ports(2)
        self.cli("up", "--port", str(self.port), "--md-port", str(self.md_port), "--nats-port", str(free_nats_base()), *options)

    def cli(self, *args: str, stdin: str = "") -> str:
        done = subprocess.run(
            [sys.executable, "-m", "tickline.cli", "cluster", *args, "--dir", str(self.dir)], cwd=ROOT, input=stdin.encode(), capture_output=True, timeout=180
        )
        if done.returncode != 0:
            raise RuntimeError(f"cluster {args[0]} failed: {done.stderr.decode()[-2000:]}{done.stdout.decode()[-500:]}")
        return done.stdout.decode()

    def fund(self, names: list[str]) -> None:
        lines = [f"{name} {asset} {amount} bench:{name}:{asset}:{i}" for name in names for i, (asset, amount) in enumerate(FUNDS)]
        self.cli("deposits", stdin="\n".join(lines))

    def pids(self) -> dict[str, int]:
        return {f"{role} {i}": int(pid) for pid, role, i in (line.split() for line in (self.dir / "pids").read_text().splitlines())}

    def stop(self) -> None:
        self.cli("down")


def throughput(args: argparse.Namespace, label: str, options: list[str] | None) -> dict:
    """One closed-loop run: options None is `tickline serve`, else `cluster up` options."""
    data = Path(tempfile.mkdtemp(prefix="tickline-bench-cluster-"))
    everyone = bench_accounts(data, 2 * args.connections)
    names, others = everyone[: args.connections], everyone[args.connections :]  # the open loop's own: no late FILL of the closed loop's
    per_conn = args.orders // args.connections
    streams = [make_stream(per_conn, args.seed, c) for c in range(args.connections)]
    server = ServerProcess("exchange", data, web=False) if options is None else None
    cluster = ClusterProcesses(data / "cluster", options) if options is not None else None
    try:
        if server is not None:
            fund_accounts(data, everyone)
            port, pids = server.port, {"tickline serve": server.proc.pid}
        else:
            assert cluster is not None
            shutil.copy(data / "accounts.sqlite", cluster.dir / "accounts.sqlite")
            cluster.fund(everyone)
            port, pids = cluster.port, cluster.pids()
        before = {k: tree_cpu_seconds(p) for k, p in pids.items()}
        result = run_phase(port, streams, f"closed loop, {args.window} in flight x {args.connections}", label, None, args.window, logins=names)
        cpu = {k: (tree_cpu_seconds(p) - before[k]) / max(result.completed, 1) * 1e6 for k, p in pids.items()}
        paced = [make_stream(int(args.rate * args.duration) // args.connections, args.seed + 1, c) for c in range(args.connections)]
        steady = run_phase(port, paced, f"open loop {args.rate:,}/s", label, args.rate, 0, gap=0.0001, logins=others)
        if cluster is not None:
            for k, p in pids.items():
                if not process_alive(p):
                    role, i = k.split()
                    log_tail = (cluster.dir / f"{role}-{i}.log").read_text(errors="replace")[-3000:] if role != "nats" else ""
                    sys.stderr.write(f"{label}: {k} exited during the run:\n{log_tail}\n")
    finally:
        if server is not None:
            server.stop()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(data, ignore_errors=True)
    return {"label": label, "orders_s": result.rate, "p50": result.ack_ms.get("p50", 0), "p99": result.ack_ms.get("p99", 0),
            "completed": result.completed, "errors": result.errors, "cpu_us": cpu,
            "steady_p50": steady.ack_ms.get("p50", 0), "steady_p99": steady.ack_ms.get("p99", 0), "steady_rate": steady.rate}  # fmt: skip


def fanout(args: argparse.Namespace, notifiers: int | None) -> str:
    data = Path(tempfile.mkdtemp(prefix="tickline-bench-fanout-"))
    names = bench_accounts(data, 2)
    try:
        if notifiers is None:
            server = ServerProcess("exchange", data, web=False)
            try:
                fund_accounts(data, names)
                started = tree_cpu_seconds(server.proc.pid)
                report = measure_fanout(server.port, server.md_port, names, args.subscribers, args.fanout_rate, args.fanout_seconds, BENCH_PASSWORD)
                per_trade = (tree_cpu_seconds(server.proc.pid) - started) / (args.fanout_rate * args.fanout_seconds) * 1000
                return f"{report}\nCPU per trade: tickline serve {per_trade:.2f} ms"
            finally:
                server.stop()
        cluster = ClusterProcesses(data / "cluster", ["--notifiers", str(notifiers)])
        try:
            shutil.copy(data / "accounts.sqlite", cluster.dir / "accounts.sqlite")
            cluster.fund(names)
            pids = {k: p for k, p in cluster.pids().items() if k.startswith("notifier")}
            before = {k: tree_cpu_seconds(p) for k, p in pids.items()}
            report = measure_fanout(cluster.port, cluster.md_port, names, args.subscribers, args.fanout_rate, args.fanout_seconds, BENCH_PASSWORD)
            trades = args.fanout_rate * args.fanout_seconds
            cpu = "  ".join(f"{k} {(tree_cpu_seconds(p) - before[k]) / trades * 1000:.2f} ms" for k, p in pids.items())
            return f"{report}\nCPU per trade: {cpu}"
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(data, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=40_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--window", type=int, default=200, help="requests in flight per connection")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=int, default=2_000, help="then an open loop at this rate: the ACK latency of an unloaded pipeline")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--fanout-rate", type=int, default=200)
    parser.add_argument("--fanout-seconds", type=float, default=10.0)
    parser.add_argument("--skip-fanout", action="store_true")
    args = parser.parse_args(argv)
    runs = [
        ("tickline serve", None),
        ("cluster: 1 gateway, 1 engine", []),
        ("cluster: 1 gateway, 2 engines", SPLIT),
        ("cluster: 2 gateways, 1 engine", ["--gateways", "2"]),
        ("cluster: 2 gateways, 2 engines", ["--gateways", "2", *SPLIT]),
    ]
    results = []
    for label, options in runs:
        t0 = time.monotonic()
        results.append(throughput(args, label, options))
        sys.stderr.write(f"{label}: done in {time.monotonic() - t0:.0f}s\n")
    print(f"closed loop, {args.connections} connections x {args.window} in flight, {args.orders:,} orders (3 NATS nodes on this machine, every write fsync'd)")
    print(f"{'':34} {'orders/s':>9} {'ACK p50':>9} {'ACK p99':>9}  at {args.rate:,}/s: p50     p99   CPU us per order, by process")
    for r in results:
        cpu = "  ".join(f"{k} {v:.0f}" for k, v in r["cpu_us"].items())
        print(
            f"{r['label']:34} {r['orders_s']:9,.0f} {r['p50']:7.1f}ms {r['p99']:7.1f}ms  {r['steady_p50']:11.1f}ms {r['steady_p99']:5.1f}ms   {cpu}"
        )
    if not args.skip_fanout:
        for label, notifiers in [("tickline serve", None), ("cluster, 1 notifier", 1), ("cluster, 2 notifiers", 2)]:
            print(f"fan-out, {label}: " + fanout(args, notifiers).replace("\n", "\n    "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
