"""The package's import graph: no cycles, imports that point the way DESIGN.md section 1 says.

Every module of every package listed in pyproject.toml is parsed (not imported) and its imports of
`avfusion.*` are collected with `ast`:

- module-level imports (outside `if TYPE_CHECKING:`) form the graph that must have no cycle;
- every import, wherever it is (module level, inside a function, or for type checking only),
  must respect the layering: calibration imports nothing of ours but the shared root modules
  (errors, fileio, labels); sensors -> calibration; datasets -> sensors, calibration; fusion ->
  sensors, calibration (never datasets); eval -> datasets, calibration; tools -> anything; nothing
  outside tools imports tools;
- an import of our own modules inside a function needs a reason (a heavy or optional dependency
  behind it, or the CUDA simulator's switch): the allowed ones are listed below with theirs.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "avfusion"
SHARED = {"errors", "fileio", "labels"}  # root modules every layer may import

# The layers each layer may import (itself and the shared root modules always).
ALLOWED: dict[str, set[str]] = {
    "shared": set(),
    "calibration": set(),
    "sensors": {"calibration"},
    "datasets": {"sensors", "calibration"},
    "fusion": {"sensors", "calibration"},
    "eval": {"datasets", "calibration"},
    "tools": {"shared", "calibration", "sensors", "datasets", "fusion", "eval"},
}

# Function-level imports of our own modules, and why each is not at the top of its module.
LAZY_IMPORTS: dict[tuple[str, str], str] = {
    (
        "avfusion.fusion.ops.voxelize",
        "avfusion.fusion.ops.voxelize_cuda",
    ): "numba.cuda reads NUMBA_ENABLE_CUDASIM when first imported; CUDA only when asked for",
    ("avfusion.tools.replay.engine", "avfusion.tools.replay.ray_runner"): "Ray is optional",
    # The eval JSON loaders: replaced with msgspec in a separate change (issue 19, item 2).
    ("avfusion.eval.data", "avfusion.eval.fastload"): "import cycle data <-> fastload",
    ("avfusion.eval.data", "avfusion.eval.jsonscan"): "import cycle data <-> fastload",
    ("avfusion.eval.detection", "avfusion.eval.jsonscan"): "loads Numba's JSON kernels on demand",
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (or package)
    line: int
    top_level: bool  # executed when the module is imported
    type_only: bool  # under `if TYPE_CHECKING:`


def package_modules() -> dict[str, Path]:
    """Every module of the packages pyproject.toml installs, by dotted name."""
    with open(REPO_ROOT / "pyproject.toml", "rb") as file:
        setuptools = tomllib.load(file)["tool"]["setuptools"]
    root = Path(setuptools["package-dir"][PACKAGE])
    modules: dict[str, Path] = {}
    for package in setuptools["packages"]:
        folder = REPO_ROOT / root / Path(*package.split(".")[1:])
        for path in sorted(folder.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            modules[name] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(node: ast.Import | ast.ImportFrom, source: str, is_package: bool, modules: set[str]) -> list[str]:
    """Our modules an import statement names (a `from package import module` names the module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE]
    base = node.module or ""
    if node.level:  # relative: resolved against the importing module's package
        parts = source.split(".")
        parent = parts if is_package else parts[:-1]
        parent = parent[: len(parent) - (node.level - 1)]
        base = ".".join(parent + ([base] if base else []))
    if base.split(".")[0] != PACKAGE:
        return []
    targets = []
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        targets.append(submodule if submodule in modules else base)
    return targets


def module_imports(name: str, path: Path, modules: set[str]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []

    def visit(node: ast.AST, top_level: bool, type_only: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            for target in _resolve(node, name, path.stem == "__init__", modules):
                found.append(Import(name, target, node.lineno, top_level, type_only))
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, top_level, True)
            for child in node.orelse:
                visit(child, top_level, type_only)
            return
        inside_function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, top_level and not inside_function, type_only)

    visit(tree, True, False)
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) < 2 or parts[1] in SHARED:
        return "shared"
    return parts[1]


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    modules = package_modules()
    assert len(modules) > 50, f"found only {len(modules)} modules: is pyproject's packages list read?"
    names = set(modules)
    return [imp for name, path in modules.items() for imp in module_imports(name, path, names)]


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (or with a self-loop), each as a
    cycle path through it (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in edges.get(node, ()):
                        components.append(sorted(component))
    return components


def test_find_cycles_finds_a_cycle_and_only_cycles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": set()}
    assert sorted(find_cycles(edges)) == [["a", "b", "c"], ["e"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_module_imports_sees_function_level_and_type_checking(tmp_path: Path) -> None:
    path = tmp_path / "example.py"
    path.write_text(
        "from typing import TYPE_CHECKING\n"
        "from avfusion.calibration import se3\n"
        "from avfusion.errors import InputError\n"
        "if TYPE_CHECKING:\n"
        "    from avfusion.sensors.types import SyncedFrame\n"
        "def f():\n"
        "    import avfusion.fusion.model\n"
        "    from . import sibling\n",
        encoding="utf-8",
    )
    modules = {"avfusion.calibration.se3", "avfusion.errors", "avfusion.pkg.sibling"}
    found = {(i.target, i.top_level, i.type_only) for i in module_imports("avfusion.pkg.example", path, modules)}
    assert found == {
        ("avfusion.calibration.se3", True, False),
        ("avfusion.errors", True, False),
        ("avfusion.sensors.types", True, True),
        ("avfusion.fusion.model", False, False),
        ("avfusion.pkg.sibling", False, False),
    }


def test_no_import_cycle(imports: list[Import]) -> None:
    edges: dict[str, set[str]] = {}
    for imp in imports:
        if imp.top_level and not imp.type_only:
            edges.setdefault(imp.source, set()).add(imp.target)
    assert find_cycles(edges) == []


def test_imports_point_the_way_design_says(imports: list[Import]) -> None:
    wrong = []
    for imp in imports:
        source, target = layer(imp.source), layer(imp.target)
        if target in (source, "shared") or target in ALLOWED[source]:
            continue
        wrong.append(f"{imp.source}:{imp.line} imports {imp.target} ({source} -> {target})")
    assert wrong == []


def test_function_level_imports_of_ours_have_a_reason(imports: list[Import]) -> None:
    unexplained = sorted(
        f"{imp.source}:{imp.line} imports {imp.target} inside a function"
        for imp in imports
        if not imp.top_level and (imp.source, imp.target) not in LAZY_IMPORTS
    )
    assert unexplained == []
