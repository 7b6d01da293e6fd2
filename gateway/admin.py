"""The admin channel: deposits and withdrawals, from the data directory's owner only.

A Unix socket at <data>/admin.sock, mode 0600: only the user who runs the server (or
root) can connect; nothing listens on the network. One request per line, one reply per
line, in order:

    DEPOSIT <account> <asset> <amount> <ref>   ->  OK <seq> deposited   (once durable)
    WITHDRAW <account> <asset> <amount> <ref>  ->  OK <seq> withdrawn
                                               ->  OK <seq> duplicate: ref <ref> was applied before
                                               ->  ERR <code> <text>
    TELEMETRY [RESET]                          ->  one line of JSON: the server's figures
                                                   (RESET: then start them again)

A transfer changes balances, so it is sequenced and journaled like an order (Desk.submit);
its ref makes it idempotent: the same ref again changes nothing. `tickline accounts
deposit|withdraw` is the client (netio/unix_lines.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Awaitable, Callable

import structlog

from exchange.risk import FEE_ACCOUNT
from gateway.desk import OrderDesk
from protocol.messages import Problem, Transfer
from protocol.text import clip
from telemetry.registry import Telemetry

log = structlog.get_logger("admin")

REF = re.compile(r"[A-Za-z0-9._:-]{1,64}", re.ASCII)
MAX_LINE = 1024


def parse_transfer(line: str, desk: OrderDesk) -> Transfer | str:
    """An admin line to a Transfer, or the one-line error (code first) that refuses it."""
    args = line.split()
    if len(args) != 5 or args[0].upper() not in ("DEPOSIT", "WITHDRAW"):
        return "bad_request usage: DEPOSIT|WITHDRAW <account> <asset> <amount> <ref>"
    verb, account, asset_name, amount_text, ref = args
    asset = desk.risk.assets.get(asset_name.upper())
    if asset is None:
        return f"unknown_asset {clip(asset_name)} is not an asset here; assets: {' '.join(desk.risk.assets)}"
    amount = asset.parse(amount_text)
    if amount is None:
        return f"bad_amount {clip(amount_text)} is not a positive amount in units of {asset.unit.text}"
    if not REF.fullmatch(ref):
        return "bad_ref a ref is 1-64 of A-Z a-z 0-9 . _ : -"
    return Transfer(account, asset.name, amount if verb.upper() == "DEPOSIT" else -amount, ref)


class AdminServer:
    def __init__(self, desk: OrderDesk, account_exists: Callable[[str], Awaitable[bool]], telemetry: Telemetry | None = None) -> None:
        self.desk = desk
        self.account_exists = account_exists
        self.telemetry = telemetry or Telemetry()
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []
        self._server: asyncio.AbstractServer | None = None

    async def start(self, path: Path) -> None:
        path.unlink(missing_ok=True)  # a stale socket of a dead server (the data dir lock is ours)
        old = os.umask(0o177)  # created 0600, never briefly wider
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(path), limit=MAX_LINE)
        except OSError as exc:  # e.g. a data directory path longer than a Unix socket's ~107 bytes
            log.error("admin_channel_unavailable", path=str(path), error=str(exc), consequence="no deposits or withdrawals until restarted")
            return
        finally:
            os.umask(old)
        os.chmod(path, 0o600)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    def on_durable(self, durable_seq: int) -> None:
        waiting = self._waiting
        while waiting and waiting[0][0] <= durable_seq:
            _, done = waiting.pop(0)
            if not done.done():
                done.set_result(None)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    raw = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(b"ERR line_too_long an admin line is at most 1024 bytes\n")
                    break
                if not raw:
                    break
                line = raw.decode("ascii", "replace").strip()
                if line:
                    writer.write((await self._handle(line) + "\n").encode())
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _handle(self, line: str) -> str:
        words = line.upper().split()
        if words[0] == "TELEMETRY":
            report = json.dumps(self.telemetry.report(), separators=(",", ":"))
            if words[1:] == ["RESET"]:
                self.telemetry.reset()
            return report
        if self.desk.closing:
            return "ERR shutting_down the exchange is shutting down"
        cmd = parse_transfer(line, self.desk)
        if isinstance(cmd, str):
            return "ERR " + cmd
        if cmd.account != FEE_ACCOUNT and not await self.account_exists(cmd.account):
            return f"ERR unknown_account no account {clip(cmd.account)}; add it with: tickline accounts add {clip(cmd.account)}"
        before = self.desk.risk.refs.get(cmd.ref)
        if before is not None:
            return f"OK {before} duplicate: ref {cmd.ref} was applied before; nothing changed"
        seq = self.desk.submit(cmd)
        if isinstance(seq, Problem):
            return f"ERR {seq.reason.value} {seq.text}"
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((seq, done))
        if self.desk.durable_seq() >= seq:
            self.on_durable(self.desk.durable_seq())
        await done
        log.info("transfer", account=cmd.account, asset=cmd.asset, amount=cmd.amount, ref=cmd.ref, seq=seq)
        return f"OK {seq} {'deposited' if cmd.amount > 0 else 'withdrawn'}"
