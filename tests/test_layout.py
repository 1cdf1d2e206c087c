"""The package's shape: imports flow one way, the command line sits on top, modules stay short.

The import graph is read from the source with ``ast`` (every ``import`` statement, those
inside functions and under ``TYPE_CHECKING`` included: an import hidden in a function still
ties two modules together). An edge ``a -> b`` means module ``a`` names module ``b``;
``from pkg import name`` points at ``pkg.name`` when that is a module, else at ``pkg``.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ampxfer_lib"
#: Longest library module, in lines (the issue asks for "about 500").
MAX_LINES = 600


def module_files(package_dir: Path) -> Dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``package_dir`` (a package's
    ``__init__.py`` is the package itself)."""
    root = package_dir.parent
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` statement names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    # in a package's __init__, "." is the package itself; in a module, its parent
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(package_dir: Path) -> Dict[str, Set[str]]:
    """Module -> the package's modules it imports (anywhere in its source)."""
    files = module_files(package_dir)
    graph: Dict[str, Set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(name, is_package, node)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                           for alias in node.names]
            for target in targets:
                # "import a.b.c" names a.b.c; the longest prefix that is one of ours
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import circle as [a, b, ..., a], or [] when the graph has none (depth-first search)."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: finished
    path: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return []


def cli_importers(graph: Dict[str, Set[str]], package: str) -> List[str]:
    """Library modules that import the command line (``package.cli``).

    ``__main__`` modules are entry points (``python -m package.sub``) and may call into it.
    """
    cli = f"{package}.cli"
    return sorted(m for m, deps in graph.items()
                  if not (m == cli or m.startswith(cli + ".")) and m.rsplit(".", 1)[-1] != "__main__"
                  and any(d == cli or d.startswith(cli + ".") for d in deps))


def long_modules(package_dir: Path, limit: int) -> Dict[str, int]:
    counts = {name: len(path.read_text().splitlines()) for name, path in module_files(package_dir).items()}
    return {name: n for name, n in counts.items() if n > limit}


# --------------------------------------------------------------------------- the package

@pytest.fixture(scope="module")
def graph():
    return import_graph(PACKAGE)


def test_the_graph_sees_imports_inside_functions(graph):
    # cli.main imports the commands' modules at the top, and they import the library lazily
    assert "ampxfer_lib.errors" in graph["ampxfer_lib.cli.main"]
    assert len(graph) > 30 and sum(map(len, graph.values())) > 60


def test_no_import_circles(graph):
    cycle = find_cycle(graph)
    assert not cycle, "import circle: " + " -> ".join(cycle)


def test_only_the_command_line_and_entry_points_import_cli(graph):
    assert cli_importers(graph, "ampxfer_lib") == []


def test_no_module_is_longer_than_the_limit():
    long = long_modules(PACKAGE, MAX_LINES)
    assert not long, f"modules over {MAX_LINES} lines: {long}"


# --------------------------------------------------------------------------- the checker itself

def _package(root: Path, files: Dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_checker_finds_a_circle_hidden_in_a_function(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from pkg.b import g\n",
        "sub/__init__.py": "",
        "sub/b.py": "",
        "b.py": "def g():\n    from .c import h\n",
        "c.py": "def h():\n    import pkg.a\n",
    })
    graph = import_graph(pkg)
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"}, "pkg.c": {"pkg.a"}, "pkg.sub": set(),
                     "pkg.sub.b": set()}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    (pkg / "c.py").write_text("def h():\n    import os\n")
    assert find_cycle(import_graph(pkg)) == []


def test_the_checker_resolves_submodules_and_relative_imports(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "from . import cli\n",
        "cli/__init__.py": "",
        "cli/main.py": "from pkg.sub import tool\n",
        "sub/__init__.py": "from .tool import x\n",
        "sub/tool.py": "x = 1\nfrom pkg.cli.main import main\n",
        "sub/__main__.py": "from pkg.cli import main\n",
    })
    graph = import_graph(pkg)
    assert graph["pkg"] == {"pkg.cli"}
    assert graph["pkg.sub"] == {"pkg.sub.tool"}
    assert graph["pkg.cli.main"] == {"pkg.sub.tool"}
    assert graph["pkg.sub.__main__"] == {"pkg.cli.main"}
    # the package's own __init__ and an entry point may name cli; sub.tool may not
    assert cli_importers(graph, "pkg") == ["pkg", "pkg.sub.tool"]
    assert find_cycle(graph) == ["pkg.cli.main", "pkg.sub.tool", "pkg.cli.main"]


def test_the_line_limit(tmp_path):
    pkg = _package(tmp_path, {"__init__.py": "", "long.py": "x = 1\n" * 11, "short.py": "x = 1\n" * 10})
    assert long_modules(pkg, 10) == {"pkg.long": 11}
