"""The package's import structure: layers point down only, no cycles, no hidden imports.

A module may import modules of its own layer or of lower layers, never higher ones (a data
module never imports the engine, the engine never imports a task), and the module graph has no
cycle. Imports of anivision's own modules sit at the top of the file, never inside a function,
so the file's first lines say what it depends on.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "anivision"

#: Bottom to top. The first dotted part below ``anivision`` picks the layer.
LAYERS: list[set[str]] = [
    {"errors", "files", "config", "version", "progress", "extras"},
    {"data"},
    {"models", "metrics", "index"},
    {"reports", "strategies", "explain"},
    {"engine", "deploy"},
    {"embeddings"},
    {"tasks"},
    {"api"},
    {"web"},
    {"commands"},
    {"cli"},
    {"__init__"},
]


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    for i, names in enumerate(LAYERS):
        if key in names:
            return i
    raise AssertionError(f"{module}: not in any layer of tests/test_layers.py; add it")


def own_imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported anivision module, line, inside a function) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_func: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0 and child.module.split(".")[0] == "anivision":
                for alias in child.names:
                    full = f"{child.module}.{alias.name}"
                    target = full if (SRC.parent / Path(*full.split("."))).with_suffix(".py").exists() or (SRC.parent / Path(*full.split("."))).is_dir() else child.module
                    found.append((target, child.lineno, in_func))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "anivision":
                        found.append((alias.name, child.lineno, in_func))
            visit(child, inner)

    visit(tree, False)
    return found


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def test_no_function_local_imports_of_anivision() -> None:
    bad = [f"{p.relative_to(SRC.parent)}:{line} imports {m}" for p in SRC.rglob("*.py") for m, line, inner in own_imports(p) if inner]
    assert not bad, "function-local imports of anivision modules:\n" + "\n".join(bad)


def test_imports_point_down_the_layers() -> None:
    bad = []
    for name, path in all_modules().items():
        for target, line, _ in own_imports(path):
            if layer_of(target) > layer_of(name):
                bad.append(f"{path.relative_to(SRC.parent)}:{line} ({name}, layer {layer_of(name)}) imports {target} (layer {layer_of(target)})")
    assert not bad, "imports from a higher layer:\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    modules = all_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target, _, _ in own_imports(path):
            # ``from anivision.x import y`` where y is a name, not a module, depends on anivision.x.
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != name and target in modules:
                graph[name].add(target)
    # A package's __init__ re-exporting its own modules is not a cycle with them.
    for name in graph:
        graph[name] = {t for t in graph[name] if not (name.startswith(t + ".") and modules[t].name == "__init__.py")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                cyc = dfs(t)
                if cyc:
                    return cyc
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = dfs(m)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("limit", [500])
def test_files_are_short(limit: int) -> None:
    long = [f"{p.relative_to(SRC.parent)}: {n} lines" for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > limit]
    assert not long, f"files over {limit} lines:\n" + "\n".join(long)


def test_task_functions_are_short() -> None:
    long = []
    for p in (SRC / "tasks").rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > 80:
                    long.append(f"{p.relative_to(SRC.parent)}:{node.lineno} {node.name}: {n} lines")
    assert not long, "task functions over 80 lines:\n" + "\n".join(long)


def test_one_backward_pass_in_the_package() -> None:
    sites = [f"{p.relative_to(SRC.parent)}:{i}" for p in SRC.rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1) if ".backward(" in line]
    assert len({s.split(':')[0] for s in sites}) == 1 and sites[0].startswith("anivision/engine/loop.py"), sites
