"""Every sample session in README.md and docs/*.md, replayed against the real server.

A sample is a fenced block marked `session`. Each line is `<who>> <request>` (sent on
that connection, opened on first use; a name ending in `@md` connects to the market-data
port) or `<who>< <reply>` (the next line that connection receives must equal it). In a
reply, `*` matches any run of characters (times, counts that differ run to run). Each
block runs on a fresh server and data directory with the demo accounts of `make run`
(alice and bob, whose deposits take journal seqs 1-10: the first order is 11).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from tests.harness import ROOT, Client, Server

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```session\n(.*?)^```", re.M | re.S)
LINE = re.compile(r"^(\S+?)([<>]) ?(.*)$")


def sessions() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for i, m in enumerate(BLOCK.finditer(text), 1):
            found.append((f"{doc.name}#{i}", m.group(1)))
    return found


def matches(pattern: str, line: str) -> bool:
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), line) is not None


def run_session(server: Server, transcript: str) -> None:
    conns: dict[str, Client] = {}

    for n, raw in enumerate(transcript.splitlines(), 1):
        if not raw.strip():
            continue
        m = LINE.match(raw)
        assert m, f"line {n}: not '<who>> request' or '<who>< reply': {raw!r}"
        who, arrow, text = m.groups()
        if who not in conns:
            conns[who] = Client(server.md_port if who.endswith("@md") else server.port, greet=False)
        conn = conns[who]
        if arrow == ">":
            conn.send(text + "\n")
            continue
        got = conn.line()
        assert matches(text, got), f"line {n} ({who}): expected {text!r}, got {got!r}"


@pytest.mark.parametrize("name, transcript", sessions(), ids=[name for name, _ in sessions()])
def test_sample_session(name: str, transcript: str, tmp_path: Path) -> None:
    server = Server(tmp_path / "data", "--demo", funded=False).start()
    try:
        run_session(server, transcript)
    finally:
        server.kill()


def test_the_docs_have_samples_and_the_checker_can_fail(tmp_path: Path) -> None:
    assert len(sessions()) >= 5
    server = Server(tmp_path / "data").start()
    try:
        with pytest.raises(AssertionError, match="expected"):
            run_session(server, "a< HELLO *\na> PING\na< PONG!\n")
    finally:
        server.kill()


def test_protocol_md_lists_every_reason_code() -> None:
    from protocol.messages import Reason

    text = (ROOT / "docs" / "PROTOCOL.md").read_text()
    assert [r.value for r in Reason if f"`{r.value}`" not in text] == []


def test_the_readme_script_example_works_as_printed(tmp_path: Path) -> None:
    """Reported: the README's `printf ... | nc -q 2` example had no LOGIN (REJ not_logged_in)."""
    script = re.search(r"`printf '(.*?)' \| nc -q 2 localhost 7001`", (ROOT / "README.md").read_text())
    assert script is not None
    server = Server(tmp_path / "data", "--demo", funded=False).start()
    try:
        client = Client(server.port)
        client.send(script.group(1).replace("\\n", "\n").encode())
        client.sock.shutdown(socket.SHUT_WR)  # what nc -q does at the end of its input
        assert client.lines(4) == ["LOGGED_IN account=alice open=0", "ACK 11 BUY AAPL 1 100.10 IOC", "CANCELED 11 leaves=1 reason=expired", "BYE goodbye"]
        assert client.closed()
    finally:
        server.kill()
