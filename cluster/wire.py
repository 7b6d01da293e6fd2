"""What the cluster's processes say to each other over JetStream: subjects and messages.

One stream, TICKLINE (3 replicas, every write fsync'd), holds every stage's input:

    in.<risk shard>.<writer>      Submit from a gateway, Settle from an engine shard: the
                                  risk shard's one ordered input (the merge is the stream's)
    orders.<engine shard>.<risk>  Sequenced: commands a risk shard accepted, with their ids;
                                  an engine shard reads orders.<its shard>.>, and the read
                                  replicas (gateways, notifiers, trade log) read orders.>
    verdicts.<gateway>            Verdicts: what a risk shard refused (and accepted
                                  transfers), for the one gateway incarnation that sent them
    md.<engine shard>             MarketUpdates: the trades, level changes and quotes its
                                  matching made, with their per-symbol seqs; the notifiers
                                  read md.> (and keep no books)
    reports.<engine shard>        Reports: its input messages (orders.<shard>.>) as read,
                                  with the trades and execution reports their matching
                                  made; the trade log reads reports.> (and keeps no books)

Each subject has exactly one writer (the <writer>/<risk> part names it), so a stage that
restarts finds what it already published as the last message on its own subjects
(header INPUT_SEQ, and PART for one input's output sent in several messages: a market
order that sweeps tens of thousands of resting orders), publishes nothing twice, and
fences a second copy of itself with Nats-Expected-Last-Subject-Sequence. Verdicts change
no state and have many writers (every risk shard): they are published before the batch's
orders (so a restarted shard knows they went out) with a Nats-Msg-Id, and stored: a
gateway whose NATS connection broke for a moment still reads its refusals (plain NATS
would have lost them, and its client's replies, held in request order behind the REJ,
would have waited forever).
"""

from __future__ import annotations

import zlib

import msgspec

from protocol.messages import Canceled, Command, Fill, MarketData, Rejected, Replaced, Report, Trade

STREAM = "TICKLINE"
SUBJECTS = ["in.>", "orders.>", "verdicts.>", "md.>", "reports.>"]
INPUT_SEQ = "Tickline-Input-Seq"  # header: the stream sequence of the input a message came from
PART = "Tickline-Part"  # header "<i>/<n>": one input's output too large for one message, in n parts


class Submit(msgspec.Struct, array_like=True, tag="submit"):
    """A gateway's group commit to one risk shard: commands and the gateway's tokens for
    them; and, for the owners of its new orders and replaces, what the gateway had shown
    them (engine shard -> the input of the owner's last money event): the risk shard
    decides those once it has settled that much, so a CANCELED's release pays for the next
    order at once, as in `tickline serve`."""

    gateway: str
    tokens: list[int]
    cmds: list[Command]
    seen: dict[str, dict[int, int]] = {}


Settlement = Fill | Canceled | Replaced | Rejected


class Settle(msgspec.Struct, array_like=True, tag="settle"):
    """An engine shard's matching events that move the money of one risk shard's accounts:
    every such event of its input messages up to stream sequence `through`. (One input's
    events sent in parts: every part but the last has the previous input's `through`, so
    the risk shard calls that input settled only once all of it is.)"""

    events: list[Settlement]
    engine: int
    through: int


class MarketUpdates(msgspec.Struct, array_like=True):
    """An engine shard's market data for its input messages up to the one in the header
    (INPUT_SEQ): each symbol's updates in its md_seq order, as `tickline serve` sends them."""

    events: list[MarketData]


class Reports(msgspec.Struct, array_like=True):
    """What an engine shard's matching made for the trade log, for its input messages up to
    the one in the header (INPUT_SEQ): those messages (Sequenced, their bytes as read: the
    commands' audit rows and times), then their trades and execution reports in the order
    matching made them."""

    orders: list[msgspec.Raw]
    events: list[Trade | Report]


class BalancesAsk(msgspec.Struct, array_like=True):
    """BALANCES, asked of a risk shard once it has settled what the asker has seen: for each
    engine shard, the input (stream sequence) of the last event that moved the account's money."""

    account: str
    seen: dict[int, int]


