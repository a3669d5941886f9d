"""The README stays a short front door (at most 10 KB; the rest lives in docs/, tests/test_docs.py) and its quick
start is the three commands."""

from __future__ import annotations

import re

import pytest

from .conftest import REPO

README = REPO / "README.md"


def quick_start_commands(text: str) -> list[str]:
    sections = re.split(r"^## ", text, flags=re.MULTILINE)
    assert sections[1].startswith("Quick start\n"), "the first section of README.md must be the quick start"
    block = re.search(r"```\w*\n(.*?)```", sections[1], flags=re.DOTALL)
    assert block, "the quick start has no code block"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.split("#", 1)[0].strip()]


def test_quick_start_is_the_three_commands() -> None:
    assert quick_start_commands(README.read_text()) == ["make render", "make test", "make demo"]


def test_every_quick_start_command_is_a_make_target() -> None:
    targets = set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), flags=re.MULTILINE))
    assert [c for c in quick_start_commands(README.read_text()) if c.removeprefix("make ") not in targets] == []


def test_quick_start_check_can_fail() -> None:
    bad = "# t\n\n## Quick start\n\n```sh\npip install -r requirements.txt\nmake render\nmake test\n```\n"
    assert quick_start_commands(bad) != ["make render", "make test"]
    with pytest.raises(AssertionError, match="first section"):
        quick_start_commands("# t\n\n## Deploy\n\n```sh\nmake render\nmake test\n```\n")


README_LIMIT_BYTES = 10 * 1024


def test_readme_stays_short() -> None:
    size = len(README.read_bytes())
    assert size <= README_LIMIT_BYTES, (
        f"README.md is {size} bytes, over {README_LIMIT_BYTES}: move detail to a docs/<topic>.md page and link it"
    )
