"""A gateway's way into the risk shards: group commit over JetStream.

Commands for one risk shard wait while that shard's previous message is in flight, then
go as one Submit (tokens and commands) to in.<shard>.<gateway>; the publish is retried
with the same Nats-Msg-Id until a quorum stores it, never given up (the client waits for
its ACK; the stream stores the message at most once).
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from cluster.stream import publish_retried
from cluster.wire import Layout, Submit, encode, in_subject
from protocol.messages import Command, NewOrder, Replace, Transfer

# What an owner's gateway has shown it: engine shard -> the input of its last money event
SeenOf = Callable[[str], dict[int, int] | None]

MAX_SUBMIT = 4_000  # commands in one message (~250 KiB)


class Submitter:
    def __init__(self, js: Any, name: str, layout: Layout, seen_of: SeenOf = lambda owner: None) -> None:
        self.js, self.name, self.layout, self.seen_of = js, name, layout, seen_of
        self.pending: list[Submit] = [Submit(name, [], []) for _ in range(layout.risk_shards)]
        self.busy = [False] * layout.risk_shards
        self._tasks: set[asyncio.Task[None]] = set()

    def forward(self, token: int, cmd: Command) -> None:
        account = cmd.account if isinstance(cmd, Transfer) else cmd.owner
        shard = self.layout.risk_of(account)
        p = self.pending[shard]
        p.tokens.append(token)
        p.cmds.append(cmd)
        if not self.busy[shard]:
            self.busy[shard] = True
            task = asyncio.get_running_loop().create_task(self._flush(shard))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _flush(self, shard: int) -> None:
        await asyncio.sleep(0)  # the rest of this loop step's commands join the message
        subject = in_subject(shard, self.name)
        while self.pending[shard].tokens:
            p = self.pending[shard]
            submit = Submit(self.name, p.tokens[:MAX_SUBMIT], p.cmds[:MAX_SUBMIT], self._seen(p.cmds[:MAX_SUBMIT]))
            del p.tokens[:MAX_SUBMIT], p.cmds[:MAX_SUBMIT]
            await publish_retried(self.js, subject, encode(submit), {"Nats-Msg-Id": f"{self.name}:{submit.tokens[0]}"})
        self.busy[shard] = False

    def _seen(self, cmds: list[Command]) -> dict[str, dict[int, int]]:
        """For the owners of the new orders and replaces: what they have been shown (as
        this message leaves: at least what each client had read when it sent its command)."""
        seen: dict[str, dict[int, int]] = {}
        for cmd in cmds:
            if type(cmd) is NewOrder or type(cmd) is Replace:
                owner = cmd.owner
                if owner not in seen and (shown := self.seen_of(owner)):
                    seen[owner] = shown  # (not copied: the Submit is encoded before anything awaits)
        return seen
