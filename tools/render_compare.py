"""Canonical dumps of a stack's render, and their comparison: proof that a refactor changed no behaviour.

    python -m tools.render_compare dump --stack dev OUT.json    # write the canonical render
    python -m tools.render_compare diff BEFORE.json AFTER.json   # exit 1 and list what differs

The dump holds what `pulumi up` would act on: every registration (URN, type, name, parent, provider, inputs,
dependencies, property dependencies and resource options), the invokes and the stack outputs, in a stable order.
Wall time and the program's log are left out: they change from run to run without a change of behaviour.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tools.render import RenderConfigError, render


def canonical(stack: str, overrides: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The render of ``stack`` as plain, order-stable JSON data."""
    r = render(stack, overrides)
    return {
        "stack": r.stack,
        "config": dict(sorted(r.config.items())),
        "resources": sorted(r.resources, key=lambda res: str(res["urn"])),
        "invokes": sorted(r.invokes, key=lambda i: json.dumps(i, sort_keys=True)),
        "outputs": r.outputs,
    }


def differences(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """One line per difference: a key of the dump, a URN added or removed, or a field of a resource that changed."""
    out: list[str] = []
    for key in sorted(set(before) | set(after)):
        if key == "resources":
            continue
        if before.get(key) != after.get(key):
            out.append(f"{key}: differs")
    old = {r["urn"]: r for r in before.get("resources", [])}
    new = {r["urn"]: r for r in after.get("resources", [])}
    out += [f"removed: {urn}" for urn in sorted(old.keys() - new.keys())]
    out += [f"added: {urn}" for urn in sorted(new.keys() - old.keys())]
    for urn in sorted(old.keys() & new.keys()):
        for field in sorted(set(old[urn]) | set(new[urn])):
            if old[urn].get(field) != new[urn].get(field):
                out.append(f"changed: {urn} {field}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.render_compare", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    dump = sub.add_parser("dump", help="write the canonical render of a stack")
    dump.add_argument("--stack", default="dev")
    dump.add_argument("out", type=Path)
    diff = sub.add_parser("diff", help="compare two dumps")
    diff.add_argument("before", type=Path)
    diff.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    if args.command == "dump":
        try:
            data = canonical(args.stack)
        except RenderConfigError as exc:
            print("\n".join(exc.lines), file=sys.stderr)
            return 2
        args.out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print(f"{args.stack}: {len(data['resources'])} resources, {len(data['outputs'])} outputs -> {args.out}")
        return 0
    found = differences(json.loads(args.before.read_text()), json.loads(args.after.read_text()))
    for line in found:
        print(line)
    print("identical" if not found else f"{len(found)} difference(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
