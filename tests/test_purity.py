"""protocols/ stays pure: no I/O libraries, no clock reads, no imports of the services.

So do the pure modules of broker/ (the NATS plan and permissions): they
return data and strings, and broker/natsd.py does their file and socket work.
Which of our packages may import which: tests/test_imports.py.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import broker
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

PURE_BROKER = [
    Path(broker.__file__).parent / name for name in ("natsplan.py", "nats_permissions.py")
]
"""Pure modules of the hub package: they may name paths, but never touch them."""
IO_MODULES = FORBIDDEN_MODULES - {"broker", "pathlib"}
IO_CALLS = FORBIDDEN_CALLS | {
    "read_text",
    "write_text",
    "read_bytes",
    "write_bytes",
    "mkdir",
    "unlink",
    "touch",
    "exists",
    "is_file",
    "is_dir",
    "stat",
    "glob",
    "rglob",
    "iterdir",
    "resolve",
    "bind",
    "connect",
}


def _calls(tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            yield node.lineno, fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")


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
        for line, name in _calls(ast.parse(path.read_text())):
            assert name not in FORBIDDEN_CALLS, f"{path.name}:{line} calls {name}()"


def test_pure_broker_modules_do_no_io() -> None:
    for path in PURE_BROKER:
        tree = ast.parse(path.read_text())
        bad = _imports(tree) & IO_MODULES
        assert not bad, f"{path.name} imports {bad}"
        for line, name in _calls(tree):
            assert name not in IO_CALLS, f"{path.name}:{line} calls {name}()"


def test_the_checker_catches_a_violation() -> None:
    tree = ast.parse("import asyncio\nfrom nats.aio import client\n")
    assert _imports(tree) == {"asyncio", "nats"}
    calls = ast.parse("path.read_text()\nopen(p)\nsock.bind(a)\n")
    names = {name for _, name in _calls(calls)}
    assert names == {"read_text", "open", "bind"}
    assert names <= IO_CALLS
