"""Connection plumbing both TCP servers share: flow control, the capped write, peer names,
and closing every connection within a grace period.

Shaped after uvicorn's flow_control.py and server.py: reading is paused while any reason
holds (a set of reasons, so two causes never undo each other), and shutdown tells every
connection, waits up to a grace period for them to finish, then aborts the rest.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from typing import Callable, Iterable, Protocol

import structlog

log = structlog.get_logger("netio")


class CannotListen(Exception):
    """A port could not be bound (another server has it, or no permission)."""

    def __init__(self, host: str, port: int, exc: OSError) -> None:
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)  # the loop's own text repeats the address
        super().__init__(f"cannot listen on {host}:{port}: {reason}")


class FlowControl:
    """Pause reading while any reason holds; resume when the last one is lifted."""

    __slots__ = ("transport", "reasons", "_paused")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.reasons: set[str] = set()
        self._paused = False

    def pause(self, reason: str) -> None:
        self.reasons.add(reason)
        self._sync()

    def resume(self, reason: str) -> None:
        self.reasons.discard(reason)
        self._sync()

    def set(self, reason: str, on: bool) -> None:
        if on:
            self.pause(reason)
        else:
            self.resume(reason)

    def _sync(self) -> None:
        want = bool(self.reasons)
        if want == self._paused or self.transport.is_closing():
            return
        self._paused = want
        if want:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()


def capped_write(transport: asyncio.Transport, data: bytes, cap: int) -> bool:
    """Write; False if the peer now has more than `cap` bytes unread (the caller drops it).

    Each server's high-water mark (set_write_buffer_limits) pauses the producer first; the
    cap is the hard bound for bytes the peer itself did not ask for (others' trades).
    """
    transport.write(data)
    return transport.get_write_buffer_size() <= cap


def limit_buffers(transport: asyncio.WriteTransport, high: int, sndbuf: int | None = None) -> None:
    """The user-space high-water mark, and optionally a bound on the kernel's send buffer:
    without one, a peer that does not read parks megabytes there before flow control notices."""
    transport.set_write_buffer_limits(high=high)
    sock = transport.get_extra_info("socket")
    if sndbuf is not None and sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)


def peer_name(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if peer else "?"


def address_of(peer: str) -> str:
    """The client's address in a peer_name (its port left off): what per-address limits key on."""
    return peer.rsplit(":", 1)[0]


class Closable(Protocol):
    def goodbye(self, text: str) -> None: ...
    def abort(self) -> None: ...


async def close_all(
    server: asyncio.AbstractServer | None,
    connections: Callable[[], Iterable[Closable]],
    text: str,
    grace: float,
) -> None:
    """Stop listening, tell every connection `text`, wait up to `grace` s for them to
    close by themselves (their buffers flushed), then abort whatever is left."""
    if server is not None:
        server.close()
    for conn in list(connections()):
        conn.goodbye(text)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while any(True for _ in connections()) and loop.time() < deadline:
        await asyncio.sleep(0.02)
    left = list(connections())
    if left:
        log.warning("connections_aborted", count=len(left), grace=grace)
    for conn in left:
        conn.abort()
    if server is not None:
        await server.wait_closed()


async def listen(
    factory: Callable[[], asyncio.Protocol], host: str, port: int, tls: ssl.SSLContext | None = None, reuse_port: bool = False
) -> tuple[asyncio.AbstractServer, str, int]:
    """A listening TCP server (TLS if given a context); returns it with the address it bound.
    reuse_port: several processes listen on one port and the kernel spreads the
    connections (a cluster's gateways, its notifiers)."""
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(factory, host, port, reuse_address=True, reuse_port=reuse_port or None, backlog=1024, ssl=tls, ssl_handshake_timeout=10 if tls else None)
    except OSError as exc:
        raise CannotListen(host, port, exc) from None
    address = server.sockets[0].getsockname()
    return server, address[0], address[1]

