"""The product's imports: no circles, lazy ones included, and every import points down the data path.

Every module of alerts, detectors, edge, ingest and deploy is parsed (not imported), and every import in it
counts: at the top, inside functions, under ``if TYPE_CHECKING``. The data path runs
ingest -> detectors -> alerts -> edge, with deploy/local on top. A module imports from its own folder, from
the folders :data:`MAY_IMPORT` names for it, and from the shared foundations everyone uses (the event and
reading types, settings, the debouncer). alerts runs centrally: it reads the uplink that ``ingest.protocol``
defines, through ``ingest.mqtt``'s client, but nothing of the detectors, which run on the edge node. One
exception is declared: ``patrolnet demo`` is a console command, so the CLI imports the demo from deploy/local,
lazily, when that command runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("ingest", "detectors", "alerts", "edge", "deploy")
MAY_IMPORT = {
    "ingest": set(),
    "detectors": {"ingest"},
    "alerts": {"ingest"},
    "edge": {"ingest", "detectors", "alerts"},
    "deploy": {"ingest", "detectors", "alerts", "edge"},
}
SHARED = {"alerts.models", "alerts.settings", "alerts.debounce"}
ALLOWED = {("edge.cli", "deploy.local.demo")}
"""Imports against the path that are there on purpose (see the module docstring)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


def imports(path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(product module, first line) of what the file imports; ``from package import module`` names the module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            base = node.module or ""
            found += [
                (f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base, node.lineno)
                for alias in node.names
            ]
    first = {name: line for name, line in reversed(found) if name in known}
    return sorted(first.items(), key=lambda item: item[1])


def graph() -> dict[str, list[tuple[str, int]]]:
    modules = product_modules()
    return {name: imports(path, set(modules)) for name, path in modules.items()}


def cycles(edges: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """One circle through each strongly connected set of modules (Tarjan), as a path that returns to its start."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target, _ in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            members = set()
            while True:
                member = stack.pop()
                members.add(member)
                if member == node:
                    break
            if len(members) > 1 or any(t == node for t, _ in edges[node]):
                found.append(circle(node, members, edges))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def circle(start: str, members: set[str], edges: dict[str, list[tuple[str, int]]]) -> list[str]:
    """A path from ``start`` back to it within ``members`` (breadth first, so the shortest)."""
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target, _ in edges[node]:
            if target == start:
                return [*paths[node], start]
            if target in members and target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    raise AssertionError(f"no path back to {start}")


def against_the_path(edges: dict[str, list[tuple[str, int]]]) -> list[str]:
    def allowed(source: str, target: str) -> bool:
        folder, other = source.split(".")[0], target.split(".")[0]
        return other == folder or other in MAY_IMPORT[folder] or target in SHARED or (source, target) in ALLOWED

    return [
        f"{source} line {line} imports {target}"
        for source, targets in edges.items()
        for target, line in targets
        if not allowed(source, target)
    ]


def test_every_product_module_is_parsed() -> None:
    edges = graph()
    assert {"ingest.capture", "detectors.rules", "alerts.models", "edge.cli", "deploy.local.demo"} <= set(edges)
    assert "alerts.debounce" in {t for t, _ in edges["ingest.capture"]}
    # Lazy imports count: the CLI's commands import what they need inside functions.
    assert "deploy.local.demo" in {t for t, _ in edges["edge.cli"]}


def test_there_are_no_import_circles() -> None:
    found = cycles(graph())
    assert found == [], "import circles: " + "; ".join(" -> ".join(c) for c in found)


def test_the_circle_finder_finds_lazy_and_long_circles() -> None:
    edges = {"a": [("b", 1)], "b": [("c", 9)], "c": [("a", 3)], "d": [("d", 2)], "e": [("a", 4)]}
    assert sorted(cycles(edges)) == [["a", "b", "c", "a"], ["d", "d"]]


def test_imports_point_down_the_data_path() -> None:
    edges = graph()
    assert against_the_path(edges) == []
    assert against_the_path({"ingest.x": [("detectors.rules", 7)], "alerts.x": [("detectors.load", 3)]}) == [
        "ingest.x line 7 imports detectors.rules",
        "alerts.x line 3 imports detectors.load",
    ]
    for source, target in ALLOWED:
        assert target in {t for t, _ in edges[source]}, f"{source} no longer imports {target}: drop the exception"
