"""The gateway's own query: CANCEL ALL's reply, held until its commands are matched.

A module of its own because gateway/connection.py is compiled with mypyc (`make native`),
and mypyc drops a msgspec Struct's class options (frozen=True here) in a module it compiles."""

from __future__ import annotations

import msgspec


class CancelAllDone(msgspec.Struct, frozen=True):
    """CANCEL ALL's reply, a query held until its commands (tickets) are matched."""

    tickets: list[int]
