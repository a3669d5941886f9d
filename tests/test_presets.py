"""Serving presets against the instance facts and the model, and the serving config's one-line errors."""

from __future__ import annotations

import dataclasses

import pytest

from infra.config import PROJECT, ConfigError, parse
from tools.render import stack_config
from workloads.instances import INSTANCES, facts
from workloads.presets import MODELS, PRESETS, check
from workloads.topology import INF2_POOL, TRN1_POOL

LLAMA = MODELS["NousResearch/Meta-Llama-3-8B-Instruct"]


def test_every_preset_fits_the_default_model_and_its_instance() -> None:
    assert set(PRESETS) == {"inf2.8xlarge", "inf2.24xlarge", "inf2.48xlarge", "trn1.2xlarge", "trn1.32xlarge"}
    for preset in PRESETS.values():
        assert check(preset, LLAMA) == [], preset.name
        assert preset.worker_neuron_devices <= preset.instance.neuron_devices
        assert preset.pool == (INF2_POOL if preset.instance_type.startswith("inf2") else TRN1_POOL)


def test_default_preset_is_one_device_two_cores_tp2() -> None:
    p = PRESETS["inf2.8xlarge"]
    assert (p.instance.neuron_devices, p.instance.neuron_cores, p.tensor_parallel_size) == (1, 2, 2)
    assert (p.worker_neuron_devices, p.worker_neuron_cores, p.replicas_per_worker) == (1, 2, 1)


def test_inf2_48xlarge_runs_several_tp8_replicas_per_node() -> None:
    p = PRESETS["inf2.48xlarge"]
    assert p.tensor_parallel_size == 8 and p.replicas_per_worker == 3 and p.worker_neuron_devices == 12


def test_model_facts_of_llama3_8b() -> None:
    assert (LLAMA.attention_heads, LLAMA.kv_heads, LLAMA.layers) == (32, 8, 32)
    assert 14.5 < LLAMA.weights_gib < 15.5  # ~16 GB of bf16 weights
    assert LLAMA.kv_cache_gib(8192) == pytest.approx(1.0)  # 128 KiB per token


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"tensor_parallel_size": 4}, "tensor parallel degree 4 exceeds the 2 NeuronCores of inf2.8xlarge"),
        ({"replicas_per_worker": 2}, "2 replicas x TP 2 need 4 NeuronCores; inf2.8xlarge has 2"),
        ({"max_num_seqs": 64}, "weights + KV cache need 79.0 GiB per replica; 2 NeuronCores of inf2.8xlarge offer"),
        ({"min_replicas": 3}, "replicas 3..2 are not 1 <= min <= max"),
    ],
)
def test_check_names_what_does_not_fit(change: dict[str, int], reason: str) -> None:
    bad = dataclasses.replace(PRESETS["inf2.8xlarge"], **change)
    assert any(r.startswith(reason) for r in check(bad, LLAMA)), check(bad, LLAMA)


def test_check_rejects_a_degree_that_does_not_divide_the_heads() -> None:
    bad = dataclasses.replace(PRESETS["trn1.32xlarge"], tensor_parallel_size=12, replicas_per_worker=2)
    reasons = check(bad, LLAMA)
    assert "tensor parallel degree 12 does not divide the 32 attention heads" in reasons
    assert "tensor parallel degree 12 and the 8 KV heads do not divide one another" in reasons


def test_instance_facts_carry_their_sources_and_issue_prices() -> None:
    expected = {
        "inf2.8xlarge": 1.968,
        "inf2.24xlarge": 6.491,
        "inf2.48xlarge": 12.981,
        "trn1.2xlarge": 1.344,
        "trn1.32xlarge": 21.50,
    }
    for name, price in expected.items():
        assert round(facts(name).on_demand_usd_per_hour, 3) == price
    for inst in INSTANCES.values():
        assert inst.sources and inst.max_pods > 0
        if inst.neuron_devices:
            assert inst.neuron_cores == 2 * inst.neuron_devices and inst.device_memory_gib == 32 * inst.neuron_devices
    with pytest.raises(KeyError, match=r"no instance facts for p5\.48xlarge"):
        facts("p5.48xlarge")


def problems(**overrides: str) -> list[str]:
    _, values, _ = stack_config("dev", {f"{PROJECT}:{k}": v for k, v in overrides.items()})
    with pytest.raises(ConfigError) as info:
        parse(values, stack="dev")
    return info.value.problems


BAD = [
    (
        {"servingPreset": "inf2.xlarge"},
        "eks-neuron-llm:servingPreset: 'inf2.xlarge' is not allowed; allowed: inf2.8xlarge",
    ),
    ({"modelId": "meta-llama/Llama-2-70b"}, "eks-neuron-llm:modelId: 'meta-llama/Llama-2-70b' is not allowed"),
    (
        {"servingImage": "example.com/serving:latest"},
        "eks-neuron-llm:servingImage: 'example.com/serving:latest' is not allowed; allowed: a pinned tag or digest",
    ),
    (
        {"servingImage": "example.com/serving"},
        "eks-neuron-llm:servingImage: 'example.com/serving' is not allowed; allowed: an image pinned by a tag",
    ),
    (
        {"servingImage": "Not An Image"},
        "eks-neuron-llm:servingImage: 'Not An Image' is not allowed; allowed: empty (the stack builds workloads/image)",
    ),
    ({"openWebuiEnableSignup": "yes"}, "eks-neuron-llm:openWebuiEnableSignup: 'yes' is not allowed; allowed: true"),
    ({"openWebuiStorageGiB": "0"}, "eks-neuron-llm:openWebuiStorageGiB: 0 is not allowed; allowed: an integer"),
    # Cross-checks with the capacity section.
    (
        {"servingPreset": "trn1.32xlarge"},
        "eks-neuron-llm:trn1NeuronDeviceLimit: 4 is not allowed; allowed: at least 16 (1 worker(s) of 16 Neuron",
    ),
    (
        {"inf2InstanceTypes": '["inf2.48xlarge"]'},
        'eks-neuron-llm:inf2InstanceTypes: ["inf2.48xlarge"] is not allowed; allowed: a list that includes inf2.8x',
    ),
    (
        {"servingPreset": "inf2.24xlarge", "inf2NeuronDeviceLimit": "5"},
        "eks-neuron-llm:inf2NeuronDeviceLimit: 5 is not allowed; allowed: at least 6",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), BAD)
def test_bad_serving_values_stop_with_one_line(overrides: dict[str, str], message: str) -> None:
    (problem,) = problems(**overrides)
    assert problem.startswith(message), problem
    assert "\n" not in problem


def test_good_overrides_parse() -> None:
    _, values, _ = stack_config(
        "dev",
        {
            f"{PROJECT}:servingPreset": "trn1.32xlarge",
            f"{PROJECT}:trn1NeuronDeviceLimit": "16",
            f"{PROJECT}:servingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/x/serving@sha256:" + "a" * 64,
            f"{PROJECT}:openWebuiEnableSignup": "true",
        },
    )
    serving = parse(values, stack="dev").serving
    assert serving.preset == "trn1.32xlarge" and serving.openwebui_enable_signup is True
    assert serving.hf_token is None
