"""Instructions per request of the server's main thread, counted by callgrind: a figure
that does not move with the machine's mood (the 10,000/s phase's CPU per request moved
by +-4 us between runs of the same code on 2026-12-07), for A/B of small changes.

    python -m bench.callgrind [--rate 200] [--short 10] [--long 30] [--top 30]

Runs `bench.load`'s open loop (exchange only, dashboard off) twice with the server under
valgrind's callgrind, for --short and --long seconds, and divides the difference in the
main thread's instructions by the difference in requests answered: startup and shutdown
cancel out. Prints that, and the functions (C, and compiled Python as CPyDef_<module>_...;
interpreted Python shows as _PyEval_EvalFrameDefault) with the most instructions of their
own per request. Needs valgrind (Debian: apt install valgrind). User-space only: the
kernel's share (sends, epoll) is not counted. At 200/s under valgrind, batches are
small and the per-second costs (timers) weigh more than at 10,000/s: compare runs of
this command with each other, not with `make bench`. Two runs of the same code differed
by ~3% in all (batches form differently); one function's own cost is steadier.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.load import ROOT, SERVER_WRAPPER


def self_costs(path: Path) -> Counter[str]:
    """Instructions per function, its own (not its callees'), from a callgrind output file
    written with --compress-strings=no."""
    costs: Counter[str] = Counter()
    fn, after_call = "", False
    with path.open(errors="replace") as f:
        for line in f:
            if line.startswith("fn="):
                fn = line[3:].strip()
            elif line.startswith("calls="):
                after_call = True  # the next cost line is the call's, counted in the callee
            elif line[:1].isdigit() or line[:1] in "+-*":
                if after_call:
                    after_call = False
                    continue
                parts = line.split()
                if len(parts) >= 2 and fn:
                    costs[fn] += int(parts[1])
    return costs


def run(seconds: int, rate: int, out: Path) -> tuple[Counter[str], int]:
    """(main thread's own instructions by function, requests answered) of one run."""
    wrapper = f"valgrind --tool=callgrind --separate-threads=yes --compress-strings=no --compress-pos=no --callgrind-out-file={out}"
    report = out.with_suffix(".json")
    cmd = [sys.executable, "-m", "bench.load", "--only", "exchange", "--window", "0", "--rates", str(rate), "--duration", str(seconds), "--web", "off", "--json", str(report)]
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, SERVER_WRAPPER: wrapper}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        sys.exit(f"bench.load under callgrind failed:\n{done.stderr[-2000:]}")
    requests = json.loads(report.read_text())["results"][0]["completed"]
    return self_costs(Path(f"{out}-01")), requests  # -01: the first thread, the event loop's


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--short", type=int, default=10)
    parser.add_argument("--long", type=int, default=30)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt install valgrind)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="tickline-callgrind-") as tmp:
        short, short_requests = run(args.short, args.rate, Path(tmp) / "short")
        long, long_requests = run(args.long, args.rate, Path(tmp) / "long")
    requests = long_requests - short_requests
    per_request = {fn: (cost - short.get(fn, 0)) / requests for fn, cost in long.items()}
    total = sum(per_request.values())
    print(f"server main thread at {args.rate:,} orders/s under callgrind: {total:,.0f} instructions a request ({requests:,} requests: {args.long} s run minus {args.short} s run)")
    for fn, cost in sorted(per_request.items(), key=lambda item: -item[1])[: args.top]:
        print(f"{cost:10,.0f} {100 * cost / total:5.1f}%  {fn[:100]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
