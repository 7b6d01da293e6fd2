"""What a NATS JetStream cluster on this machine acknowledges, the way step 11 will use it.

    python -m bench.jetstream [--seconds 5] [--in-flight 256]

A 3-node cluster on loopback (cluster/nats.py: every write fsync'd, `sync_interval:
always`), one stream at 1 and at 3 replicas; publishes of N orders packed in one message
(~60 bytes an order, like a journal record), with --in-flight publishes awaiting their
acknowledgement at once, for --seconds each. Prints messages/s, orders/s and the
acknowledgement's p50/p99: what a gateway that group-commits orders into messages gets.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.load import machine
from cluster.nats import DUPLICATE_WINDOW, NatsCluster


async def phase(js: object, subject: str, per_message: int, seconds: float, in_flight: int) -> tuple[int, float, list[float]]:
    payload = b"x" * (60 * per_message)
    latencies: list[float] = []
    sent = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        await js.publish(subject, payload, headers={"Nats-Msg-Id": f"{subject}:{per_message}:{i}"})  # type: ignore[attr-defined]
        latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    pending: set[asyncio.Task[None]] = set()
    while loop.time() < end:
        while len(pending) < in_flight:
            pending.add(asyncio.create_task(one(sent)))
            sent += 1
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    await asyncio.gather(*pending)
    return sent, time.perf_counter() - t0, sorted(latencies)


async def run(args: argparse.Namespace) -> None:
    import nats
    from nats.js.api import StorageType, StreamConfig

    with tempfile.TemporaryDirectory(prefix="tickline-js-", dir=args.data_dir) as tmp:
        cluster = NatsCluster(Path(tmp))
        await cluster.start()
        try:
            nc = await nats.connect(cluster.urls)
            js = nc.jetstream(timeout=10)
            print(f"machine: {machine()}")
            print(f"3 NATS nodes on loopback, every write fsync'd (sync_interval: always), {args.in_flight} publishes in flight, {args.seconds:g} s each")
            print(f"{'replicas':>8} {'orders/msg':>10} {'msgs/s':>10} {'orders/s':>11} {'ack p50 ms':>11} {'p99 ms':>8}")
            for replicas in (1, 3):
                name = f"R{replicas}"
                await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"], num_replicas=replicas, storage=StorageType.FILE, duplicate_window=DUPLICATE_WINDOW))
                for per_message in (1, 64):
                    sent, spent, lat = await phase(js, f"{name}.orders", per_message, args.seconds, args.in_flight)
                    p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
                    print(f"{replicas:>8} {per_message:>10} {sent / spent:>10,.0f} {sent * per_message / spent:>11,.0f} {p50:>11.2f} {p99:>8.2f}")
            await nc.close()
        finally:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--data-dir", type=Path, default=Path("var"))
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
