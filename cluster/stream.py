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
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

import structlog

from cluster.nats import DUPLICATE_WINDOW
from cluster.wire import INPUT_SEQ, PART, STREAM, SUBJECTS

log = structlog.get_logger("cluster")
MAX_BATCH = 2_000  # input messages applied before their outputs are published
# ...and input bytes: a stage's output for a batch (a risk shard's Sequenced, an engine
# shard's Settle, market data and reports) grows with its input, and NATS refuses a message
# over its max_payload (cluster/nats.py: MAX_PAYLOAD) for good: the stage would retry it forever.
MAX_BATCH_BYTES = 1024 * 1024
# Items (events, commands, verdicts) in one output message at most. One input's output has
# no bound: a market order that sweeps 70,000 resting orders makes 210,000 events, and one
# settlement may free tens of thousands of orders that waited for it. An item is at most a
# few hundred bytes (names and client ids are 32 characters at most; ~46 bytes an event in
# the 70,000 sweep, ~140 a command with a 32-character id): ~0.7-4 MB a message.
PART_ITEMS = 16_000
PUBLISH_TIMEOUT = 2.0  # seconds for a quorum ack before the same message (same Msg-Id) is sent again


FENCE_RECHECKS = 100  # an Outbox's tries while a new stream leader refuses our own last sequence


class Fenced(Exception):
    """Another copy of this stage wrote to its subject: this one must stop."""


REPEAT_S = 60.0  # a warning said again no sooner than this (with how often it came meanwhile)
REPEAT_KINDS = 256  # warnings remembered at most (then forgotten, and said again when they come)


