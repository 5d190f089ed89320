"""The package's layers, checked from its source: no import cycle, no upward import, no Ray (or
pyarrow, or the tool surface) in the core.

Layers, lowest first (a module may import its own layer and those below it)::

    batchray.errors < core.model < core.txn < core.storage < core.plan < core.run
                    < batchray.io < actors < batchray.api

``batchray.testing`` sits beside ``batchray.io``: it may import the core and io, never the Ray
runtime or the api. Every import counts, also one made inside a function; only imports under
``if TYPE_CHECKING:`` (annotations, never executed) are left out. The checker is tried on small
made-up trees first, so that a checker that finds nothing cannot pass for a clean tree.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

LAYERS = [
    ("batchray.errors", "batchray.lazy"),
    ("batchray.core.model",),
    ("batchray.core.txn",),
    ("batchray.core.storage",),
    ("batchray.core.plan",),
    ("batchray.core.run",),
    ("batchray.io", "batchray.testing"),
    ("actors",),
    ("batchray.api",),
]
CORE_FORBIDDEN = ("ray", "pyarrow", "actors", "batchray.io", "batchray.api", "batchray.testing", "tqdm", "mcp")
TESTING_FORBIDDEN = ("actors", "batchray.api")


def modules_of(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``name`` imports (absolute names; ``from a import b`` is ``a.b`` when that
    is a module, else ``a``), outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                found.add(candidate if candidate in known else module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(name)
    return found


def _layer(module: str) -> int | None:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def check(root: Path, packages: tuple[str, ...] = ("batchray", "actors")) -> list[str]:
    """Every violation of the rules in the module docstring, as readable lines."""
    modules = modules_of(root, packages)
    graph = {name: imports_of(name, path, set(modules)) for name, path in modules.items()}
    problems = []
    for name, targets in sorted(graph.items()):
        rank = _layer(name)
        for target in sorted(targets):
            if _within(name, ("batchray.core",)) and _within(target, CORE_FORBIDDEN):
                problems.append(f"core imports {target}: {name}")
            elif _within(name, ("batchray.testing",)) and _within(target, TESTING_FORBIDDEN):
                problems.append(f"testing imports {target}: {name}")
            elif target in modules and rank is not None and (_layer(target) or 0) > rank:
                problems.append(f"upward import: {name} -> {target}")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles({n: t & set(modules) for n, t in graph.items()})]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strongconnect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                strongconnect(target)
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
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    return found


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for directory in {p.parent for p in tmp_path.rglob("*.py")}:
        (directory / "__init__.py").touch()
    return tmp_path


# -- the checker finds what it must ------------------------------------------------------------

def test_the_checker_finds_a_cycle_through_an_import_inside_a_function(tmp_path):
    root = _tree(tmp_path, {
        "batchray/core/plan/a.py": "from batchray.core.plan import b\n",
        "batchray/core/plan/b.py": "def f():\n    from batchray.core.plan.a import x\n",
    })
    assert check(root) == ["import cycle: batchray.core.plan.a -> batchray.core.plan.b"]


def test_the_checker_finds_ray_in_the_core_and_an_upward_import(tmp_path):
    root = _tree(tmp_path, {
        "batchray/core/txn/a.py": "import ray\n",
        "batchray/core/model/b.py": "from batchray.core.run.c import y\n",
        "batchray/core/run/c.py": "y = 1\n",
        "batchray/testing/d.py": "from batchray.api.e import z\n",
        "batchray/api/e.py": "z = 1\n",
    })
    assert check(root) == ["upward import: batchray.core.model.b -> batchray.core.run.c",
                           "core imports ray: batchray.core.txn.a",
                           "testing imports batchray.api.e: batchray.testing.d"]


def test_the_checker_leaves_out_type_checking_imports_only(tmp_path):
    root = _tree(tmp_path, {
        "batchray/core/plan/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from batchray.core.plan.b import B\n",
        "batchray/core/plan/b.py": "from batchray.core.plan.a import A\n",
    })
    assert check(root) == []


# -- the package --------------------------------------------------------------------------------

def test_the_package_keeps_its_layers():
    assert check(REPO) == []


def test_every_module_is_in_a_layer():
    unplaced = [name for name in modules_of(REPO, ("batchray", "actors"))
                if _layer(name) is None and name not in ("batchray", "batchray.core")]
    assert unplaced == []


def test_importing_the_whole_core_loads_no_ray_or_pyarrow():
    names = sorted(n for n in modules_of(REPO, ("batchray",)) if n.startswith("batchray.core"))
    code = ("import sys\n" + "".join(f"import {n}\n" for n in names) +
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'pyarrow', 'actors', 'tqdm'))\n"
            "bad += sorted(m for m in sys.modules if m.startswith(('batchray.api', 'batchray.io')))\n"
            "print(bad)\nsys.exit(1 if bad else 0)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("package", ["batchray", "actors"])
def test_no_module_is_over_800_lines(package):
    long = {name: len(path.read_text().splitlines()) for name, path in modules_of(REPO, (package,)).items()}
    assert {name: n for name, n in long.items() if n > 800} == {}
