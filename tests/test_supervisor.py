"""The cluster's supervisor (cluster/supervisor.py): a role that exits is started again,
sooner the longer it had run. Real child processes, a clock the test moves."""

from __future__ import annotations

import subprocess
import sys

from cluster.supervisor import FIRST_DELAY, MAX_DELAY, STEADY, Supervisor


def test_a_role_that_keeps_dying_is_restarted_later_each_time_and_at_once_again_after_it_ran_a_while() -> None:
    now = [0.0]
    started: list[tuple[str, int]] = []

    def start(role: str, index: int) -> subprocess.Popen[bytes]:
        started.append((role, index))
        return subprocess.Popen([sys.executable, "-c", "pass"])  # dies at once, as a role that cannot start

    def step(to: float) -> None:
        now[0] = to
        for child in sup.children:
            child.proc.wait()  # (it has exited by the time the supervisor looks)
        sup.check()

    sup = Supervisor([("risk", 1, start("risk", 1))], start, clock=lambda: now[0])
    started.clear()
    restarts = []
    t = 0.0
    for _ in range(9):  # each death noticed at t, restarted once its delay has passed
        step(t)
        delay = sup.children[0].due - t  # type: ignore[operator]
        restarts.append(delay)
        t += delay
        step(t)
    assert restarts == [min(FIRST_DELAY * 2**i, MAX_DELAY) for i in range(9)] and restarts[-1] == MAX_DELAY
    assert started == [("risk", 1)] * 9
    step(t + STEADY)  # it ran a minute before dying: restarted after the first delay again
    assert sup.children[0].due == t + STEADY + FIRST_DELAY


def test_a_role_that_runs_is_left_alone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        sup = Supervisor([("gateway", 0, proc)], lambda role, index: (_ for _ in ()).throw(AssertionError("restarted")))
        sup.check()
        assert sup.children[0].proc is proc and sup.children[0].due is None
    finally:
        proc.kill()
        proc.wait()