class Repeats:
    """Warnings that come again and again while a node is down, each said when it first
    comes and then once a minute at most, with how often it came meanwhile: a client
    retries every 0.25 s per node, and a stage's publish every 0.1 s, so a role whose nodes
    were down wrote ~12 lines a second for as long as they were."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.said_at: dict[tuple[str, str, str], float] = {}  # (event, what, error) -> when it was last said
        self.repeated: dict[tuple[str, str, str], int] = {}  # -> how often it came since

    def warn(self, event: str, what: str, error: str) -> None:
        key, now = (event, what, error), self.clock()
        said_at = self.said_at.get(key)
        if said_at is not None and now - said_at < REPEAT_S:
            self.repeated[key] += 1
            return
        fields = {"what": what} if what else {}
        if said_at is None:
            if len(self.said_at) >= REPEAT_KINDS:
                self.said_at.clear()
                self.repeated.clear()
            log.warning(event, **fields, error=error)
        else:
            log.warning(event, **fields, error=error, repeated=self.repeated[key])
        self.said_at[key], self.repeated[key] = now, 0


_repeats = Repeats()  # (one per process: its connection's errors and its stages' retries)


async def connect(urls: list[str], name: str) -> tuple[Any, Any]:
    import nats

    async def quiet(exc: Exception) -> None:  # (nats.py takes a coroutine function only)
        _repeats.warn("nats_error", "", repr(exc)[:200])

    nc = await nats.connect(urls, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.25, error_cb=quiet)
    return nc, nc.jetstream()


T = TypeVar("T")


async def patiently(what: str, attempt: Callable[[], Awaitable[T]], pause: float = 0.5) -> T:
    """attempt() until it succeeds. A stage may start or publish while a node is down or a
    leader is being elected: it waits, it does not fail (and never takes a timeout for an
    answer). An attempt raises Final for an answer that trying again cannot change."""
    while True:
        try:
            return await attempt()
        except Final as final:
            raise final.error from None
        except Exception as exc:
            _repeats.warn("jetstream_retry", what, repr(exc)[:120])
            await asyncio.sleep(pause)


class Final(Exception):
    def __init__(self, error: Exception) -> None:
        self.error = error


async def ensure_stream(js: Any, replicas: int = 3) -> None:
    """The one stream, created if missing (by whichever stage starts first), its subjects
    brought up to date."""
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    config = StreamConfig(name=STREAM, subjects=SUBJECTS, num_replicas=replicas, storage=StorageType.FILE, duplicate_window=DUPLICATE_WINDOW)

    async def attempt() -> None:
        try:
            info = await js.stream_info(STREAM)
        except NotFoundError:
            await js.add_stream(config)
            return
        if sorted(info.config.subjects or []) != sorted(SUBJECTS):  # (made by an older version: md.> came later)
            info.config.subjects = SUBJECTS
            await js.update_stream(info.config)

    await patiently("stream", attempt)


async def stream_ready(urls: list[str], timeout: float = 120.0) -> None:
    """The stream made and answering (its leader elected), before any stage starts: stages
    that each made it at once raced, and a question asked while its leader was still being
    elected went unanswered for the client's whole 5 s timeout (`cluster up` took 8-14 s).
    Asked here with 1 s timeouts, for `timeout` at most (as long as `up` gives each role to
    catch up: a large stream's store is read at a restart)."""
    import nats

    async def made_and_answering() -> None:
        nc = await nats.connect(urls, max_reconnect_attempts=-1, reconnect_time_wait=0.25)
        try:
            js = nc.jetstream(timeout=1)
            await ensure_stream(js)
            await last_message(js, "in.>")  # (any answer, "none" too: its leader is elected)
        finally:
            await nc.close()

    try:  # (one deadline for connecting and asking)
        await asyncio.wait_for(made_and_answering(), timeout)
    except TimeoutError:
        raise TimeoutError(f"the stream {STREAM} did not answer within {timeout:g} s") from None


async def last_message(js: Any, subject: str) -> Any:
    """The stream's last message on subject (wildcards allowed), None if there is none.
    Only "none" is taken for none: a stage that took a timeout for "nothing published
    yet" would publish again what it had."""
    from nats.js.errors import NotFoundError

    async def attempt() -> Any:
        try:
            return await js.get_last_msg(STREAM, subject)
        except NotFoundError:
            return None

    return await patiently(f"last message on {subject}", attempt)


async def publish_retried(js: Any, subject: str, payload: bytes, headers: dict[str, str]) -> Any:
    """Publish until a quorum stores it (the same Nats-Msg-Id on every try: a try whose ack
    was lost is stored once); an output is never given up, since what it came from is
    durable. A fence that fails ("wrong last sequence") is raised, not retried."""

    async def attempt() -> Any:
        try:
            return await js.publish(subject, payload, stream=STREAM, headers=headers, timeout=PUBLISH_TIMEOUT)
        except Exception as exc:
            if "wrong last sequence" in str(exc):
                raise Final(exc) from None
            raise

    return await patiently(f"publish to {subject}", attempt, pause=0.1)


@dataclass
class Input:
    """One message of a stage's input: its stream sequence, when it was stored, its bytes."""

    seq: int
    ts_ns: int
    subject: str
    data: bytes
    # The last input of its writer's (a stream sequence) whose output on this subject is all
    # in the stream with it: its INPUT_SEQ header, one less for a part that is not the last.
    through: int = 0


class Reader:
    """A stage's one ordered input (a subject filter on the stream) from its first message,
    handed over in batches of what has arrived."""

    def __init__(self, js: Any, subject: str, limit: int = 20_000) -> None:
        self.js, self.subject = js, subject
        self.queue: asyncio.Queue[Input] = asyncio.Queue(limit)  # bounded: the consumer waits
        self._sub: Any = None

    async def start(self, after: int = 0) -> None:
        """Deliver from the message after stream sequence `after` (a snapshot's), or from the first."""
        from nats.js.api import ConsumerConfig, DeliverPolicy

        last = after

        async def arrived(msg: Any) -> None:
            nonlocal last
            md = msg.metadata
            seq = md.sequence.stream
            if seq <= last:  # delivered again (an ordered consumer recreated from behind): applied once
                log.warning("input_redelivered", subject=self.subject, seq=seq, last=last)
                return
            last = seq
            await self.queue.put(Input(seq, int(md.timestamp.timestamp() * 1e9), msg.subject, msg.data, _through(msg.headers)))

        self._sub = await patiently(
            f"subscribe to {self.subject}",
            lambda: self.js.subscribe(
                self.subject, stream=STREAM, cb=arrived, ordered_consumer=True, idle_heartbeat=2.0,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1) if after else None,
                deliver_policy=None if after else DeliverPolicy.ALL,
            ),
        )  # fmt: skip
        # nats.py recreates a lost ordered consumer (a missed heartbeat: its node was killed)
        # from the stream sequence after the last it received, or from 1 if none has come yet:
        # a stage restarted from its snapshot would be sent the whole stream again (refused
        # above, one by one). It is told where this Reader started instead.
        jsi = getattr(getattr(self._sub, "_sub", None), "_jsi", None)
        if jsi is not None and getattr(jsi, "_sseq", after) < after:
            jsi._sseq = after

    async def batch(self) -> list[Input]:
        queue = self.queue
        out = [await queue.get()]
        size = len(out[0].data)
        while not queue.empty() and len(out) < MAX_BATCH and size < MAX_BATCH_BYTES:
            inp = queue.get_nowait()
            out.append(inp)
            size += len(inp.data)
        return out

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()


def _through(headers: dict[str, str] | None) -> int:
    if not headers or INPUT_SEQ not in headers:
        return 0
    part, _, of = headers.get(PART, "0/1").partition("/")
    return int(headers[INPUT_SEQ]) - (int(part) + 1 < int(of))


class Tail(Reader):
    """A Reader that knows when its state is current: once it has applied the message that
    was its input's last when it started reading (from `applied`: a snapshot's sequence)."""

    def __init__(self, js: Any, subject: str) -> None:
        super().__init__(js, subject)
        self.applied = 0  # the last input message applied
        self.through = 0  # the input's last message when reading started
        self.caught_up = asyncio.Event()  # set once that one is applied: the state is current
        self.replayed = 0  # what was applied before caught_up (commands, updates: the caller counts)

    async def begin(self) -> int:
        """Start reading after `applied`; returns the stream sequence to have applied to be caught up."""
        last = await last_message(self.js, self.subject)
        self.through = 0 if last is None else int(last.seq)
        if self.through <= self.applied:
            self.caught_up.set()
        await self.start(after=self.applied)
        return self.through

    def mark(self, seq: int, count: int) -> None:
        """Input message seq is applied (count: what it held, counted while catching up)."""
        self.applied = seq
        if not self.caught_up.is_set():
            self.replayed += count
            if seq >= self.through:
                self.caught_up.set()


