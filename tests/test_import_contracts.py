"""Layer boundaries (pyproject's [tool.importlinter]), a GUI-thread import that loads no torch, no import cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    """engine: no Qt; GUI-side engine modules and views/: no torch; ui: no direct torch import."""
    result = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports; "
                             "import sys; sys.exit(lint_imports(config_filename='pyproject.toml'))"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_importing_the_main_window_loads_no_torch():
    """The window is built and shown before torch is imported (on the job thread)."""
    code = ("import sys, cnnviewer.ui.main_window, cnnviewer.ui.app, cnnviewer.cli; "
            "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


# Import cycles: the graph of cnnviewer's modules, one edge per import statement, must have no cycle.
# Imports inside functions count (deferring an import hides a cycle at import time; the two modules
# still depend on each other); imports under `if TYPE_CHECKING:` do not (they never run).
PACKAGE = ROOT / "cnnviewer"
ALLOWED_CYCLES: list[set[str]] = []


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class ImportStatements(ast.NodeVisitor):
    """Every import statement of a module, at any depth, except those under `if TYPE_CHECKING:`."""

    def __init__(self) -> None:
        self.found: list[ast.Import | ast.ImportFrom] = []

    def visit_If(self, node: ast.If) -> None:  # noqa: N802 - ast.NodeVisitor's naming
        for child in (node.orelse if is_type_checking(node.test) else [*node.body, *node.orelse]):
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:  # noqa: N802
        self.found.append(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:  # noqa: N802
        self.found.append(node)


def module_imports(path: Path, modules: set[str], root: Path = ROOT) -> set[str]:
    """The cnnviewer modules that importing `path` imports directly (relative imports resolved)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    visitor = ImportStatements()
    visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
    for statement in visitor.found:
        if isinstance(statement, ast.Import):
            found.update(alias.name for alias in statement.names)
        elif isinstance(statement, ast.ImportFrom):
            base = statement.module or ""
            if statement.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - statement.level + 1] + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in statement.names} & modules
            found.update(submodules)
            if len(submodules) < len(statement.names):    # names defined in the module (or package) itself
                found.add(base)
    return {module for module in found if module in modules and module != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): module_imports(path, modules) for path in paths}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Groups of modules that import each other, directly or not: the strongly connected components
    of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for child in sorted(graph[node]):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            start = stack.index(node)
            component = set(stack[start:])
            del stack[start:]
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle():
    """The check below can fail: a three-module loop and a pair are found, a chain is not."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d", "f"}, "f": set()}
    assert sorted(map(sorted, cycles(graph))) == [["a", "b", "c"], ["d", "e"]]


def test_import_graph_skips_type_checking_imports_only(tmp_path):
    """TYPE_CHECKING imports are skipped, deferred ones kept; relative and `from pkg import mod` resolved."""
    source = ("from typing import TYPE_CHECKING\nfrom . import b\nfrom .c import thing\n"
              "if TYPE_CHECKING:\n    from cnnviewer.x import d\ntry:\n    import cnnviewer.x.e\n"
              "except ImportError:\n    pass\ndef f():\n    from cnnviewer.x import f\n")
    (tmp_path / "cnnviewer" / "x").mkdir(parents=True)
    path = tmp_path / "cnnviewer" / "x" / "a.py"
    path.write_text(source, encoding="utf-8")
    modules = {f"cnnviewer.x.{n}" for n in "abcdef"}
    assert module_imports(path, modules, tmp_path) == {"cnnviewer.x.b", "cnnviewer.x.c", "cnnviewer.x.e",
                                                       "cnnviewer.x.f"}


def test_no_import_cycles():
    """Any cycle among cnnviewer's modules fails, except the listed one."""
    found = cycles(import_graph())
    unexpected = [sorted(component) for component in found if component not in ALLOWED_CYCLES]
    assert not unexpected, f"import cycles: {unexpected}"
