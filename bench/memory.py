"""What one resting order costs in memory: `tickline serve`'s resident memory before and
after an account places N resting orders (python -m bench.memory).

    python -m bench.memory [--orders 100000]

Two rounds on one server: N orders without a client id, then N with one (`id=o<n>`, as
algorithms send them). Each order rests in its book, holds its funds (a risk Hold) and has
an entry in the gateway's open-order index: the figure is all of that, as the kernel
counts the server's pages (resident memory, so it includes what the allocator keeps).
The books' order count is read back from the server (TELEMETRY's book_orders) so a
refused order cannot pass for a cheap one.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from pathlib import Path

from bench.load import BENCH_PASSWORD, ServerProcess, bench_accounts, fund_accounts, memory_kib, server_telemetry

WINDOW = 2_000  # orders in flight


async def place(port: int, account: str, first: int, count: int, client_ids: bool) -> None:
    """count resting BUY AAPL orders, pipelined, each ACKed before returning."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()  # HELLO
    writer.write(f"LOGIN {account} {BENCH_PASSWORD}\n".encode())
    await reader.readline()

    async def acked() -> None:
        line = await reader.readline()
        if not line.startswith(b"ACK"):
            raise RuntimeError(f"order refused: {line.decode().strip()}")

    for i in range(count):
        # Below any ask (none rests): 1.00-1.99, a hundred levels
        n = first + i
        writer.write(f"BUY AAPL 1 1.{n % 100:02d}{f' id=o{n}' if client_ids else ''}\n".encode())
        if i >= WINDOW:
            await acked()  # (the one WINDOW orders back)
    for _ in range(min(count, WINDOW)):
        await acked()
    writer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=100_000, help="resting orders per round")
    args = parser.parse_args(argv)
    data = Path(tempfile.mkdtemp(prefix="tickline-bench-memory-"))
    (account,) = bench_accounts(data, 1)
    server = ServerProcess("exchange", data, web=False)
    try:
        fund_accounts(data, [account])
        asyncio.run(place(server.port, account, 0, 2_000, False))  # every code path and memo warm
        placed = 2_000
        print(f"tickline serve, one account, {args.orders:,} resting orders a round (BUY AAPL, 100 levels)")
        for client_ids in (False, True):
            before = memory_kib(server.proc.pid)["server"][0]
            asyncio.run(place(server.port, account, placed, args.orders, client_ids))
            placed += args.orders
            after = memory_kib(server.proc.pid)["server"][0]
            resting = server_telemetry(data).get("book_orders")
            if resting != placed:
                raise RuntimeError(f"{resting} orders in the books, {placed} placed")
            label = "with a client id (id=o<n>)" if client_ids else "without a client id"
            print(f"  {label:28} resident {before / 1024:6.1f} -> {after / 1024:6.1f} MiB: {(after - before) * 1024 / args.orders:5.0f} bytes per resting order")
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
