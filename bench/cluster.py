"""The cluster against the single process, in one run (make bench-cluster).

    python -m bench.cluster [--orders 400000] [--window 200] [--connections 8]

For `tickline serve` and for `tickline cluster up` with 1 or 2 gateways and 1 or 2 engine
shards (3 NATS nodes, every write fsync'd, all on this machine): the same seeded
closed-loop stream as `make bench` (bench/workload.py), durable orders/s, ACK p50/p99,
and the CPU each process spent per order (from /proc, its child processes included: the
journal's and the trade log's writers), so what each stage costs per order can be read off;
then, for each, an open loop at --rate (2,000/s) for --duration (30 s): its ACK latency, how
busy the machine was, and each process's CPU per order there. Then market-data fan-out to 1,000 subscribers with 1 and 2
notifier processes (bench/fanout.py's measurement: kernel receive timestamps). Then each
role's restart: --restart-orders (1,000,000) orders through a cluster, then kill -9 of each
role in turn and the time until it is back (listening, or caught up with the stream). Last,
the summary lines:

    cpu per order: serve <a> us, cluster 1 gateway <b> us, cluster 2 gateways <c> us
    cluster ack at 2,000/s: p50 <x> ms p99 <y> ms
    role restart after <n> orders: <role> <s> s      (one per role, the slowest last)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bench.fanout import measure_fanout
from bench.load import BENCH_PASSWORD, ROOT, ServerProcess, bench_accounts, fund_accounts, memory_kib, run_phase, tree_cpu_seconds
from bench.workload import make_stream
from cluster.nats import free_nats_base, free_ports, process_alive

FUNDS = [("USD", "100000000")] * 10 + [("AAPL", "100000000"), ("BTC", "1000000"), ("ES", "100000000"), ("EUR", "1000000000000")]
SPLIT = ["--engine", "AAPL=0", "--engine", "EUR-USD=0", "--engine", "BTC-USD=1", "--engine", "ES=1"]  # two shards, about half the flow each


class ClusterProcesses:
    """`tickline cluster up` in a temporary directory, on free ports."""

    def __init__(self, directory: Path, options: list[str]) -> None:
        self.dir = directory
        self.port, self.md_port = free_ports(2)
        self.replayed: dict[str, int] = {}  # role -> commands its restart applied after its snapshot
        self.cli("up", "--port", str(self.port), "--md-port", str(self.md_port), "--nats-port", str(free_nats_base((self.port, self.md_port))), *options)

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
        """Each process that does the exchange's work (not the supervisor: the roles are its
        children, and their CPU is counted once, each on its own)."""
        rows = (line.split() for line in (self.dir / "pids").read_text().splitlines())
        return {f"{role} {i}": int(pid) for pid, role, i in rows if role != "supervisor"}

    def kill_and_restart(self, role: str, timeout: float = 900.0) -> float:
        """kill -9 the role's process (index 0), start it as `up` does; seconds to its line
        saying it is back. (Each role adds its new pid to <dir>/pids: `down` stops it.)"""
        log_path = self.dir / f"{role}-0.log"
        os.kill(self.pids()[f"{role} 0"], signal.SIGKILL)
        time.sleep(0.5)  # (gone; its NATS connection dropped)
        start = log_path.stat().st_size
        t0 = time.monotonic()
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tickline.cli", "cluster", "role", role, "0", "--dir", str(self.dir)], cwd=ROOT, stdout=out, stderr=out, start_new_session=True
            )
        while time.monotonic() - t0 < timeout:
            with open(log_path, "rb") as f:
                f.seek(start)
                back = re.search(rb"_listening.*|_caught_up.*", f.read())
                if back:
                    took = time.monotonic() - t0
                    replayed = re.search(rb"replayed=(\d+)", back.group())
                    self.replayed[role] = int(replayed.group(1)) if replayed else -1
                    return took
            if proc.poll() is not None:
                raise RuntimeError(f"the {role} exited on restart: see {log_path}")
            time.sleep(0.02)
        raise RuntimeError(f"the {role} was not back within {timeout:.0f} s")

    def stop(self) -> None:
        self.cli("down")


@contextmanager
def exchange(data: Path, names: list[str], options: list[str] | None) -> Iterator[tuple[int, int, dict[str, int], ClusterProcesses | None]]:
    """`tickline serve` (options None) or `cluster up` with these options on data's accounts,
    names funded: its order-entry and market-data ports, the pids of the processes that do
    its work, the cluster. Stopped, and data removed, after."""
    server: ServerProcess | None = None
    cluster: ClusterProcesses | None = None
    try:
        if options is None:
            server = ServerProcess("exchange", data, web=False)
            fund_accounts(data, names)
            yield server.port, server.md_port, {"tickline serve": server.proc.pid}, None
        else:
            cluster = ClusterProcesses(data / "cluster", options)
            shutil.copy(data / "accounts.sqlite", cluster.dir / "accounts.sqlite")
            cluster.fund(names)
            yield cluster.port, cluster.md_port, cluster.pids(), cluster
    finally:
        if server is not None:
            server.stop()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(data, ignore_errors=True)


def throughput(args: argparse.Namespace, label: str, options: list[str] | None) -> dict:
    """One closed-loop run: options None is `tickline serve`, else `cluster up` options."""
    data = Path(tempfile.mkdtemp(prefix="tickline-bench-cluster-"))
    everyone = bench_accounts(data, 2 * args.connections)
    names, others = everyone[: args.connections], everyone[args.connections :]  # the open loop's own: no late FILL of the closed loop's
    per_conn = args.orders // args.connections
    streams = [make_stream(per_conn, args.seed, c) for c in range(args.connections)]
    with exchange(data, everyone, options) as (port, _, pids, cluster):
        before = {k: tree_cpu_seconds(p) for k, p in pids.items()}
        result = run_phase(port, streams, f"closed loop, {args.window} in flight x {args.connections}", label, None, args.window, logins=names)
        cpu = cpu_per_order(pids, before, result.completed)
        rss = {k: sum(now for now, _ in memory_kib(p).values()) / 1024 for k, p in pids.items()}  # (a process and its writers)
        paced = [make_stream(int(args.rate * args.duration) // args.connections, args.seed + 1, c) for c in range(args.connections)]
        before, machine_before = {k: tree_cpu_seconds(p) for k, p in pids.items()}, machine_ticks()
        steady = run_phase(port, paced, f"open loop {args.rate:,}/s", label, args.rate, 0, gap=0.0001, logins=others)
        steady_cpu = cpu_per_order(pids, before, steady.completed)
        busy, kernel = machine_share(machine_before, machine_ticks())
        if cluster is not None:
            for k, p in pids.items():
                if not process_alive(p):
                    role, i = k.split()
                    log_tail = (cluster.dir / f"{role}-{i}.log").read_text(errors="replace")[-3000:] if role != "nats" else ""
                    sys.stderr.write(f"{label}: {k} exited during the run:\n{log_tail}\n")
    return {"label": label, "orders_s": result.rate, "p50": result.ack_ms.get("p50", 0), "p99": result.ack_ms.get("p99", 0),
            "completed": result.completed, "errors": result.errors, "cpu_us": cpu, "rss_mib": rss,
            "steady_p50": steady.ack_ms.get("p50", 0), "steady_p99": steady.ack_ms.get("p99", 0), "steady_rate": steady.rate,
            "steady_cpu_us": steady_cpu, "steady_busy": busy, "steady_kernel": kernel}  # fmt: skip


def cpu_per_order(pids: dict[str, int], before: dict[str, float], orders: int) -> dict[str, float]:
    """Each process's CPU us (its children's included) since `before`, per order answered
    (or per trade fanned out)."""
    return {k: (tree_cpu_seconds(p) - before[k]) / max(orders, 1) * 1e6 for k, p in pids.items()}


def machine_ticks() -> tuple[int, int, int, float]:
    """The machine's CPU time so far, in ticks: (all, idle and iowait, kernel and interrupts),
    and the wall clock's seconds."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4], fields[2] + fields[5] + fields[6], time.monotonic()