def parts(count: int) -> list[tuple[int, int]]:
    """The (start, end) of each message for `count` items of one output: one, or PART_ITEMS each."""
    return [(start, min(start + PART_ITEMS, count)) for start in range(0, count, PART_ITEMS)] or [(0, 0)]


async def publish_once(js: Any, subject: str, input_seq: int, payload: bytes, part: int = 0, of: int = 1) -> None:
    """A message of many writers (no fence): stored once per (subject, input, part) within
    the duplicate window."""
    msg_id = f"{subject}:{input_seq}" + (f".{part}" if of > 1 else "")
    await publish_retried(js, subject, payload, {"Nats-Msg-Id": msg_id, INPUT_SEQ: str(input_seq)})


class Outbox:
    """The only writer of one subject. It learns from the subject's last message which input
    it already published for (a restarted stage replays its input and must not publish
    again), and fences: each publish expects the subject's last sequence to be its own
    previous one, so a second copy of the stage fails instead of interleaving.

    One input's output may go in several parts (header PART "<i>/<n>"): the input is
    published once its last part is; a restart that finds only some of them stored sends
    the rest (the parts are made from that one input's events alone: the same again)."""

    def __init__(self, js: Any, subject: str) -> None:
        self.js, self.subject = js, subject
        self.published_through = 0  # the last input seq whose output is in the stream
        self.last_seq = 0  # the stream sequence of this subject's last message
        self.parts_out = 0  # of input published_through + 1's parts, how many are in the stream

    async def open(self) -> None:
        last = await last_message(self.js, self.subject)
        if last is None:  # nothing published yet
            return
        headers = last.headers or {}
        self.last_seq = last.seq
        self.published_through = int(headers.get(INPUT_SEQ, 0))
        self.parts_out = 0
        part, _, of = headers.get(PART, "0/1").partition("/")
        if int(part) + 1 < int(of):  # only some of that input's parts are out
            self.published_through -= 1  # (every input before it is: parts follow a flush)
            self.parts_out = int(part) + 1

    def _out(self, input_seq: int, part: int) -> bool:
        if input_seq <= self.published_through:
            return True
        return input_seq == self.published_through + 1 and part < self.parts_out

    async def publish(self, input_seq: int, payload: bytes, part: int = 0, of: int = 1) -> None:
        """Publish once for input_seq (skipped if already published), retried until a quorum
        stores it: an output is never given up, since the input it came from is durable.
        part, of: this message is part `part` of the input's output in `of` (sent in order).

        A fence that fails while the subject's last message is still our own is not another
        writer: a stream leader elected a moment ago may judge the expected sequence before it
        has applied its log (nats-server #6194, #7361; seen here when a NATS node was killed
        under load). That is tried again, FENCE_RECHECKS times at most."""
        for _ in range(FENCE_RECHECKS):
            if self._out(input_seq, part):
                return
            headers = {
                "Nats-Msg-Id": f"{self.subject}:{input_seq}" + (f".{part}" if of > 1 else ""),
                INPUT_SEQ: str(input_seq),
                "Nats-Expected-Last-Subject-Sequence": str(self.last_seq),
            }
            if of > 1:
                headers[PART] = f"{part}/{of}"
            try:
                ack = await publish_retried(self.js, self.subject, payload, headers)
            except Exception as exc:  # the fence: someone wrote since our last message
                ours = self.last_seq
                await self.open()  # ...or a timed-out try of ours was stored after all
                if self._out(input_seq, part):
                    return
                if self.last_seq != ours:
                    raise Fenced(f"{self.subject} has another writer") from None
                log.warning("fence_recheck", subject=self.subject, last_seq=ours, error=str(exc)[:120])
                await asyncio.sleep(0.1)
                continue
            self.last_seq = ack.seq
            if part + 1 < of:
                self.published_through, self.parts_out = input_seq - 1, part + 1
            else:
                self.published_through, self.parts_out = input_seq, 0
            return
        raise Fenced(f"{self.subject}: the stream kept refusing our own last sequence {self.last_seq}")

    async def publish_parts(self, input_seq: int, count: int, make: Callable[[int, int, bool], bytes]) -> None:
        """Publish `count` items of output for the inputs through input_seq: one message, or
        parts (see `parts`), in order; make(start, end, last) gives a message's bytes."""
        bounds = parts(count)
        for i, (start, end) in enumerate(bounds):
            await self.publish(input_seq, make(start, end, i == len(bounds) - 1), i, len(bounds))
