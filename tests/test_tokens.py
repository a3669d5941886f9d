"""infra/tokens.py: every gathered type token is one the render really records, and none is spelled out again."""

from __future__ import annotations

from pathlib import Path

from infra import tokens
from tools.render import Render

from .conftest import REPO, rendered

TOKENS = {name: value for name, value in vars(tokens).items() if name.isupper()}


def test_every_token_is_the_type_of_a_rendered_resource(dev: Render, prod: Render) -> None:
    # The render records the type each provider SDK registers, so a token spelled wrong (or of a resource the program
    # no longer creates) matches nothing and would make every lookup by it silently empty.
    seen = {r["type"] for r in [*dev.resources, *prod.resources, *rendered("dev", benchmarkEnabled="true").resources]}
    assert {name: value for name, value in TOKENS.items() if value not in seen} == {}


def literal_uses(paths: list[Path], root: Path = REPO) -> list[str]:
    """``file: token`` for every gathered token written out as a string literal in ``paths``."""
    return [
        f"{p.relative_to(root)}: {value}"
        for p in paths
        for value in TOKENS.values()
        if f'"{value}"' in p.read_text() or f"'{value}'" in p.read_text()
    ]


def test_gathered_tokens_are_not_spelled_out_again_in_infra_or_tests() -> None:
    paths = [p for d in ("infra", "tests") for p in sorted((REPO / d).rglob("*.py")) if p.name != "tokens.py"]
    assert literal_uses(paths) == []


def test_literal_check_finds_a_literal(tmp_path: Path) -> None:
    f = tmp_path / "t.py"
    f.write_text(f'x = r.of_type("{tokens.NODE_POOL}")\n')
    assert literal_uses([f], root=tmp_path) == [f"t.py: {tokens.NODE_POOL}"]
