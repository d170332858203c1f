"""The package's import graph: no cycles, and the layers DESIGN.md names.

Every ``import plait...`` / ``from plait... import`` counts, at module level or inside a
function: a lazy import still ties two modules together, it only hides the cycle until run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "plait"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def graph() -> dict[str, set[str]]:
    """module -> the plait modules it imports (a name imported from a package that is itself a
    module counts as that module)."""
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = mod.split(".")
                    anchor = anchor if is_pkg else anchor[:-1]
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            for t in targets:
                while t and t not in files:  # plait.nn.attention.X -> plait.nn.attention
                    t = t.rpartition(".")[0]
                if t.startswith("plait") and t != mod:
                    edges[mod].add(t)
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def package_of(mod: str) -> str:
    """plait.nn.attention -> plait.nn; plait.io -> plait.io"""
    parts = mod.split(".")
    return ".".join(parts[:2])


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# (package, packages it may import besides itself): each layer stands on those below it
BASE = {"plait.io", "plait.config", "plait.registry", "plait.progress"}
LAYERS = [
    ("plait.io", set()),
    ("plait.registry", set()),
    ("plait.progress", set()),
    ("plait.nn", set()),
    ("plait.config", {"plait.io"}),
    ("plait.generation", {"plait.config"}),
    ("plait.models", BASE | {"plait.nn", "plait.generation"}),
    ("plait.text", BASE),
    ("plait.vision", BASE),
    ("plait.audio", BASE),
    ("plait.data", BASE | {"plait.text", "plait.vision", "plait.audio"}),
    ("plait.checkpoint", BASE | {"plait.models"}),
    ("plait.hf", BASE | {"plait.checkpoint", "plait.models", "plait.nn"}),
    ("plait.loading", BASE | {"plait.checkpoint", "plait.hf", "plait.nn"}),  # nn: quantize
    ("plait.inference", BASE | {"plait.loading", "plait.checkpoint", "plait.generation",
                                "plait.models", "plait.nn", "plait.text", "plait.vision",
                                "plait.audio"}),
    ("plait.evaluation", BASE | {"plait.inference", "plait.data", "plait.text", "plait.vision",
                                 "plait.models"}),
]


@pytest.mark.parametrize("package,allowed", LAYERS, ids=[p for p, _ in LAYERS])
def test_layers_import_only_what_is_below_them(package, allowed):
    edges = graph()
    bad = sorted(f"{m} -> {t}" for m, ts in edges.items() if package_of(m) == package
                 for t in ts if package_of(t) not in allowed | {package})
    assert not bad, f"{package} reaches up: " + ", ".join(bad)


def test_training_is_imported_only_by_the_commands_and_the_demo():
    edges = graph()
    users = {"plait.training", "plait.cli", "plait.demo"}
    bad = sorted(f"{m} -> {t}" for m, ts in edges.items() if package_of(m) not in users
                 for t in ts if package_of(t) == "plait.training")
    assert not bad, ", ".join(bad)


def test_nothing_imports_the_cli():
    edges = graph()
    bad = sorted(f"{m} -> {t}" for m, ts in edges.items() if package_of(m) != "plait.cli"
                 for t in ts if package_of(t) == "plait.cli")
    assert not bad, "only the console script may import plait.cli: " + ", ".join(bad)
