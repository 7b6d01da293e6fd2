"""Work on a copy of the process as it is now: a forked child (copy-on-write memory).

A snapshot must show the books after exactly one journal seq. Copying them on the event
loop took 100-280 ms with a million resting orders (a five-minute run at 10,000 orders/s):
every ACK waited that long. A fork takes ~10 ms for 550 MB and the child sees the memory
of that moment while the parent goes on; it encodes, hashes and writes, then exits.

The child never returns to the event loop: it closes every inherited descriptor (a
listening socket or the data directory's lock must not outlive the server), stops the
collector (an object it frees could close a descriptor number it reuses), dies with its
parent (a kill -9 of the server takes the snapshot in progress with it, as a thread's
would be), and leaves with os._exit: 0 when the work returned, 1 when it raised. It runs
at the server's priority: at nice 19 a client streaming flat out starved it, snapshots
stopped completing between kills, and a crash loop's restarts replayed ever longer tails
(the very thing snapshots bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import signal
import traceback
import warnings
from typing import Any, Callable, Coroutine, TypeVar

T = TypeVar("T")

PR_SET_PDEATHSIG = 1


def start(work: Callable[[], object]) -> int | None:
    """Run work in a forked child; its pid, or None where the system cannot fork."""
    parent = os.getpid()
    try:
        with warnings.catch_warnings():
            # Python 3.12 warns that a multi-threaded process's child may deadlock on a lock
            # another thread held: this child takes none (no logging, no executor, no I/O
            # but its own file), and leaves with os._exit.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except (AttributeError, OSError):
        return None
    if pid:
        return pid
    code = 1
    try:
        gc.disable()
        die_with(parent)
        os.closerange(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 4096)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        work()
        code = 0
    except BaseException:
        with contextlib.suppress(OSError):
            os.write(2, traceback.format_exc().encode())
    finally:
        os._exit(code)


def elsewhere(capture: Callable[[], T], write: Callable[[T], object], fork: bool = True) -> Coroutine[Any, Any, int]:
    """Capture the state of this moment and write it away from the event loop: a forked
    child captures from its copy-on-write view and writes (the loop pauses for the fork
    only); where the system cannot fork, or fork is False, captured here and written in a
    thread. Await what it returns: 0 once written, else the child's exit code (a thread's
    exception is raised)."""
    pid = start(lambda: write(capture())) if fork else None
    return wait(pid) if pid is not None else _in_thread(write, capture())


async def _in_thread(write: Callable[[T], object], captured: T) -> int:
    await asyncio.to_thread(write, captured)
    return 0


async def wait(pid: int) -> int:
    """The child's exit code (a signal's number, negative, if one ended it)."""
    _, status = await asyncio.to_thread(os.waitpid, pid, 0)
    return os.waitstatus_to_exitcode(status)


def die_with(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
