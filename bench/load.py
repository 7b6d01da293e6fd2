"""Load generator and benchmark report: the exchange against the machine's own ceiling.

    python -m bench.load                      # the standard run (make bench), under 2 minutes
    python -m bench.load --rates 50000 --duration 30 --plot out.png

For each phase it drives two servers with the same seeded streams: a minimal uvloop line
server that does no work (bench/baseline.py, the ceiling of this machine) and the real
exchange (durable: every ACK after fsync). Phases:
- closed loop: a window of N requests in flight per connection; finds maximum throughput;
- open loop at fixed rates: each request has a planned send time and latency is measured
  from it, so a stalled server cannot hide its stall (no coordinated omission).
Latency is request -> ACK (or REJ) of new orders, and an IOC or market order -> its first FILL.
Prints a table, the ratio exchange/baseline (absolute figures drift ~20% run to run on
these machines; ratios from one run compare), and the fsync floor of the data disk.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import re
import select
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import profile
from bench.browser import chromium
from bench.fsync_probe import fsync_latency_us
from bench.workload import Stream, make_stream

ROOT = Path(__file__).resolve().parent.parent
PERCENTILES = (50, 90, 99, 99.9)


def latencies() -> array[int]:
    """Microseconds, one per request, sorted only when summarized: an append is ~30 ns,
    where a Python HDR histogram's record cost ~10 us and made the generator itself late."""
    return array("q")


class Stats:
    """Shared by every connection of a phase (one process, one thread)."""

    def __init__(self) -> None:
        self.ack = latencies()
        self.fill = latencies()
        self.interval_from = 0  # ack[interval_from:] arrived since the last progress line
        self.send_lag = latencies()  # the generator's own lateness: planned send -> sent
        self.silence = 0.0  # the longest time with requests outstanding and no reply
        self.sent = 0
        self.completed = 0  # primary replies: ACK, REJ, ERR, REPLACED, CANCELED reason=user
        self.rejected = 0
        self.errors = 0
        self.fills = 0
        self.first_send = 0.0
        self.last_completion = 0.0
        self.timeline: list[tuple[float, int, float]] = []  # (t, completions/s, p99 ms)
        self.track_md = False  # with --subscribers: remember ACK times by order id
        self.ack_at: dict[bytes, float] = {}
        self.md_first: dict[bytes, float] = {}  # taker order id -> first/last subscriber's TRADE
        self.md_last: dict[bytes, float] = {}
        self.md_count: dict[bytes, int] = {}


