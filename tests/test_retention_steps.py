"""`cluster compact`'s purges (cluster/retention.py): in steps of STEP stream sequences,
oldest first, each subject's last message kept, nothing at or past the cut touched. A fake
JetStream records the purges (the real one: tests/test_cluster.py's compaction tests)."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import cluster.retention as retention

NOW = datetime.datetime(2026, 12, 5, 12, 0, tzinfo=datetime.timezone.utc)


class FakeStream:
    """Messages 1..n, subject i % 3 (a, b, c), but subject q has only message 5."""

    def __init__(self, n: int) -> None:
        self.subjects = {seq: "q" if seq == 5 else "abc"[seq % 3] for seq in range(1, n + 1)}
        self.purges: list[tuple[str, int]] = []

    async def stream_info(self, name: str, subjects_filter: str | None = None) -> Any:
        counts: dict[str, int] = {}
        for subject in self.subjects.values():
            counts[subject] = counts.get(subject, 0) + 1
        return SimpleNamespace(state=SimpleNamespace(messages=len(self.subjects), subjects=counts), config=SimpleNamespace(duplicate_window=120.0))

    async def get_msg(self, name: str, seq: int, next: bool) -> Any:
        return SimpleNamespace(time=NOW - datetime.timedelta(hours=1))  # (all older than the window)

    async def get_last_msg(self, name: str, subject: str) -> Any:
        return SimpleNamespace(seq=max(seq for seq, s in self.subjects.items() if s == subject))

    async def purge_stream(self, name: str, seq: int, subject: str) -> None:
        self.purges.append((subject, seq))
        self.subjects = {k: s for k, s in self.subjects.items() if not (s == subject and k < seq)}


def test_the_purges_go_in_steps_oldest_first_and_keep_each_subjects_last_and_what_is_past_the_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "STEP", 10)
    monkeypatch.setattr(retention, "kept_snapshots", lambda directory: {"risk-0": [30, 40], "engine-0": [31]}[directory.name])
    stream = FakeStream(50)
    done = asyncio.run(retention.compact(stream, tmp_path, ["risk-0", "engine-0"], now=NOW))
    assert (done.through, done.why_not) == (30, "")
    # q's messages below its last (none here) go in the first step; a, b and c's through the cut
    steps = [(subject, bound) for bound in (10, 20, 30, 31) for subject in "abc"]
    assert stream.purges == steps[:3] + [("q", 5)] + steps[3:]
    assert sorted(stream.subjects) == [5, *range(31, 51)] and done.dropped == 29 and done.left == 21
    assert retention.dropped_through(tmp_path) == 30

    monkeypatch.setattr(retention, "kept_snapshots", lambda directory: {"risk-0": [40, 48], "engine-0": [45]}[directory.name])
    stream.purges.clear()
    done = asyncio.run(retention.compact(stream, tmp_path, ["risk-0", "engine-0"], now=NOW))  # from the last cut on
    assert done.through == 40 and stream.purges == [(subject, bound) for bound in (40, 41) for subject in "abc"]
    assert sorted(stream.subjects) == [5, *range(41, 51)]
