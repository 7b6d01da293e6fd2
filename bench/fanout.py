"""Market-data fan-out: how evenly and how fast a trade reaches many subscribers.

    python -m bench.fanout [--subscribers 1000] [--rate 200] [--duration 10]

Starts the exchange, connects N subscribers to AAPL (all kinds) and one trader that
sends IOC buys against a large resting sell at a steady rate, so each order makes one
trade. Times are the kernel's receive timestamps (SO_TIMESTAMPNS), so the time this one
Python process takes to read N sockets does not count. For each trade it prints:
- spread: last subscriber's receive time minus the first's (p50/p99/max);
- end-to-end: the trader's ACK receive time to the last subscriber's TRADE (p50/p99).
Targets: spread p99 under 5 ms, end-to-end p99 under 20 ms.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import select
import shutil
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

from bench.load import BENCH_PASSWORD, ServerProcess, bench_accounts, fund_accounts, user_system

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMESPEC = struct.Struct("qq")
TRADE = re.compile(rb"^TRADE AAPL \S+ \S+ \S+ trade=(\d+)-1 prev=\d+ seq=\d+$", re.M)
ACK = re.compile(rb"^ACK (\d+) ", re.M)


def stamped_socket(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_stamped(s: socket.socket) -> tuple[bytes, float]:
    """Data and the kernel's receive time (seconds, CLOCK_REALTIME)."""
    data, ancdata, _, _ = s.recvmsg(1 << 20, socket.CMSG_SPACE(TIMESPEC.size))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = TIMESPEC.unpack(payload[: TIMESPEC.size])
            return data, sec + nsec / 1e9
    return data, time.time()


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=200, help="orders (= trades) per second")
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args(argv)

    data_dir = Path(tempfile.mkdtemp(prefix="tickline-fanout-"))
    names = bench_accounts(data_dir, 2)
    server = ServerProcess("exchange", data_dir)
    try:
        fund_accounts(data_dir, names)
        print(measure_fanout(server.port, server.md_port, names, args.subscribers, args.rate, args.duration, BENCH_PASSWORD, server.proc.pid))
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


def cpu_now(pid: int | None = None) -> tuple[float, float]:
    """CPU seconds (user, system): the server's main thread, or this process."""
    if pid is None:
        t = os.times()
        return t.user, t.system
    try:
        return user_system(f"/proc/{pid}/task/{pid}/stat")
    except OSError:
        return float("nan"), float("nan")


def measure_fanout(port: int, md_port: int, names: list[str], subscribers: int, rate: int, duration: float, password: str, server_pid: int | None = None) -> str:
    """Subscribers on md_port (AAPL, all kinds), a maker and a trader on port: the report lines
    (with the server's pid, also each side's CPU per trade: where the two cores went)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, subscribers + 512)), hard))
    subs = []
    for _ in range(subscribers):
        s = stamped_socket(md_port)
        s.sendall(b"SUB AAPL all\n")
        subs.append(s)
    time.sleep(1.0)
    for s in subs:  # HELLO, SUBSCRIBED, SNAPSHOT, QUOTE
        s.setblocking(False)
        try:
            while s.recv(1 << 20):
                pass
        except BlockingIOError:
            pass
    maker, trader = stamped_socket(port), stamped_socket(port)
    maker.sendall(f"LOGIN {names[0]} {password}\nSELL AAPL 1000000 100.00\n".encode())
    trader.sendall(f"LOGIN {names[1]} {password}\n".encode())
    time.sleep(0.5)
    maker.setblocking(False)
    trader.setblocking(False)

    first: dict[int, float] = {}
    last: dict[int, float] = {}
    count: dict[int, int] = {}
    acked: dict[int, float] = {}
    partial: dict[int, bytes] = {s.fileno(): b"" for s in subs + [trader]}
    by_fd = {s.fileno(): s for s in subs}
    poller = select.epoll()
    for s in subs:
        poller.register(s.fileno(), select.EPOLLIN)
    poller.register(trader.fileno(), select.EPOLLIN)
    n_orders = int(rate * duration)
    interval = 1.0 / rate
    cpu0 = {"server": cpu_now(server_pid) if server_pid else None, "this client": cpu_now()}
    t0 = time.perf_counter()
    sent = 0
    deadline = t0 + duration + 10
    while time.perf_counter() < deadline:
        now = time.perf_counter()
        while sent < n_orders and now - t0 >= sent * interval:
            trader.send(b"BUY AAPL 1 100.00 IOC\n")
            sent += 1
        wait = max(0.0, min(0.001, t0 + sent * interval - time.perf_counter())) if sent < n_orders else 0.05
        for fd, _ in poller.poll(wait):
            sock = trader if fd == trader.fileno() else by_fd[fd]
            try:
                chunk, ts = recv_stamped(sock)
            except BlockingIOError:
                continue
            buf = partial[fd] + chunk
            cut = buf.rfind(b"\n") + 1
            partial[fd] = buf[cut:]
            if sock is trader:
                for m in ACK.finditer(buf[:cut]):
                    acked[int(m.group(1))] = ts
                continue
            for m in TRADE.finditer(buf[:cut]):
                oid = int(m.group(1))
                first.setdefault(oid, ts)
                last[oid] = ts
                count[oid] = count.get(oid, 0) + 1
        if sent >= n_orders and len(count) >= n_orders and all(c == subscribers for c in count.values()):
            break
    cpu = {who: (cpu_now(server_pid if who == "server" else None), was) for who, was in cpu0.items() if was is not None}
    complete = [oid for oid, c in count.items() if c == subscribers]
    spread_ms = [(last[o] - first[o]) * 1000 for o in complete]
    e2e_ms = [(last[o] - acked[o]) * 1000 for o in complete if o in acked]
    for s in subs + [maker, trader]:
        s.close()
    worst = max(spread_ms, default=float("nan"))
    return (
        f"{subscribers} subscribers to AAPL, {rate} trades/s for {duration:g}s: {len(complete):,}/{n_orders:,} trades reached every subscriber\n"
        f"spread first->last subscriber:  p50 {pct(spread_ms, 0.5):6.2f} ms  p99 {pct(spread_ms, 0.99):6.2f} ms  max {worst:6.2f} ms  (target p99 < 5 ms)\n"
        f"ACK -> last subscriber's TRADE:  p50 {pct(e2e_ms, 0.5):6.2f} ms  p99 {pct(e2e_ms, 0.99):6.2f} ms  (target p99 < 20 ms)"
        + "".join(
            f"\nCPU per trade, {who + (' main thread' if who == 'server' else ''):19} {((u1 - u0) + (s1 - s0)) * 1000 / max(1, sent):5.2f} ms"
            f" ({(s1 - s0) * 100 / max(1e-9, (u1 - u0) + (s1 - s0)):3.0f}% in the kernel)"
            for who, ((u1, s1), (u0, s0)) in cpu.items()
        )
    )


if __name__ == "__main__":
    sys.exit(main())
