"""The compiled hot path (tickline/tuning.py NATIVE_MODULES, `make native`)."""

from __future__ import annotations

import importlib
import os
import sys

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
