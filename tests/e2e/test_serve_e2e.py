"""The serve application answering real requests from a real vLLM engine (CPU build) through Ray Serve."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from openai import OpenAI

from workloads import rayservice
from workloads.client import chat
from workloads.presets import MODELS, PRESETS, Preset
from workloads.serve import launch
from workloads.serve.settings import APP_NAME, ServeSettings

from .conftest import ROOT, Endpoint

DEFAULT_MODEL = next(iter(MODELS))

pytestmark = [
    pytest.mark.e2e,
    # Ray Serve's own pydantic models use deprecated Field arguments; not ours to fix.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
]

# Random weights may emit EOS at any step: ignore_eos/min_tokens (vLLM sampling extras) make token counts exact.
EXACT = {"ignore_eos": True}


@pytest.fixture(scope="module")
def client(endpoint: Endpoint) -> OpenAI:
    return OpenAI(base_url=endpoint.openai_url, api_key=endpoint.api_key, timeout=120, max_retries=0)


def test_models_lists_the_served_model(client: OpenAI, endpoint: Endpoint) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == [endpoint.model]
    print(f"\ne2e: serve app ready {endpoint.startup_s:.1f}s after ray.init")


def test_chat_completion(client: OpenAI, endpoint: Endpoint) -> None:
    response = client.chat.completions.create(
        model=endpoint.model,
        messages=[{"role": "user", "content": "the quick brown fox"}],
        max_tokens=8,
        extra_body=EXACT,
    )
    assert response.model == endpoint.model
    assert response.choices[0].message.role == "assistant"
    assert isinstance(response.choices[0].message.content, str)
    assert response.choices[0].finish_reason == "length"
    assert response.usage is not None and response.usage.completion_tokens == 8
    assert response.usage.prompt_tokens > 3  # the chat template wrapped the message


def test_chat_completion_streaming(client: OpenAI, endpoint: Endpoint) -> None:
    stream = client.chat.completions.create(
        model=endpoint.model,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "ray serves vllm"}],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=EXACT,
    )
    chunks = list(stream)
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) >= 2  # really streamed, not one blob
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]


def test_completion(client: OpenAI, endpoint: Endpoint) -> None:
    response = client.completions.create(
        model=endpoint.model, prompt="neuron cores compile graphs", max_tokens=5, extra_body=EXACT
    )
    assert response.object == "text_completion"
    assert response.usage is not None and response.usage.completion_tokens == 5
    assert isinstance(response.choices[0].text, str)


def test_bad_parameters_get_a_clear_4xx_and_the_server_stays_up(client: OpenAI, endpoint: Endpoint) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model=endpoint.model, messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=-3
        )
    assert bad.value.status_code == 400
    assert "temperature" in str(bad.value)
    with pytest.raises(openai.BadRequestError) as too_long:
        client.completions.create(model=endpoint.model, prompt="hi", max_tokens=5000)
    assert too_long.value.status_code == 400
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert unknown.value.status_code == 404
    # Still serving.
    ok = client.completions.create(model=endpoint.model, prompt="still up", max_tokens=2, extra_body=EXACT)
    assert ok.usage is not None and ok.usage.completion_tokens == 2


def test_concurrent_requests_are_all_answered(client: OpenAI, endpoint: Endpoint) -> None:
    n = 8

    def one(i: int) -> int:
        r = client.chat.completions.create(
            model=endpoint.model,
            messages=[{"role": "user", "content": f"request number {i}"}],
            max_tokens=16,
            extra_body=EXACT,
        )
        assert r.usage is not None
        return r.usage.completion_tokens

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=n) as pool:
        tokens = list(pool.map(one, range(n), timeout=300))
    print(f"\ne2e: {n} concurrent chats answered in {time.monotonic() - started:.1f}s")
    assert tokens == [16] * n


def test_health_and_metrics(endpoint: Endpoint, client: OpenAI) -> None:
    client.completions.create(model=endpoint.model, prompt="count me", max_tokens=3, extra_body=EXACT)
    with urllib.request.urlopen(f"{endpoint.base_url}/health", timeout=30) as health:
        assert health.status == 200
    with urllib.request.urlopen(f"{endpoint.base_url}/metrics", timeout=30) as metrics:
        assert metrics.status == 200
        text = metrics.read().decode()
    for family in ("vllm:num_requests_running", "vllm:prompt_tokens", "vllm:generation_tokens"):
        assert family in text, family
    generated = re.search(r'^vllm:generation_tokens_total\{[^}]*model_name="tiny-llama"[^}]*\} (\S+)$', text, re.M)
    assert generated is not None and float(generated.group(1)) > 0


def test_requests_enter_through_serve_haproxy_ingress(endpoint: Endpoint) -> None:
    """The cluster's ingress (settings.RAY_SERVE_ENV): HAProxy owns the Serve port and answers the probe KubeRay's
    worker readiness check greps for ("success" on /-/healthz)."""
    import psutil  # comes with vLLM; venv-e2e only

    port = int(endpoint.base_url.rsplit(":", 1)[1])
    owners = {
        c.pid
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid is not None
    }
    assert owners, f"nothing listens on {port}"
    assert {psutil.Process(pid).name() for pid in owners} == {"haproxy"}
    with urllib.request.urlopen(f"{endpoint.base_url}/-/healthz", timeout=30) as healthz:
        assert healthz.status == 200
        assert "success" in healthz.read().decode()


def test_the_client_examples_run_against_it(endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", endpoint.api_key)  # what the README tells a user to export
    out = io.StringIO()
    assert chat.main(["--base-url", endpoint.openai_url, "--timeout", "120"], out=out) == 0
    text = out.getvalue()
    assert text.startswith(f"model {endpoint.model} at {endpoint.openai_url}\n")  # discovered via /v1/models
    for tag in ("[simple] ", "[sampling] ", "[stream] "):
        assert tag in text, text


def test_the_endpoint_asks_who_is_calling(endpoint: Endpoint) -> None:
    """No key: 401 (openai.AuthenticationError); a wrong key: 401; the key: 200."""
    for key in ("", "not-the-key"):
        anonymous = OpenAI(base_url=endpoint.openai_url, api_key=key or "none", timeout=30, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as denied:
            anonymous.models.list()
        assert denied.value.status_code == 401 and "API key" in str(denied.value)
    request = urllib.request.Request(f"{endpoint.openai_url}/chat/completions", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as no_header:
        urllib.request.urlopen(request, timeout=30)
    assert no_header.value.code == 401 and no_header.value.headers["WWW-Authenticate"] == "Bearer"
    keyed = OpenAI(base_url=endpoint.openai_url, api_key=endpoint.api_key, timeout=30, max_retries=0)
    assert [m.id for m in keyed.models.list().data] == [endpoint.model]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("POST", "/scale_elastic_ep"),
        ("POST", "/inference/v1/generate"),
        ("POST", "/invocations"),
        ("POST", "/tokenize"),
        ("GET", "/version"),
    ],
)
def test_routes_users_do_not_need_are_refused_even_with_the_key(endpoint: Endpoint, method: str, path: str) -> None:
    request = urllib.request.Request(
        f"{endpoint.base_url}{path}",
        data=b"{}" if method == "POST" else None,
        method=method,
        headers={"Authorization": f"Bearer {endpoint.api_key}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 404
    assert f"route {path} is not served here" in refused.value.read().decode()


def test_probes_and_scrapes_need_no_key(endpoint: Endpoint) -> None:
    for path, expect in (("/health", ""), ("/metrics", "vllm:"), ("/-/healthz", "success")):
        with urllib.request.urlopen(f"{endpoint.base_url}{path}", timeout=30) as answer:
            assert answer.status == 200 and expect in answer.read().decode(), path


def rendered_engine_argv(preset: Preset, model_id: str, extra_engine_args: dict[str, Any] | None = None) -> list[str]:
    """The argv a Neuron replica hands vLLM: serveConfigV2 as the RayService renders it, read back as the replica
    reads it (``ServeSettings.from_args``), turned into flags by ``launch.engine_argv``."""
    inputs = rayservice.RayServiceInputs(
        preset=preset,
        model_id=model_id,
        image="example.com/serving:1",
        region="us-east-1",
        code_sha256="0" * 64,
        artifact_cache_uri="s3://artifacts/neuron-artifacts",
        hf_token_secret=None,
    )
    serve_config = yaml.safe_load(rayservice.rayservice(inputs)["spec"]["serveConfigV2"])
    (app,) = serve_config["applications"]
    args = dict(app["args"])
    if extra_engine_args is not None:
        args["extra_engine_args"] = extra_engine_args
    return launch.engine_argv(ServeSettings.from_args(args))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_presets_engine_argv_parses_with_the_installed_vllm(name: str) -> None:
    """Each preset's Neuron argv, exactly as rendered, passes the installed vLLM's own parser and validation (the
    vLLM 0.16 tier runs the Neuron image's release; the default e2e tier a newer one)."""
    from workloads.serve.compat import VLLMOpenAI

    preset = PRESETS[name]
    for model_id in MODELS:
        args = VLLMOpenAI().parse_args(rendered_engine_argv(preset, model_id))
        assert args.model == args.served_model_name[0] == model_id
        assert (args.tensor_parallel_size, args.max_model_len, args.max_num_seqs) == (
            preset.tensor_parallel_size,
            preset.max_model_len,
            preset.max_num_seqs,
        )
        assert args.dtype == "bfloat16"
        assert args.enable_prefix_caching is False and args.enable_chunked_prefill is False


def test_neuron_overrides_go_through_additional_config() -> None:
    """vLLM 0.16 has no --override-neuron-config; the Neuron plugin reads override_neuron_config from
    --additional-config, which extra_engine_args expresses as JSON."""
    from workloads.serve.compat import EngineArgsError, VLLMOpenAI

    overrides = {"additional_config": {"override_neuron_config": {"enable_bucketing": True}}, "seed": 1}
    args = VLLMOpenAI().parse_args(rendered_engine_argv(PRESETS["inf2.8xlarge"], DEFAULT_MODEL, overrides))
    assert args.additional_config == {"override_neuron_config": {"enable_bucketing": True}} and args.seed == 1
    with pytest.raises(EngineArgsError, match=r"unrecognized arguments: --override-neuron-config"):
        VLLMOpenAI().parse_args(
            rendered_engine_argv(PRESETS["inf2.8xlarge"], DEFAULT_MODEL, {"override_neuron_config": {"a": 1}})
        )


# vLLM 0.16 echoes the flag with its value; 0.32 names the flag alone.
UNKNOWN_FLAG_ERRORS = (
    "error: unrecognized arguments: --no-such-flag 1",
    "error: unrecognized arguments: --no-such-flag",
)


def test_a_replica_that_cannot_start_says_why_in_the_serve_status() -> None:
    """A flag vLLM rejects fails the deploy with the parser's own message in the Serve status, not only "Failed to
    update the deployments". Own process: the session's Ray (the endpoint fixture) may be running in this one."""
    # Short path: Ray's unix sockets live under the work directory and have a ~107-character limit.
    work = Path(tempfile.mkdtemp(prefix="e2e-bad-", dir="/tmp"))
    script = f"""
import sys
from pathlib import Path
from tools.bench_servers import serve_app, tiny_settings
from tests.e2e import tiny_model
from dataclasses import replace
work = Path({str(work)!r})
settings = replace(tiny_settings(tiny_model.build(work / "model")), extra_engine_args={{"no_such_flag": 1}})
try:
    with serve_app(settings, work):
        sys.exit("the app started with a flag vLLM does not have")
except RuntimeError as exc:
    print()
    print("RAISED", exc)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT, check=False
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert done.returncode == 0 and "\nRAISED " in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    message = done.stdout[done.stdout.index("\nRAISED ") + len("\nRAISED ") :]
    assert message.startswith(f"serve app {APP_NAME} failed to deploy: "), message
    # The reason, whole, on one line of the status: the parser's error as vLLM printed it.
    reason = "vLLM rejected the engine arguments (exit 2): "
    assert [line for line in message.splitlines() if reason in line and line.endswith(UNKNOWN_FLAG_ERRORS)], message