def machine_share(before: tuple[int, int, int, float], after: tuple[int, int, int, float]) -> tuple[float, float]:
    """Between two machine_ticks(): the share of all CPUs' time busy, and in the kernel.
    Busy is what idle left of the wall clock: the idle time is measured, but user and
    system time are sampled at ticks, and on this VM the ticks did not add up to the wall
    clock (1.22x once). A server woken 2,000 times a second in short bursts read 5% busy
    from them while its own processes used 17% of the machine. The kernel's share of the
    busy time is still the ticks' ratio."""
    wall = max(after[3] - before[3], 1e-9) * (os.cpu_count() or 1) * os.sysconf("SC_CLK_TCK")
    busy = min(max(1 - (after[1] - before[1]) / wall, 0.0), 1.0)
    ticked = max((after[0] - before[0]) - (after[1] - before[1]), 1)
    return busy, busy * (after[2] - before[2]) / ticked


ROLES = ["tradelog", "risk", "engine", "notifier", "gateway"]


def restarts(args: argparse.Namespace) -> dict[str, float]:
    """args.restart_orders orders through a cluster (1 gateway), then each role killed (-9)
    and started again as `up` starts it: seconds from its start to the line that says it is
    back (a gateway or notifier listens; a shard or the trade log has caught up with the
    stream, the trade log's rows committed)."""
    data = Path(tempfile.mkdtemp(prefix="tickline-bench-restart-"))
    names = bench_accounts(data, args.connections)
    cluster = ClusterProcesses(data / "cluster", ["--no-supervise", *(["--snapshot-every", str(args.snapshot_every)] if args.snapshot_every is not None else [])])
    try:
        shutil.copy(data / "accounts.sqlite", cluster.dir / "accounts.sqlite")
        cluster.fund(names)
        per_conn = args.restart_orders // args.connections
        streams = [make_stream(per_conn, args.seed + 2, c) for c in range(args.connections)]
        result = run_phase(cluster.port, streams, f"closed loop, {args.restart_orders:,} orders", "cluster", None, args.window, drain_s=120.0, logins=names)
        sys.stderr.write(f"restart phase: {result.completed:,} orders answered at {result.rate:,.0f}/s\n")
        seconds = {}
        for role in ROLES:
            seconds[role] = cluster.kill_and_restart(role)
            what = "market-data updates" if role == "notifier" else "commands"
            sys.stderr.write(f"restart phase: {role} back in {seconds[role]:.2f} s, {cluster.replayed[role]:,} {what} applied after its snapshot\n")
        return seconds
    finally:
        cluster.stop()
        shutil.rmtree(data, ignore_errors=True)


