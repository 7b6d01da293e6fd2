"""Where a phase's CPU goes: py-spy over the server (and its writer processes) for the
whole phase, then the top functions by own time, per process (`bench.load --profile DIR`).

py-spy samples the running interpreter from outside (ptrace): the server runs unchanged,
at ~5-20% less speed while sampled. Idle samples (waiting in epoll, a pipe read, a
fdatasync) are left out by py-spy itself; the shares are of the samples where a thread was
running. The raw stacks stay in DIR (one file per phase) for a closer look:
`grep 'Book.apply' DIR/*.txt` or any flame-graph tool that reads folded stacks.
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
from pathlib import Path

RATE = 200  # samples a second


def available() -> bool:
    return shutil.which("py-spy") is not None or (Path(sys.executable).parent / "py-spy").exists()


def start(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """Sample process pid and its children until stop()."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "record", "-p", str(pid), "--subprocesses", "-r", str(RATE), "-f", "raw", "-o", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)  # py-spy writes what it has, then exits
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


# The main thread's stages: a sample counts for each stage one of whose functions is on its
# stack (a stage's share includes what it calls, e.g. matching includes the book).
STAGES = [
    ("the event loop itself (uvloop, C: epoll, socket reads, callbacks)", ("Runner.run",), True),
    ("parse a request line (protocol/text.py)", ("parse_line", "parse_json"), False),
    ("order rules (exchange/rules.py)", ("order_terms", "cancel_terms", "replace_terms"), False),
    ("risk hold, R1 (exchange/risk.py)", ("Risk.hold",), False),
    ("journal: append, encode, pipe write", ("Journal.append", "Journal._send"), False),
    ("matching (Book.apply)", ("Book.apply",), False),
    ("settlement, R2 (Risk.settle)", ("Risk.settle",), False),
    ("execution reports: desk.reports, formatting, sending", ("Gateway.deliver",), False),
    ("ACK release and writes", ("Session.released", "Gateway.on_released"), False),
    ("socket writes (transport.write)", ("capped_write",), False),
    ("trade log hand-over (encoding pieces)", ("TradeLog.on_events", "TradeLog.on_durable", "TradeLog.run"), False),
    ("market data (Notifier.on_events, fan_out)", ("Notifier.on_events", "Notifier.fan_out"), False),
    ("telemetry (own time in histograms, counters)", ("Histogram.", "Counter.", "Gauge."), True),
]


def summary(path: Path, top: int = 10) -> list[str]:
    """The main thread's stages (shares of its samples), then per process (the main thread,
    its writer processes) the functions with the most samples of their own."""
    own: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    stages: collections.Counter[str] = collections.Counter()
    if not path.exists():
        return [f"    (no profile: {path} was not written; py-spy needs ptrace permission)"]
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        who = _process_of(frames)
        own[who][frames[-1]] += int(count)
        if who == "server main thread":
            for label, prefixes, leaf_only in STAGES:
                if any(f.startswith(prefixes) for f in (frames[-1:] if leaf_only else frames)):
                    stages[label] += int(count)
    main = sum(own["server main thread"].values()) or 1
    out = ["    server main thread, by stage:"]
    out += [f"      {100 * stages[label] / main:5.1f}%  {label}" for label, _, _ in STAGES]
    for who, counter in sorted(own.items(), key=lambda kv: -sum(kv[1].values())):
        total = sum(counter.values())
        out.append(f"    {who}: {total:,} samples")
        out += [f"      {100 * n / total:5.1f}%  {frame}" for frame, n in counter.most_common(top)]
    return out


def _process_of(frames: list[str]) -> str:
    text = ";".join(frames[:4])
    if "journal_writer" in text:
        return "journal writer"
    if "tradelog_writer" in text:
        return "trade-log writer"
    if "tickline/cli.py" in text:
        return "server main thread"
    return "server other threads (mostly waiting: aiosqlite, to_thread)"
