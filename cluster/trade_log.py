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

from collections import deque
from typing import Any

from cluster.snapshots import StateSnapshots
from cluster.stream import Tail
from cluster.wire import Sequenced, decode_reports, decode_sequenced
from protocol.messages import Report, Trade


class Logged:
    """How far the trade log's committed rows reach, per engine shard: the last input of its
    (an orders.<e> stream sequence) whose trades and reports are all in the file. A gateway
    asks before it answers REPORTS, TRADES, KLINES or TICKER from the file (LOGGED_SUBJECT),
    so that a reply never says `through=` past rows not written yet: the client would take
    up from there and never see them."""

    def __init__(self, known: dict[int, int]) -> None:
        self.committed = dict(known)  # engine shard -> input, rows committed
        self.handed: deque[tuple[int, int, int]] = deque()  # (the writer's units through it, engine shard, input)

    def hand(self, units: int, engine: int, through: int) -> None:
        """The rows of engine shard's inputs through `through` are handed over, the writer's
        count of units then at `units`."""
        self.handed.append((units, engine, through))

    def now(self, committed_units: int) -> dict[int, int]:
        handed, committed = self.handed, self.committed
        while handed and handed[0][0] <= committed_units:
            _, engine, through = handed.popleft()
            committed[engine] = max(committed.get(engine, 0), through)
        return committed

    def all(self) -> dict[int, int]:
        """Committed and handed over (a snapshot, written once they are committed)."""
        out = dict(self.committed)
        for _, engine, through in self.handed:
            out[engine] = max(out.get(engine, 0), through)
        return out


class ReportsTail(Tail):
    """reports.>: every engine shard's trades and reports, in the stream's order."""

    def __init__(self, js: Any, snapshots: StateSnapshots) -> None:
        super().__init__(js, "reports.>")
        self.snapshots = snapshots

    async def reports(self) -> list[tuple[int, int, list[Sequenced], list[Trade | Report]]]:
        """Of every message that has arrived (at least one): its engine shard, the last input
        it completes, its commands as sequenced, and the trades and reports they made."""
        out: list[tuple[int, int, list[Sequenced], list[Trade | Report]]] = []
        for inp in await self.batch():
            r = decode_reports(inp.data)
            inputs = [decode_sequenced(raw) for raw in r.orders]
            out.append((int(inp.subject.rsplit(".", 1)[1]), inp.through, inputs, r.events))  # reports.<engine>
            commands = sum(len(s.seqs) for s in inputs)
            self.mark(inp.seq, commands)
            self.snapshots.applied(commands)
        return out
