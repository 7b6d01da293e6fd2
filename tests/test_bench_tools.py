"""The benchmarks themselves run and report (tiny sizes; the figures are not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_load_generator_drives_both_servers_and_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.load", "--orders", "4000", "--rates", "2000", "--duration", "1",
         "--connections", "2", "--subscribers", "3", "--data-dir", str(tmp_path / "data"), "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "fsync floor" in run.stdout and "vs ceiling" in run.stdout
    report = json.loads(out.read_text())
    assert [r["server"] for r in report["results"]] == ["baseline", "exchange"] * 2
    for row in report["results"]:
        # Every request was answered, by both servers, with no protocol errors.
        assert row["completed"] == row["requests"], row
        assert row["errors"] == 0
        assert row["ack_ms"]["p50"] > 0
    exchange = [r for r in report["results"] if r["server"] == "exchange"]
    assert all(r["fills"] > 0 for r in exchange)  # the mix really trades
    # ...and its books hold what rested, which the memory line reports with each process's
    assert all(r["telemetry"]["book_orders"] > 0 and r["memory_mib"]["server"][1] > 10 for r in exchange)
    assert "resident memory, MiB (start -> end, peak): server" in run.stdout
    assert all(r["market_data"]["subscribers"] == 3 and r["market_data"]["trades"] > 0 for r in exchange)
    assert "market data," in run.stdout


def test_memory_benchmark_counts_every_resting_order() -> None:
    run = subprocess.run([sys.executable, "-m", "bench.memory", "--orders", "3000"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    rounds = [line.split() for line in run.stdout.splitlines() if "bytes per resting order" in line]
    assert [words[0] for words in rounds] == ["without", "with"], run.stdout


def test_engine_benchmark_prints_the_ratio() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.engine", "--commands", "20000"], cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, run.stderr
    assert "ratio engine/naive:" in run.stdout


def test_fanout_benchmark_sees_every_trade_at_every_subscriber() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.fanout", "--subscribers", "20", "--rate", "50", "--duration", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "50/50 trades reached every subscriber" in run.stdout, run.stdout


def test_restart_benchmark_times_the_worst_case_on_the_real_server() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.restart", "--commands", "20000", "--snapshot-every", "5000"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "worst case after kill -9 (snapshot at 15,000, 5,000 tail commands)" in run.stdout, run.stdout


def test_writer_benchmark_commits_every_command_of_the_mix() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.writer", "--commands", "3000", "--rounds", "1"], cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, run.stderr
    # 3,000 orders after two deposits for each owner they name, five to a journal record: a batch row each.
    assert "4,594 commands of the exchange-core mix" in run.stdout and "rows per command: audit batches 0.20 " in run.stdout, run.stdout


def test_a_late_fill_from_an_earlier_phase_is_counted_not_fatal() -> None:
    """A login reused across phases still gets the earlier phase's FILLs, with client ids
    past this phase's (shorter) stream: the generator counts them and goes on."""
    import socket
    import time

    from bench.load import LoadConnection, Stats
    from bench.workload import make_stream

    with socket.create_server(("127.0.0.1", 0)) as listener:
        stats = Stats()
        conn = LoadConnection(listener.getsockname()[1], make_stream(3, 1, 0), stats, window=0)
        server, _ = listener.accept()
        with server:
            server.sendall(b"FILL 7 AAPL BUY 1 @ 150.00 id=c99999 trade=7-1\nACK 8 id=c88888\nACK 9 id=c0\n")
            time.sleep(0.1)
            conn.readable(time.perf_counter())
        conn.close()
    assert (stats.fills, stats.completed, len(stats.ack)) == (1, 2, 1)  # only c0 is this phase's request


def test_the_load_generator_starts_the_exchange_under_the_wrapper_it_is_given(tmp_path: Path) -> None:
    """bench/callgrind.py runs the server under valgrind this way: the wrapper's words, then
    the server's command line."""
    mark = tmp_path / "wrapped"
    run = subprocess.run(
        [sys.executable, "-m", "bench.load", "--only", "exchange", "--window", "0", "--rates", "500", "--duration", "1",
         "--connections", "1", "--web", "off", "--data-dir", str(tmp_path / "data"), "--json", str(tmp_path / "load.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
        env={**os.environ, "TICKLINE_BENCH_SERVER_WRAPPER": f"sh -c 'echo \"$@\" > {mark}; exec \"$@\"' wrapper"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert " -m tickline.cli serve " in mark.read_text()


def test_callgrind_costs_are_each_function_s_own_not_its_callees() -> None:
    from bench.callgrind import self_costs

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        # (the format valgrind writes with --compress-strings=no: a call's cost line follows calls=)
        out.write_text("events: Ir\nfn=main\n1 10\ncfn=work\ncalls=2 5\n2 700\n3 5\nfn=work\n5 350\n6 350\n")
        assert self_costs(out) == {"main": 15, "work": 700}
