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


def _clock_names(tree: ast.AST) -> list[str]:
    """Parameters and attributes that hold a clock (``clock``, ``self._clock`` …)."""
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            a = node.args
            found += [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs) if "clock" in x.arg]
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            found += [node.attr] if "clock" in node.attr else []
    return found


def test_protocols_takes_no_clock_callable() -> None:
    """Time comes in as a value (``now_ms``), fixed once per decision, never as a clock to call."""
    for path in SOURCES:
        bad = _clock_names(ast.parse(path.read_text()))
        assert not bad, f"{path.name} keeps a clock: {bad}"
    old = "class K:\n    def __init__(self, clock):\n        self._clock = clock\n"
    assert _clock_names(ast.parse(old)) == ["clock", "_clock"]


PACKAGES = ("protocols", "transport", "broker", "agency_client", "ixb")
ALL_SOURCES = sorted(
    p for pkg in PACKAGES for p in (Path(protocols.__file__).parent.parent / pkg).rglob("*.py")
)


def _private_nacl_names(tree: ast.AST) -> list[str]:
    """Uses of PyNaCl's private modules and names (``nacl._sodium``, ``nacl.bindings._x``)."""

    def private(dotted: str) -> bool:
        parts = dotted.split(".")
        return parts[0] == "nacl" and any(p.startswith("_") for p in parts[1:])

    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if private(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [
                f"{node.module}.{a.name}"
                for a in node.names
                if private(node.module) or (private(f"{node.module}.{a.name}"))
            ]
        elif isinstance(node, ast.Attribute):
            chain, inner = [node.attr], node.value
            while isinstance(inner, ast.Attribute):
                chain.append(inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name):
                dotted = ".".join([inner.id, *reversed(chain)])
                if private(dotted):
                    found.append(dotted)
    return found


def test_only_public_pynacl_apis() -> None:
    """Every libsodium call goes through PyNaCl's public API (``nacl.bindings`` and up)."""
    assert len(ALL_SOURCES) > len(SOURCES)
    for path in ALL_SOURCES:
        bad = _private_nacl_names(ast.parse(path.read_text()))
        assert not bad, f"{path} uses {bad}"


def test_the_private_name_checker_catches_each_form() -> None:
    for source in (
        "from nacl._sodium import ffi, lib",
        "import nacl._sodium",
        "from nacl import _sodium",
        "import nacl.bindings\nnacl.bindings._private()",
    ):
        assert _private_nacl_names(ast.parse(source)), source
    assert not _private_nacl_names(ast.parse("import nacl.bindings\nnacl.bindings.crypto_box()"))
