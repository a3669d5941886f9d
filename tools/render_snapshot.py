"""The render comparison (``tools/render_compare.py``) over every variant a refactor must leave unchanged.

    python -m tools.render_snapshot OUT_DIR                        # write OUT_DIR/<variant>.json
    python -m tools.render_snapshot OUT_DIR --against BEFORE_DIR   # ... then compare with an earlier dump

One canonical dump per variant (dev, prod, each with the CI roles on, and the benchmark without a results prefix), so
every component and both sides of its options render; exit 1 when any variant differs from BEFORE_DIR.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from tools.render_compare import canonical, differences

CI_REPOSITORY = {"eks-neuron-llm:githubRepository": "example-org/eks-neuron-llm"}
# (file name, stack, config overrides): the two stacks as shipped (dev ships the benchmark on, prod the GCS store on),
# each with the optional CI roles switched on, and the benchmark's other branch.
VARIANTS: tuple[tuple[str, str, Mapping[str, str]], ...] = (
    ("dev", "dev", {}),
    ("prod", "prod", {}),
    ("dev-ci", "dev", CI_REPOSITORY),
    ("prod-ci", "prod", CI_REPOSITORY),
    ("dev-no-results", "dev", {"eks-neuron-llm:benchmarkResultsPrefix": ""}),
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.render_snapshot", description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="directory for <variant>.json")
    parser.add_argument("--against", type=Path, help="directory of an earlier dump to compare with")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = False
    for name, stack, overrides in VARIANTS:
        text = json.dumps(canonical(stack, overrides), indent=1, sort_keys=True, default=str) + "\n"
        (args.out / f"{name}.json").write_text(text)
        snap = json.loads(text)
        summary = f"{name}: {len(snap['resources'])} resources, {len(snap['outputs'])} outputs"
        if args.against is not None:
            diff = differences(json.loads((args.against / f"{name}.json").read_text()), snap)
            failed |= bool(diff)
            summary += " identical" if not diff else f" DIFFERS ({len(diff)}):\n  " + "\n  ".join(diff)
        print(summary)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
