"""The project's shape, read from the source: layers, no import cycles, a protocol without I/O.

Every ``import`` counts, at module level, inside functions and under ``TYPE_CHECKING``: a
cycle that only a late import keeps from failing at start-up is still two modules that
cannot be understood, tested or moved one without the other. Relative imports are
resolved, ``from package import module`` is an edge to the module, and importing a module
also imports the packages above it (their ``__init__``) unless the importer is inside them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parent.parent

#: Our packages, and which of the others each may import. ``transport`` is the I/O both
#: drivers share (pinned TLS); the agent ships alone, so it never imports the controller.
LAYERS: Final[dict[str, frozenset[str]]] = {
    "protocol": frozenset(),
    "transport": frozenset({"protocol"}),
    "agent": frozenset({"protocol", "transport"}),
    "controller": frozenset({"protocol", "transport"}),
}

#: Edges that may close a cycle, each with why (none since every call moved into
#: ``controller/api/``): an entry that no longer closes a cycle fails the test.
ALLOWED_CYCLE_EDGES: Final[dict[tuple[str, str], str]] = {}

#: What ``protocol/`` may not import: sockets, TLS, the event loop, processes, files,
#: databases, and the drivers. Parsing, hashing and signing are pure and allowed.
PROTOCOL_BANNED: Final = frozenset(
    {
        "agent",
        "aiosqlite",
        "alembic",
        "asyncio",
        "asyncpg",
        "asyncssh",
        "controller",
        "fcntl",
        "glob",
        "http",
        "mmap",
        "multiprocessing",
        "pathlib",
        "platformdirs",
        "psutil",
        "rich",
        "select",
        "selectors",
        "shutil",
        "signal",
        "socket",
        "sqlalchemy",
        "sqlite3",
        "ssl",
        "subprocess",
        "tempfile",
        "tenacity",
        "threading",
        "transport",
        "typer",
        "urllib.request",
        "websockets",
    }
)
#: ``os`` is there for ``os.urandom`` (message ids); its file and process calls are not.
PROTOCOL_OS_ALLOWED: Final = frozenset({"urandom"})
PROTOCOL_BUILTINS_BANNED: Final = frozenset({"open", "print", "input"})


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool

    @property
    def package(self) -> str:
        """The package relative imports start from."""
        return self.name if self.is_package else self.name.rpartition(".")[0]

    def tree(self) -> ast.Module:
        return _parse(self.path)


@cache
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line})"


@cache
def modules() -> dict[str, Module]:
    """Every module of our packages, by dotted name."""
    found: dict[str, Module] = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            found[".".join(parts)] = Module(".".join(parts), path, is_package)
    return found


def imported_names(module: Module) -> Iterator[tuple[str, int]]:
    """Every dotted name ``module`` imports, anywhere in it, with its line."""
    for node in ast.walk(module.tree()):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join([*base, node.module] if node.module else base)
            else:
                origin = node.module or ""
            yield origin, node.lineno
            for alias in node.names:
                # ``from package import module`` imports the module, not just the package
                if f"{origin}.{alias.name}" in modules():
                    yield f"{origin}.{alias.name}", node.lineno


def ours(name: str) -> str | None:
    """The module of ours that importing ``name`` loads (``a.b.func`` → ``a.b``), if any."""
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


@cache
def edges() -> tuple[Edge, ...]:
    """The import graph of our modules."""
    found: dict[tuple[str, str], Edge] = {}
    for module in modules().values():
        for name, line in imported_names(module):
            target = ours(name)
            if target is None:
                continue
            # importing a.b.c runs a/__init__ and a/b/__init__ first, unless we are inside
            parts = target.split(".")
            loaded = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
            own = module.name.split(".")
            inside = {".".join(own[:i]) for i in range(1, len(own) + 1)}
            for each in sorted(loaded - inside):
                if each != module.name and each in modules():
                    found.setdefault((module.name, each), Edge(module.name, each, line))
    return tuple(found.values())


def cycles(graph: dict[str, list[Edge]]) -> list[list[Edge]]:
    """One shortest cycle per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan; the graph is a few hundred modules deep at most
        index[node] = low[node] = len(index)
        stack.append(node)
        for edge in graph.get(node, []):
            if edge.target not in index:
                visit(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_shortest_cycle(graph, component) for component in components]


