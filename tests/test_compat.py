"""The private names digitlab relies on still exist in the installed versions, and only the compat module
touches them. A newer release that removes one fails here in one line, before anything else breaks."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

from digitlab.training import compat
from digitlab.training.compat import PRIVATE_NAMES, PrivateName

REPO = Path(__file__).resolve().parents[1]
COMPAT_FILE = Path(compat.__file__)
COMPAT_SHOWN = COMPAT_FILE.relative_to(REPO).as_posix()
PRIVATE_TOUCHES_TOOL = REPO.parent / "shared" / "tools" / "private_touches.py"

# Touches in modules that the one-run-path rewrite replaces, overrides included; they go with that rewrite.


MISSING = object()


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def look_up(entry: PrivateName) -> object:
    """The object `entry` names; AttributeError or ImportError when the installed version lacks it."""
    found: object = importlib.import_module(entry.module)
    for step in entry.path.split("."):
        found = getattr(found, step.removesuffix("()"))
        if step.endswith("()"):
            found = found()
    return found


@pytest.mark.parametrize("entry", PRIVATE_NAMES, ids=lambda entry: f"{entry.module}:{entry.path}")
def test_the_private_name_still_exists(entry):
    version = importlib.metadata.version(entry.distribution)
    where = f"({entry.module}; used by {COMPAT_SHOWN}: {entry.reason})"
    try:
        found = look_up(entry)
    except (AttributeError, ImportError):
        found = MISSING
    if found is MISSING:  # failed outside the `except`, so that the one line is all pytest shows
        pytest.fail(f"{entry.distribution} {version} no longer has {entry.path} {where}", pytrace=False)
    if entry.parameters:
        parameters = tuple(inspect.signature(found).parameters)
        if parameters != entry.parameters:
            pytest.fail(f"{entry.distribution} {version} changed {entry.path} to take {parameters}, not "
                        f"{entry.parameters} {where}", pytrace=False)


def private_names_used(tree: ast.AST) -> dict[str, int]:
    """Every private name a module's code touches -> the first line touching it: attributes, imported modules
    and names, and methods it defines (overrides)."""
    used: dict[str, int] = {}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = node.module.split(".") + [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [part for alias in node.names for part in alias.name.split(".")]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names = [node.name]
        for name in filter(is_private, names):
            used.setdefault(name, node.lineno)
    return used


def private_names_listed() -> set[str]:
    return {part.removesuffix("()") for entry in PRIVATE_NAMES
            for part in f"{entry.module}.{entry.path}".split(".") if is_private(part.removesuffix("()"))}


def test_the_compat_module_touches_only_the_private_names_it_lists():
    used = private_names_used(ast.parse(COMPAT_FILE.read_text()))
    unlisted = [f"{COMPAT_SHOWN}:{line} uses {name}, which PRIVATE_NAMES does not list: add it with its reason"
                for name, line in sorted(used.items(), key=lambda item: item[1]) if name not in private_names_listed()]
    if unlisted:
        pytest.fail("\n".join(unlisted), pytrace=False)


def test_every_listed_private_name_is_used():
    stale = sorted(private_names_listed() - set(private_names_used(ast.parse(COMPAT_FILE.read_text()))))
    if stale:
        pytest.fail(f"PRIVATE_NAMES lists {', '.join(stale)}, which {COMPAT_SHOWN} no longer uses: remove them",
                    pytrace=False)


@pytest.mark.skipif(not PRIVATE_TOUCHES_TOOL.is_file(), reason=f"{PRIVATE_TOUCHES_TOOL} is not here")
def test_no_private_name_of_another_package_is_touched_outside_compat():
    result = subprocess.run([sys.executable, str(PRIVATE_TOUCHES_TOOL), "digitlab"], cwd=REPO,
                            capture_output=True, text=True, check=True)
    outside = [line for line in result.stdout.splitlines()[:-1] if line.strip()]  # the last line is their count
    if outside:
        pytest.fail(f"Private names of other packages outside {COMPAT_SHOWN} (move each there):\n"
                    + "\n".join(outside), pytrace=False)
