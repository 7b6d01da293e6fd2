"""The ceiling: a minimal uvloop line server that answers every line and does no work.

    python -m bench.baseline [--port 0]

Each request line gets one reply line, `ACK <the request>`, so the load generator can
match it by its id=; all replies to one data_received go out in one write. No parsing,
no journal, no matching: whatever the exchange does, it cannot beat this on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvloop


class EchoAck(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.partial = b""

    def data_received(self, data: bytes) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if lines:
            self.transport.write(b"".join([b"ACK " + line + b"\n" for line in lines]))


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(EchoAck, "127.0.0.1", port)
    sys.stdout.write(f"listening port={server.sockets[0].getsockname()[1]}\n")
    sys.stdout.flush()
    await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    try:
        uvloop.run(main(parser.parse_args().port))
    except KeyboardInterrupt:
        pass
