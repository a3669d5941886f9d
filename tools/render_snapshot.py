"""Canonical dump of the offline renders, to prove a refactor changed nothing Pulumi would see.

    python -m tools.render_snapshot OUT_DIR            # write OUT_DIR/<variant>.json
    python -m tools.render_snapshot OUT_DIR --against BEFORE_DIR   # ... then compare with an earlier dump

One JSON file per variant (dev, prod, and each with a CI repository set, so every component renders): every resource
by URN with its type, inputs, dependencies, property dependencies, parent, provider and options, the invokes, and the
stack outputs, all sorted, so two dumps are equal exactly when the renders are.  It reads only ``render()``'s result.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tools.render import render

# (file name, stack, config overrides): the two stacks as shipped, and each with the optional CI roles switched on
# (dev ships the benchmark on, prod ships it off, so both branches of that component render too), and the benchmark's
# other branch.
VARIANTS: tuple[tuple[str, str, Mapping[str, str]], ...] = (
    ("dev", "dev", {}),
    ("prod", "prod", {}),
    ("dev-ci", "dev", {"eks-neuron-llm:githubRepository": "example-org/eks-neuron-llm"}),
    ("prod-ci", "prod", {"eks-neuron-llm:githubRepository": "example-org/eks-neuron-llm"}),
    # The benchmark without a results prefix: no results role, an empty results URI.
    ("dev-no-results", "dev", {"eks-neuron-llm:benchmarkResultsPrefix": ""}),
)


def snapshot(stack: str, overrides: Mapping[str, str]) -> dict[str, Any]:
    """The render of ``stack`` as one canonical JSON-ready object (order of registration does not matter)."""
    result = render(stack, dict(overrides))
    resources = {r["urn"]: {k: v for k, v in r.items() if k != "urn"} for r in result.resources}
    if len(resources) != len(result.resources):
        raise SystemExit(f"{stack}: two resources share a URN")
    invokes = sorted(json.dumps(i, sort_keys=True, default=str) for i in result.invokes)
    return {
        "stack": stack,
        "overrides": dict(sorted(overrides.items())),
        "resources": dict(sorted(resources.items())),
        "invokes": [json.loads(i) for i in invokes],
        "outputs": result.outputs,
    }


def _dump(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True, default=str) + "\n"


def differences(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """One line per difference between two snapshots of the same variant (empty when identical)."""
    lines: list[str] = []
    b_res, a_res = before["resources"], after["resources"]
    lines += [f"removed {urn}" for urn in sorted(set(b_res) - set(a_res))]
    lines += [f"added {urn}" for urn in sorted(set(a_res) - set(b_res))]
    for urn in sorted(set(b_res) & set(a_res)):
        for key in sorted(set(b_res[urn]) | set(a_res[urn])):
            if b_res[urn].get(key) != a_res[urn].get(key):
                lines.append(f"changed {urn} {key}")
    for key in sorted(set(before["outputs"]) | set(after["outputs"])):
        if before["outputs"].get(key) != after["outputs"].get(key):
            lines.append(f"output {key} changed")
    if before["invokes"] != after["invokes"]:
        lines.append("invokes changed")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.render_snapshot", description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="directory for <variant>.json")
    parser.add_argument("--against", type=Path, help="directory of an earlier dump to compare with")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = False
    for name, stack, overrides in VARIANTS:
        snap = snapshot(stack, overrides)
        (args.out / f"{name}.json").write_text(_dump(snap))
        summary = f"{name}: {len(snap['resources'])} resources, {len(snap['outputs'])} outputs"
        if args.against is not None:
            before = json.loads((args.against / f"{name}.json").read_text())
            diff = differences(before, json.loads(_dump(snap)))
            failed |= bool(diff)
            summary += " identical" if not diff else f" DIFFERS ({len(diff)}):\n  " + "\n  ".join(diff)
        print(summary)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
