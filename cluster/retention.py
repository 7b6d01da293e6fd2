"""Dropping the stream's old messages once every role's snapshots cover them (`tickline
cluster compact`, docs/SCALING.md "Retention").

A role restarts from its newest snapshot and reads its input from the message after it, so
the messages up to the oldest snapshot any role keeps (each keeps two: the older one is
loaded when the newer is damaged) are needed by nobody, with two exceptions, both kept:
- each subject's last message: a restarted stage learns from it what it already published
  (header Tickline-Input-Seq) and fences its next publish on its sequence;
- messages younger than the stream's duplicate window: a gateway that retries a Submit
  must still find its Nats-Msg-Id there and be stored once.

The point is recorded first (<dir>/snapshots/dropped-through, cluster/snapshots.py), then
the messages dropped: a role whose snapshots do not reach it (its directory lost, or a role
added since) refuses to start rather than build its state from a stream with a hole.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.snapshots import dropped_through, kept_snapshots, record_dropped
from cluster.wire import STREAM

STEP = 1_000  # stream sequences one purge drops at most


@dataclass
class Compaction:
    through: int  # every message up to this stream sequence is dropped, but for each subject's last
    dropped: int  # messages dropped now
    left: int  # messages in the stream after
    why_not: str = ""  # why nothing could be dropped


async def compact(js: Any, snapshots_root: Path, roles: list[str], now: datetime.datetime | None = None) -> Compaction:
    """Drop what every role's snapshots cover; roles are their directories' names (risk-0...)."""
    info = await js.stream_info(STREAM, subjects_filter=">")
    before, done = info.state.messages, dropped_through(snapshots_root)
    covered: list[int] = []
    for role in roles:
        kept = kept_snapshots(snapshots_root / role)
        if not kept:
            return Compaction(done, 0, before, f"{role} has no snapshot yet")
        covered.append(min(kept))
    cut = first = min(covered)
    if first <= done:
        return Compaction(done, 0, before, "the snapshots cover nothing more yet")
    # Younger than the duplicate window: kept. Messages are stored in time order, so if the
    # first one at or after the cut is old enough, so is everything before it; otherwise
    # step back (dropping less than could be is safe).
    window = datetime.timedelta(seconds=float(info.config.duplicate_window or 0))
    now = now or datetime.datetime.now(datetime.timezone.utc)
    while cut > done:
        stored = await _stored_at(js, cut)
        if stored is not None and now - stored >= window:
            break
        cut -= max(1, (cut - done) // 2)
    if cut <= done:
        return Compaction(done, 0, before, "what the snapshots cover is younger than the stream's duplicate window")
    record_dropped(snapshots_root, cut)
    ends = {subject: min(cut + 1, int((await js.get_last_msg(STREAM, subject)).seq)) for subject in sorted(info.state.subjects or {})}
    # In steps of STEP sequences, oldest first, each followed by a pause as long as it took:
    # one purge of ~110,000 messages stalled the stream's appends (ACK max 794 ms at 2,000
    # orders/s; in steps of 1,000, 138 ms: docs/SCALING.md "Retention").
    for bound in range(done + STEP, cut + 1 + STEP, STEP):  # (the last at or past cut + 1)
        for subject, end in ends.items():
            if end > bound - STEP:  # (purge drops below `seq`: each subject's last stays)
                took = time.monotonic()
                await js.purge_stream(STREAM, seq=min(bound, end), subject=subject)
                await asyncio.sleep(time.monotonic() - took)
    after = (await js.stream_info(STREAM)).state.messages
    return Compaction(cut, before - after, after)


async def _stored_at(js: Any, seq: int) -> datetime.datetime | None:
    from nats.js.errors import NotFoundError

    try:
        msg = await js.get_msg(STREAM, seq, next=True)  # (the first stored at or after seq)
    except NotFoundError:  # (nothing stored there: cannot tell, so kept)
        return None
    return msg.time