class LoadConnection:
    """One order-entry connection: pre-encoded lines out, replies scanned as they come."""

    def __init__(self, port: int, stream: Stream, stats: Stats, window: int, login: str | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if login is not None:  # the exchange: trade as a funded account (risk on), logged in before the clock starts
            self.sock.sendall(f"LOGIN {login} {BENCH_PASSWORD}\n".encode())
            got = b""
            while b"LOGGED_IN" not in got and b"REJ" not in got:
                chunk = self.sock.recv(4096)
                if not chunk:
                    break
                got += chunk
            if b"LOGGED_IN" not in got:
                raise RuntimeError(f"could not log in as {login}: {got!r}")
        self.sock.setblocking(False)
        self.lines = stream.lines
        self.planned = [0.0] * len(stream.lines)
        self.acked = bytearray(len(stream.lines))
        self.filled = bytearray(len(stream.lines))
        self.takes = stream.takes
        self.stats = stats
        self.window = window  # 0: open loop
        self.next = 0
        self.completed = 0
        self.partial = b""
        self.unsent = b""  # what the socket did not take yet (the server is not reading)
        self.open = True

    @property
    def done(self) -> bool:
        return not self.open or self.completed >= len(self.lines)

    def send_upto(self, end: int, at: float | None = None, interval: float = 0.0) -> None:
        """Send lines [next, end) in one write; planned time `at + k*interval`, or now."""
        start = self.next
        if end <= start or not self.open:
            return
        now = time.perf_counter()
        planned = self.planned
        if at is None:
            for k in range(start, end):
                planned[k] = now
        else:
            for k in range(start, end):
                planned[k] = at + k * interval
        if not self.stats.first_send:
            self.stats.first_send = now
        if at is not None:
            self.stats.send_lag.append(int((now - planned[start]) * 1e6))
        self.unsent += b"".join(self.lines[start:end])
        self.stats.sent += end - start
        self.next = end
        self.flush()

    def flush(self) -> None:
        try:
            sent = self.sock.send(self.unsent)
        except BlockingIOError:
            return
        except OSError:
            self.open = False
            return
        self.unsent = self.unsent[sent:]

    def readable(self, now: float) -> None:
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.open = False
            return
        lines = (self.partial + data).split(b"\n") if self.partial else data.split(b"\n")
        self.partial = lines.pop()
        stats, planned, acked, filled = self.stats, self.planned, self.acked, self.filled
        completed = 0
        for line in lines:
            kind = line[:3]
            if kind == b"FIL":
                stats.fills += 1
                i = _cid(line)
                # Only an IOC or market order's fill measures latency: a resting order
                # (or one replaced across the spread later) fills whenever it meets someone.
                if 0 <= i < len(filled) and not filled[i] and self.takes[i]:
                    filled[i] = 1
                    stats.fill.append(int((now - planned[i]) * 1e6))
                continue
            if kind == b"ACK" or kind == b"REJ":
                completed += 1
                if kind == b"REJ":
                    stats.rejected += 1
                if stats.track_md and kind == b"ACK":
                    stats.ack_at[line.split(b" ", 2)[1]] = now
                i = _cid(line)
                if 0 <= i < len(acked) and not acked[i]:
                    acked[i] = 1
                    stats.ack.append(int((now - planned[i]) * 1e6))
            elif kind == b"REP" or kind == b"ERR" or (kind == b"CAN" and b"reason=user" in line):
                completed += 1
                if kind == b"ERR":
                    stats.errors += 1
        if completed:
            self.completed += completed
            stats.completed += completed
            silence = now - max(stats.last_completion, stats.first_send)
            if silence > stats.silence:
                stats.silence = silence
            stats.last_completion = now
            if self.window:
                self.send_upto(min(len(self.lines), self.next + completed))

    def close(self) -> None:
        self.sock.close()


class MdSubscriber:
    """A market-data subscriber (SUB * trades): when each trade reaches it."""

    def __init__(self, port: int, stats: Stats) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"SUB * trades\n")
        self.sock.setblocking(False)
        self.stats = stats
        self.partial = b""

    def readable(self, now: float) -> None:
        try:
            data = self.sock.recv(1 << 20)
        except (BlockingIOError, OSError):
            return
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        stats = self.stats
        for line in lines:
            if line[:5] == b"TRADE":
                j = line.find(b" trade=")
                taker = line[j + 7 : line.index(b"-", j)]  # trade id <seq>-<n>: seq is the taker's order id
                if taker not in stats.md_first:
                    stats.md_first[taker] = now
                stats.md_last[taker] = now
                stats.md_count[taker] = stats.md_count.get(taker, 0) + 1


def _md_summary(stats: Stats, subscribers: int) -> dict[str, float]:
    full = [t for t, n in stats.md_count.items() if n >= subscribers]
    spread = sorted((stats.md_last[t] - stats.md_first[t]) * 1000 for t in full)
    e2e = sorted((stats.md_last[t] - stats.ack_at[t]) * 1000 for t in full if t in stats.ack_at)

    def q(values: list[float], p: float) -> float:
        return values[min(len(values) - 1, int(p * len(values)))] if values else 0.0

    return {
        "subscribers": subscribers, "trades": len(full),
        "spread_p50": q(spread, 0.5), "spread_p99": q(spread, 0.99),
        "ack_to_last_trade_p50": q(e2e, 0.5), "ack_to_last_trade_p99": q(e2e, 0.99),
    }  # fmt: skip


def _cid(line: bytes) -> int:
    """The stream index in a reply's client id (id=c<index>), -1 if none. It may be past this
    phase's stream: a login that traded in an earlier phase can still get that phase's FILLs."""
    j = line.find(b" id=c")
    if j < 0:
        return -1
    k = line.find(b" ", j + 5)
    digits = line[j + 5 : k] if k > 0 else line[j + 5 :]
    return int(digits) if digits.isdigit() else -1


