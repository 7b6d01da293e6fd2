"""The data directory's layout, spelled once.

    <data-dir>/journal/seg-<first seq>.tlj    the order journal (the truth)
    <data-dir>/snapshots/snap-<seq>.tls        book snapshots (derived, for fast restart)
    <data-dir>/trades.sqlite                   trade log and order audit (derived)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataDir:
    root: Path

    @property
    def journal(self) -> Path:
        return self.root / "journal"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def trades(self) -> Path:
        return self.root / "trades.sqlite"
