"""Accounts: who may log in. A `users` table in <data>/accounts.sqlite.

Passwords are stored as salted scrypt hashes ("scrypt$n$r$p$salt$hash", hex), checked in a
worker thread (one check costs ~70 ms of CPU here, which must not stall trading) with a
constant-time comparison. An unknown name costs the same check against a dummy hash, so
the time of a refusal does not tell whether the name exists. The password is never
logged, stored or echoed.

The server reads with aiosqlite (`Accounts`); the command line (`tickline accounts`)
writes with plain sqlite3 (`AccountAdmin`), safe while the server runs (SQLite WAL).
Balances are not here: they change with trading and live in the journal (exchange/risk.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from exchange.risk import FEE_ACCOUNT

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", re.ASCII)
SCRYPT_N = 2**14  # ~70 ms and 16 MiB per check on this machine kind
SCRYPT_R, SCRYPT_P = 8, 1
MAX_PASSWORD = 256

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
"""


class AccountError(Exception):
    """An account operation that cannot be done, said in one line."""


def hash_password(password: str, n: int = SCRYPT_N) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, maxmem=64 * 2**20, dklen=32)
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def password_matches(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode()[:MAX_PASSWORD], salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), maxmem=64 * 2**20, dklen=32)
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(got, bytes.fromhex(digest))


# Checked against for an unknown name, so that it costs what a known one does. A literal:
# hashing it at import cost every start 70 ms.
_DUMMY = "scrypt$16384$8$1$0e422271c8f17bb365e088486fcc6167$e6a7bd23b3bee4c26ff46d9ac87d2edd26a6989b88b2794053ec220334f718f9"


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise AccountError(f"account name {name[:40]!r}: use 1-32 of A-Z a-z 0-9 _ . -, starting with a letter or digit")
    return name


@dataclass(frozen=True)
class AccountRow:
    name: str
    created: str
    disabled: bool


class AccountAdmin:
    """Add, disable and list accounts (the command line and the demo set-up)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=10)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(SCHEMA)
        os.chmod(path, 0o600)  # password hashes: the data directory's owner only

    def add(self, name: str, password: str, *, cost: int = SCRYPT_N) -> None:
        check_name(name)
        if not password or len(password) > MAX_PASSWORD or any(c.isspace() for c in password):
            raise AccountError(f"a password is 1-{MAX_PASSWORD} characters with no spaces")
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            self.conn.execute("INSERT INTO users (name, password_hash, created) VALUES (?,?,?)", (name, hash_password(password, cost), created))
        except sqlite3.IntegrityError:
            raise AccountError(f"account {name} exists already") from None

    def set_disabled(self, name: str, disabled: bool = True) -> None:
        if self.conn.execute("UPDATE users SET disabled=? WHERE name=?", (int(disabled), name)).rowcount != 1:
            raise AccountError(f"no account {name}")

    def list(self) -> list[AccountRow]:
        return [AccountRow(n, c, bool(d)) for n, c, d in self.conn.execute("SELECT name, created, disabled FROM users ORDER BY name")]

    def close(self) -> None:
        self.conn.close()


class Accounts:
    """The server's read side: password checks and account lookups, off the event loop.

    Password checks run on one thread of their own: a flood of LOGINs can keep at most one
    core busy hashing, never every core (the event loop keeps the other)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="password-check")

    async def open(self) -> None:
        AccountAdmin(self.path).close()  # the file and its table exist, owner-only
        self._db = await aiosqlite.connect(self.path)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
        self._hasher.shutdown(wait=False, cancel_futures=True)

    async def _row(self, name: str) -> tuple[str, int] | None:
        assert self._db is not None, "Accounts.open() first"
        async with self._db.execute("SELECT password_hash, disabled FROM users WHERE name=?", (name,)) as cur:
            row = await cur.fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    async def check(self, name: str, password: str) -> bool:
        """Whether name and password open an enabled account (same cost either way)."""
        row = await self._row(name) if NAME.fullmatch(name) else None
        stored = row[0] if row is not None else _DUMMY
        ok = await asyncio.get_running_loop().run_in_executor(self._hasher, password_matches, password, stored)
        return ok and row is not None and not row[1]

    async def exists(self, name: str) -> bool:
        """An account transfers may move money of: one added here, or the fee account."""
        return name == FEE_ACCOUNT or NAME.fullmatch(name) is not None and await self._row(name) is not None
