"""A/B of the cluster's CPU per order: another commit against this tree, in alternating rounds.

    python -m bench.compare <git ref> [--rounds 3] [--orders 80000] [-- <cluster up options>]

The machine drifts 20-40% between runs, more than most changes move, so whole-run totals
rarely decide an A/B. Here each round runs the ref (from a temporary git worktree) and this
tree, each going first in turn (a run leaves the next one faster), each in a fresh cluster
with the same seeded closed loop (bench/workload.py, 8 connections x 200 in flight), and
prints every process's own CPU per order (bench.load's tree_cpu_seconds of the process less
its children's, so the trade log's SQLite writer is its own row), orders/s and the total
over all processes. Compare a role's figures within a round, and the roles that did not
change as the measure of the drift.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.load import ROOT

# One run from the tree it is started in (cwd): only what every commit with bench-cluster has.
ONE_RUN = """
import json, shutil, sys, tempfile
from pathlib import Path
from bench.cluster import ClusterProcesses
from bench.load import bench_accounts, run_phase, tree_cpu_seconds
from bench.workload import make_stream

orders, options = int(sys.argv[1]), sys.argv[2:]
data = Path(tempfile.mkdtemp(prefix="tickline-compare-"))
names = bench_accounts(data, 8)
cluster = ClusterProcesses(data / "cluster", options)
try:
    shutil.copy(data / "accounts.sqlite", cluster.dir / "accounts.sqlite")
    cluster.fund(names)
    pids = cluster.pids()
    kids = {k: [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()] for k, p in pids.items()}
    def cpu():  # each process's own (its tree less its children's), the children's, everything
        trees, children = {k: tree_cpu_seconds(p) for k, p in pids.items()}, {k: sum(map(tree_cpu_seconds, c)) for k, c in kids.items()}
        return {**{k: trees[k] - children[k] for k in pids}, **{f"{k} writer": children[k] for k in pids if kids[k]}, "all": sum(trees.values())}
    before = cpu()
    result = run_phase(cluster.port, [make_stream(orders // 8, 7, c) for c in range(8)], "closed loop", "compare", None, 200, logins=names)
    after = cpu()
    print(json.dumps({"orders_s": result.rate, "us": {k: (after[k] - before[k]) / max(result.completed, 1) * 1e6 for k in before}}))
finally:
    cluster.stop()
    shutil.rmtree(data, ignore_errors=True)
"""


def run_once(tree: Path, orders: int, options: list[str]) -> dict:
    done = subprocess.run([sys.executable, "-c", ONE_RUN, str(orders), *options], cwd=tree, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"a run in {tree} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ref", help="the commit to compare this tree against (e.g. HEAD~1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--orders", type=int, default=80_000)
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    options = argv[cut + 1 :]  # `tickline cluster up` options for both, after --: e.g. -- --gateways 2
    args = parser.parse_args(argv[:cut])
    worktree = Path(tempfile.mkdtemp(prefix="tickline-compare-ref-")) / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(worktree), args.ref], cwd=ROOT, check=True)
    try:
        sides = [(args.ref, worktree), ("this tree", ROOT)]
        for n in range(1, args.rounds + 1):
            for label, tree in sides if n % 2 else sides[::-1]:  # (each goes first in turn: a run can slow the next one)
                r = run_once(tree, args.orders, options)
                roles = "  ".join(f"{k} {v:.1f}" for k, v in r["us"].items() if k != "all")
                print(f"round {n} {label:>12}: {r['orders_s']:8,.0f} orders/s  all {r['us']['all']:5.1f} us/order  own: {roles}", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False)
        shutil.rmtree(worktree.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
