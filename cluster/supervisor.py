"""Keeps a cluster's roles running: `tickline cluster up` leaves this behind, in a process of
its own; it restarts any role that exits (kill -9, a crash, an out-of-memory kill) with a
log line, and backs off while one keeps dying soon after it starts.

A restarted role replays its input and publishes nothing twice (docs/SCALING.md), so
restarting is always safe; what the back-off bounds is the CPU a role that cannot start
(a bad file, a full disk) burns, and the noise in the log.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from typing import Callable

import structlog

log = structlog.get_logger("supervisor")
FIRST_DELAY = 0.5  # seconds before a role that died is started again
MAX_DELAY = 30.0  # the back-off's cap: a role that keeps dying is tried twice a minute
STEADY = 60.0  # seconds a role must run for its next death to be restarted after FIRST_DELAY again

Start = Callable[[str, int], "subprocess.Popen[bytes]"]


@dataclass
class Child:
    role: str
    index: int
    proc: subprocess.Popen[bytes]
    started: float
    delay: float = FIRST_DELAY  # before the next restart, should it die now
    due: float | None = None  # when a dead one is to be started again


class Supervisor:
    """The roles' processes, and one pass of looking after them (check(), called a few
    times a second by run()). `start` starts one role; the clock is injectable for tests."""

    def __init__(
        self, started: list[tuple[str, int, subprocess.Popen[bytes]]], start: Start, clock: Callable[[], float] = time.monotonic, since: float | None = None
    ) -> None:
        self.start, self.clock = start, clock
        since = clock() if since is None else since  # (when those were started)
        self.children = [Child(role, index, proc, since) for role, index, proc in started]

    def check(self) -> None:
        now = self.clock()
        for child in self.children:
            if child.due is None:
                code = child.proc.poll()  # (reaps it: no zombie is left behind)
                if code is None:
                    continue
                ran = now - child.started
                if ran >= STEADY:
                    child.delay = FIRST_DELAY
                child.due = now + child.delay
                log.warning("role_exited", role=child.role, index=child.index, code=code, ran_s=round(ran, 1), restart_in_s=child.delay)
                child.delay = min(child.delay * 2, MAX_DELAY)
            if child.due is not None and now >= child.due:
                child.proc = self.start(child.role, child.index)
                child.started, child.due = now, None
                log.warning("role_restarted", role=child.role, index=child.index, pid=child.proc.pid)

    def run(self, stopping: Callable[[], bool], every: float = 0.1) -> None:
        """Until stopping() (a SIGTERM from `down`): the roles themselves are left to `down`,
        which stops them in their order once this has stopped restarting them."""
        while not stopping():
            self.check()
            time.sleep(every)
        log.info("supervisor_stopped", roles=len(self.children))
