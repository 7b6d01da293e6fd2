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
its ref makes it idempotent: the same ref again changes nothing (the rules and the
reply lines are exchange/transfers.py's, shared with the cluster's `tickline cluster deposit`). `tickline accounts
deposit|withdraw` is the client (netio/unix_lines.py).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Awaitable, Callable

import structlog

from exchange import transfers
from gateway.desk import OrderDesk
from protocol.messages import Problem
from telemetry.registry import Telemetry

log = structlog.get_logger("admin")

MAX_LINE = 1024


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

    def on_released(self, through: int) -> None:
        """Every ticket up to through is decided and durable (tickline/app.py: the journal synced)."""
        waiting = self._waiting
        while waiting and waiting[0][0] <= through:
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
        cmd = transfers.parse_line(line, self.desk.risk.assets)
        if isinstance(cmd, Problem):
            return transfers.reply(None, cmd)
        if not await self.account_exists(cmd.account):
            return transfers.reply(cmd, transfers.unknown_account(cmd.account))
        ticket, decision = self.desk.submit(cmd)  # the sequencer: a ref applied before, or funds short, is refused there
        if type(decision) is Problem:
            return transfers.reply(cmd, decision)
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((ticket, done))
        intake = self.desk.intake
        if intake.released() >= ticket:
            self.on_released(intake.released())
        await done
        outcome = intake.decision(ticket) if decision is None else decision
        log.info("transfer", account=cmd.account, asset=cmd.asset, amount=cmd.amount, ref=cmd.ref, outcome=transfers.reply(cmd, outcome))
        return transfers.reply(cmd, outcome)
