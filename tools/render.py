"""Offline render harness: run ``__main__.py`` under Pulumi's mock engine and record everything it would create.

    python -m tools.render [--stack dev] [--out DIR] [--config KEY=VALUE ...]

It applies config the way the Pulumi CLI does (the ``config:`` defaults of ``Pulumi.yaml``, then
``Pulumi.<stack>.yaml``, then ``--config`` overrides), runs the program against a monitor that records every
resource registration, and writes ``resources.json``, ``manifests/``, ``helm/`` and ``outputs.json`` to DIR
(default ``build/render/<stack>``), then prints a summary: resource counts, outputs, the scheduling proof and the
modeled deploy timeline.  A config error prints its one-line message(s) and exits with status 2.

This module is the CLI and the harness's front door: ``from tools.render import render, Render`` works for every
caller.  The parts live below it, each importing only what is under it:
``tools/render_model.py`` (``Render``, the errors) <- ``tools/pulumi_internals.py`` (the recording monitor) <-
``tools/render_mocks.py`` (fake outputs) <- ``tools/render_harness.py`` (config, ``render()``, ``write()``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from policy.proof import summary as proof_summary
from tools.render_harness import REPO, _engine_value, render, stack_config, write
from tools.render_mocks import ACCOUNT, IMAGE_BUILD_TYPE, MOCK_OFFERINGS, MOCK_ZONES, _hex
from tools.render_model import SECRET, UNKNOWN, Render, RenderConfigError, RenderDeployError, is_kubernetes_object
from tools.timeline import summary as timeline_summary

__all__ = [
    "ACCOUNT",
    "IMAGE_BUILD_TYPE",
    "MOCK_OFFERINGS",
    "MOCK_ZONES",
    "REPO",
    "SECRET",
    "UNKNOWN",
    "Render",
    "RenderConfigError",
    "RenderDeployError",
    "_engine_value",
    "_hex",
    "is_kubernetes_object",
    "main",
    "render",
    "stack_config",
    "summary",
    "write",
]


def summary(result: Render) -> str:
    """What the CLI prints: resource counts by type, outputs, the scheduling proof and the modeled deploy timeline."""
    counts = Counter(r["type"] for r in result.resources)
    width = max(len(t) for t in counts) if counts else 0
    lines = [f"stack {result.stack}: {len(result.resources)} resources"]
    lines += [f"  {t:<{width}}  {n}" for t, n in sorted(counts.items())]
    lines.append("outputs:")
    lines += [f"  {k}: {json.dumps(v)}" for k, v in sorted(result.outputs.items())]
    lines.append("scheduling proof:")
    lines += [f"  {line}" for line in proof_summary(result.resources)]
    lines.append("deploy timeline (modeled critical path):")
    lines += [f"  {line}" for line in timeline_summary(result)]
    lines.append(f"rendered in {result.wall_seconds:.2f} s wall")
    return "\n".join(lines)


def _parse_overrides(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RenderConfigError(
                [f"--config: {item!r} is not allowed; allowed: KEY=VALUE, e.g. eks-neuron-llm:availabilityZoneCount=3"]
            )
        out[key if ":" in key else f"eks-neuron-llm:{key}"] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.render", description=__doc__.split("\n")[0])
    parser.add_argument("--stack", default="dev", help="stack name (reads Pulumi.<stack>.yaml); default dev")
    parser.add_argument("--out", type=Path, help="output directory; default build/render/<stack>")
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value as the engine would pass it (repeatable)",
    )
    parser.add_argument(
        "--image-build",
        choices=("built", "exists", "failed"),
        default="built",
        help="how the fake AWS answers the serving image build (default built; failed shows how `pulumi up` fails)",
    )
    args = parser.parse_args(argv)
    try:
        result = render(args.stack, _parse_overrides(args.config), image_build=args.image_build)
    except RenderConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 2
    except RenderDeployError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 1
    out = args.out or REPO / "build" / "render" / args.stack
    write(result, out)
    print(summary(result))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
