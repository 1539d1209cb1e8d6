"""The floor plan: no import circles, lazy ones included, and every import points down.

Every module of alerts, detectors, edge, ingest and deploy is parsed (not imported), and every import in it
counts: at the top, inside functions, under ``if TYPE_CHECKING``. There are three floors:

- the ground floor, ``alerts.core`` (the types, the uplink protocol, MQTT plumbing, settings, the debouncer, the
  alert policy), which both sides import and which imports nothing of theirs;
- two sides that never import each other: the edge (``ingest`` -> ``detectors`` -> ``edge``, down the data
  path) and the centre (the rest of ``alerts``: its base modules, then ``store``, then ``intake``, ``notify``
  and ``api``, then its commands);
- ``deploy`` on top, which starts either side or both (the ``patrolnet`` command, the local demo).

There are no exceptions.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("ingest", "detectors", "alerts", "edge", "deploy")
CENTRAL_BASE = {"auth", "coverage", "identity"}
MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "ingest": {"core"},
    "detectors": {"core", "ingest"},
    "edge": {"core", "ingest", "detectors"},
    "central": {"core"},
    "store": {"core", "central"},
    "intake": {"core", "central", "store"},
    "notify": {"core", "central", "store"},
    "api": {"core", "central", "store", "notify"},
    "central-cli": {"core", "central", "store", "intake", "notify", "api"},
    "deploy": {"core", "ingest", "detectors", "edge", "central", "store", "intake", "notify", "api", "central-cli"},
}
"""The rooms each room may import from, besides itself."""
EDGE_SIDE = {"ingest", "detectors", "edge"}
CENTRAL_SIDE = {"central", "store", "intake", "notify", "api", "central-cli"}


def room(module: str) -> str:
    """Which room of the floor plan a module is in.

    >>> [room(m) for m in ("alerts.core.models", "alerts.auth", "alerts.store.queries", "alerts.cli", "edge.node")]
    ['core', 'central', 'store', 'central-cli', 'edge']
    """
    parts = module.split(".")
    if parts[0] != "alerts":
        return parts[0]
    if len(parts) == 1 or parts[1] in CENTRAL_BASE:
        return "central"
    return "central-cli" if parts[1] == "cli" else parts[1]


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


def against_the_plan(edges: dict[str, list[tuple[str, int]]]) -> list[str]:
    def allowed(source: str, target: str) -> bool:
        here, there = room(source), room(target)
        return here == there or there in MAY_IMPORT[here]

    return [
        f"{source} line {line} imports {target}"
        for source, targets in edges.items()
        for target, line in targets
        if not allowed(source, target)
    ]


def test_every_product_module_is_parsed() -> None:
    edges = graph()
    assert {"ingest.capture", "detectors.rules", "alerts.core.models", "deploy.cli", "deploy.local.demo"} <= set(edges)
    assert "alerts.core.debounce" in {t for t, _ in edges["ingest.capture"]}
    # Lazy imports count: the demo command imports the demo inside a function.
    assert "deploy.local.demo" in {t for t, _ in edges["deploy.cli"]}
    assert set(MAY_IMPORT) == {room(m) for m in edges}, "a room without a rule, or a rule without a room"


def test_there_are_no_import_circles() -> None:
    found = cycles(graph())
    assert found == [], "import circles: " + "; ".join(" -> ".join(c) for c in found)


def test_the_circle_finder_finds_lazy_and_long_circles() -> None:
    edges = {"a": [("b", 1)], "b": [("c", 9)], "c": [("a", 3)], "d": [("d", 2)], "e": [("a", 4)]}
    assert sorted(cycles(edges)) == [["a", "b", "c", "a"], ["d", "d"]]


def test_the_ground_floor_imports_nothing_above_it() -> None:
    edges = graph()
    assert [f"{s} imports {t}" for s in edges if room(s) == "core" for t, _ in edges[s] if room(t) != "core"] == []
    assert MAY_IMPORT["core"] == set()


def test_the_edge_and_the_centre_never_import_each_other() -> None:
    for side, other in ((EDGE_SIDE, CENTRAL_SIDE), (CENTRAL_SIDE, EDGE_SIDE)):
        assert all(not (MAY_IMPORT[r] & other) for r in side)
    crossing = [
        f"{s} imports {t}"
        for s, targets in graph().items()
        for t, _ in targets
        if {room(s), room(t)} & EDGE_SIDE and {room(s), room(t)} & CENTRAL_SIDE
    ]
    assert crossing == []


def test_imports_follow_the_plan() -> None:
    assert against_the_plan(graph()) == []
    assert against_the_plan(
        {
            "alerts.core.x": [("alerts.store.rows", 2)],
            "ingest.x": [("detectors.rules", 7)],
            "alerts.api.x": [("detectors.load", 3)],
            "edge.x": [("alerts.store.database", 4), ("alerts.core.policy", 5)],
            "alerts.store.x": [("alerts.api.http", 6)],
        }
    ) == [
        "alerts.core.x line 2 imports alerts.store.rows",
        "ingest.x line 7 imports detectors.rules",
        "alerts.api.x line 3 imports detectors.load",
        "edge.x line 4 imports alerts.store.database",
        "alerts.store.x line 6 imports alerts.api.http",
    ]
