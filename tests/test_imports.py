"""The project's import graph, read from the source (AST, offline): no cycles, and the layers point one way.

Every ``import`` counts, at module level or inside a function or an ``if TYPE_CHECKING:`` block: an import hidden
in a function still ties the two modules together, it only moves the failure to run time.
- no cycle among the project's modules;
- the policy pack (``policy/``) imports nothing from the render harness (``tools/``): the pack runs on its own;
- production code (``infra/``, ``workloads/``, ``__main__.py``) imports nothing from ``tools/``.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from .conftest import REPO

SKIP_DIRS = {".git", "build", "node_modules", "__pycache__"}


def project_modules(root: Path = REPO) -> dict[str, Path]:
    """Dotted module name -> file, for every Python file of the project (``pkg/__init__.py`` is ``pkg``)."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in SKIP_DIRS or part.startswith(("venv", ".")) for part in rel.parts[:-1]):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts:
            out[".".join(parts)] = path
    return out


def imported_names(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """(absolute dotted name, line) of everything ``module`` imports, with relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".") if package else []
                anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield f"{base}.{alias.name}" if base else alias.name, node.lineno
                yield base, node.lineno


def import_graph(modules: Mapping[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {project module it imports: line}; ``from pkg import mod`` is an edge to ``pkg.mod``, and
    ``from pkg.mod import name`` to ``pkg.mod``; importing a package's ``__init__`` counts only if it has code."""
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for module, path in modules.items():
        for name, line in imported_names(module, path):
            if name in modules and name != module:
                graph[module].setdefault(name, line)
    # a `from pkg.mod import name` also yields `pkg.mod.name` (not a module) and `pkg.mod`; and `from pkg import mod`
    # yields `pkg.mod` and `pkg`: drop the edge to a package when the same line reached one of its submodules.
    for targets in graph.values():
        for target in list(targets):
            if any(t.startswith(target + ".") and targets[t] == targets[target] for t in targets):
                del targets[target]
    return graph


def cycles(graph: Mapping[str, Mapping[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted, biggest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found, key=lambda c: (-len(c), c))


def describe(component: list[str], graph: Mapping[str, Mapping[str, int]], modules: Mapping[str, Path]) -> str:
    members = set(component)
    edges = [
        f"{modules[a].relative_to(REPO)}:{line} imports {b}"
        for a in component
        for b, line in sorted(graph[a].items())
        if b in members
    ]
    return "cycle among " + ", ".join(component) + ":\n    " + "\n    ".join(edges)


def layer_violations(
    graph: Mapping[str, Mapping[str, int]], modules: Mapping[str, Path], importers: tuple[str, ...], forbidden: str
) -> list[str]:
    """Imports from a module under one of ``importers`` (package names, or a module's exact name) into ``forbidden``."""

    def under(module: str, package: str) -> bool:
        return module == package or module.startswith(package + ".")

    return [
        f"{modules[a].relative_to(REPO)}:{line} imports {b}"
        for a in sorted(graph)
        if any(under(a, p) for p in importers)
        for b, line in sorted(graph[a].items())
        if under(b, forbidden)
    ]


MODULES = project_modules()
GRAPH = import_graph(MODULES)


def test_the_graph_sees_the_project() -> None:
    # the walk finds the packages and resolves imports both ways (module level and inside functions)
    assert {"__main__", "infra.config", "tools.render", "policy.pack", "tests.conftest"} <= MODULES.keys()
    assert "infra.config" in GRAPH["__main__"] or any(m.startswith("infra.") for m in GRAPH["__main__"])
    assert "tools.render" in GRAPH["tests.conftest"]  # imported inside a function and under TYPE_CHECKING


def test_no_import_cycle() -> None:
    found = cycles(GRAPH)
    assert not found, "\n".join(describe(c, GRAPH, MODULES) for c in found)


def test_the_policy_pack_does_not_import_the_render_harness() -> None:
    bad = layer_violations(GRAPH, MODULES, ("policy",), "tools")
    assert not bad, "policy/ must not import tools/:\n  " + "\n  ".join(bad)


def test_production_code_does_not_import_tools() -> None:
    bad = layer_violations(GRAPH, MODULES, ("infra", "workloads", "__main__"), "tools")
    assert not bad, "infra/, workloads/ and __main__.py must not import tools/:\n  " + "\n  ".join(bad)


def test_the_policy_pack_loads_without_the_render_harness(tmp_path: Path) -> None:
    # The engine runs the pack from policy/ with the project root on the path (policy/__main__.py adds it, for
    # workloads/); with tools/ absent the pack still builds every policy.
    for part in ("policy", "workloads", "schemas"):
        shutil.copytree(REPO / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__", "venv"))
    code = "import sys; sys.path[:0] = sys.argv[1:3]; from policy.pack import build_policies as b; print(len(b()))"
    done = subprocess.run(
        [sys.executable, "-I", "-c", code, str(tmp_path / "policy"), str(tmp_path)],
        cwd=tmp_path / "policy",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and int(done.stdout) > 0, done.stderr


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"a/__init__.py": "", "a/x.py": "from a import y\n", "a/y.py": "def f():\n    from a.x import g\n"},
            [["a.x", "a.y"]],
        ),
        (
            {
                "a/__init__.py": "",
                "a/x.py": "from . import y\n",
                "a/y.py": "import a.z\n",
                "a/z.py": "from .x import q\n",
            },
            [["a.x", "a.y", "a.z"]],
        ),
        ({"a/__init__.py": "", "a/x.py": "from a import y\n", "a/y.py": "import json\n"}, []),
    ],
)
def test_the_cycle_finder_finds_cycles(tmp_path: Path, files: dict[str, str], expected: list[list[str]]) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cycles(import_graph(project_modules(tmp_path))) == expected
