"""The JetStream plumbing every cluster stage shares: the stream, reading one ordered
input in batches, and publishing outputs exactly once.

A stage is a loop: take every input message that has arrived (a batch), apply them in
stream order (pure state, no awaits), publish one output message per output subject for
the batch, wait for JetStream's quorum acks, take the next batch. So each stage
group-commits like the single-process journal: under load its batches grow, at rest
a message goes through alone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import structlog

from cluster.nats import DUPLICATE_WINDOW
from cluster.wire import INPUT_SEQ, STREAM, SUBJECTS

log = structlog.get_logger("cluster")
MAX_BATCH = 2_000  # input messages applied before their outputs are published
PUBLISH_TIMEOUT = 2.0  # seconds for a quorum ack before the same message (same Msg-Id) is sent again


class Fenced(Exception):
    """Another copy of this stage wrote to its subject: this one must stop."""


async def connect(urls: list[str], name: str) -> tuple[Any, Any]:
    import nats

    async def quiet(exc: Exception) -> None:
        log.warning("nats_error", error=repr(exc)[:200])

    nc = await nats.connect(urls, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.25, error_cb=quiet)
    return nc, nc.jetstream()


async def ensure_stream(js: Any, replicas: int = 3) -> None:
    """The one stream, created if missing (by whichever stage starts first). A stage may
    start while a node is down or a leader is being elected: it waits, it does not fail."""
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    config = StreamConfig(name=STREAM, subjects=SUBJECTS, num_replicas=replicas, storage=StorageType.FILE, duplicate_window=DUPLICATE_WINDOW)
    while True:
        try:
            try:
                await js.stream_info(STREAM)
            except NotFoundError:
                await js.add_stream(config)
            return
        except Exception as exc:
            log.warning("stream_not_ready", error=repr(exc)[:120])
            await asyncio.sleep(0.5)


async def last_message(js: Any, subject: str) -> Any:
    """The stream's last message on subject (wildcards allowed), None if there is none.
    Only "none" is taken for none: a timeout is waited out, since a stage that took it for
    "nothing published yet" would publish again what it had."""
    from nats.js.errors import NotFoundError

    while True:
        try:
            return await js.get_last_msg(STREAM, subject)
        except NotFoundError:
            return None
        except Exception as exc:
            log.warning("last_message_retry", subject=subject, error=repr(exc)[:120])
            await asyncio.sleep(0.5)


@dataclass
class Input:
    """One message of a stage's input: its stream sequence, when it was stored, its bytes."""

    seq: int
    ts_ns: int
    subject: str
    data: bytes


class Reader:
    """A stage's one ordered input (a subject filter on the stream) from its first message,
    handed over in batches of what has arrived."""

    def __init__(self, js: Any, subject: str, limit: int = 20_000) -> None:
        self.js, self.subject = js, subject
        self.queue: asyncio.Queue[Input] = asyncio.Queue(limit)  # bounded: the consumer waits
        self._sub: Any = None

    async def start(self) -> None:
        from nats.js.api import DeliverPolicy

        async def arrived(msg: Any) -> None:
            md = msg.metadata
            await self.queue.put(Input(md.sequence.stream, int(md.timestamp.timestamp() * 1e9), msg.subject, msg.data))

        while True:
            try:
                self._sub = await self.js.subscribe(
                    self.subject, stream=STREAM, cb=arrived, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL, idle_heartbeat=2.0
                )
                return
            except Exception as exc:  # a leader being elected: wait, do not fail
                log.warning("subscribe_retry", subject=self.subject, error=repr(exc)[:120])
                await asyncio.sleep(0.5)

    async def batch(self) -> list[Input]:
        queue = self.queue
        out = [await queue.get()]
        while not queue.empty() and len(out) < MAX_BATCH:
            out.append(queue.get_nowait())
        return out

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()


async def publish_once(js: Any, subject: str, input_seq: int, payload: bytes) -> None:
    """A message of many writers (no fence): stored once per (subject, input) within the
    duplicate window, retried until a quorum has it."""
    headers = {"Nats-Msg-Id": f"{subject}:{input_seq}", INPUT_SEQ: str(input_seq)}
    while True:
        try:
            await js.publish(subject, payload, stream=STREAM, headers=headers, timeout=PUBLISH_TIMEOUT)
            return
        except Exception as exc:
            log.warning("publish_retry", subject=subject, input_seq=input_seq, error=repr(exc)[:120])
            await asyncio.sleep(0.1)


class Outbox:
    """The only writer of one subject. It learns from the subject's last message which input
    it already published for (a restarted stage replays its input and must not publish
    again), and fences: each publish expects the subject's last sequence to be its own
    previous one, so a second copy of the stage fails instead of interleaving."""

    def __init__(self, js: Any, subject: str) -> None:
        self.js, self.subject = js, subject
        self.published_through = 0  # the last input seq whose output is in the stream
        self.last_seq = 0  # the stream sequence of this subject's last message

    async def open(self) -> None:
        last = await last_message(self.js, self.subject)
        if last is None:  # nothing published yet
            return
        self.last_seq = last.seq
        self.published_through = int((last.headers or {}).get(INPUT_SEQ, 0))

    async def publish(self, input_seq: int, payload: bytes) -> None:
        """Publish once for input_seq (skipped if already published), retried until a quorum
        stores it: an output is never given up, since the input it came from is durable."""
        if input_seq <= self.published_through:
            return
        headers = {
            "Nats-Msg-Id": f"{self.subject}:{input_seq}",
            INPUT_SEQ: str(input_seq),
            "Nats-Expected-Last-Subject-Sequence": str(self.last_seq),
        }
        while True:
            try:
                ack = await self.js.publish(self.subject, payload, stream=STREAM, headers=headers, timeout=PUBLISH_TIMEOUT)
                break
            except Exception as exc:
                if "wrong last sequence" in str(exc):
                    await self.open()  # stored after all (a timed-out try)? then it is ours
                    if self.published_through >= input_seq:
                        return
                    raise Fenced(f"{self.subject} has another writer") from None
                log.warning("publish_retry", subject=self.subject, input_seq=input_seq, error=repr(exc)[:120])
                await asyncio.sleep(0.1)
        self.last_seq = ack.seq
        self.published_through = input_seq
