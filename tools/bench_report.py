"""Turn a benchmark sweep's result files (``vllm bench serve --save-result --save-detailed``) into a report.

    python -m tools.bench_report RESULTS_DIR [--out DIR] [--seed tools/bench_seed.json]

Writes ``report.md`` (one row per concurrency: TTFT p50/p95, inter-token latency p50/p95, output tokens/s overall and
per request, requests/min, errors; then the old blueprint's published figures beside ours at the same concurrency),
``summary.json`` and two plots, ``throughput.png`` and ``latency.png`` (matplotlib, Agg backend).  With a node
price (``--instance-type``, default the default preset's node, and ``--nodes``) it adds what a million output tokens
cost at each concurrency: the nodes' on-demand price per hour (``workloads/instances.py``, its region and date
stated) over the tokens the sweep produced in an hour at the measured output tokens/s.

Every figure is the tool's own except "per request" output tokens/s, which the tool does not summarise: it is the
median over successful requests of output tokens / end-to-end latency (LLMPerf's per-request output throughput),
computed from the detailed per-request fields.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from workloads.instances import INSTANCES, PRICE_DATE, PRICE_REGION, facts

SEED_FILE = Path(__file__).with_name("bench_seed.json")
REQUIRED = ("max_concurrency", "completed", "output_throughput", "request_throughput")


class ReportError(ValueError):
    pass


DEFAULT_INSTANCE_TYPE = "inf2.8xlarge"  # the default serving preset's worker node (Pulumi.yaml servingPreset)
SECONDS_PER_HOUR = 3600.0


def usd_per_million_output_tokens(usd_per_hour: float, output_tokens_per_s: float) -> float:
    """What a million output tokens cost when nodes costing ``usd_per_hour`` together produce
    ``output_tokens_per_s``: the hour's price over the hour's tokens, times a million."""
    return usd_per_hour / (output_tokens_per_s * SECONDS_PER_HOUR) * 1_000_000


@dataclass(frozen=True)
class Price:
    """The serving nodes a sweep ran on, priced on demand (``workloads/instances.py``)."""

    instance_type: str
    nodes: int = 1

    @property
    def usd_per_node_hour(self) -> float:
        return facts(self.instance_type).on_demand_usd_per_hour

    @property
    def usd_per_hour(self) -> float:
        return self.usd_per_node_hour * self.nodes

    def per_million(self, output_tokens_per_s: float) -> float:
        return usd_per_million_output_tokens(self.usd_per_hour, output_tokens_per_s)

    def describe(self) -> str:
        return (
            f"{self.nodes} x {self.instance_type} on-demand, ${self.usd_per_node_hour:.4f}/h per node "
            f"({PRICE_REGION}, Linux, price of {PRICE_DATE}: workloads/instances.py)"
        )


@dataclass(frozen=True)
class Row:
    concurrency: int
    requests: int
    errors: int
    ttft_p50_ms: float
    ttft_p95_ms: float
    ttft_mean_ms: float
    itl_p50_ms: float
    itl_p95_ms: float
    output_tokens_per_s: float
    output_tokens_per_s_per_request: float
    requests_per_min: float


def _number(result: dict[str, Any], key: str, source: str) -> float:
    value = result.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ReportError(f"{source}: {key} missing or not a number (run the tool with the sweep's flags)")
    return float(value)


def row(result: dict[str, Any], source: str = "result") -> Row:
    """One step of the sweep, from the tool's result JSON."""
    for key in REQUIRED:
        _number(result, key, source)
    completed = int(result["completed"])
    errors_list = result.get("errors")
    if isinstance(errors_list, list):
        errors = sum(1 for e in errors_list if e)
    else:
        errors = int(_number(result, "failed", source))
    lens, latencies = result.get("output_lens"), result.get("latencies")
    if not isinstance(lens, list) or not isinstance(latencies, list) or len(lens) != len(latencies):
        raise ReportError(f"{source}: per-request output_lens/latencies missing (run the tool with --save-detailed)")
    per_request = [n / t for n, t in zip(lens, latencies, strict=True) if n and t and t > 0]
    return Row(
        concurrency=int(result["max_concurrency"]),
        requests=completed + errors,
        errors=errors,
        ttft_p50_ms=_number(result, "p50_ttft_ms", source),
        ttft_p95_ms=_number(result, "p95_ttft_ms", source),
        ttft_mean_ms=_number(result, "mean_ttft_ms", source),
        itl_p50_ms=_number(result, "p50_itl_ms", source),
        itl_p95_ms=_number(result, "p95_itl_ms", source),
        output_tokens_per_s=float(result["output_throughput"]),
        output_tokens_per_s_per_request=statistics.median(per_request) if per_request else 0.0,
        requests_per_min=float(result["request_throughput"]) * 60.0,
    )


