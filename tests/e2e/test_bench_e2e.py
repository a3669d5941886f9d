"""The benchmark's tooling on a real server: the Job's `vllm bench serve` sweep (scaled down) against the serve app on
the CPU engine, then the report and its plots.  The figures smoke-test the tooling, not Inferentia."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools import bench_local, bench_report, bench_servers
from workloads import bench

from .conftest import ROOT, Endpoint

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

# The blueprint's shape, shrunk for two CPUs: same tool, same flags, same report; shorter and fewer requests.
SMOKE = bench.Profile(
    input_tokens=64,
    input_spread=8,
    output_tokens=32,
    output_spread=4,
    concurrencies=(1, 2, 4, 8),
    requests_per_concurrency=2,
)
OUT = ROOT / "build" / "bench-e2e"  # kept after the run: report.md, summary.json, the PNGs


def test_the_jobs_arguments_parse_with_the_installed_vllm() -> None:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    for step in bench.sweep(bench.BLUEPRINT, bench.target(bench.BenchInputs(model_id="m")), bench.RESULTS_DIR):
        args = parser.parse_args([*step, "--ready-check-timeout-sec", "60"])
        assert args.dataset_name == "random" and args.ignore_eos and args.save_detailed
        assert args.num_prompts == 8 * args.max_concurrency


def test_sweep_and_report_against_the_serve_app(endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    # As the Job does: `vllm bench serve` sends $OPENAI_API_KEY as the bearer token (its readiness check too).
    monkeypatch.setenv("OPENAI_API_KEY", endpoint.api_key)
    results = OUT / "results"
    target = bench.Target(endpoint.base_url, endpoint.model, str(endpoint.model_dir))
    files = bench_local.run_sweep(SMOKE, target, results)
    for f, c in zip(files, SMOKE.concurrencies, strict=True):
        data = json.loads(f.read_text())
        assert data["max_concurrency"] == c
        assert data["completed"] == 2 * c and data["failed"] == 0
        # --ignore-eos: every request generated its sampled length, within the profile's bounds.
        assert all(28 <= n <= 36 for n in data["output_lens"])
        # Inputs: 64 ± 8 random tokens, plus the tokenizer's special (BOS) token the tool counts in.
        assert all(56 <= n <= 72 + 1 for n in data["input_lens"])
    text = bench_report.report(results, OUT / "report", label="e2e smoke, CPU, tiny random Llama")
    print("\n" + text)
    rows = bench_report.load_results(results)
    assert [r.concurrency for r in rows] == [1, 2, 4, 8]
    assert all(r.errors == 0 and r.output_tokens_per_s > 0 and r.ttft_p50_ms > 0 for r in rows)
    assert "| 2 | Output tok/s (overall) | 35.8 |" in text
    for png in ("throughput.png", "latency.png"):
        assert (OUT / "report" / png).read_bytes().startswith(b"\x89PNG")


def test_the_peer_gets_the_projects_engine_flags(tmp_path: Path) -> None:
    """bench-overhead's peer arm (Ray Serve LLM) runs the engine the project's app runs: the engine arguments Ray
    Serve LLM derives from the peer's config equal those vLLM's parser makes of the project's argv (apart from what
    Ray Serve LLM sets itself: executor backend, request logging)."""
    import dataclasses

    from ray.llm._internal.serve.engines.vllm.vllm_models import VLLMEngineConfig
    from ray.serve.llm import LLMConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    from workloads.serve import launch
    from workloads.serve.compat import VLLMOpenAI

    settings = bench_servers.tiny_settings(tmp_path / "model")
    kwargs = bench_servers.peer_engine_kwargs(settings)
    assert kwargs["max_num_seqs"] == settings.max_num_seqs and kwargs["block_size"] == settings.block_size
    config = LLMConfig(
        model_loading_config={"model_id": settings.served_model_name, "model_source": settings.model},
        engine_kwargs=kwargs,
        accelerator_config={"kind": "cpu"},
    )
    peer = AsyncEngineArgs(**VLLMEngineConfig.from_llm_config(config).get_initialization_kwargs())
    project = AsyncEngineArgs.from_cli_args(VLLMOpenAI().parse_args(launch.engine_argv(settings)))
    ray_sets = {"distributed_executor_backend", "enable_log_requests", "served_model_name"}
    differ = {
        f.name: (getattr(project, f.name), getattr(peer, f.name))
        for f in dataclasses.fields(AsyncEngineArgs)
        if f.name not in ray_sets and getattr(project, f.name) != getattr(peer, f.name)
    }
    assert differ == {}
    assert list(peer.served_model_name or []) == [settings.served_model_name]
