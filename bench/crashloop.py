"""kill -9 in a loop while a client streams resting orders: no ACKed order lost, and how
long each restart takes to listen (make bench-crashloop).

    python -m bench.crashloop [--cycles 100] [--min-life 0.5] [--max-life 3] [--rate 10000]

Each cycle: start `tickline serve` on the same data directory (time from start to
listening), a client logs in and pipelines resting BUY orders (every ACKed id is kept)
for a random 0.5-3 s, then the server is killed with SIGKILL mid-stream. After the last
cycle the server starts once more and every ACKed order must be open (LOGIN's open=
count equals the ACKs, and ORDERS pages list exactly those ids). Prints each restart time
and the verdict; exits 1 if an ACKed order is missing. The client sends as fast as the
server takes orders (the book grows by ~40,000 a second here), or at most --rate a second;
the book stops growing at the account's --max-open-orders (1,000,000): past it orders are
refused, and counted.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.load import BENCH_PASSWORD, bench_accounts, fund_accounts

ROOT = Path(__file__).resolve().parent.parent


class Server:
    def __init__(self, data: Path) -> None:
        cmd = [sys.executable, "-m", "tickline.cli", "serve", "--port", "0", "--md-port", "0", "--no-web", "--data-dir", str(data)]
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.port, self.replayed, self.log, self.steps, self.to_listen = 0, 0, [], "", 0.0
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace")
            self.log.append(line)
            if "event='recovered'" in line or "recovered" in line and "replayed=" in line:
                m = re.search(r"replayed=(\d+)", line)
                self.replayed = int(m.group(1)) if m else 0
            port = re.search(r"event='order_entry_listening' .*port=(\d+)", line)
            if port is not None:
                self.port = int(port.group(1))
                self.to_listen = time.perf_counter() - self.started
            if "event='started'" in line:  # logged right after listening: each step's seconds
                self.steps = line.split("event='started'")[1].strip()
                break
        if not self.port:
            raise RuntimeError("the server did not start:\n" + "".join(self.log[-20:]))

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def stream(port: int, account: str, seconds: float, rng: random.Random, rate: float = 0) -> tuple[set[int], int]:
    """Pipeline resting BUYs for `seconds` (the server is killed meanwhile), 200 at a time,
    as fast as the server takes them or at most `rate` a second; the ACKed ids, and how
    many were refused as one too many (the account at --max-open-orders)."""
    acked: set[int] = set()
    capped = 0
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    buf = b""
    try:
        sock.sendall(f"LOGIN {account} {BENCH_PASSWORD}\n".encode())
        started = time.monotonic()
        deadline, sent = started + seconds, 0
        while time.monotonic() < deadline:
            if rate and sent > rate * (time.monotonic() - started):
                time.sleep(0.005)
                continue
            sent += 200
            sock.sendall("".join(f"BUY AAPL 1 {rng.randint(5000, 9000) / 100:.2f}\n" for _ in range(200)).encode())
            sock.settimeout(0.5)
            try:
                buf += sock.recv(1 << 20)
            except TimeoutError:
                pass
            *lines, buf = buf.split(b"\n")
            acked.update(int(line.split()[1]) for line in lines if line.startswith(b"ACK "))
            capped += sum(line.startswith(b"REJ too_many_orders ") for line in lines)
    except OSError:
        pass
    return acked, capped


def all_open(port: int, account: str) -> tuple[int, set[int]]:
    """LOGIN's open count and every open order id, page by page."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    f = sock.makefile("rb")
    f.readline()
    sock.sendall(f"LOGIN {account} {BENCH_PASSWORD}\n".encode())
    count = int(f.readline().split(b"open=")[1])
    ids: set[int] = set()
    after = 0
    while True:
        sock.sendall(f"ORDERS after={after} limit=10000\n".encode())
        head = f.readline().split()
        for _ in range(int(head[1])):
            ids.add(int(f.readline().split()[1]))
        f.readline()  # END
        if len(head) < 3:
            break
        after = int(head[2].split(b"=")[1])
    sock.close()
    return count, ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--min-life", type=float, default=0.5)
    parser.add_argument("--max-life", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=0, help="orders a second the client sends at most (default: as fast as it can)")
    parser.add_argument("--keep-data", type=Path, help="leave the data directory here (to profile a restart from it)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="tickline-crashloop-"))
    data = root / "data"
    data.mkdir()
    try:
        account = bench_accounts(data, 1)[0]
        server = Server(data)
        fund_accounts(data, [account])
        acked: set[int] = set()
        capped = 0
        times: list[tuple[float, int]] = []  # (seconds to listening, resting orders it restored)
        for cycle in range(1, args.cycles + 1):
            got, refused = stream(server.port, account, rng.uniform(args.min_life, args.max_life), rng, args.rate)
            acked |= got
            capped += refused
            server.kill()
            server = Server(data)
            times.append((server.to_listen, len(acked)))
            replayed = f"restart replayed {server.replayed:,} commands"
            print(f"cycle {cycle:3}: {len(acked):,} orders ACKed so far; {replayed}, listening after {server.to_listen:.2f}s ({server.steps})", flush=True)
        count, ids = all_open(server.port, account)
        server.kill()
        lost = acked - ids
        ordered = sorted(seconds for seconds, _ in times)
        print(f"restart to listening over {len(times)} kill -9 cycles: p50 {ordered[len(ordered) // 2]:.2f}s, max {ordered[-1]:.2f}s (target < 3 s)")
        within = [resting for seconds, resting in times if seconds < 3]
        beyond = [resting for seconds, resting in times if seconds >= 3]
        smallest_beyond = f"; the first over 3 s had {min(beyond):,} resting orders" if beyond else ""
        print(f"within 3 s: {len(within)} of {len(times)}, up to {max(within, default=0):,} resting orders{smallest_beyond}")
        print(f"ACKed orders: {len(acked):,}; open after the last restart: {count:,}; ACKed and missing: {len(lost)}")
        if capped:
            print(f"refused as one too many for the account (REJ too_many_orders, its --max-open-orders): {capped:,}")
        return 1 if lost else 0
    finally:
        if args.keep_data is not None:
            shutil.move(data, args.keep_data)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
