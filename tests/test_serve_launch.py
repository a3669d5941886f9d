"""Serve arguments -> vLLM command line, environment and Ray Serve options (no Ray or vLLM needed)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from workloads.serve import launch
from workloads.serve.settings import NEURON_CORES_RAY_RESOURCE, ServeSettings, SettingsError

BASE: dict[str, Any] = {
    "model": "NousResearch/Meta-Llama-3-8B-Instruct",
    "served_model_name": "llama-3-8b",
    "device": "neuron",
    "tensor_parallel_size": 2,
    "max_model_len": 4096,
    "max_num_seqs": 4,
}


def settings(**overrides: Any) -> ServeSettings:
    return ServeSettings.from_args({**BASE, **overrides})


def flags(argv: list[str]) -> dict[str, str | None]:
    """--name value pairs of an argv (a flag followed by another flag maps to None); later flags win."""
    out: dict[str, str | None] = {}
    for i, token in enumerate(argv):
        if token.startswith("--"):
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            out[token] = None if nxt is None or nxt.startswith("--") else nxt
    return out


def test_args_round_trip() -> None:
    s = settings(artifact_cache_uri="s3://b/p", extra_engine_args={"seed": 1})
    assert ServeSettings.from_args(s.to_args()) == s
    assert json.loads(json.dumps(s.to_args())) == s.to_args()  # serveConfigV2 carries it as JSON/YAML


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"devise": "cpu"}, "serve args: unknown key(s) devise; allowed: model, "),
        ({"device": "gpu"}, "serve args: device='gpu' is not allowed; allowed: neuron | cpu"),
        ({"tensor_parallel_size": 0}, "serve args: tensor_parallel_size=0 is not allowed; allowed: a positive integer"),
        ({"max_num_seqs": True}, "serve args: max_num_seqs=True is not allowed; allowed: a positive integer"),
    ],
)
def test_bad_args_fail_with_one_line(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError) as err:
        settings(**overrides)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_missing_arg_is_named() -> None:
    args = dict(BASE)
    del args["max_num_seqs"]
    with pytest.raises(SettingsError, match=r"^serve args: missing key\(s\) max_num_seqs$"):
        ServeSettings.from_args(args)


def test_block_size_is_optional_but_positive_when_given() -> None:
    assert settings().block_size is None
    assert settings(block_size=32).block_size == 32
    with pytest.raises(SettingsError, match=r"^serve args: block_size=0 is not allowed; allowed: a positive integer$"):
        settings(block_size=0)


def test_neuron_argv_carries_the_preset() -> None:
    argv = launch.engine_argv(settings())
    f = flags(argv)
    assert argv[:2] == ["--model", "NousResearch/Meta-Llama-3-8B-Instruct"]
    assert f["--served-model-name"] == "llama-3-8b"
    assert f["--tensor-parallel-size"] == "2"
    assert f["--max-model-len"] == "4096"
    assert f["--max-num-seqs"] == "4"
    assert f["--dtype"] == "bfloat16"
    assert "--no-enable-prefix-caching" in argv and "--no-enable-chunked-prefill" in argv
    assert "--enforce-eager" not in argv


def test_neuron_argv_leaves_the_block_size_to_the_plugin_and_asks_one_block_per_sequence() -> None:
    """Contiguous KV cache (prefix caching off): the Neuron plugin sets the block size to max_model_len; vLLM 0.16
    would reject that value as a flag. The Neuron SDK's guide asks for exactly max_num_seqs blocks."""
    f = flags(launch.engine_argv(settings()))
    assert "--block-size" not in f
    assert f["--num-gpu-blocks-override"] == "4"
    cpu = flags(launch.engine_argv(settings(device="cpu", tensor_parallel_size=1, block_size=32)))
    assert cpu["--block-size"] == "32" and "--num-gpu-blocks-override" not in cpu


def test_cpu_argv_has_no_neuron_defaults() -> None:
    argv = launch.engine_argv(settings(device="cpu", tensor_parallel_size=1, dtype="float32", enforce_eager=True))
    assert "--enforce-eager" in argv
    assert not [t for t in argv if "prefix-caching" in t or "chunked-prefill" in t or "gpu-blocks" in t]


def test_extra_engine_args_become_flags_and_override_defaults() -> None:
    argv = launch.engine_argv(
        settings(
            extra_engine_args={
                "enable_prefix_caching": True,
                "additional_config": {"override_neuron_config": {"enable_bucketing": False}},
                "seed": 3,
                "gpu_memory_utilization": 0.5,
                "allowed_origins": ["a", "b"],
                "quantization": None,
            }
        )
    )
    # The preset default comes first, the override after it: argparse keeps the last one.
    assert argv.index("--enable-prefix-caching") > argv.index("--no-enable-prefix-caching")
    f = flags(argv)
    assert json.loads(f["--additional-config"] or "") == {"override_neuron_config": {"enable_bucketing": False}}
    assert f["--seed"] == "3" and f["--gpu-memory-utilization"] == "0.5"
    assert argv[argv.index("--allowed-origins") + 1 : argv.index("--allowed-origins") + 3] == ["a", "b"]
    assert "--quantization" not in argv


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("bad name!", 1, "serve args: extra_engine_args key 'bad name!' is not allowed; allowed: a vLLM flag name"),
        ("seed", object, "serve args: extra_engine_args.seed=<class 'object'> is not allowed; allowed: str, int"),
    ],
)
def test_inexpressible_extra_args_fail(name: str, value: Any, message: str) -> None:
    with pytest.raises(launch.LaunchError) as err:
        launch.engine_argv(settings(extra_engine_args={name: value}))
    assert str(err.value).startswith(message)


def test_neuron_env_points_the_plugin_at_the_artifacts() -> None:
    """NEURON_COMPILED_ARTIFACTS is the one variable the image's plugin reads; nothing reads VLLM_NEURON_FRAMEWORK."""
    assert launch.engine_env(settings(), "/cache/x/abc") == {"NEURON_COMPILED_ARTIFACTS": "/cache/x/abc"}
    assert launch.engine_env(settings(), None) == {}
    assert launch.engine_env(settings(device="cpu"), None) == {}


def test_deployment_options_reserve_neuron_cores_per_tensor_parallel_rank() -> None:
    neuron = launch.deployment_options(settings(tensor_parallel_size=8))
    assert neuron["ray_actor_options"] == {"num_cpus": 1, "resources": {NEURON_CORES_RAY_RESOURCE: 8}}
    assert NEURON_CORES_RAY_RESOURCE == "neuron_cores"  # the name Ray maps to NEURON_RT_VISIBLE_CORES
    cpu = launch.deployment_options(settings(device="cpu", tensor_parallel_size=1))
    assert cpu["ray_actor_options"] == {"num_cpus": 1}
    assert neuron["max_ongoing_requests"] >= settings().max_num_seqs
