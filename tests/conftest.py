from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.harness import Server
from tickline.tuning import native_modules


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compiled modules older than their sources would test yesterday's code."""
    stale = native_modules()[1]
    if stale:
        pytest.exit(f"compiled modules older than their sources: {', '.join(stale)}; run `make native` (or `make pure`)", returncode=2)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data").start()
    try:
        yield srv
    finally:
        srv.kill()


@pytest.fixture(autouse=True)
def _servers_of_this_test() -> None:
    Server.started.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test shows the last lines of every server it started (since its last start):
    a failure seen once under load can then be read, not guessed at."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call" and report.failed:
        for started in Server.started:
            report.sections.extend(started.log_tail())
