"""Keeps a cluster's roles running: `tickline cluster up` leaves this behind, in a process of
its own; it restarts any role that exits (kill -9, a crash, an out-of-memory kill) with a
log line, and backs off while one keeps dying soon after it starts. It also runs the
cluster's chores on a schedule (`tickline cluster compact`, `cluster up --compact-every`),
each a command of its own, so that one that hangs or fails never stops the restarting.

A restarted role replays its input and publishes nothing twice (docs/SCALING.md), so
restarting is always safe; what the back-off bounds is the CPU a role that cannot start
(a bad file, a full disk) burns, and the noise in the log.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import structlog

log = structlog.get_logger("supervisor")
FIRST_DELAY = 0.5  # seconds before a role that died is started again
MAX_DELAY = 30.0  # the back-off's cap: a role that keeps dying is tried twice a minute
STEADY = 60.0  # seconds a role must run for its next death to be restarted after FIRST_DELAY again

Start = Callable[[str, int], "subprocess.Popen[bytes]"]


class Watched(Protocol):
    """A role's process as the supervisor watches it: a child it started (Popen), or one that
    already served when it started (tickline/cluster.py Adopted)."""

    pid: int

    def poll(self) -> int | str | None: ...  # None while it runs; then its exit code (or why unknown)


@dataclass
class Child:
    role: str
    index: int
    proc: Watched
    started: float
    delay: float = FIRST_DELAY  # before the next restart, should it die now
    due: float | None = None  # when a dead one is to be started again


@dataclass
class Chore:
    """A command run every `every` seconds, one run at a time; its stdout (one line) is
    logged. A run still going after another `every` (at least CHORE_LIMIT) is killed."""

    name: str
    every: float
    start: Callable[[], "subprocess.Popen[bytes]"]  # with stdout=PIPE
    due: float = 0.0
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0


CHORE_LIMIT = 60.0  # seconds a chore's run may take, at the least, before it is killed


class Supervisor:
    """The roles' processes, and one pass of looking after them (check(), called a few
    times a second by run()). `start` starts one role; the clock is injectable for tests."""

    def __init__(
        self,
        started: Sequence[tuple[str, int, Watched]],
        start: Start,
        clock: Callable[[], float] = time.monotonic,
        since: float | None = None,
        chores: Sequence[Chore] = (),
    ) -> None:
        self.start, self.clock = start, clock
        since = clock() if since is None else since  # (when those were started)
        self.children = [Child(role, index, proc, since) for role, index, proc in started]
        self.chores = chores
        for chore in chores:  # (the first run one period after the roles started)
            chore.due = since + chore.every

    def check(self) -> None:
        now = self.clock()
        self._restart_dead(now)
        for chore in self.chores:
            self._run_chore(chore, now)

    def _restart_dead(self, now: float) -> None:
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

    def _run_chore(self, chore: Chore, now: float) -> None:
        if chore.proc is None:
            if now >= chore.due:
                chore.proc, chore.started = chore.start(), now
            return
        code = chore.proc.poll()
        if code is None:
            if now - chore.started >= max(chore.every, CHORE_LIMIT):
                chore.proc.kill()  # (reaped at the next check, and logged then)
                log.warning("chore_killed", chore=chore.name, ran_s=round(now - chore.started, 1))
            return
        assert chore.proc.stdout is not None
        said = chore.proc.stdout.read().decode(errors="replace").strip()  # (one line: it fits the pipe)
        chore.proc.stdout.close()
        (log.info if code == 0 else log.warning)("chore_done", chore=chore.name, code=code, said=said, ran_s=round(now - chore.started, 1))
        chore.proc, chore.due = None, chore.started + chore.every

    def run(self, stopping: Callable[[], bool], every: float = 0.1) -> None:
        """Until stopping() (a SIGTERM from `down`): the roles themselves are left to `down`,
        which stops them in their order once this has stopped restarting them."""
        while not stopping():
            self.check()
            time.sleep(every)
        for chore in self.chores:  # (a compaction half done is safe to stop: docs/SCALING.md)
            if chore.proc is not None:
                chore.proc.kill()
                chore.proc.wait()
        log.info("supervisor_stopped", roles=len(self.children))
