from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.harness import Server


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
