"""The README cannot drift: its config table is the generated one, and its quick start is the three commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tools import config_table

from .conftest import REPO

README = REPO / "README.md"


def test_config_table_matches_pulumi_yaml() -> None:
    expected = config_table.generated()
    actual = config_table.section(README.read_text()).strip("\n")
    assert actual == expected, (
        f"README.md's config table differs from Pulumi.yaml's config: block; run `{config_table.FIX_COMMAND}`"
    )


def test_every_declared_key_is_a_row() -> None:
    project, config = config_table.config_block()
    table = config_table.generated()
    for key in config:
        assert f"| `{project}:{key}` |" in table


def test_generator_is_idempotent_and_reports_drift(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nintro\n\n{config_table.START}\n| stale |\n{config_table.END}\n\nafter\n")
    assert config_table.main(["--write", str(readme)]) == 0
    once = readme.read_text()
    assert config_table.main(["--write", str(readme)]) == 0
    assert readme.read_text() == once
    assert once.startswith("# x\n\nintro\n\n") and once.endswith("\n\nafter\n")
    assert "| stale |" not in once
    assert config_table.section(once).strip("\n") == config_table.generated()


def test_a_new_key_in_pulumi_yaml_makes_the_readme_stale(tmp_path: Path) -> None:
    project_file = tmp_path / "Pulumi.yaml"
    project_file.write_text(
        (REPO / "Pulumi.yaml").read_text()
        + '  brandNewKey:\n    type: boolean\n    default: false\n    description: "A | piped\n      description."\n'
    )
    fresh = config_table.generated(project_file)
    assert fresh != config_table.section(README.read_text()).strip("\n")
    assert "| `eks-neuron-llm:brandNewKey` | boolean | `false` | A \\| piped description. |" in fresh


@pytest.mark.parametrize(
    "broken",
    [
        "no markers at all\n",
        f"{config_table.END}\n{config_table.START}\n",
        f"{config_table.START}\n{config_table.END}\n{config_table.START}\n{config_table.END}\n",
    ],
)
def test_missing_or_misplaced_markers_are_an_error(tmp_path: Path, broken: str) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(broken)
    assert config_table.main(["--write", str(readme)]) == 2
    assert readme.read_text() == broken


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
