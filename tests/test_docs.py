"""The docs cannot drift: the configuration page's table is the generated one, every config key the pages name
exists, and every relative link and ``#anchor`` in README.md and docs/*.md resolves (GitHub's heading slugs)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools import config_table

from .conftest import REPO

CONFIG_PAGE = config_table.PAGE
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# ---------------------------------------------------------------------------------------------------------------
# The generated config table (docs/configuration.md).
# ---------------------------------------------------------------------------------------------------------------


def test_config_table_matches_pulumi_yaml() -> None:
    expected = config_table.generated()
    actual = config_table.section(CONFIG_PAGE.read_text()).strip("\n")
    assert actual == expected, (
        f"{CONFIG_PAGE.relative_to(REPO)}'s config table differs from Pulumi.yaml's config: block; "
        f"run `{config_table.FIX_COMMAND}`"
    )


def test_every_declared_key_is_a_row() -> None:
    project, config = config_table.config_block()
    table = config_table.generated()
    for key in config:
        assert f"| `{project}:{key}` |" in table


def test_generator_is_idempotent_and_reports_drift(tmp_path: Path) -> None:
    page = tmp_path / "configuration.md"
    page.write_text(f"# x\n\nintro\n\n{config_table.START}\n| stale |\n{config_table.END}\n\nafter\n")
    assert config_table.main(["--write", str(page)]) == 0
    once = page.read_text()
    assert config_table.main(["--write", str(page)]) == 0
    assert page.read_text() == once
    assert once.startswith("# x\n\nintro\n\n") and once.endswith("\n\nafter\n")
    assert "| stale |" not in once
    assert config_table.section(once).strip("\n") == config_table.generated()


def test_a_new_key_in_pulumi_yaml_makes_the_page_stale(tmp_path: Path) -> None:
    project_file = tmp_path / "Pulumi.yaml"
    project_file.write_text(
        (REPO / "Pulumi.yaml").read_text()
        + '  brandNewKey:\n    type: boolean\n    default: false\n    description: "A | piped\n      description."\n'
    )
    fresh = config_table.generated(project_file)
    assert fresh != config_table.section(CONFIG_PAGE.read_text()).strip("\n")
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
    page = tmp_path / "configuration.md"
    page.write_text(broken)
    assert config_table.main(["--write", str(page)]) == 2
    assert page.read_text() == broken


def test_every_config_key_the_pages_name_exists() -> None:
    project, config = config_table.config_block()
    declared = {f"{project}:{key}" for key in config}
    named = {
        (page.relative_to(REPO).as_posix(), key)
        for page in PAGES
        for key in re.findall(rf"`({re.escape(project)}:[A-Za-z0-9]+)", page.read_text())
    }
    assert sorted(f"{page}: {key}" for page, key in named if key not in declared) == []


# ---------------------------------------------------------------------------------------------------------------
# Links and anchors.
# ---------------------------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^(```|~~~).*?^\1", flags=re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", flags=re.DOTALL)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", flags=re.IGNORECASE)


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where a link is not a link."""
    return _CODE.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: inline markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor of a Markdown page: its headings' slugs (repeats numbered -1, -2 as GitHub does) and HTML ids."""
    found: set[str] = set(_HTML_ANCHOR.findall(text))
    seen: dict[str, int] = {}
    for match in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", _FENCE.sub("", text), flags=re.MULTILINE):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page: Path, root: Path = REPO) -> Iterator[str]:
    """Relative links of ``page`` whose file does not exist, or whose ``#anchor`` is not a heading of the target."""
    for target in _LINK.findall(prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.IGNORECASE):
            continue  # https:, mailto: ...
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        where = f"{page.relative_to(root)}: ({target})"
        if not dest.exists():
            yield f"{where}: {path_part} does not exist"
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            yield f"{where}: {dest.relative_to(root)} has no heading #{anchor}"


def test_every_relative_link_and_anchor_resolves() -> None:
    found = [problem for page in PAGES for problem in broken_links(page)]
    assert found == [], "\n".join(found)


def test_the_link_check_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## What `pulumi destroy` does\n\n## Same\n\n## Same\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "[ok](docs/a.md) [ok](docs/a.md#what-pulumi-destroy-does) [ok](docs/a.md#same-1) [ok](#top)"
        " [ext](https://example.com/x) `[code](missing.md)`\n\n# Top\n\n"
        "[gone](docs/b.md) [bad anchor](docs/a.md#what-destroy-does) [third](docs/a.md#same-2) [self](#nowhere)\n"
    )
    assert list(broken_links(readme, tmp_path)) == [
        "README.md: (docs/b.md): docs/b.md does not exist",
        "README.md: (docs/a.md#what-destroy-does): docs/a.md has no heading #what-destroy-does",
        "README.md: (docs/a.md#same-2): docs/a.md has no heading #same-2",
        "README.md: (#nowhere): README.md has no heading #nowhere",
    ]


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("What `pulumi destroy` does", "what-pulumi-destroy-does"),
        ("Guardrails: the offline proof, the policy pack", "guardrails-the-offline-proof-the-policy-pack"),
        ("Continuous delivery (GitHub Actions)", "continuous-delivery-github-actions"),
        ("The node AMI release: `nodeAmiVersion` (v20260714)", "the-node-ami-release-nodeamiversion-v20260714"),
        ("EKS minors: `clusterVersion` (1.35, 1.36; default 1.35)", "eks-minors-clusterversion-135-136-default-135"),
        ("The second scheduler's kube-scheduler image", "the-second-schedulers-kube-scheduler-image"),
        ("How long it takes (modeled)", "how-long-it-takes-modeled"),
    ],
)
def test_slugs_follow_github(heading: str, expected: str) -> None:
    assert slug(heading) == expected


def test_every_docs_page_is_on_the_readme_map() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [p.name for p in PAGES[1:] if f"](docs/{p.name})" not in readme]
    assert missing == [], f"README.md's map of docs/ lacks {missing}"
