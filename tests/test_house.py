"""House rules checked on the source: no import cycle inside the package, and ``import
fakesegment_nb`` and ``fakesegment --help`` stay free of torch (and of the other heavy libraries)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fakesegment_nb"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``, from every import statement of every
    file (function-level ones included), relative or absolute.

    ``from .x import name`` is an edge to ``x.name`` when that is a module, else to ``x``;
    ``from . import __version__`` is an edge to the package itself. Parent packages run first
    on any import; they are not counted as edges (every submodule would otherwise close a loop).
    """
    root = package_dir.parent
    files = {_module_name(p, root): p for p in sorted(package_dir.rglob("*.py"))}
    top = package_dir.name
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        here = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = here.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for a in node.names:
                    targets.append(f"{base}.{a.name}" if f"{base}.{a.name}" in files else base)
            for t in targets:
                if t == top or t.startswith(top + "."):
                    # "import pkg.a.b": the deepest module named
                    while t not in files and "." in t:
                        t = t.rpartition(".")[0]
                    if t in files and t != mod:
                        graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_the_package_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 20 and graph["fakesegment_nb.extract"], "the graph did not see the package"
    assert cycles(graph) == []


def test_the_cycle_finder_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '1'\n")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "c.py").write_text("import pkg.a\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "d.py").write_text("from .. import __version__\n")
    (pkg / "e.py").write_text("def g():\n    from .sub import d\n")
    graph = import_graph(pkg)
    assert graph["pkg.b"] == {"pkg.c"} and graph["pkg.sub.d"] == {"pkg"} and graph["pkg.e"] == {"pkg.sub.d"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    (pkg / "__init__.py").write_text("from .sub.d import *\n")
    assert cycles(import_graph(pkg)) == [["pkg", "pkg.sub.d"], ["pkg.a", "pkg.b", "pkg.c"]]


# what a user waits for before anything runs: torch alone took 2.3 s
HEAVY = ("torch", "torchvision", "timm", "xarray", "zarr", "dask", "sklearn", "matplotlib")


def _loaded_heavy(code: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    check = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    p = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_importing_the_package_loads_no_heavy_library():
    assert _loaded_heavy("import fakesegment_nb\nassert fakesegment_nb.__version__") == []


@pytest.mark.parametrize("argv", [["--help"], ["extract", "--help"], ["stats", "--help"]])
def test_cli_help_loads_no_heavy_library(argv):
    code = ("import runpy, sys\n"
            f"sys.argv = ['fakesegment', *{argv!r}]\n"
            "try:\n    runpy.run_module('fakesegment_nb.cli', run_name='__main__')\n"
            "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n")
    assert _loaded_heavy(code) == []


def test_lazy_names_resolve_and_evaluate_stays_the_function():
    import importlib

    import fakesegment_nb as fs

    for name in fs.__all__:
        assert getattr(fs, name) is not None, name
    importlib.import_module("fakesegment_nb.evaluate")  # binding the submodule must not hide the function
    assert callable(fs.evaluate) and fs.evaluate.__module__ == "fakesegment_nb.evaluate"
    from fakesegment_nb import evaluate

    assert evaluate is fs.evaluate
    with pytest.raises(AttributeError):
        fs.no_such_name


def _top_level_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
    return names


def test_every_name_in_a_modules_all_is_defined_there():
    """What a module shares is listed in its ``__all__``; a listed name it lost (moved away) is caught
    here, without importing anything."""
    missing = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        listed = [n.value for node in tree.body if isinstance(node, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
                  for n in ast.walk(node.value) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        lost = sorted(set(listed) - _top_level_names(tree))
        if lost:
            missing[str(path.relative_to(ROOT))] = lost
    assert missing == {}
