"""Import rules between our packages, and no import cycle among their modules.

Layers, lowest first (an arrow is "may import")::

    ixb ──▶ broker ──────▶ transport ──▶ protocols
     └────▶ agency_client ─┘

- ``protocols`` imports none of our other packages (and stays pure:
  ``tests/test_purity.py``);
- ``transport`` imports only ``protocols``;
- ``broker`` and ``agency_client`` never import each other, nor ``ixb``;
- only ``ixb`` (and tests and benchmarks, which are not checked) may import both.

Every import statement counts, wherever it is: at module level, inside a
function (a deferred import that dodges a cycle at run time is still a
cycle in the design), and under ``if TYPE_CHECKING:`` (a type-only import
still couples the modules). Each finding says which of the three it is.
``from pkg import name`` is an edge to ``pkg.name`` when that is a module,
else to ``pkg``. Edges go to the imported module only, not to the parent
packages Python initialises on the way: our ``__init__`` modules import
nothing, which :func:`test_package_inits_import_nothing` keeps true.
"""

from __future__ import annotations

import ast
import tomllib
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("protocols", "transport", "broker", "agency_client", "ixb")
MAY_IMPORT: Mapping[str, frozenset[str]] = {
    "protocols": frozenset({"protocols"}),
    "transport": frozenset({"protocols", "transport"}),
    "broker": frozenset({"protocols", "transport", "broker"}),
    "agency_client": frozenset({"protocols", "transport", "agency_client"}),
    "ixb": frozenset(OURS),
}

TOP, FUNCTION, TYPE_ONLY = "module level", "in a function", "under TYPE_CHECKING"


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    line: int
    kind: str

    def __str__(self) -> str:
        return f"{self.src}:{self.line} imports {self.dst} ({self.kind})"


