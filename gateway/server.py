"""The order-entry TCP server: moves bytes between sockets and Connections, nothing more.

Each socket gets a Session (an asyncio.Protocol adapter) around a Connection (the state
machine in gateway/connection.py). The Gateway keeps the sessions by owner, tells the
waiting ones when the journal syncs or matching progresses, routes execution reports,
and writes each session's output once per loop iteration (ACKs, FILLs from every
symbol, replies: one write).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from typing import Callable, cast

import structlog

from gateway.connection import Connection
from gateway.desk import OrderDesk, report_fields
from netio.plumbing import FlowControl, address_of, capped_write, close_all, limit_buffers, listen, peer_name
from protocol import replies as R
from protocol.messages import Event, Report
from telemetry.registry import Telemetry

log = structlog.get_logger("gateway")

# A client's unread replies may reach WRITE_HIGH before we stop reading from it (it can't
# make us buffer more of its own replies), and WRITE_CAP before we hang up (execution
# reports from others' trades still arrive for a client that never reads).
WRITE_HIGH = 256 * 1024
WRITE_CAP = 16 * 1024 * 1024
# Bytes of one client's input handled per step of the event loop (~200 orders, a few ms).
# uvloop reads up to 256 KiB at once: ~6,000 orders, 100-250 ms of work in one callback
# when a client sends faster than the exchange can go, during which no ACK, no fill
# and no other client is served. The rest waits its turn, and reading from that client
# pauses meanwhile, so the kernel's buffers push back on it (TCP flow control).
INPUT_SLICE = 8 * 1024
# Commands accepted and not yet matched (journal in flight + matching queues) past which
# the gateway stops reading from every client until matching is back under half of it.
# Order entry is cheaper than matching, so above capacity the queues would otherwise grow
# without bound (measured: 50,000 waiting after 6 s at 100,000/s offered), and with them
# memory, fill latency and the collector's work. ~8,000 is a quarter second of matching.
MAX_BACKLOG = 8_000
# Connections: in all, from one client address, and how long one may stay without logging
# in (serve's --max-connections, --max-connections-per-address, --login-timeout): a client
# that opens connections and never logs in cannot take the server's.
MAX_SESSIONS, MAX_PER_ADDRESS, LOGIN_TIMEOUT = 5_000, 500, 60.0


class Session(asyncio.Protocol):
    """One socket: feeds its Connection and writes what it returns."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.conn = Connection(gateway.desk)
        self.conn.on_ready = self._ready
        self.routed_as = ""  # the owner the gateway routes this session's reports by
        self.transport: asyncio.Transport | None = None
        self.flow: FlowControl | None = None
        self.peer = "?"
        self.address = "?"
        self.outbuf: list[bytes] = []
        self._over_inflight = False  # the last state told to flow control
        self.unread = b""  # input read from the socket and not yet handed to the Connection
        self.input_ended = False  # the client half-closed with input still unread
        self._read_at: deque[tuple[int, float]] = deque()  # (last seq a read journaled, when read): for gateway_ack_us
        self._login_timer: asyncio.TimerHandle | None = None  # closes the connection if it has not logged in by then

    @property
    def owner(self) -> str:
        return self.conn.owner

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = transport = cast(asyncio.Transport, transport)
        self.flow = FlowControl(transport)
        limit_buffers(transport, WRITE_HIGH)
        self.peer = self.conn.peer = peer_name(transport)
        self.address = address_of(self.peer)
        refusal = self.gw.admit(self)
        if refusal is not None:
            transport.write(R.to_text(R.Error("too_many_connections", refusal)))
            transport.close()
            return
        if self.gw.login_timeout:
            self._login_timer = asyncio.get_running_loop().call_later(self.gw.login_timeout, self._login_expired)
        log.info("session_open", peer=self.peer, owner=self.owner)
        transport.write(self.conn.hello())
        if self.gw.closing:
            self.flow.pause("closing")

    def data_received(self, data: bytes) -> None:
        if self.unread or len(data) > INPUT_SLICE or self.gw.hold_back(self):
            self.unread += data
            if self.flow is not None:
                self.flow.pause("input")
            self.gw.schedule_input(self)
            return
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        started = time.perf_counter()
        journaled = self.conn.last_seq
        self._after(self.conn.receive(data))
        if self.conn.last_seq != journaled:
            self._read_at.append((self.conn.last_seq, started))
        self.gw.read_us.record(int((time.perf_counter() - started) * 1e6))

    def take_slice(self) -> bool:
        """Hand the Connection the next slice of unread input; True while more is left
        (False also while the gateway holds input back: it reschedules the session)."""
        if self.transport is None or self.transport.is_closing():
            self.unread = b""
            return False
        if self.gw.hold_back(self):
            return False
        data, self.unread = self.unread[:INPUT_SLICE], self.unread[INPUT_SLICE:]
        self._receive(data)
        if self.unread:
            return True
        if self.flow is not None:
            self.flow.resume("input")
        return False

    def eof_received(self) -> bool:
        # Half-close: the client sent everything; its replies and reports still go out.
        if self.unread:
            self.input_ended = True  # its EOF is handled after the rest of its input (take_slice)
        else:
            self._after(self.conn.eof())
        return True  # keep the transport open for writing

    def connection_lost(self, exc: Exception | None) -> None:
        if self._login_timer is not None:
            self._login_timer.cancel()
        self.gw.forget(self)
        self.conn.closed()  # cancel_on_disconnect: its orders go now
        log.info("session_closed", peer=self.peer, owner=self.owner, error=str(exc) if exc else None)

    def pause_writing(self) -> None:
        assert self.flow is not None
        self.flow.pause("writes")

    def resume_writing(self) -> None:
        assert self.flow is not None
        self.flow.resume("writes")

    # ------------------------------------------------------------------ output

    def _after(self, data: bytes) -> bool:
        """Act on a Connection call: queue its bytes, follow its state; True while it waits
        for the journal or matching."""
        conn = self.conn
        if conn.owner != self.routed_as:  # logged in: reports for the account come here now
            if self._login_timer is not None:
                self._login_timer.cancel()
                self._login_timer = None
            self.gw.rekey(self, self.routed_as)
            self.routed_as = conn.owner
            log.info("session_login", peer=self.peer, account=conn.owner)
        if data:
            self.send(data)
        over = conn.over_inflight
        if over is not self._over_inflight and self.flow is not None:
            self._over_inflight = over
            self.flow.set("inflight", over)
        if conn.done:
            self.gw.schedule_write(self)  # write_out closes
        if conn.waiting:
            self.gw.wait(self)
            return True
        return False

    def _login_expired(self) -> None:
        """Not logged in within the gateway's login timeout: what is queued, the reason, the end."""
        transport = self.transport
        if self.conn.owner or transport is None or transport.is_closing():
            return
        log.info("session_login_timeout", peer=self.peer)
        self.write_out()
        error = R.Error("login_timeout", f"log in within {self.gw.login_timeout:g} s of connecting; connect again to go on")
        transport.write(R.to_json(error) if self.conn.json_mode else R.to_text(error))
        transport.close()

    def _ready(self) -> None:
        """A lookup the connection waited for (REPORTS) came back."""
        if not self._after(self.conn.settle()):
            self.gw.done_waiting(self)

    # What the gateway tells a session (each: act on the Connection's answer; True while it still waits)

    def released(self, through: int) -> bool:
        return self._after(self.conn.released(through))

    def matched(self) -> bool:
        return self._after(self.conn.settle()) if self.conn.needs_settle else True

    def input_done(self) -> None:
        """Its unread input is all handed over: now its half-close."""
        self.input_ended = False
        self._after(self.conn.eof())

    def send(self, data: bytes) -> None:
        """Queue bytes; everything queued in one loop iteration goes out in one write."""
        self.outbuf.append(data)
        if len(self.outbuf) == 1:
            self.gw.schedule_write(self)

    def write_out(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            self.outbuf.clear()
            return
        read_at = self._read_at
        if read_at:  # this write carries the replies of every read journaled up to durable
            now, durable = time.perf_counter(), self.gw.desk.intake.released()
            while read_at and read_at[0][0] <= durable:
                self.gw.ack_us.record(int((now - read_at.popleft()[1]) * 1e6))
        if self.outbuf:
            data = b"".join(self.outbuf) if len(self.outbuf) > 1 else self.outbuf[0]
            self.outbuf.clear()
            if not capped_write(transport, data, WRITE_CAP):
                log.warning("session_slow_consumer", peer=self.peer, owner=self.owner, buffered=transport.get_write_buffer_size())
                transport.abort()
                return
        if self.conn.done:
            transport.close()

    def goodbye(self, text: str) -> None:
        """Shutdown: whatever is held (all durable by now), then BYE, then close."""
        if self.transport is None or self.transport.is_closing() or self.conn.done:
            return
        self.send(self.conn.goodbye(text))
        self.write_out()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class Gateway:
    def __init__(
        self, desk: OrderDesk, *, max_sessions: int = MAX_SESSIONS, max_per_address: int = MAX_PER_ADDRESS, login_timeout: float = LOGIN_TIMEOUT,
        telemetry: Telemetry | None = None, backlog: Callable[[], int] = lambda: 0, max_backlog: int = MAX_BACKLOG,
    ) -> None:  # fmt: skip
        self.desk = desk
        self.backlog = backlog  # commands accepted and not yet matched
        self.max_backlog = max_backlog
        self._held_back: dict[Session, None] = {}  # sessions not read from until matching catches up
        self._intake_held = False  # a snapshot waits for matching to drain: read from nobody
        t = telemetry or Telemetry()
        self.read_us = t.histogram("gateway_read_us", "one socket read: parse, hold funds, journal, reply")
        self.ack_us = t.histogram("gateway_ack_us", "a read's commands -> the write that carries their ACKs")
        t.gauge("gateway_sessions", lambda: len(self.sessions))
        self.max_sessions = max_sessions
        self.max_per_address = max_per_address
        self.login_timeout = login_timeout  # seconds a connection may stay without logging in (0: for ever)
        self.sessions: dict[Session, None] = {}
        self.per_address: dict[str, int] = {}  # open connections by client address
        self.by_owner: dict[str, dict[Session, None]] = {}
        self._waiting: dict[Session, None] = {}  # sessions whose Connection is waiting
        self._dirty: dict[Session, None] = {}  # sessions with bytes queued for this iteration
        self._unread: dict[Session, None] = {}  # sessions with input left, served a slice each in turn
        self._server: asyncio.AbstractServer | None = None

    @property
    def closing(self) -> bool:
        return self.desk.closing

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None, reuse_port: bool = False) -> tuple[str, int]:
        self._server, host, port = await listen(lambda: Session(self), host, port, tls, reuse_port)
        return host, port

    # ------------------------------------------------------------------ sessions

    def admit(self, session: Session) -> str | None:
        """Take a new connection, or say why not."""
        if len(self.sessions) >= self.max_sessions:
            return f"the server is full ({self.max_sessions} connections); try again later"
        address = session.address
        if self.per_address.get(address, 0) >= self.max_per_address:
            return f"{self.max_per_address} connections from your address already; close some first"
        self.per_address[address] = self.per_address.get(address, 0) + 1
        self.sessions[session] = None
        return None

    def forget(self, session: Session) -> None:
        if session in self.sessions:  # (one refused at admit was never counted)
            del self.sessions[session]
            left = self.per_address.get(session.address, 1) - 1
            if left > 0:
                self.per_address[session.address] = left
            else:
                self.per_address.pop(session.address, None)
        self._waiting.pop(session, None)
        self._unread.pop(session, None)
        self._held_back.pop(session, None)
        self._unroute(session, session.routed_as)

    def rekey(self, session: Session, old_owner: str) -> None:
        self._unroute(session, old_owner)
        if session in self.sessions and session.owner:
            self.by_owner.setdefault(session.owner, {})[session] = None

    def _unroute(self, session: Session, owner: str) -> None:
        mine = self.by_owner.get(owner)
        if mine is not None:
            mine.pop(session, None)
            if not mine:
                del self.by_owner[owner]

    def wait(self, session: Session) -> None:
        self._waiting[session] = None

    def done_waiting(self, session: Session) -> None:
        self._waiting.pop(session, None)

    def schedule_write(self, session: Session) -> None:
        """Write the session's queued bytes once this loop iteration's work is done."""
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self._write_out)
        self._dirty[session] = None

    def write_now(self) -> None:
        """Write what is queued now, not at the end of the loop step: a durable batch's ACKs
        and fills, once matching has applied it (tickline/app.py, Durable). Left to the end
        of the step, ACKs waited behind other callbacks: 0.7 ms p50, 3.3 ms p99 at 10,000/s.
        (Written before matching, a market order sent right after a resting order's ACK was
        priced against a book without it: tests/test_recovery.py saw "no_liquidity".)"""
        if self._dirty:
            self._write_out()

    def _write_out(self) -> None:
        dirty, self._dirty = self._dirty, {}
        for session in dirty:
            session.write_out()

    def schedule_input(self, session: Session) -> None:
        """Serve the session's unread input a slice per loop step, in turn with the others'."""
        if not self._unread:
            asyncio.get_running_loop().call_soon(self._take_slices)
        self._unread[session] = None

    def hold_back(self, session: Session) -> bool:
        """Matching is too far behind: stop reading from this session until it catches up."""
        if session in self._held_back:
            return True
        if not self._intake_held and self.backlog() < self.max_backlog:
            return False
        self._held_back[session] = None
        if session.flow is not None:
            session.flow.pause("backlog")
        return True

    def hold_intake(self, on: bool) -> None:
        """Stop (or start again) reading new commands from every client: a snapshot needs
        matching to catch up with the journal, which never happens under sustained
        overload while clients keep sending."""
        self._intake_held = on
        if not on:
            self._release_held_back()

    def _release_held_back(self) -> None:
        if self._held_back and not self._intake_held and self.backlog() < self.max_backlog // 2:
            held, self._held_back = self._held_back, {}
            for session in held:
                if session.flow is not None:
                    session.flow.resume("backlog")
                if session.unread:
                    self.schedule_input(session)

    def _take_slices(self) -> None:
        unread, self._unread = self._unread, {}
        for session in unread:
            if session.take_slice():
                self.schedule_input(session)
            elif session.input_ended and not session.unread:  # not merely held back
                session.input_done()

    # ------------------------------------------------------------------ progress

    def on_released(self, through: int) -> None:
        """Every ticket up to through is decided and durable (serve: the journal has synced
        it; a cluster: the risk shards decided it): release those replies."""
        waiting = self._waiting
        for session in list(waiting):
            if not session.released(through):
                del waiting[session]

    def on_matched(self) -> None:
        """A matching step ran: queries, QUITs and EOFs waiting for it may go, and clients
        held back for the backlog may send again."""
        self._release_held_back()
        waiting = self._waiting
        for session in list(waiting):
            if not session.matched():
                del waiting[session]

    def deliver(self, events: list[Event]) -> None:
        """Execution reports from a matching step, to every live session of each owner."""
        self.send_reports(self.desk.reports(events))

    def send_reports(self, reports: list[Report]) -> None:
        """Reports from desk.reports (which moved the open orders on first), to every live
        session of each owner in its own form (that of its last request): formatted at most
        once per form, and only for owners with a session here."""
        outgoing: dict[Session, list[bytes]] = {}
        by_owner, instruments = self.by_owner, self.desk.instruments
        for e in reports:
            sessions = by_owner.get(e.owner)
            if not sessions:
                continue
            text_of, struct, fields = report_fields(e, instruments)
            text = json = b""
            for session in sessions:
                if session.conn.json_mode:  # each connection in its own form
                    json = json or R.to_json(struct(*fields))
                    outgoing.setdefault(session, []).append(json)
                else:
                    text = text or text_of(*fields)
                    outgoing.setdefault(session, []).append(text)
        for session, chunks in outgoing.items():
            data = session.conn.report(b"".join(chunks))
            if data:
                session.send(data)
        self.on_matched()

    # ------------------------------------------------------------------ shutdown

    def stop_accepting(self) -> None:
        """Close the listening socket and stop reading from every session."""
        self.desk.closing = True
        if self._server is not None:
            self._server.close()
        for session in self.sessions:
            if session.flow is not None:
                session.flow.pause("closing")

    async def close(self, text: str, grace: float) -> None:
        """BYE to every session, then wait (up to grace) for their buffers to flush and close."""
        await close_all(self._server, lambda: self.sessions, text, grace)