class Sequenced(msgspec.Struct, array_like=True, tag="sequenced"):
    """Commands a risk shard accepted, in its order, for one engine shard: each with its id
    (the order id of a new order), where it came from (gateway, token), and when its input
    was stored (the exchange's time for it and its trades)."""

    ts_ns: list[int]
    seqs: list[int]
    cmds: list[Command]
    gateways: list[str]
    tokens: list[int]

    def part(self, start: int, end: int) -> Sequenced:
        """Commands start to end (all of them: this one, not a copy)."""
        if start == 0 and end == len(self.seqs):
            return self
        return Sequenced(self.ts_ns[start:end], self.seqs[start:end], self.cmds[start:end], self.gateways[start:end], self.tokens[start:end])

    def cut(self, end: int) -> Sequenced:
        """Commands up to end, taken out of this one."""
        head = Sequenced(self.ts_ns[:end], self.seqs[:end], self.cmds[:end], self.gateways[:end], self.tokens[:end])
        for column in (self.ts_ns, self.seqs, self.cmds, self.gateways, self.tokens):
            del column[:end]
        return head

    def runs(self) -> list[tuple[int, list[Command], int]]:
        """The commands as journal batches (first id, commands, time): each run of ids one
        apart that was stored at one time (a Submit's; with k risk shards a shard's ids are
        k apart, so each command is a batch of its own)."""
        out: list[tuple[int, list[Command], int]] = []
        last_seq = last_ts = -1
        for ts, seq, cmd in zip(self.ts_ns, self.seqs, self.cmds, strict=True):
            if seq == last_seq + 1 and ts == last_ts:
                out[-1][1].append(cmd)
            else:
                out.append((seq, [cmd], ts))
            last_seq, last_ts = seq, ts
        return out


class Verdicts(msgspec.Struct, array_like=True):
    """What a risk shard tells one gateway directly: (token, 0, reason, text) for a command
    it refused (a duplicate transfer: the seq it was applied as, not 0), (token, seq, "", "")
    for an accepted transfer (orders are heard of on the stream)."""

    results: list[tuple[int, int, str, str]]


InMessage = Submit | Settle
encode = msgspec.msgpack.Encoder().encode
decode_in = msgspec.msgpack.Decoder(InMessage).decode
decode_sequenced = msgspec.msgpack.Decoder(Sequenced).decode
decode_verdicts = msgspec.msgpack.Decoder(Verdicts).decode
decode_balances_ask = msgspec.msgpack.Decoder(BalancesAsk).decode
decode_market_updates = msgspec.msgpack.Decoder(MarketUpdates).decode
decode_reports = msgspec.msgpack.Decoder(Reports).decode


class BalancesAnswer(msgspec.Struct, array_like=True):
    """A risk shard's answer: the account's (asset, available, locked) rows, and the engine
    shards whose settlements of what the asker has seen it has not had in time (then the
    rows are stale: the gateway says so rather than show them)."""

    rows: list[tuple[str, int, int]]
    behind: list[int] = []


decode_balances_answer = msgspec.msgpack.Decoder(BalancesAnswer).decode


class Layout(msgspec.Struct, frozen=True):
    """Which shard owns what: accounts to risk shards by hash, symbols to engine shards by
    table (a symbol not in the table is on shard 0)."""

    risk_shards: int = 1
    engines: dict[str, int] = {}
    engine_shards: int = 1

    def risk_of(self, account: str) -> int:
        # crc32, not hash(): the same in every process and every run
        return zlib.crc32(account.encode()) % self.risk_shards if self.risk_shards > 1 else 0

    def engine_of(self, symbol: str) -> int:
        return self.engines.get(symbol, 0)

    def order_id(self, shard: int, n: int) -> int:
        """The n-th command (from 0) a risk shard accepts: with one shard 1, 2, 3... like
        `tickline serve`'s journal; with k shards every k-th number, offset by the shard."""
        return n * self.risk_shards + shard + 1


LOGGED_SUBJECT = "logged.tradelog"  # request: how far the trade log's rows reach (cluster/trade_log.py Logged)


def in_subject(shard: int, writer: str) -> str:
    return f"in.{shard}.{writer}"


def md_subject(engine: int) -> str:
    return f"md.{engine}"


def reports_subject(engine: int) -> str:
    return f"reports.{engine}"


def orders_subject(engine: int, risk: int) -> str:
    return f"orders.{engine}.r{risk}"
