"""The layer rules of DEVELOPERS.md, checked on every import of every package.

protocol/ is the floor; exchange/ stands on it; journal/, gateway/ and notifier/ may use
exchange/'s types; netio/ (socket plumbing) and telemetry/ (the server's own figures)
stand on nothing of ours; web/ (the dashboard) sits on protocol/, netio/ and telemetry/, client/ (the Python client
library) on protocol/; cluster/ (step 11's processes over NATS JetStream) like the server's packages; examples/ use client/ only; nothing imports
tickline/ (the composition root) and no package imports gateway/ or notifier/. Inside a
package no two modules import each other, directly or round a longer circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOWED: dict[str, set[str]] = {
    "protocol": set(),
    "exchange": {"protocol"},
    "netio": set(),
    "telemetry": set(),
    "journal": {"protocol", "exchange", "telemetry"},
    "gateway": {"protocol", "exchange", "netio", "telemetry"},
    "notifier": {"protocol", "exchange", "netio", "telemetry"},
    "web": {"protocol", "netio", "telemetry"},
    "client": {"protocol"},
    "cluster": {"protocol", "exchange", "journal", "netio", "telemetry"},
    "examples": {"client", "protocol"},
    "bench": {"protocol", "exchange", "journal", "netio", "cluster"},
    "tickline": {"protocol", "exchange", "netio", "telemetry", "journal", "gateway", "notifier", "web", "cluster"},
}
OURS = set(ALLOWED) | {"tests"}


def imports_of(path: Path) -> set[str]:
    """Every module of ours the file imports, wherever the import statement stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {name for name in found if name.split(".")[0] in OURS}


def module_graph() -> dict[str, set[str]]:
    modules = {f"{p.parent.name}.{p.stem}": p for pkg in ALLOWED for p in (ROOT / pkg).glob("*.py")}
    return {name: {i for i in imports_of(path) if i in modules and i != name} for name, path in modules.items()}


def test_every_import_points_down_a_layer() -> None:
    wrong = []
    for pkg in ALLOWED:
        for path in sorted((ROOT / pkg).glob("*.py")):
            for name in imports_of(path):
                top = name.split(".")[0]
                if top != pkg and top not in ALLOWED[pkg]:
                    wrong.append(f"{pkg}/{path.name} imports {name}")
    assert wrong == []


def test_no_import_circle_inside_a_package() -> None:
    graph = module_graph()
    circles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in graph[node]:
            if nxt in path:
                circles.append(" -> ".join(path[path.index(nxt) :] + [nxt]))
            elif nxt.split(".")[0] == node.split(".")[0]:
                visit(nxt, path + [nxt])

    for start in graph:
        visit(start, [start])
    assert circles == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from gateway.server import Gateway\n")
    assert "gateway.server" in imports_of(bad)
