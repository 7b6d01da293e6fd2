"""What a NATS JetStream cluster on this machine acknowledges, the way step 11 will use it.

    python -m bench.jetstream [--seconds 5] [--in-flight 256]

A 3-node cluster on loopback (cluster/nats.py: every write fsync'd, `sync_interval:
always`), one stream at 1 and at 3 replicas; publishes of N orders packed in one message
(~60 bytes an order, like a journal record), with --in-flight publishes awaiting their
acknowledgement at once, for --seconds each. Prints messages/s, orders/s and the
acknowledgement's p50/p99: what a gateway that group-commits orders into messages gets.

Then what the three nodes' CPU (from /proc) costs per quorum write, one publish in flight
as a cluster stage has it: one message alone, k messages published at once (as an engine
shard publishes its settlements, market data and reports), the same k one after another,
and one message with readers following the stream (ordered consumers, as the stages read
it). That says whether a cluster's NATS CPU goes with its messages or with its rounds of
writes.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.load import machine, tree_cpu_seconds
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
            await cost_per_write(js, [n.proc.pid for n in cluster.nodes if n.proc is not None], args.writes)
            await nc.close()
        finally:
            cluster.stop()


async def cost_per_write(js: object, pids: list[int], writes: int) -> None:
    """NATS CPU per quorum write (3 replicas), by how the messages are grouped."""
    from nats.js.api import StorageType, StreamConfig

    await js.add_stream(StreamConfig(name="COST", subjects=["cost.>"], num_replicas=3, storage=StorageType.FILE, duplicate_window=DUPLICATE_WINDOW))  # type: ignore[attr-defined]
    payload = b"x" * 2000  # (a stage's message at low rates: a few dozen orders)
    print(f"3 replicas, one write in flight, {writes} writes each: the three nodes' CPU (user + system, /proc)")
    print(f"{'how':<44} {'ms a write':>10} {'NATS CPU ms a write':>20} {'a message':>10}")

    async def measure(label: str, k: int, together: bool, readers: int = 0) -> None:
        row = f"r{k}{together:d}{readers}"  # (each row its own subjects and Msg-Ids)
        subs = [await js.subscribe(f"cost.{row}.>", ordered_consumer=True, cb=_ignore) for _ in range(readers)]  # type: ignore[attr-defined]
        before, t0 = sum(map(tree_cpu_seconds, pids)), time.perf_counter()
        for i in range(writes):
            sends = [js.publish(f"cost.{row}.{j}", payload, headers={"Nats-Msg-Id": f"{row}:{i}:{j}"}) for j in range(k)]  # type: ignore[attr-defined]
            if together:
                await asyncio.gather(*sends)
            else:
                for send in sends:
                    await send
        spent, cpu = time.perf_counter() - t0, sum(map(tree_cpu_seconds, pids)) - before
        for sub in subs:
            await sub.unsubscribe()
        print(f"{label:<44} {spent / writes * 1000:>10.2f} {cpu / writes * 1000:>20.2f} {cpu / writes / k * 1000:>10.2f}")

    await measure("1 message", 1, True)
    await measure("3 messages at once", 3, True)
    await measure("3 messages one after another", 3, False)
    await measure("1 message, 3 readers following", 1, True, readers=3)


async def _ignore(msg: object) -> None:
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--writes", type=int, default=1000, help="writes per row of the cost table")
    parser.add_argument("--data-dir", type=Path, default=Path("var"))
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