def find_modules(root: Path, packages: Sequence[str]) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` under each package."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement with where it sits (TYPE_ONLY wins over FUNCTION)."""

    def visit(node: ast.AST, kind: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, kind
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), TYPE_ONLY)
                for stmt in child.orelse:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), kind)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from visit(child, TYPE_ONLY if kind == TYPE_ONLY else FUNCTION)
            else:
                yield from visit(child, kind)

    yield from visit(tree, TOP)


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: Mapping[str, Path]
) -> Iterator[str]:
    """The modules of ours an import statement loads (by name; unresolvable ones skipped)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            parts = alias.name.split(".")
            for end in range(len(parts), 0, -1):  # the deepest module of ours named
                name = ".".join(parts[:end])
                if name in known:
                    yield name
                    break
        return
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base_parts = package[: len(package) - (node.level - 1)]
        if node.module:
            base_parts += node.module.split(".")
        base = ".".join(base_parts)
    else:
        base = node.module or ""
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        if submodule in known:
            yield submodule
        elif base in known:
            yield base


def import_edges(root: Path, packages: Sequence[str] = OURS) -> list[Edge]:
    known = find_modules(root, packages)
    edges: list[Edge] = []
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        edges.extend(
            Edge(module, target, node.lineno, kind)
            for node, kind in _imports(tree)
            for target in _targets(node, module, is_package, known)
            if target != module
        )
    return edges


def layer_violations(edges: Sequence[Edge]) -> list[Edge]:
    return [e for e in edges if e.dst.split(".")[0] not in MAY_IMPORT[e.src.split(".")[0]]]


def find_cycles(edges: Sequence[Edge]) -> list[list[Edge]]:
    """One shortest cycle per strongly connected component of the import graph."""
    graph: dict[str, dict[str, Edge]] = {}
    for e in edges:
        graph.setdefault(e.src, {}).setdefault(e.dst, e)
        graph.setdefault(e.dst, {})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan; the graph is a few hundred nodes
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: set[str] = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)

    cycles: list[list[Edge]] = []
    for component in components:
        start = min(component)
        came: dict[str, Edge] = {}
        queue = deque([start])
        while queue:  # BFS back to start, inside the component
            v = queue.popleft()
            for w, edge in sorted(graph[v].items()):
                if w not in component or w in came:
                    continue
                came[w] = edge
                if w == start:
                    queue.clear()
                    break
                queue.append(w)
        path = [came[start]]
        while path[-1].src != start:
            path.append(came[path[-1].src])
        cycles.append(path[::-1])
    return sorted(cycles, key=lambda c: c[0].src)


def describe(cycle: Sequence[Edge]) -> str:
    steps = " -> ".join(f"{e.src} (line {e.line}, {e.kind})" for e in cycle)
    return f"{steps} -> {cycle[0].src}"


# --- the tree as it is ----------------------------------------------------------------

EDGES = import_edges(ROOT)


def test_the_graph_is_not_empty() -> None:
    modules = find_modules(ROOT, OURS)
    assert {m.split(".")[0] for m in modules} == set(OURS)
    assert len(modules) >= 50
    pairs = {(e.src, e.dst) for e in EDGES}
    assert ("broker.nats_permissions", "transport.streams") in pairs
    assert ("agency_client.sdk", "transport.fetch") in pairs
    assert ("broker.natsd", "broker.natsplan") in pairs


@pytest.mark.parametrize("package", OURS)
def test_package_imports_only_what_its_layer_allows(package: str) -> None:
    bad = [str(e) for e in layer_violations(EDGES) if e.src.split(".")[0] == package]
    allowed = ", ".join(sorted(MAY_IMPORT[package] - {package})) or "none of ours"
    assert not bad, f"{package} may import {allowed}:\n" + "\n".join(bad)


def test_no_import_cycle() -> None:
    cycles = find_cycles(EDGES)
    assert not cycles, "import cycles:\n" + "\n".join(describe(c) for c in cycles)


def test_package_inits_import_nothing() -> None:
    """Keeps "edges to the imported module only" exact (see the module docstring)."""
    inits = {m for m, path in find_modules(ROOT, OURS).items() if path.name == "__init__.py"}
    assert [str(e) for e in EDGES if e.src in inits] == []


def test_every_package_is_built_typed_and_type_checked() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    tool = pyproject["tool"]
    include = tool["setuptools"]["packages"]["find"]["include"]
    for package in OURS:
        assert f"{package}*" in include, package
        assert "py.typed" in tool["setuptools"]["package-data"][package], package
        assert (ROOT / package / "py.typed").is_file(), package
        assert package in tool["mypy"]["packages"], package


# --- the checker catches what it should (synthetic trees) ------------------------------


def write_tree(root: Path, files: Mapping[str, str]) -> Path:
    for package in OURS:
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").touch()
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def test_checker_reports_forbidden_imports(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path,
        {
            "protocols/wire.py": "from transport import clock\n",
            "transport/clock.py": "import time\nimport broker.hub\n",
            "broker/hub.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from agency_client.sdk import AgencyClient\n"
            ),
            "agency_client/sdk.py": "def later():\n    from broker import SETTING\n",
            "ixb/demo.py": "import broker.hub\nfrom agency_client import sdk\n",  # allowed
        },
    )
    found = {(e.src, e.dst, e.kind) for e in layer_violations(import_edges(root))}
    assert found == {
        ("protocols.wire", "transport.clock", TOP),
        ("transport.clock", "broker.hub", TOP),
        ("broker.hub", "agency_client.sdk", TYPE_ONLY),
        ("agency_client.sdk", "broker", FUNCTION),  # SETTING is no module: the package
    }


def test_checker_reports_a_three_module_cycle_with_its_path(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path,
        {
            "broker/a.py": "import broker.b\n",
            "broker/b.py": "from broker import c\n",  # c resolves to the submodule
            "broker/c.py": "def f():\n    from .a import thing\n",  # relative, deferred
            "broker/d.py": "from broker import a\n",  # leads into the cycle, not part of it
        },
    )
    [cycle] = find_cycles(import_edges(root))
    assert [(e.src, e.dst) for e in cycle] == [
        ("broker.a", "broker.b"),
        ("broker.b", "broker.c"),
        ("broker.c", "broker.a"),
    ]
    assert describe(cycle) == (
        "broker.a (line 1, module level) -> broker.b (line 1, module level) -> "
        "broker.c (line 2, in a function) -> broker.a"
    )


def test_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path,
        {
            "protocols/wire.py": "import json\n",
            "transport/fetch.py": "from protocols import wire\n",
            "broker/hub.py": "from transport import fetch\nfrom . import store\n",
            "broker/store.py": "from protocols.wire import encode\n",
            "agency_client/sdk.py": "from transport.fetch import fetch_ready\n",
            "ixb/demo.py": "from broker import hub\nfrom agency_client import sdk\n",
        },
    )
    edges = import_edges(root)
    assert ("broker.hub", "broker.store") in {(e.src, e.dst) for e in edges}
    assert layer_violations(edges) == []
    assert find_cycles(edges) == []
