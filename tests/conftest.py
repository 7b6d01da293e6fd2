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
        # Captured output: pytest shows it only when the test failed.
        print("server log, last lines:\n" + "\n".join(srv.log[-40:]))
