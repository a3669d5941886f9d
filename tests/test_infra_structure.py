"""The shape of infra/: components read as a few named steps, and every component and its Args are documented.

- No function in ``infra/`` is longer than ``MAX_FUNCTION_LINES``: a long constructor is split into helpers named
  after what they build (node access, interruption handling, controller, pools, ...).
- Every ``pulumi.ComponentResource`` subclass has a docstring, and every dataclass whose name ends in ``Args`` has a
  docstring and an attribute docstring under each field (what it is, units, who provides it), the way pulumi-eks
  documents every ``ClusterOptions`` field.  Attribute docstrings are plain string statements after the field: the
  AST sees them, and so do Sphinx and pdoc.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO

MAX_FUNCTION_LINES = 80
INFRA = REPO / "infra"


def _modules() -> list[Path]:
    return sorted(INFRA.glob("*.py"))


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``name (N lines)`` for every function or method of ``source`` longer than ``limit`` lines."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            lines = (node.end_lineno or node.lineno) - first + 1
            if lines > limit:
                out.append(f"{node.name} ({lines} lines)")
    return out


def _base_names(node: ast.ClassDef) -> set[str]:
    return {b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in node.bases}


def _is_dataclass(node: ast.ClassDef) -> bool:
    for d in node.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if (isinstance(target, ast.Name) and target.id == "dataclass") or (
            isinstance(target, ast.Attribute) and target.attr == "dataclass"
        ):
            return True
    return False


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _undocumented_fields(node: ast.ClassDef) -> Iterator[str]:
    body = node.body
    for i, stmt in enumerate(body):
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            nxt = body[i + 1] if i + 1 < len(body) else None
            if nxt is None or not _is_docstring(nxt) or not str(nxt.value.value).strip():  # type: ignore[attr-defined]
                yield stmt.target.id


def undocumented(source: str) -> list[str]:
    """Components without a class docstring, Args dataclasses without one, and Args fields without a docstring."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        is_component = "ComponentResource" in _base_names(node)
        is_args = node.name.endswith("Args") and _is_dataclass(node)
        if (is_component or is_args) and not ast.get_docstring(node):
            out.append(f"class {node.name} has no docstring")
        if is_args:
            out += [f"{node.name}.{f} has no docstring" for f in _undocumented_fields(node)]
    return out


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_no_function_in_infra_is_long(path: Path) -> None:
    assert long_functions(path.read_text()) == [], f"{path.name}: split into helpers named after what they build"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_components_and_their_args_are_documented(path: Path) -> None:
    assert undocumented(path.read_text()) == []


def test_the_checks_see_every_component_and_args_class() -> None:
    # The checks must have found what they claim to check: each component in __main__.py, and its Args.
    components, args = set(), set()
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and "ComponentResource" in _base_names(node):
                components.add(node.name)
            if isinstance(node, ast.ClassDef) and node.name.endswith("Args") and _is_dataclass(node):
                args.add(node.name)
    main = (REPO / "__main__.py").read_text()
    used = {
        n.func.id
        for n in ast.walk(ast.parse(main))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id[:1].isupper()
    }
    assert {c for c in components if c in used} >= {"Network", "Cluster", "Karpenter", "Serving", "Monitoring"}
    assert {f"{c}Args" for c in components if c in used} <= args


def test_long_function_check_fails_on_a_long_function() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert long_functions(f"def build() -> None:\n{body}\n") == [f"build ({MAX_FUNCTION_LINES + 1} lines)"]
    assert long_functions("def build() -> None:\n    pass\n") == []


def test_documentation_check_fails_on_an_undocumented_component_or_field() -> None:
    source = '''
@dataclass
class ThingArgs:
    """What a thing needs."""

    size_gib: int
    """Size of the thing, in GiB (config ``thingSize``)."""
    region: str
    # a comment is not a docstring
    name: str = ""


class Thing(pulumi.ComponentResource):
    def __init__(self) -> None: ...
'''
    assert undocumented(source) == [
        "ThingArgs.region has no docstring",
        "ThingArgs.name has no docstring",
        "class Thing has no docstring",
    ]