def fanout(args: argparse.Namespace, notifiers: int | None) -> str:
    """bench/fanout.py's measurement against `tickline serve` (notifiers None) or a cluster
    with that many notifiers; then the CPU per trade of the processes that fan out."""
    data = Path(tempfile.mkdtemp(prefix="tickline-bench-fanout-"))
    names = bench_accounts(data, 2)
    with exchange(data, names, None if notifiers is None else ["--notifiers", str(notifiers)]) as (port, md_port, pids, cluster):
        if cluster is not None:
            pids = {k: p for k, p in pids.items() if k.startswith("notifier")}
        before = {k: tree_cpu_seconds(p) for k, p in pids.items()}
        report = measure_fanout(port, md_port, names, args.subscribers, args.fanout_rate, args.fanout_seconds, BENCH_PASSWORD)
        per_trade = cpu_per_order(pids, before, int(args.fanout_rate * args.fanout_seconds))  # (us per trade)
    return f"{report}\nCPU per trade: " + "  ".join(f"{k} {us / 1000:.2f} ms" for k, us in per_trade.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=400_000, help="closed loop: orders in all (~12 s a configuration here; 1 s phases gave ratios a fifth apart)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--window", type=int, default=200, help="requests in flight per connection")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=int, default=2_000, help="then an open loop at this rate: the ACK latency of an unloaded pipeline")
    parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds of the open loop; 300 for a 5-minute soak (a 5 s phase can catch a good stretch)"
    )
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--fanout-rate", type=int, default=200)
    parser.add_argument("--fanout-seconds", type=float, default=10.0)
    parser.add_argument("--skip-fanout", action="store_true")
    parser.add_argument("--restart-orders", type=int, default=1_000_000, help="orders through the cluster before each role is killed and restarted")
    parser.add_argument("--skip-restart", action="store_true")
    parser.add_argument("--snapshot-every", type=int, help="the restart phase's cluster: commands between each role's snapshots (default: up's)")
    parser.add_argument("--only-restart", action="store_true", help="only the restart phase (and its summary line)")
    args = parser.parse_args(argv)
    if args.only_restart:
        summarize_restarts(args, restarts(args))
        return 0
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
    # Why the cluster's ACK at this rate depends on the machine: its CPU per order is several
    # times the closed loop's (small batches: each stage publishes as soon as its previous
    # publish is stored, so messages per second follow the latency, not the orders).
    print(f"open loop at {args.rate:,}/s: how busy the machine was (all {os.cpu_count()} CPUs), and CPU us per order, by process")
    for r in results:
        cpu = "  ".join(f"{k} {v:.0f}" for k, v in r["steady_cpu_us"].items())
        print(f"{r['label']:34} busy {r['steady_busy']:4.0%} (kernel {r['steady_kernel']:3.0%})   {cpu}")
    print("resident memory after the closed loop, MiB, by process (with its writers)")
    for r in results:
        print(f"{r['label']:34} " + "  ".join(f"{k} {v:.0f}" for k, v in r["rss_mib"].items()))
    if not args.skip_fanout:
        for label, notifiers in [("tickline serve", None), ("cluster, 1 notifier", 1), ("cluster, 2 notifiers", 2)]:
            print(f"fan-out, {label}: " + fanout(args, notifiers).replace("\n", "\n    "))
    serve, one_gw, two_gw = (sum(r["cpu_us"].values()) for r in results if r["label"] in (runs[0][0], runs[1][0], runs[3][0]))
    print(f"cpu per order: serve {serve:.0f} us, cluster 1 gateway {one_gw:.0f} us, cluster 2 gateways {two_gw:.0f} us")
    one = next(r for r in results if r["label"] == "cluster: 1 gateway, 1 engine")
    print(f"cluster ack at {args.rate:,}/s: p50 {one['steady_p50']:.1f} ms p99 {one['steady_p99']:.1f} ms")
    if not args.skip_restart:
        summarize_restarts(args, restarts(args))
    return 0


def summarize_restarts(args: argparse.Namespace, seconds: dict[str, float]) -> None:
    for role, s in sorted(seconds.items(), key=lambda item: item[1]):
        print(f"role restart after {args.restart_orders:,} orders: {role} {s:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