def _shortest_cycle(graph: dict[str, list[Edge]], component: set[str]) -> list[Edge]:
    start = min(component)
    paths: dict[str, list[Edge]] = {start: []}
    queue = [start]
    for node in queue:
        for edge in graph.get(node, []):
            if edge.target == start:
                return [*paths[node], edge]
            if edge.target in component and edge.target not in paths:
                paths[edge.target] = [*paths[node], edge]
                queue.append(edge.target)
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def graph_without(allowed: set[tuple[str, str]]) -> dict[str, list[Edge]]:
    graph: dict[str, list[Edge]] = {}
    for edge in edges():
        if (edge.source, edge.target) not in allowed:
            graph.setdefault(edge.source, []).append(edge)
    return graph


def test_the_graph_is_read() -> None:
    # a parser that found nothing would pass every other test here
    known = {(edge.source, edge.target) for edge in edges()}
    assert ("controller.server", "controller.tickets.desk") in known  # function-local
    assert ("agent.diagnostics", "protocol.collectors") in known
    assert ("protocol.calls", "protocol.calls.users") in known  # from package import module
    assert ("protocol.calls.users", "protocol.calls.base") in known  # relative or absolute


def test_no_import_cycles() -> None:
    found = cycles(graph_without(set(ALLOWED_CYCLE_EDGES)))
    if found:
        shown = "\n\n".join("\n".join(f"  {edge}" for edge in cycle) for cycle in found)
        pytest.fail(f"import cycles (each edge with the line that imports):\n{shown}")


def test_every_allowed_edge_still_closes_a_cycle() -> None:
    allowed = set(ALLOWED_CYCLE_EDGES)
    spare = [
        f"{source} -> {target}"
        for source, target in sorted(allowed)
        if not cycles(graph_without(allowed - {(source, target)}))
    ]
    assert not spare, f"no cycle needs these any more, so drop them from the list: {spare}"


def test_layers() -> None:
    crossing = [
        str(edge)
        for edge in edges()
        if (a := edge.source.split(".")[0]) != (b := edge.target.split(".")[0])
        and b not in LAYERS[a]
    ]
    assert not crossing, "imports across layers:\n" + "\n".join(crossing)


def test_protocol_does_no_io() -> None:
    found: list[str] = []
    for module in modules().values():
        if not module.name.startswith("protocol"):
            continue
        where = module.path.relative_to(ROOT)
        for name, line in imported_names(module):
            banned = [b for b in PROTOCOL_BANNED if name == b or name.startswith(f"{b}.")]
            if banned:
                found.append(f"{where}:{line}: imports {name}")
        for node in ast.walk(module.tree()):
            if isinstance(node, ast.ImportFrom) and node.module == "os" and node.level == 0:
                for alias in node.names:
                    if alias.name not in PROTOCOL_OS_ALLOWED:
                        found.append(f"{where}:{node.lineno}: os.{alias.name}")
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
                and node.attr not in PROTOCOL_OS_ALLOWED
            ):
                found.append(f"{where}:{node.lineno}: os.{node.attr}")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in PROTOCOL_BUILTINS_BANNED
            ):
                found.append(f"{where}:{node.lineno}: {node.func.id}()")
    assert not found, "protocol/ is pure (no sockets, files, processes, event loop):\n" + (
        "\n".join(found)
    )


#: Files that still spell out a list of protocol/vocabulary.py, each with why.
VOCABULARY_SPELLED_OUT: Final[dict[str, str]] = {
    "controller/api/registry.py": "ANYONE lists every role: could be frozenset(ROLES)",
}


def test_the_vocabulary_is_defined_once() -> None:
    from protocol import vocabulary

    lists = {
        frozenset(names): name
        for name, names in vars(vocabulary).items()
        if name.isupper() and isinstance(names, tuple)
    }
    found: list[str] = []
    for module in modules().values():
        where = module.path.relative_to(ROOT).as_posix()
        if module.name == "protocol.vocabulary" or where in VOCABULARY_SPELLED_OUT:
            continue
        for node in ast.walk(module.tree()):
            if isinstance(node, ast.Tuple | ast.List | ast.Set) and node.elts:
                values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
                same = lists.get(frozenset(values)) if len(values) == len(node.elts) else None
                if same is not None:
                    found.append(f"{where}:{node.lineno}: spells out vocabulary.{same}")
    assert not found, "import these from protocol/vocabulary.py:\n" + "\n".join(found)
