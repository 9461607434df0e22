"""The package's layers, read from the source: no import circle, and no layer importing one above it.

Every ``import``/``from ... import`` of ``yolact_batch`` anywhere in a module counts, lazy imports
inside functions included: a lazy import still ties the layers together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "yolact_batch"

# Lowest first. A module may import its own layer and the layers below it.
LAYERS = [
    ("core",),
    ("io", "torchnet"),
    ("backends",),
    ("evaluation", "training"),
    ("model",),
    ("job",),
    ("cli",),
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every yolact_batch module ``path`` imports (``from pkg import mod`` resolved to ``pkg.mod``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("yolact_batch")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("yolact_batch"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (as a path that starts and ends at one module), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_every_module_belongs_to_a_layer():
    unplaced = sorted(m for m in import_graph() if layer(m) and layer(m) not in RANK)
    assert not unplaced, f"modules outside every layer (add the folder to LAYERS): {unplaced}"


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_layer_imports_a_higher_one():
    upward = [
        f"{a} -> {b}"
        for a, targets in import_graph().items()
        for b in targets
        if layer(a) and layer(b) and RANK[layer(b)] > RANK[layer(a)]
    ]
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(sorted(upward))


def test_ray_is_imported_only_by_the_pipeline():
    importers = sorted(
        module_name(p)
        for p in PACKAGE.rglob("*.py")
        if any(
            (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "ray" for a in n.names))
            or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "ray")
            for n in ast.walk(ast.parse(p.read_text()))
        )
    )
    assert importers == ["yolact_batch.job.pipeline"]


@pytest.mark.parametrize(
    "graph, cycle",
    [
        ({}, None),
        ({"a": {"b"}, "b": set()}, None),
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": {"b"}}, ["b", "c", "b"]),
        ({"a": {"a"}}, ["a", "a"]),
    ],
)
def test_find_cycle_oracle(graph, cycle):
    assert find_cycle(graph) == cycle
