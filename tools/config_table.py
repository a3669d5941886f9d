"""The configuration table of ``docs/configuration.md``, generated from the ``config:`` block of ``Pulumi.yaml``.

    python -m tools.config_table                                 # print the table
    python -m tools.config_table --write docs/configuration.md   # replace the table between the page's markers

``Pulumi.yaml`` is the one place where keys, types, defaults and descriptions are declared; the page shows them
and ``tests/test_docs.py`` fails when the two drift apart.  Writing is idempotent.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
START = "<!-- config-table:start -->"
END = "<!-- config-table:end -->"
PAGE = REPO / "docs" / "configuration.md"
FIX_COMMAND = "python -m tools.config_table --write docs/configuration.md"


class MarkerError(ValueError):
    """The page lacks the markers, or has them out of order or more than once."""


def config_block(project_file: Path = REPO / "Pulumi.yaml") -> tuple[str, dict[str, Any]]:
    data = yaml.safe_load(project_file.read_text())
    return str(data["name"]), dict(data.get("config") or {})


def _type(spec: Mapping[str, Any]) -> str:
    kind = spec.get("type")
    if kind == "array":
        item = (spec.get("items") or {}).get("type", "any")
        return f"list of {item}"
    if kind is None:
        # Pulumi's project schema has no object type; map-valued keys are declared without one.
        return "map" if isinstance(spec.get("default"), dict) else "any"
    return str(kind)


def _default(spec: Mapping[str, Any]) -> str:
    if "default" not in spec:
        return "(required)"
    value = spec["default"]
    text = value if isinstance(value, str) and value else json.dumps(value)
    return f"`{text}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table(project: str, config: Mapping[str, Any]) -> str:
    """A Markdown table with one row per key, in declaration order."""
    rows = ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for key, raw in config.items():
        spec: Mapping[str, Any] = raw if isinstance(raw, dict) else {"default": raw}
        full = key if ":" in key else f"{project}:{key}"
        rows.append(
            f"| `{full}` | {_type(spec)} | {_cell(_default(spec))} | {_cell(str(spec.get('description', '')))} |"
        )
    return "\n".join(rows)


def generated(project_file: Path = REPO / "Pulumi.yaml") -> str:
    return table(*config_block(project_file))


def section(document: str) -> str:
    """The text between the markers (exclusive), as it stands in ``document``."""
    if document.count(START) != 1 or document.count(END) != 1 or document.index(START) > document.index(END):
        raise MarkerError(f"expected one {START} followed by one {END}")
    return document[document.index(START) + len(START) : document.index(END)]


def replace(document: str, new_table: str) -> str:
    old = section(document)
    head, tail = document.split(START + old + END)
    return f"{head}{START}\n{new_table}\n{END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, default=REPO / "Pulumi.yaml", help="Pulumi project file")
    parser.add_argument("--write", type=Path, metavar="PAGE", help="replace the table between the markers")
    args = parser.parse_args(argv)
    text = generated(args.project)
    if args.write is None:
        print(text)
        return 0
    try:
        updated = replace(args.write.read_text(), text)
    except MarkerError as e:
        print(f"{args.write}: {e}", file=sys.stderr)
        return 2
    args.write.write_text(updated)
    print(f"wrote the config table ({text.count(chr(10)) - 1} keys) into {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