def load_results(results_dir: Path) -> list[Row]:
    files = sorted(results_dir.glob("*.json"))
    files = [f for f in files if f.name != "summary.json"]
    if not files:
        raise ReportError(f"{results_dir}: no result files (*.json)")
    rows = [row(json.loads(f.read_text()), f.name) for f in files]
    rows.sort(key=lambda r: r.concurrency)
    seen = [r.concurrency for r in rows]
    if len(set(seen)) != len(seen):
        raise ReportError(f"{results_dir}: more than one result per concurrency: {seen}")
    return rows


def load_seed(path: Path = SEED_FILE) -> dict[str, Any]:
    seed: dict[str, Any] = json.loads(path.read_text())
    if not seed.get("source") or not isinstance(seed.get("runs"), list):
        raise ReportError(f"{path}: a seed file needs a source and a list of runs")
    return seed


COLUMNS = (
    ("concurrency", "Concurrency", "{:d}"),
    ("requests", "Requests", "{:d}"),
    ("errors", "Errors", "{:d}"),
    ("ttft_p50_ms", "TTFT p50 (ms)", "{:.1f}"),
    ("ttft_p95_ms", "TTFT p95 (ms)", "{:.1f}"),
    ("itl_p50_ms", "ITL p50 (ms)", "{:.1f}"),
    ("itl_p95_ms", "ITL p95 (ms)", "{:.1f}"),
    ("output_tokens_per_s", "Output tok/s", "{:.1f}"),
    ("output_tokens_per_s_per_request", "Output tok/s per request", "{:.1f}"),
    ("requests_per_min", "Requests/min", "{:.1f}"),
)


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|" + "|".join("---:" for _ in COLUMNS) + "|",
    ]
    for r in rows:
        values = asdict(r)
        lines.append("| " + " | ".join(fmt.format(values[key]) for key, _, fmt in COLUMNS) + " |")
    return "\n".join(lines)


def _fmt(value: object, unit: str = "") -> str:
    return f"{value:.1f}{unit}" if isinstance(value, int | float) else "not published"


def comparison(rows: Sequence[Row], seed: dict[str, Any], label: str) -> str:
    by_c = {r.concurrency: r for r in rows}
    lines = [
        f"| Concurrency | Figure | {seed.get('label', 'seed')} | {label} |",
        "|---:|---|---:|---:|",
    ]
    for run in seed["runs"]:
        c = int(run["concurrency"])
        ours = by_c.get(c)
        figures = (
            ("Output tok/s (overall)", run.get("output_tokens_per_s"), ours and ours.output_tokens_per_s),
            ("ITL p50 (ms)", run.get("itl_p50_ms"), ours and ours.itl_p50_ms),
            ("TTFT mean (ms)", run.get("ttft_mean_ms"), ours and ours.ttft_mean_ms),
        )
        for name, theirs, mine in figures:
            lines.append(f"| {c} | {name} | {_fmt(theirs)} | {_fmt(mine) if ours else 'not run'} |")
    lines.append("")
    lines.append(f"Seed source: {seed['source']}")
    return "\n".join(lines)


@dataclass(frozen=True)
class ModeledCost:
    preset: str
    output_tokens_per_s: float  # per node
    usd_per_million_output_tokens: float


def modeled_preset_costs(seed: dict[str, Any] | None = None) -> dict[str, ModeledCost]:
    """Each serving preset's cost per million output tokens at the seed's figures (a model, not a measurement).

    The seed's output tokens/s, measured on its node (``hardware``: one preset's node), divided by the NeuronCores
    that preset serves with gives tokens/s per NeuronCore; a preset's node is modeled as making that many per
    NeuronCore it serves with (replicas x TP), priced at its on-demand price.  Only the seed's own node is measured;
    the others assume throughput scales with NeuronCores at the seed's load per core.
    """
    from workloads.presets import PRESETS

    seed = seed if seed is not None else load_seed()
    measured = [r for r in seed["runs"] if isinstance(r.get("output_tokens_per_s"), int | float)]
    if seed.get("hardware") not in PRESETS or not measured:
        raise ReportError("the seed needs a preset's node as hardware and a run with output_tokens_per_s")
    per_core = float(measured[0]["output_tokens_per_s"]) / PRESETS[seed["hardware"]].worker_neuron_cores
    out = {}
    for preset in PRESETS.values():
        tokens_per_s = per_core * preset.worker_neuron_cores
        cost = usd_per_million_output_tokens(preset.instance.on_demand_usd_per_hour, tokens_per_s)
        out[preset.name] = ModeledCost(preset.name, tokens_per_s, cost)
    return out


