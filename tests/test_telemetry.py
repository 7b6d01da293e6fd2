"""The server's own figures: histogram percentiles, and the admin channel's report."""

from __future__ import annotations

import json
import random

from telemetry.histogram import Histogram, bucket_of, upper_bound
from tests.harness import Server


def test_every_value_falls_in_the_bucket_whose_bounds_hold_it() -> None:
    for value in [0, 1, 31, 32, 33, 63, 64, 100, 1000, 12_345, 10**9, 2**40 + 7]:
        bucket = bucket_of(value)
        assert upper_bound(bucket) >= value
        assert bucket == 0 or upper_bound(bucket - 1) < value


def test_percentiles_are_within_the_bucket_resolution() -> None:
    rng = random.Random(7)
    values = [rng.randint(1, 2_000_000) for _ in range(10_000)]
    h = Histogram()
    for v in values:
        h.record(v)
    values.sort()
    for p in (50, 90, 99, 99.9):
        exact = values[int(len(values) * p / 100) - 1]
        assert exact <= h.percentile(p) <= exact * 1.07, p
    assert h.max == values[-1] and h.count == len(values) and h.percentile(100) == values[-1]
    h.record(-5)  # a clock step backwards counts as zero, never as an index from the end
    assert h.counts[0] == 1


def test_the_admin_channel_reports_the_commit_cycle_and_resets(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from netio.unix_lines import send_lines

    server = Server(tmp_path / "data").start()
    try:
        client = server.client()
        for i in range(20):
            assert client.ask(f"BUY AAPL 1 {100 + i}")[0].startswith("ACK")
        report = json.loads(send_lines(tmp_path / "data" / "admin.sock", ["TELEMETRY RESET"])[0])
        assert report["journal_fdatasync_us"]["count"] >= 20  # one ask at a time: one fsync each
        assert report["journal_commit_us"]["p50"] >= report["journal_fdatasync_us"]["p50"] > 0
        assert report["gateway_read_us"]["count"] >= 20 and report["gateway_sessions"] == 1
        assert report["matching_step_us"]["count"] >= 20  # reported: it timed only the steps left over under load
        assert report["journal_backlog_orders"] == 0
        after = json.loads(send_lines(tmp_path / "data" / "admin.sock", ["TELEMETRY"])[0])
        assert after["journal_fdatasync_us"]["count"] == 0  # reset
    finally:
        server.stop()


def test_tickline_telemetry_prints_the_running_servers_figures(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    server = Server(tmp_path / "data").start()
    try:
        client = server.client()
        assert client.ask("BUY AAPL 1 100")[0].startswith("ACK")
        out = subprocess.run(
            [sys.executable, "-m", "tickline.cli", "telemetry", "--data-dir", str(tmp_path / "data")], capture_output=True, text=True, timeout=30
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        rows = {line.split()[0]: line for line in out.stdout.splitlines()}
        assert rows["journal_fdatasync_us"].split()[1:3] != ["count", "0"]  # the ACK above was fsync'd
        assert rows["gateway_sessions"].split()[1] == "1"
    finally:
        server.stop()
    stopped = subprocess.run([sys.executable, "-m", "tickline.cli", "telemetry", "--data-dir", str(tmp_path / "data")], capture_output=True, text=True)
    assert stopped.returncode == 1 and "no server is running" in stopped.stderr
