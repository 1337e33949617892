"""The house rules of DESIGN.md, read from the code: few top-level modules, no import circle, and the
directions imports may take between the folders."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "digitlab"
TOP_LEVEL_ALLOWED = {"__init__.py", "__main__.py", "cli.py", "errors.py", "batch.py"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of its code (a function-level import is still a dependency)."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
GRAPH = {name: {m for m in imports_of(path) if m in MODULES and m != name} for name, path in MODULES.items()}


COMPAT = "digitlab.training.compat"  # a leaf every folder may use: the one home of other packages' private names


def depends_on(module: str, prefix: str) -> list[str]:
    """Modules under `prefix` (or outside packages matching it) that `module` imports."""
    return sorted(m for m in imports_of(MODULES[module])
                  if (m == prefix or m.startswith(prefix + ".")) and not m.startswith(COMPAT))


def test_the_top_level_holds_only_the_entry_point_errors_and_batch_contract():
    top = {path.name for path in PACKAGE.glob("*.py")}
    assert top <= TOP_LEVEL_ALLOWED, f"modules to move into a folder named by role: {sorted(top - TOP_LEVEL_ALLOWED)}"


def test_no_import_circle():
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    # A package's __init__ importing its own modules is not a circle of ideas: leave packages out of the count.
    circles = [c for c in circles if not any(MODULES[m].name == "__init__.py" and all(o.startswith(m + ".") or o == m
                                                                                         for o in c) for m in c)]
    assert circles == []


@pytest.mark.parametrize(("folder", "forbidden"), [
    ("digitlab.report", ["lightning", "pytorch_lightning", "digitlab.sweep", "digitlab.training", "optuna"]),
    ("digitlab.models", ["digitlab.training", "digitlab.cli", "digitlab.data", "digitlab.sweep", "digitlab.deploy"]),
    ("digitlab.sweep", ["digitlab.cli", "digitlab.training.lightning_cli"]),
    ("digitlab.deploy", ["digitlab.cli", "digitlab.training"]),
    ("digitlab.runs", ["digitlab.training", "digitlab.cli", "digitlab.sweep", "digitlab.deploy"]),
    ("digitlab.runs.layout", ["lightning", "torch"]),  # the report reads runs with it
    ("digitlab.utils", ["lightning", "digitlab.training", "digitlab.models", "digitlab.cli"]),
    ("digitlab.config", ["digitlab.training", "digitlab.cli", "digitlab.sweep"]),
])
def test_imports_go_one_way(folder, forbidden):
    wrong = {name: [m for prefix in forbidden for m in depends_on(name, prefix)]
             for name in MODULES if name == folder or name.startswith(folder + ".")}
    assert {name: found for name, found in wrong.items() if found} == {}


def test_only_the_run_path_builds_a_trainer():
    """One run path: `Trainer(` is called in digitlab/training/run.py and nowhere else in the package."""
    callers = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "Trainer":
                callers.append(name)
    assert sorted(set(callers)) == ["digitlab.training.run"]


def test_compat_is_a_leaf():
    """Every folder may use compat, so compat uses no other digitlab module (no circle through it)."""
    assert depends_on(COMPAT, "digitlab") == []
