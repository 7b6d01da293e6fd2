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


def test_a_chore_runs_every_period_one_run_at_a_time_its_line_is_logged_and_a_run_that_hangs_is_killed() -> None:
    from structlog.testing import capture_logs

    from cluster.supervisor import CHORE_LIMIT, Chore

    now = [100.0]
    runs: list[subprocess.Popen[bytes]] = []
    script = ["print('dropped 3 messages')"]

    def start() -> subprocess.Popen[bytes]:
        runs.append(subprocess.Popen([sys.executable, "-c", script[0]], stdout=subprocess.PIPE))
        return runs[-1]

    chore = Chore("compact", 10.0, start)
    sup = Supervisor([], lambda role, index: (_ for _ in ()).throw(AssertionError("no roles")), clock=lambda: now[0], chores=[chore])

    def at(t: float) -> None:
        now[0] = t
        sup.check()

    with capture_logs() as logs:
        at(109.9)
        assert runs == []  # (not at once: one period after the roles started)
        at(110.0)
        assert len(runs) == 1
        runs[0].wait()
        at(111.0)  # its line logged; the next run one period after this one started
        assert logs == [{"event": "chore_done", "chore": "compact", "code": 0, "said": "dropped 3 messages", "ran_s": 1.0, "log_level": "info"}]
        at(119.9)
        assert len(runs) == 1
        script[0] = "import time; time.sleep(60)"
        at(120.0)
        assert len(runs) == 2
        at(120.0 + CHORE_LIMIT - 1)  # still going: not started again, not killed yet
        assert len(runs) == 2 and runs[1].poll() is None
        at(120.0 + CHORE_LIMIT)
        assert runs[1].wait(5) == -9
        at(120.0 + CHORE_LIMIT + 1)  # reaped and logged; the next run is due at once
        assert logs[-2]["event"] == "chore_killed" and logs[-1] == {
            "event": "chore_done", "chore": "compact", "code": -9, "said": "", "ran_s": CHORE_LIMIT + 1, "log_level": "warning",
        }  # fmt: skip
        assert len(runs) == 2
        script[0] = "pass"
        at(120.0 + CHORE_LIMIT + 1.1)
        assert len(runs) == 3
        runs[2].wait()
