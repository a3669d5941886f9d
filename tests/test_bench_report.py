"""tools/bench_report.py: the tool's result files become a table, a comparison with the seed, and two PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tools import bench_report
from tools.bench_report import ReportError
from workloads.instances import facts
from workloads.presets import PRESETS


def result(concurrency: int, *, failed: int = 0, **over: Any) -> dict[str, Any]:
    """The fields `vllm bench serve --save-result --save-detailed --metric-percentiles 50,95` writes."""
    n = 8 * concurrency
    out: dict[str, Any] = {
        "max_concurrency": concurrency,
        "completed": n - failed,
        "failed": failed,
        "output_throughput": 20.0 * concurrency,
        "request_throughput": 0.1 * concurrency,
        "p50_ttft_ms": 100.0 * concurrency,
        "p95_ttft_ms": 150.0 * concurrency,
        "mean_ttft_ms": 110.0 * concurrency,
        "p50_itl_ms": 40.0 + concurrency,
        "p95_itl_ms": 60.0 + concurrency,
        "output_lens": [200] * (n - failed) + [0] * failed,
        "latencies": [10.0] * (n - failed) + [0.0] * failed,
        "errors": [""] * (n - failed) + ["boom"] * failed,
    }
    out.update(over)
    return out


def write(d: Path, *results: dict[str, Any]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for r in results:
        (d / f"c{len(list(d.iterdir()))}.json").write_text(json.dumps(r))
    return d


def test_rows_carry_the_tools_figures_and_per_request_throughput(tmp_path: Path) -> None:
    rows = bench_report.load_results(write(tmp_path, result(4), result(1), result(2, failed=3)))
    assert [r.concurrency for r in rows] == [1, 2, 4]
    two = rows[1]
    assert (two.requests, two.errors) == (16, 3)
    assert (two.ttft_p50_ms, two.ttft_p95_ms, two.itl_p50_ms, two.itl_p95_ms) == (200.0, 300.0, 42.0, 62.0)
    assert two.output_tokens_per_s == 40.0
    assert two.output_tokens_per_s_per_request == 20.0  # 200 tokens / 10 s, failed requests left out
    assert two.requests_per_min == pytest.approx(12.0)


def test_report_writes_table_comparison_summary_and_pngs(tmp_path: Path) -> None:
    results = write(tmp_path / "r", result(1), result(2), result(4))
    text = bench_report.report(results, tmp_path / "out", label="unit")
    assert "| 2 | 16 | 0 | 200.0 | 300.0 | 42.0 | 62.0 | 40.0 | 20.0 | 12.0 |" in text
    assert "| 2 | Output tok/s (overall) | 35.8 | 40.0 |" in text
    assert "| 2 | ITL p50 (ms) | 53.0 | 42.0 |" in text
    assert "| 2 | TTFT mean (ms) | 1580.0 | 220.0 |" in text
    assert "Seed source:" in text
    for png in ("throughput.png", "latency.png"):
        data = (tmp_path / "out" / png).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    assert len(json.loads((tmp_path / "out" / "summary.json").read_text())) == 3


def test_a_sweep_without_the_seeds_concurrency_says_so(tmp_path: Path) -> None:
    text = bench_report.report(write(tmp_path / "r", result(1)), tmp_path / "out")
    assert "| 2 | Output tok/s (overall) | 35.8 | not run |" in text


def test_the_seed_file_names_its_source_and_the_published_figures() -> None:
    seed = bench_report.load_seed()
    assert "inf2.8xlarge" in seed["source"]
    (run,) = seed["runs"]
    assert run == {"concurrency": 2, "output_tokens_per_s": 35.8, "itl_p50_ms": 53.0, "ttft_mean_ms": 1580.0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"p50_ttft_ms": None}, "c0.json: p50_ttft_ms missing or not a number"),
        ({"max_concurrency": "one"}, "c0.json: max_concurrency missing or not a number"),
        (
            {"output_lens": None},
            "c0.json: per-request output_lens/latencies missing (run the tool with --save-detailed)",
        ),
    ],
)
def test_a_result_without_the_sweeps_flags_is_refused(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ReportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        bench_report.load_results(write(tmp_path, result(1, **change)))


def test_empty_or_duplicate_results_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no result files"):
        bench_report.load_results(tmp_path)
    write(tmp_path, result(2), result(2))
    with pytest.raises(ReportError, match="more than one result per concurrency"):
        bench_report.load_results(tmp_path)


def test_the_command_line_fails_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_report.main([str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == f"bench_report: {tmp_path}: no result files (*.json)"


def test_overhead_verdict_holds_the_project_to_plain_vllm_and_to_the_peer() -> None:
    from tools.bench_overhead import PEER_THROUGHPUT_TARGET, PEER_TTFT_TARGET, summarise, verdict

    plain = summarise([{"p50_ttft_ms": 100, "output_throughput": 500, "p50_tpot_ms": 4, "p50_itl_ms": 4}] * 3)
    fine = verdict(plain, {**plain, "ttft_p50_ms": 109.0, "output_tokens_per_s": 480.0})
    assert fine["ttft_ok"] and fine["throughput_ok"]
    slow = verdict(plain, {**plain, "ttft_p50_ms": 111.0, "output_tokens_per_s": 470.0})
    assert not slow["ttft_ok"] and not slow["throughput_ok"]
    assert slow["ttft_p50_ratio"] == pytest.approx(1.11) and slow["throughput_ratio"] == pytest.approx(0.94)
    # Against the peer the project must be at or ahead: the margins allowed against plain vLLM do not apply.
    behind = verdict(
        plain, {**plain, "ttft_p50_ms": 101.0, "output_tokens_per_s": 499.0}, PEER_TTFT_TARGET, PEER_THROUGHPUT_TARGET
    )
    assert not behind["ttft_ok"] and not behind["throughput_ok"]
    level = verdict(plain, plain, PEER_TTFT_TARGET, PEER_THROUGHPUT_TARGET)
    assert level["ttft_ok"] and level["throughput_ok"]


def _round(ttft: float, tput: float, tpot: float = 2.0) -> dict[str, float]:
    return {"p50_ttft_ms": ttft, "output_throughput": tput, "p50_tpot_ms": tpot, "p50_itl_ms": tpot}


def test_overhead_best_rounds_take_each_figure_at_its_best_and_medians_the_middle() -> None:
    from tools.bench_overhead import summarise

    rounds = [_round(15, 1700, 2.1), _round(630, 800, 0.0), _round(40, 1600, 1.9)]
    assert summarise(rounds, "best") == {
        "ttft_p50_ms": 15,
        "output_tokens_per_s": 1700,
        "tpot_p50_ms": 1.9,
        "itl_p50_ms": 1.9,
        "rounds": 3.0,
    }
    median = summarise(rounds)
    assert (median["ttft_p50_ms"], median["output_tokens_per_s"]) == (40, 1600)


def test_overhead_rounds_alternate_abba_and_ratios_pair_rounds() -> None:
    from tools.bench_overhead import order, per_round_ratios

    assert [order(i) for i in range(3)] == [
        ("plain", "project", "peer"),
        ("peer", "project", "plain"),
        ("plain", "project", "peer"),
    ]
    assert [order(i, ("plain", "project")) for i in range(2)] == [("plain", "project"), ("project", "plain")]
    runs = {
        "plain": [_round(10, 1000), _round(20, 500)],
        "project": [_round(11, 950), _round(10, 600)],
        "peer": [_round(22, 1900), _round(5, 300)],
    }
    ratios = per_round_ratios(runs)
    assert ratios["ttft_p50"] == pytest.approx([1.1, 0.5])
    assert ratios["throughput"] == pytest.approx([0.95, 1.2])
    assert per_round_ratios(runs, "peer") == {
        "ttft_p50": pytest.approx([0.5, 2.0]),
        "throughput": pytest.approx([0.5, 2.0]),
    }


def test_overhead_result_compares_the_project_with_each_arm_that_ran() -> None:
    from tools.bench_overhead import report, result

    runs = {
        "plain": [_round(20, 1000), _round(40, 800)],
        "project": [_round(10, 1100), _round(12, 1000)],
        "peer": [_round(50, 1050), _round(60, 1000)],
    }
    out = result(runs, {"RAY_SERVE_ENABLE_HA_PROXY": "1"})
    best = out["best"]
    assert (best["project"]["ttft_p50_ms"], best["peer"]["output_tokens_per_s"]) == (10, 1050)
    assert best["vs_plain"]["ttft_p50_ratio"] == pytest.approx(0.5)
    assert best["vs_peer"]["ttft_p50_ratio"] == pytest.approx(0.2)
    assert best["vs_peer"]["throughput_ratio"] == pytest.approx(1100 / 1050)
    assert out["median"]["vs_peer"]["throughput_ratio"] == pytest.approx(1050 / 1025)
    assert out["target_met"] == {"vs_plain": True, "vs_peer": True}
    assert out["per_round_ratios"]["vs_peer"]["ttft_p50"] == pytest.approx([0.2, 0.2])
    lines = report(out)
    assert (
        "  best project/peer: TTFT p50 ratio 0.200 (target <= 1) ok; throughput ratio 1.048 (target >= 1) ok" in lines
    )
    two_arms = result({k: runs[k] for k in ("plain", "project")}, {})
    assert "vs_peer" not in two_arms["best"] and list(two_arms["target_met"]) == ["vs_plain"]


def test_overhead_arms_must_include_the_project_and_known_arms_only() -> None:
    from tools.bench_overhead import parse_arms

    assert parse_arms("plain,project,peer") == ("plain", "project", "peer")
    assert parse_arms("project, peer") == ("project", "peer")
    for bad in ("plain,peer", "project", "project,project", "project,tgi"):
        with pytest.raises(SystemExit, match=f"--arms '{bad}' is not allowed"):
            parse_arms(bad)


def test_overhead_serve_env_starts_from_the_cluster_and_rejects_other_variables() -> None:
    from tools.bench_overhead import serve_env
    from workloads.serve.settings import RAY_SERVE_ENV

    assert serve_env([]) == dict(RAY_SERVE_ENV)
    assert serve_env(["RAY_SERVE_ENABLE_HA_PROXY=0"])["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    with pytest.raises(SystemExit, match="--serve-env 'OMP_NUM_THREADS=1' is not allowed"):
        serve_env(["OMP_NUM_THREADS=1"])


def test_cost_per_million_output_tokens_matches_a_hand_computed_case() -> None:
    # $2.00 per node-hour, 2 nodes, 100 output tokens/s: 360,000 tokens an hour for $4.00, so a million cost
    # 4.00 / 0.36 = $11.11.
    assert bench_report.usd_per_million_output_tokens(2.0 * 2, 100.0) == pytest.approx(11.1111, abs=1e-4)
    price = bench_report.Price("inf2.8xlarge", nodes=2)
    assert price.usd_per_hour == pytest.approx(2 * 1.9679)
    # inf2.8xlarge at the seed's 35.8 tok/s: 1.9679 / (35.8 x 3600) x 1e6 = $15.27.
    assert bench_report.Price("inf2.8xlarge").per_million(35.8) == pytest.approx(15.2692, abs=1e-4)


def test_the_report_prices_each_concurrency_with_the_price_date_and_region(tmp_path: Path) -> None:
    results = write(tmp_path / "r", result(1), result(2))
    text = bench_report.report(results, tmp_path / "out", price=bench_report.Price("inf2.8xlarge"))
    # 20 tok/s at $1.9679/h: 1.9679 / (20 x 3600) x 1e6 = $27.33; 40 tok/s: $13.67.
    assert "| 1 | 20.0 | 1.9679 | 27.33 |" in text
    assert "| 2 | 40.0 | 1.9679 | 13.67 |" in text
    assert "1 x inf2.8xlarge on-demand, $1.9679/h per node (us-east-1, Linux, price of 2026-11-25" in text
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary[0]["usd_per_million_output_tokens"] == pytest.approx(27.3319, abs=1e-4)
    unpriced = bench_report.report(results, tmp_path / "out2")
    assert "Not priced" in unpriced
    assert "usd_per_million_output_tokens" not in json.loads((tmp_path / "out2" / "summary.json").read_text())[0]


def test_the_command_line_prices_the_default_presets_node_and_refuses_an_unknown_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = write(tmp_path / "r", result(2))
    assert bench_report.main([str(results), "--out", str(tmp_path / "o")]) == 0
    assert "| 2 | 40.0 | 1.9679 | 13.67 |" in capsys.readouterr().out
    assert bench_report.main([str(results), "--instance-type", "p5.48xlarge"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench_report: --instance-type p5.48xlarge is not allowed; allowed: ")
    assert bench_report.main([str(results), "--nodes", "0"]) == 1
    assert capsys.readouterr().err.strip() == "bench_report: --nodes 0 is not allowed; allowed: 1 or more"


REPO = Path(__file__).resolve().parents[1]
PRESET_TABLE_ROW = "| `servingPreset` |"
COST_COLUMN = "Modeled $ per 1M output tokens"


def _preset_table() -> tuple[Path, list[list[str]]]:
    """The docs' preset table, wherever it lives (README.md or a docs/ page): its header and rows as cells."""
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        lines = doc.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith(PRESET_TABLE_ROW):
                block = []
                for row in lines[i:]:
                    if not row.startswith("|"):
                        break
                    block.append([c.strip() for c in row.strip().strip("|").split("|")])
                return doc, [block[0], *block[2:]]  # without the separator row
    pytest.fail(f"no preset table (a row starting with {PRESET_TABLE_ROW}) in README.md or docs/*.md")


