"""protocols/ stays pure: no I/O libraries, no clock reads, no imports of the services."""

from __future__ import annotations

import ast
from pathlib import Path

import protocols

FORBIDDEN_MODULES = {
    "asyncio",
    "nats",
    "aiohttp",
    "broker",
    "agency_client",
    "ixb",
    "socket",
    "subprocess",
    "sqlite3",
    "structlog",
    "time",
    "os",
    "pathlib",
    "shutil",
    "random",
}
FORBIDDEN_CALLS = {"now", "utcnow", "today", "time", "time_ns", "monotonic", "open"}

SOURCES = sorted(Path(protocols.__file__).parent.glob("*.py"))


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_there_are_sources_to_check() -> None:
    assert len(SOURCES) >= 10


def test_protocols_imports_nothing_impure() -> None:
    for path in SOURCES:
        bad = _imports(ast.parse(path.read_text())) & FORBIDDEN_MODULES
        assert not bad, f"{path.name} imports {bad}"


def test_protocols_reads_no_clock_and_opens_no_file() -> None:
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
                assert name not in FORBIDDEN_CALLS, f"{path.name}:{node.lineno} calls {name}()"


def test_the_checker_catches_a_violation() -> None:
    tree = ast.parse("import asyncio\nfrom nats.aio import client\n")
    assert _imports(tree) == {"asyncio", "nats"}
