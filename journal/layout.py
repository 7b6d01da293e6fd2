"""The data directory's layout, spelled once.

    <data-dir>/journal/seg-<first seq>.tlj    the order journal (the truth)
    <data-dir>/snapshots/snap-<seq>.tls        book snapshots (derived, for fast restart)
    <data-dir>/trades.sqlite                   trade log and order audit (derived)
    <data-dir>/accounts.sqlite                 accounts and password hashes (0600)
    <data-dir>/admin.sock                      the admin channel of the running server (0600)
    <data-dir>/LOCK                            held (flock) by the one server using it,
                                               and by its journal writer process
"""

from __future__ import annotations

import fcntl
import os
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

    @property
    def accounts(self) -> Path:
        return self.root / "accounts.sqlite"

    @property
    def admin_socket(self) -> Path:
        return self.root / "admin.sock"


def segment_path(journal_dir: Path, first_seq: int) -> Path:
    """A journal segment is named by the first sequence number it holds."""
    return journal_dir / f"seg-{first_seq:020d}.tlj"


def segment_paths(journal_dir: Path) -> list[Path]:
    return sorted(journal_dir.glob("seg-*.tlj"))


def first_seq_of(segment: Path) -> int:
    return int(segment.stem.removeprefix("seg-"))


def fsync_dir(directory: Path) -> None:
    """Make a new file's directory entry durable too."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DataDirInUse(Exception):
    """Another server holds the data directory."""


class DataDirLock:
    """An exclusive OS lock (flock) on <data-dir>/LOCK, held for the server's life.

    The kernel drops it when the process ends, however it ends (kill -9 included), so a
    stale LOCK file never blocks a restart. The file holds the owner's pid, for the error
    a second server prints. Read-only tools (replay, trades, orders) do not take it.
    """

    def __init__(self, data: DataDir) -> None:
        self.path = data.root / "LOCK"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(
                f"data directory {self.path.parent} is in use by another tickline server (pid {holder}); "
                "stop it first, or give this one another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def fileno(self) -> int:
        """The locked descriptor: a child process that inherits it holds the lock until it exits too."""
        assert self._fd is not None, "acquire() first"
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None