@dataclass
class PhaseResult:
    phase: str
    server: str
    connections: int
    target_rate: int | None
    window: int | None
    requests: int
    completed: int
    rejected: int
    errors: int
    fills: int
    seconds: float
    rate: float
    ack_ms: dict[str, float] = field(default_factory=dict)
    fill_ms: dict[str, float] = field(default_factory=dict)
    timeline: list[tuple[float, int, float]] = field(default_factory=list)
    market_data: dict[str, float] = field(default_factory=dict)  # with --subscribers
    silence_ms: float = 0.0  # the longest interval with no reply while requests were outstanding
    send_lag_ms: dict[str, float] = field(default_factory=dict)  # open loop: the generator's own lateness
    telemetry: dict = field(default_factory=dict)  # the exchange's own figures for the phase (admin TELEMETRY)
    cpu_us_per_request: dict[str, float] = field(default_factory=dict)  # CPU time by thread/process over requests answered
    # Resident memory by process, MiB: at the phase's start, at its end, the peak so far
    memory_mib: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    memory_by_minute: list[float] = field(default_factory=list)  # the server's, MiB, at each minute of the phase
    profile: list[str] = field(default_factory=list)  # --profile: the top functions per process (bench/profile.py)


def _summary(values: array[int]) -> dict[str, float]:
    """Percentiles in ms (nearest rank) of microsecond values."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {f"p{p:g}": ordered[max(0, math.ceil(len(ordered) * p / 100) - 1)] / 1000 for p in PERCENTILES}
    out["max"] = ordered[-1] / 1000
    return out


# The generator is a plain select() loop, not asyncio: uvloop's timers tick in whole
# milliseconds (a shorter sleep returns at once, a busy loop that steals the server's
# CPU), while select() sleeps to the microsecond and wakes the moment a reply arrives,
# so send times follow the plan and replies are timestamped when they land. In open loop
# a connection writes what is due at most every `gap` seconds (default 1 ms, like a
# client that flushes each tick; a write per order costs the server a read syscall per
# order); latency counts from each line's own planned time, so batching can only make
# the figures worse.
def run_phase(
    port: int, streams: list[Stream], label: str, server: str, rate: int | None, window: int,
    drain_s: float = 15.0, gap: float = 0.001, md_port: int = 0, subscribers: int = 0, logins: list[str] | None = None,
) -> PhaseResult:  # fmt: skip
    """Drive one server with the streams; rate=None is closed loop with `window` in flight.

    With subscribers (and the exchange's md_port), that many market-data connections
    follow every trade; they are polled between sends, so their times are to ~1 ms
    (bench/fanout.py measures fan-out precisely, with kernel timestamps)."""
    stats = Stats()
    stats.track_md = bool(subscribers and md_port)
    subs = [MdSubscriber(md_port, stats) for _ in range(subscribers if md_port else 0)]
    poller = select.poll()
    by_sub = {m.sock.fileno(): m for m in subs}
    for m in subs:
        poller.register(m.sock.fileno(), select.POLLIN)
    conns = [LoadConnection(port, stream, stats, 0 if rate else window, logins[c] if logins else None) for c, stream in enumerate(streams)]
    by_fd = {c.sock.fileno(): c for c in conns}
    _quiet(conns, 0.2)  # HELLO lines in
    total = sum(len(s.lines) for s in streams)
    interval = len(conns) / rate if rate else 0.0
    t0 = time.perf_counter() + 0.01
    if not rate:
        for c in conns:
            c.send_upto(min(window, len(c.lines)))
    deadline = t0 + drain_s + (total / rate if rate else total / 20_000)
    next_report, last_done = t0 + 1, 0
    due = 0
    while time.perf_counter() < deadline and not all(c.done for c in conns):
        now = time.perf_counter()
        timeout = 0.05
        if rate and due < total:
            now_due = int((now - t0) / interval) + 1 if now >= t0 else 0
            if now_due > due:
                due = now_due
                for c in conns:
                    c.send_upto(min(len(c.lines), due), t0, interval)
            timeout = max(t0 + due * interval - time.perf_counter(), gap)
        writers = [c.sock for c in conns if c.unsent and c.open]
        readable, writable, _ = select.select([c.sock for c in conns if c.open], writers, [], timeout)
        now = time.perf_counter()
        for sock in readable:
            by_fd[sock.fileno()].readable(now)
        for sock in writable:
            by_fd[sock.fileno()].flush()
        if subs:
            for fd, _ in poller.poll(0):
                by_sub[fd].readable(now)
        if now >= next_report:
            last_done = _progress(stats, f"{server:8} {label}", total, now - t0, last_done)
            next_report += 1
    end = time.perf_counter() + (1.0 if subs else 0)
    while time.perf_counter() < end:  # the last trades' way to every subscriber
        for fd, _ in poller.poll(50):
            by_sub[fd].readable(time.perf_counter())
    for c in conns:
        c.close()
    for m in subs:
        m.sock.close()
    elapsed = max(stats.last_completion - stats.first_send, 1e-9)
    return PhaseResult(
        label, server, len(conns), rate, None if rate else window, total, stats.completed, stats.rejected,
        stats.errors, stats.fills, elapsed, stats.completed / elapsed, _summary(stats.ack), _summary(stats.fill),
        stats.timeline, _md_summary(stats, len(subs)) if subs else {}, stats.silence * 1000,
        _summary(stats.send_lag) if rate else {},
    )  # fmt: skip


def _quiet(conns: list[LoadConnection], seconds: float) -> None:
    end = time.perf_counter() + seconds
    while (left := end - time.perf_counter()) > 0:
        readable, _, _ = select.select([c.sock for c in conns], [], [], left)
        for sock in readable:
            next(c for c in conns if c.sock is sock).readable(time.perf_counter())


def _progress(stats: Stats, label: str, total: int, t: float, last_done: int) -> int:
    rate = stats.completed - last_done
    p99 = _summary(stats.ack[stats.interval_from :]).get("p99", 0.0)
    stats.interval_from = len(stats.ack)
    stats.timeline.append((round(t, 2), rate, p99))
    line = f"  {label}: {stats.completed:,}/{total:,} done, {rate:,.0f}/s, ACK p99 {p99:.2f} ms"
    sys.stderr.write(("\r" + line.ljust(100)) if sys.stderr.isatty() else line + "\n")
    sys.stderr.flush()
    return stats.completed


# ---------------------------------------------------------------------- servers


BENCH_PASSWORD = "bench"
# Enough for a whole closed-loop run's resting orders (a deposit is at most 10^15 units).
BENCH_FUNDS = [("USD", "100000000")] * 50 + [("AAPL", "100000000"), ("BTC", "1000000"), ("ES", "100000000"), ("EUR", "1000000000000")]


def bench_accounts(data_dir: Path, n: int) -> list[str]:
    """Accounts load1..loadN, created before the exchange starts."""
    from journal.accounts import AccountAdmin

    names = [f"load{c}" for c in range(n)]
    admin = AccountAdmin(data_dir / "accounts.sqlite")
    for name in names:
        admin.add(name, BENCH_PASSWORD, cost=2**10)
    admin.close()
    return names


def fund_accounts(data_dir: Path, names: list[str]) -> None:
    """Deposits through the running exchange's admin channel (journaled like orders)."""
    from netio.unix_lines import send_lines

    lines = [f"DEPOSIT {name} {asset} {amount} bench:{name}:{asset}:{i}" for name in names for i, (asset, amount) in enumerate(BENCH_FUNDS)]
    replies = send_lines(data_dir / "admin.sock", lines, timeout=60)
    if len(replies) != len(lines) or not all(r.startswith("OK") for r in replies):
        raise RuntimeError(f"funding failed: {[r for r in replies if not r.startswith('OK')][:3]}")


def server_telemetry(data_dir: Path, reset: bool = False) -> dict:
    """The running exchange's own figures (histograms in microseconds), from its admin channel."""
    from netio.unix_lines import send_lines

    replies = send_lines(data_dir / "admin.sock", ["TELEMETRY RESET" if reset else "TELEMETRY"], timeout=10)
    if not replies or not replies[0].startswith("{"):
        return {}  # a server from before TELEMETRY: no breakdown
    return dict(json.loads(replies[0]))


# What the breakdown shows of the exchange's figures, in the order a request meets them.
BREAKDOWN = [
    ("gateway_ack_us", "server: read -> the write carrying its ACKs"),
    ("gateway_read_us", "socket read (parse, hold, journal append)"),
    ("journal_queued_us", "journal: first append -> sent to the writer"),
    ("journal_write_us", "journal writer: write"),
    ("journal_fdatasync_us", "journal writer: fdatasync"),
    ("journal_commit_us", "journal: sent -> durable, back on the loop"),
    ("journal_on_durable_us", "event loop: durable batches released, matched"),
    ("matching_step_us", "matching: a durable batch's step + sinks"),
    ("loop_lag_us", "event loop lag (5 ms timer)"),
    ("gc_gen0_us", "gc gen0"), ("gc_gen1_us", "gc gen1"), ("gc_gen2_us", "gc gen2"),
    ("snapshot_capture_us", "snapshot capture (on the loop)"),
    ("tradelog_frame_us", "trade log frame -> committed"),
]  # fmt: skip


def breakdown(r: PhaseResult) -> list[str]:
    """Where the time went in one exchange phase: the generator's lag, then the server's stages."""
    rows = [f"  {r.phase}: longest interval with no reply {r.silence_ms:.1f} ms"]
    if r.cpu_us_per_request:
        rows.append("    CPU per request answered (us): " + ", ".join(f"{k} {v:g}" for k, v in r.cpu_us_per_request.items()))
    if r.memory_mib:
        resting = r.telemetry.get("book_orders")
        held = f"; {resting:,} orders in the books at the end" if isinstance(resting, int) else ""
        rows.append("    resident memory, MiB (start -> end, peak): " + ", ".join(f"{k} {a:.0f} -> {b:.0f} ({peak:.0f})" for k, (a, b, peak) in r.memory_mib.items()) + held)
    if len(r.memory_by_minute) > 1:
        rows.append("    the server's resident memory at each minute, MiB: " + " ".join(f"{m:.0f}" for m in r.memory_by_minute))
    if r.profile:
        rows.append("    where it went (py-spy, own samples per function):")
        rows += r.profile
    lag = r.send_lag_ms
    if lag:
        rows.append(f"    {'load generator lag (planned -> sent)':46} p50 {lag['p50']:8.2f}  p99 {lag['p99']:8.2f}  max {lag['max']:8.1f} ms")
    t = r.telemetry
    for name, label in BREAKDOWN:
        h = t.get(name)
        if isinstance(h, dict) and h.get("count"):
            rows.append(f"    {label:46} p50 {h['p50'] / 1000:8.2f}  p99 {h['p99'] / 1000:8.2f}  max {h['max'] / 1000:8.1f} ms  ({h['count']:,})")
    batch = t.get("journal_batch_orders")
    if isinstance(batch, dict) and batch.get("count"):
        rows.append(f"    {'commands per fsync':46} p50 {batch['p50']:8,}  p99 {batch['p99']:8,}  max {batch['max']:8,}     ({batch['count']:,} fsyncs)")
    return rows


def user_system(stat_path: str) -> tuple[float, float]:
    """A process's or thread's CPU seconds (user, system) from its /proc .../stat file."""
    fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


CHILDREN = (("journal_writer", "journal writer"), ("tradelog_writer", "trade-log writer"), ("snapshot_replica", "snapshot replica"))


def server_processes(pid: int) -> list[tuple[str, int]]:
    """A server's process and its children (the journal's and the trade log's writers, the
    snapshot replica), named (a name may come twice: "other child", a forked snapshot's)."""
    out = [("server", pid)]
    try:
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_text()
            name = next((name for module, name in CHILDREN if module in cmdline), "other child")
            out.append((name, int(child)))
    except OSError:
        pass  # not Linux, or the server is gone
    return out


def memory_kib(pid: int) -> dict[str, tuple[int, int]]:
    """Resident memory of a server's processes, by name (summed over a name's): (now, peak) in KiB, from /proc."""
    out: dict[str, tuple[int, int]] = {}
    for name, p in server_processes(pid):
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{p}/status").read_text().splitlines() if ":" in line)
            now, peak = out.get(name, (0, 0))
            out[name] = (now + int(fields["VmRSS"].split()[0]), peak + int(fields["VmHWM"].split()[0]))
        except (OSError, KeyError, ValueError):
            continue
    return out


class MemoryWatch:
    """The server's resident memory over a phase, read every `every` seconds in a thread:
    a long phase shows whether memory levels off or keeps growing."""

    def __init__(self, pid: int, every: float = 1.0) -> None:
        self.pid, self.every = pid, every
        self.start = memory_kib(pid)
        self.samples: list[int] = []  # the server process's RSS, KiB, each `every` s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self.every):
            self.samples.append(memory_kib(self.pid).get("server", (0, 0))[0])

    def stop(self) -> dict[str, tuple[float, float, float]]:
        """By process: (start, end, peak) in MiB."""
        self._done.set()
        self._thread.join()
        return {k: (self.start.get(k, (now, 0))[0] / 1024, now / 1024, peak / 1024) for k, (now, peak) in memory_kib(self.pid).items()}

    def by_minute(self) -> list[float]:
        """The server's RSS at each whole minute of the phase, MiB."""
        per_minute = max(1, round(60 / self.every))
        return [kib / 1024 for kib in self.samples[per_minute - 1 :: per_minute]]


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time (user + system) of a server's threads and child processes, by name, from /proc."""
    out: dict[str, float] = {}

    def times(stat_path: str) -> float:
        return sum(user_system(stat_path))

    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            name = "server main thread" if tid == str(pid) else "server other threads"
            out[name] = out.get(name, 0.0) + times(f"/proc/{pid}/task/{tid}/stat")
        for name, child in server_processes(pid):
            if child != pid:
                out[name] = out.get(name, 0.0) + times(f"/proc/{child}/stat")
    except OSError:
        pass  # not Linux, or the server is gone
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants (the browser: chromedriver's tree)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += sum(user_system(f"/proc/{p}/stat"))
            for tid in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{tid}/children").read_text().split()]
        except OSError:
            continue  # gone meanwhile
    return total


ALL_CPUS: set[int] = set()


def pin_generator() -> int | None:
    """Run this process (the load generator) on the last CPU only, so that the scheduler
    never puts it on the core the server's event loop is using; servers started later get
    every CPU back (ServerProcess). On a 2-vCPU VM it did not lower the tail reliably
    (docs/PERFORMANCE.md), so it is an option. Returns the CPU, or None if not possible."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    ALL_CPUS.update(cpus)
    os.sched_setaffinity(0, {cpus[-1]})
    return cpus[-1]


# A command the exchange server runs under (valgrind, for bench/callgrind.py); unset: none.
SERVER_WRAPPER = "TICKLINE_BENCH_SERVER_WRAPPER"


class ServerProcess:
    def __init__(self, kind: str, data_dir: Path, web: bool = True) -> None:
        self.kind = kind
        if kind == "exchange":
            cmd = [sys.executable, "-m", "tickline.cli", "serve", "--port", "0", "--md-port", "0", "--web-port", "0", "--data-dir", str(data_dir)]
            cmd += [] if web else ["--no-web"]
            cmd = shlex.split(os.environ.get(SERVER_WRAPPER, "")) + cmd  # (bench/callgrind.py)
            pattern, stream = r"port=(\d+)", "stderr"
        else:
            cmd = [sys.executable, "-m", "bench.baseline", "--port", "0"]
            pattern, stream = r"port=(\d+)", "stdout"
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if ALL_CPUS:  # the generator is pinned; the server is not
            os.sched_setaffinity(self.proc.pid, ALL_CPUS)
        pipe = self.proc.stderr if stream == "stderr" else self.proc.stdout
        deadline = time.monotonic() + 20
        self.port = self.md_port = self.web_port = 0
        while time.monotonic() < deadline:
            raw = pipe.readline()  # type: ignore[union-attr]
            if not raw:
                break
            m = re.search(pattern, raw.decode(errors="replace"))
            if m and b"market_data_listening" in raw:
                self.md_port = int(m.group(1))
            if m and b"dashboard_listening" in raw:
                self.web_port = int(m.group(1))
            if m and (kind != "exchange" or b"order_entry_listening" in raw):
                self.port = int(m.group(1))
                break
        if not self.port:
            self.proc.kill()
            raise RuntimeError(f"{kind} server did not start")
        # Keep its pipes drained so its logging can never block it.
        for p in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=_drain, args=(p,), daemon=True).start()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def open_page(web_port: int, data: Path) -> Any:
    """One dashboard page open in headless Chromium, following AAPL (40% of the orders)."""
    driver = chromium(data / "chromium-profile")
    driver.get(f"http://127.0.0.1:{web_port}/?symbol=AAPL")
    deadline = time.monotonic() + 10
    while driver.find_element("id", "feed").text != "live" and time.monotonic() < deadline:
        time.sleep(0.1)
    return driver


def _drain(pipe: object) -> None:
    for _ in pipe:  # type: ignore[attr-defined]
        pass


# ---------------------------------------------------------------------- report


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} vCPU {cpu}, Python {platform.python_version()}, {platform.system()} {platform.release()}"


def table(results: list[PhaseResult]) -> str:
    head = f"{'phase':34} {'server':9} {'req/s':>10} {'ACK p50':>8} {'p90':>7} {'p99':>7} {'p99.9':>7} {'max':>7} {'fill p99':>9} {'silent':>7}  {'vs ceiling':>10}"
    rows = [head, "-" * len(head)]
    by_phase: dict[str, dict[str, PhaseResult]] = {}
    for r in results:
        by_phase.setdefault(r.phase, {})[r.server] = r
    for r in results:
        a, f = r.ack_ms, r.fill_ms
        base = by_phase[r.phase].get("baseline")
        ratio = f"{r.rate / base.rate:.2f}x" if base and r.server != "baseline" and base.rate else ""
        rows.append(
            f"{r.phase:34} {r.server:9} {r.rate:10,.0f} {a.get('p50', 0):8.2f} {a.get('p90', 0):7.2f} "
            f"{a.get('p99', 0):7.2f} {a.get('p99.9', 0):7.2f} {a.get('max', 0):7.1f} {f.get('p99', 0):9.2f} {r.silence_ms:7.1f}  {ratio:>10}"
        )
    rows.append("latencies in ms; req/s = requests answered per second; open-loop latency from the planned send time;")
    rows.append("silent = the longest interval (ms) with requests outstanding and no reply")
    return "\n".join(rows)


def plot(results: list[PhaseResult], path: Path) -> None:
    try:
        matplotlib = importlib.import_module("matplotlib")  # optional (--plot only): not a dependency
        matplotlib.use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        sys.stderr.write("--plot needs matplotlib: .venv/bin/pip install matplotlib\n")
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    for r in results:
        ts = [t for t, _, _ in r.timeline]
        ax1.plot(ts, [rate for _, rate, _ in r.timeline], label=f"{r.server} {r.phase}")
        ax2.plot(ts, [p99 for _, _, p99 in r.timeline], label=f"{r.server} {r.phase}")
    ax1.set(title="throughput over time", xlabel="s", ylabel="requests answered / s")
    ax2.set(title="ACK latency p99 per second", xlabel="s", ylabel="ms", yscale="log")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def run_all(args: argparse.Namespace) -> list[PhaseResult]:
    servers = ["baseline", "exchange"] if args.only is None else [args.only]
    t0 = time.perf_counter()
    phases: list[tuple[str, int | None, int]] = []  # (label, rate, requests per connection)
    if args.window:
        phases.append((f"closed loop, {args.window} in flight x {args.connections}", None, args.orders // args.connections))
    for rate in args.rates:
        phases.append((f"open loop {rate:,}/s for {args.duration:g}s", rate, int(rate * args.duration) // args.connections))
    streams_by_size: dict[int, list[Stream]] = {}
    for _, _, per_conn in phases:
        if per_conn not in streams_by_size:
            streams_by_size[per_conn] = [make_stream(per_conn, args.seed, c) for c in range(args.connections)]
    sys.stderr.write(f"generated {sum(len(s.lines) for v in streams_by_size.values() for s in v):,} request lines in {time.perf_counter() - t0:.1f}s\n")
    results: list[PhaseResult] = []
    for label, rate, per_conn in phases:
        for kind in servers:
            data = Path(tempfile.mkdtemp(prefix="tickline-bench-", dir=args.data_dir))
            logins = bench_accounts(data, args.connections) if kind == "exchange" else None
            server = ServerProcess(kind, data, web=args.web != "off")
            page = open_page(server.web_port, data) if kind == "exchange" and args.web == "page" else None
            try:
                if logins:
                    fund_accounts(data, logins)
                    server_telemetry(data, reset=True)  # the phase's figures only, not the start's
                gap = args.send_every_ms if args.send_every_ms is not None else (0.1 if (rate or 0) <= 20_000 else 1.0)
                sampler = None
                if args.profile is not None and kind == "exchange":
                    profile_path = args.profile / f"{len(results) + 1}-{label.split(',')[0].replace(' ', '-').replace('/', '')}.txt"
                    sampler = profile.start(server.proc.pid, profile_path)
                cpu_before, generator_before = cpu_seconds(server.proc.pid), time.process_time()
                memory = MemoryWatch(server.proc.pid)
                browser_before = tree_cpu_seconds(page.service.process.pid) if page is not None else 0.0
                result = run_phase(
                    server.port, streams_by_size[per_conn], label, kind, rate, args.window, gap=gap / 1000,
                    md_port=server.md_port, subscribers=args.subscribers, logins=logins,
                )  # fmt: skip
                cpu = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_seconds(server.proc.pid).items()}
                if sampler is not None:
                    profile.stop(sampler)
                    result.profile = profile.summary(profile_path)
                cpu["load generator"] = time.process_time() - generator_before
                if page is not None:
                    cpu["browser (one page)"] = tree_cpu_seconds(page.service.process.pid) - browser_before
                result.cpu_us_per_request = {k: round(v / max(result.completed, 1) * 1e6, 1) for k, v in cpu.items()}
                result.memory_mib, result.memory_by_minute = memory.stop(), memory.by_minute()
                if logins:
                    result.telemetry = server_telemetry(data)
                results.append(result)
            finally:
                if page is not None:
                    page.quit()
                server.stop()
                if args.keep_data:
                    sys.stderr.write(f"kept {data}\n")
                else:
                    shutil.rmtree(data, ignore_errors=True)
            sys.stderr.write("\n" if sys.stderr.isatty() else "")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--window", type=int, default=256, help="closed loop: requests in flight per connection (0: skip)")
    parser.add_argument("--orders", type=int, default=400_000, help="closed loop: requests in all")
    parser.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",") if x], default=[10_000, 100_000], help="open loop rates, comma-separated ('' to skip)")
    parser.add_argument("--duration", type=float, default=10.0, help="open loop: seconds per rate")
    parser.add_argument(
        "--send-every-ms", type=float, default=None,
        help="open loop: each connection writes what is due this often (default: 0.1 up to 20,000/s, like a client that "
        "sends each order as it decides it; 1 above, like one that flushes each millisecond)",
    )  # fmt: skip
    parser.add_argument("--subscribers", type=int, default=0, help="market-data subscribers following every trade (exchange only)")
    parser.add_argument("--only", choices=["baseline", "exchange"])
    parser.add_argument(
        "--web", choices=["off", "on", "page"], default="on",
        help="the exchange's dashboard: off (--no-web), on (serving, as tickline serve does; the default), page (and one page open in headless Chromium)",
    )  # fmt: skip
    parser.add_argument(
        "--pin-generator", action="store_true",
        help="run the load generator on the last CPU only (the servers keep every CPU): how much of the tail is the generator's sharing the server's core",
    )  # fmt: skip
    parser.add_argument("--data-dir", type=Path, default=ROOT / "var" / "bench", help="where the exchange's journal goes (its disk is probed)")
    parser.add_argument("--keep-data", action="store_true", help="leave each exchange phase's data directory (e.g. for python -m bench.writer --journal)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench-results" / "load.json")
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--profile", type=Path, help="sample the exchange with py-spy over each phase: raw stacks here, top functions printed")
    args = parser.parse_args(argv)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    args.pinned = pin_generator() if args.pin_generator else None

    fsync = fsync_latency_us(args.data_dir)
    fsync_ms = {"p50": fsync[len(fsync) // 2] / 1000, "p99": fsync[int(len(fsync) * 0.99)] / 1000}
    results = run_all(args)

    print(f"machine: {machine()}")
    print(f"fsync floor ({args.data_dir}, 4 KiB append + fdatasync): p50 {fsync_ms['p50']:.2f} ms, p99 {fsync_ms['p99']:.2f} ms")
    every = f"{args.send_every_ms:g} ms" if args.send_every_ms is not None else "0.1 ms up to 20,000/s, 1 ms above"
    print(f"{args.connections} connections, seed {args.seed}, open loop writes every {every}; baseline = bench/baseline.py (no work, same generator)")
    where = f"pinned to CPU {args.pinned}, the servers on all CPUs" if args.pinned is not None else "on the same CPUs as the servers"
    print(f"load generator: {where}")
    print(f"dashboard: {dict(off='off (--no-web)', on='on, no page open', page='on, one page open in headless Chromium (AAPL)')[args.web]}")
    print(table(results))
    print("where the time went (exchange; server figures from its admin channel's TELEMETRY, reset when each phase starts):")
    for r in results:
        if r.server == "exchange":
            print("\n".join(breakdown(r)))
    for r in results:
        md = r.market_data
        if md:
            print(
                f"  market data, {r.phase}: {md['subscribers']:g} subscribers, {md['trades']:,.0f} trades reached all; "
                f"spread first->last p50 {md['spread_p50']:.2f} ms p99 {md['spread_p99']:.2f} ms; "
                f"ACK -> last subscriber p50 {md['ack_to_last_trade_p50']:.2f} ms p99 {md['ack_to_last_trade_p99']:.2f} ms"
            )
        if r.completed < r.requests:
            print(f"  note: {r.server} {r.phase}: {r.requests - r.completed:,} requests unanswered at the end")
        if r.errors:
            print(f"  note: {r.server} {r.phase}: {r.errors:,} ERR replies")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "fsync_ms": fsync_ms, "args": {k: str(v) for k, v in vars(args).items()}, "results": [asdict(r) for r in results]}
    args.json.write_text(json.dumps(report, indent=1))
    print(f"all figures: {args.json}")
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
