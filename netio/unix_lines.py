"""A line client for a local Unix socket (the admin channel): send lines, read one reply each."""

from __future__ import annotations

import socket
from pathlib import Path


def send_lines(path: Path, lines: list[str], timeout: float = 30.0) -> list[str]:
    """Send every line at once, then read until there is one reply per line (or EOF)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall("".join(line + "\n" for line in lines).encode())
        buf = b""
        while buf.count(b"\n") < len(lines):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    return buf.decode().splitlines()