def cost_table(rows: Sequence[Row], price: Price | None) -> str:
    """Cost per million output tokens at each concurrency, or why there is none."""
    if price is None:
        return "Not priced (no node given: a local run; `--instance-type` prices a sweep run on that node)."
    lines = [
        "| Concurrency | Output tok/s | Nodes $/h | $ per 1M output tokens |",
        "|---:|---:|---:|---:|",
    ]
    for r in rows:
        cost = f"{price.per_million(r.output_tokens_per_s):.2f}" if r.output_tokens_per_s > 0 else "no output"
        lines.append(f"| {r.concurrency} | {r.output_tokens_per_s:.1f} | {price.usd_per_hour:.4f} | {cost} |")
    lines += [
        "",
        f"Price: {price.describe()}. The nodes are paid whether busy or not: a sweep step's cost is that "
        "of the nodes kept at that concurrency.",
    ]
    return "\n".join(lines)


def plots(rows: Sequence[Row], out: Path, title: str, seed: dict[str, Any] | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    xs = [r.concurrency for r in rows]
    written: list[Path] = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(xs, [r.output_tokens_per_s for r in rows], marker="o", label="output tok/s (overall)")
    ax.plot(xs, [r.output_tokens_per_s_per_request for r in rows], marker="s", label="output tok/s per request")
    published = [run for run in (seed or {}).get("runs", []) if run.get("output_tokens_per_s") is not None]
    if published:
        ax.scatter(
            [run["concurrency"] for run in published],
            [run["output_tokens_per_s"] for run in published],
            marker="*",
            s=150,
            color="black",
            label=f"{(seed or {}).get('label', 'seed')}: output tok/s",
            zorder=3,
        )
    ax.set(xscale="log", xlabel="concurrency", ylabel="tokens/s", title=f"Throughput vs concurrency: {title}")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    written.append(out / "throughput.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for attr, label, style in (
        ("ttft_p50_ms", "TTFT p50", "o-"),
        ("ttft_p95_ms", "TTFT p95", "o--"),
        ("itl_p50_ms", "ITL p50", "s-"),
        ("itl_p95_ms", "ITL p95", "s--"),
    ):
        ax.plot(xs, [getattr(r, attr) for r in rows], style, label=label)
    ax.set(xscale="log", yscale="log", xlabel="concurrency", ylabel="ms", title=f"Latency vs concurrency: {title}")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    written.append(out / "latency.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    return written


def report(
    results_dir: Path,
    out: Path,
    *,
    seed_file: Path = SEED_FILE,
    label: str = "this run",
    price: Price | None = None,
) -> str:
    """Write report.md, summary.json and the plots into ``out``; return the report's text.  ``price``: the nodes
    the sweep ran on (None for a local run: no cost section figures)."""
    rows = load_results(results_dir)
    seed = load_seed(seed_file)
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(
        [
            f"# Benchmark: {label}",
            "",
            f"Results: `{results_dir}` (vllm bench serve, one file per concurrency).",
            "",
            table(rows),
            "",
            "## Cost per million output tokens",
            "",
            cost_table(rows, price),
            "",
            "## Beside the old blueprint",
            "",
            comparison(rows, seed, label),
            "",
            "Plots: throughput.png, latency.png",
            "",
        ]
    )
    (out / "report.md").write_text(text)
    summary = [asdict(r) for r in rows]
    if price is not None:
        for entry, r in zip(summary, rows, strict=True):
            if r.output_tokens_per_s > 0:
                entry["usd_per_million_output_tokens"] = price.per_million(r.output_tokens_per_s)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plots(rows, out, label, seed)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", type=Path, help="directory of the sweep's result files (c<N>.json)")
    parser.add_argument("--out", type=Path, help="output directory; default RESULTS_DIR/report")
    parser.add_argument("--seed", type=Path, default=SEED_FILE, help="published figures to compare with")
    parser.add_argument("--label", default="this run", help="name of this run in the report and plots")
    parser.add_argument(
        "--instance-type", default=DEFAULT_INSTANCE_TYPE, help="the serving nodes' type, for the cost per 1M tokens"
    )
    parser.add_argument("--nodes", type=int, default=1, help="how many such nodes served the sweep")
    args = parser.parse_args(argv)
    try:
        if args.instance_type not in INSTANCES:
            raise ReportError(
                f"--instance-type {args.instance_type} is not allowed; allowed: {', '.join(sorted(INSTANCES))}"
            )
        if args.nodes < 1:
            raise ReportError(f"--nodes {args.nodes} is not allowed; allowed: 1 or more")
        text = report(
            args.results_dir,
            args.out or args.results_dir / "report",
            seed_file=args.seed,
            label=args.label,
            price=Price(args.instance_type, args.nodes),
        )
    except (ReportError, OSError) as e:
        print(f"bench_report: {e}", file=sys.stderr)
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