def test_modeled_preset_costs_scale_the_seed_per_neuroncore() -> None:
    costs = bench_report.modeled_preset_costs()
    # The seed's own node: 35.8 tok/s on inf2.8xlarge (TP 2) at $1.9679/h: 1.9679 / (35.8 x 3600) x 1e6 = $15.27.
    assert costs["inf2.8xlarge"].usd_per_million_output_tokens == pytest.approx(15.2692, abs=1e-4)
    # inf2.24xlarge serves with 12 NeuronCores: 6 x 35.8 = 214.8 tok/s at $6.4906/h: $8.39.
    assert costs["inf2.24xlarge"].output_tokens_per_s == pytest.approx(214.8)
    assert costs["inf2.24xlarge"].usd_per_million_output_tokens == pytest.approx(8.3936, abs=1e-4)
    assert set(costs) == set(PRESETS)


def test_the_docs_preset_table_shows_the_modeled_cost_and_the_price() -> None:
    doc, (header, *rows) = _preset_table()
    assert COST_COLUMN in " ".join(header), f"{doc.name}: the preset table has no '{COST_COLUMN}' column"
    cost_at = next(i for i, h in enumerate(header) if COST_COLUMN in h)
    price_at = next(i for i, h in enumerate(header) if "On-demand $/h" in h)
    costs = bench_report.modeled_preset_costs()
    seen = []
    for cells in rows:
        name = cells[0].split("`")[1]
        seen.append(name)
        assert cells[cost_at] == f"{costs[name].usd_per_million_output_tokens:.2f}", f"{doc.name}: {name}"
        price = facts(PRESETS[name].instance_type).on_demand_usd_per_hour
        assert float(cells[price_at]) == pytest.approx(price, abs=0.001), f"{doc.name}: {name}"
    assert sorted(seen) == sorted(PRESETS), f"{doc.name}: the preset table's rows are not the presets"


def test_the_reports_default_node_is_the_default_presets() -> None:
    from tools.config_table import config_block

    _, config = config_block()
    default_preset = PRESETS[config["servingPreset"]["default"]]
    assert default_preset.instance_type == bench_report.DEFAULT_INSTANCE_TYPE
