"""The compiled hot path (tickline/tuning.py NATIVE_MODULES, `make native`)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from tickline.tuning import NATIVE_MODULES, native_modules


@pytest.mark.skipif(os.environ.get("TICKLINE_REQUIRE_NATIVE") != "1", reason="CI compiles the hot path (TICKLINE_REQUIRE_NATIVE=1)")
def test_ci_runs_the_suite_on_the_compiled_modules() -> None:
    compiled, stale = native_modules()
    assert (compiled, stale) == (list(NATIVE_MODULES), [])


def test_no_compiled_module_defines_a_struct() -> None:
    """mypyc drops a Struct's class options (gc=False, frozen, tags) in a module it compiles."""
    for name in NATIVE_MODULES:
        module = importlib.import_module(name)
        defined = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, msgspec.Struct) and v.__module__ == name]
        assert defined == [], name
    assert sys.modules["exchange.holds"].Hold.__struct_config__.gc is False
    assert sys.modules["gateway.queries"].CancelAllDone.__struct_config__.frozen is True


def test_the_installed_command_runs_from_any_directory(tmp_path: Path) -> None:
    """The compiled modules import one shared library at the project's root, which a
    directory other than the project's would not find: `make native` names the root in a
    .pth file of the venv. (Pure, there is nothing to find.)"""
    tickline = Path(sys.executable).parent / "tickline"
    done = subprocess.run([str(tickline), "balances", "--data-dir", str(tmp_path / "data")], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (1, f"tickline: no journal in {tmp_path / 'data'}: is --data-dir (or TICKLINE_DATA) the server's data directory?\n")
