"""The trade log's input: what the engine shards' matching made for it (reports.>).

The trade log keeps no books. Each engine shard publishes, per batch, the input messages
it matched (the commands, as the risk shards sequenced them: their audit rows and times)
with the trades and execution reports they made, so the trade log writes the rows
`tickline serve`'s would without matching anything again. Its only state is how far it
has read: its snapshots (cluster/snapshots.py StateSnapshots, `through-<seq>.msgpack` in
<cluster dir>/snapshots/tradelog-0/) are written once the rows up to there are committed,
and what it reads again after a restart goes in with INSERT OR IGNORE.
"""

from __future__ import annotations

from typing import Any

from cluster.snapshots import StateSnapshots
from cluster.stream import Tail
from cluster.wire import Sequenced, decode_reports, decode_sequenced
from protocol.messages import Report, Trade


class ReportsTail(Tail):
    """reports.>: every engine shard's trades and reports, in the stream's order."""

    def __init__(self, js: Any, snapshots: StateSnapshots) -> None:
        super().__init__(js, "reports.>")
        self.snapshots = snapshots

    async def reports(self) -> list[tuple[list[Sequenced], list[Trade | Report]]]:
        """Of every message that has arrived (at least one): its commands as sequenced, and
        the trades and reports they made."""
        out: list[tuple[list[Sequenced], list[Trade | Report]]] = []
        for inp in await self.batch():
            r = decode_reports(inp.data)
            inputs = [decode_sequenced(raw) for raw in r.orders]
            out.append((inputs, r.events))
            commands = sum(len(s.seqs) for s in inputs)
            self.mark(inp.seq, commands)
            self.snapshots.applied(commands)
        return out
