"""Config: the stack files load, every bad value stops with one line naming key, value and what is allowed."""

from __future__ import annotations

import pytest
import yaml

from infra.config import (
    DEFAULT_EKS_VERSION,
    EKS_VERSIONS,
    KNOWN_KEYS,
    PROJECT,
    ConfigError,
    StackConfig,
    _read_all,
    _Reader,
    parse,
)
from tools.render import _engine_value, stack_config

from .conftest import REPO


def load(stack: str = "dev", **overrides: str) -> StackConfig:
    full = {k if ":" in k else f"{PROJECT}:{k}": v for k, v in overrides.items()}
    _, values, _ = stack_config(stack, full)
    return parse(values, stack=stack)


def problems(stack: str = "dev", **overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(stack, **overrides)
    return info.value.problems


def test_dev_stack_loads_with_the_documented_shape() -> None:
    cfg = load("dev")
    assert cfg.region == "us-west-2"
    assert cfg.network.availability_zone_count == 2
    assert cfg.network.nat_gateways == "single"
    assert cfg.cluster.version in EKS_VERSIONS
    assert cfg.tags["project"] == PROJECT and cfg.tags["stack"] == "dev"


def test_prod_stack_loads_with_three_zones_nat_per_zone_and_narrowed_cidrs() -> None:
    cfg = load("prod")
    assert cfg.is_prod
    assert cfg.network.availability_zone_count == 3
    assert cfg.network.nat_gateways == "perAz"
    assert cfg.cluster.public_access_cidrs and "0.0.0.0/0" not in cfg.cluster.public_access_cidrs


def test_gcs_fault_tolerance_is_off_in_dev_and_on_in_prod() -> None:
    assert load("dev").serving.gcs_fault_tolerance is False
    assert load("prod").serving.gcs_fault_tolerance is True


def test_config_is_frozen() -> None:
    cfg = load("dev")
    with pytest.raises(AttributeError):
        cfg.region = "us-east-1"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.tags["x"] = "y"  # type: ignore[index]


BAD = [
    ({"availabilityZoneCount": "7"}, "eks-neuron-llm:availabilityZoneCount: 7 is not allowed; allowed: 2 or 3"),
    ({"availabilityZoneCount": "two"}, "eks-neuron-llm:availabilityZoneCount: 'two' is not allowed; allowed: 2 or 3"),
    ({"natGateways": "many"}, "eks-neuron-llm:natGateways: 'many' is not allowed; allowed: single | perAz"),
    (
        {"clusterVersion": "1.20"},
        "eks-neuron-llm:clusterVersion: '1.20' is not allowed; allowed: " + " | ".join(EKS_VERSIONS),
    ),
    ({"aws:region": "eu-west-9"}, "aws:region: 'eu-west-9' is not allowed; allowed: us-east-1 | us-east-2 | us-west-2"),
    ({"vpcCidr": "10.0.0.0/8"}, "eks-neuron-llm:vpcCidr: '10.0.0.0/8' is not allowed; allowed: a private"),
    ({"vpcCidr": "8.8.0.0/16"}, "eks-neuron-llm:vpcCidr: '8.8.0.0/16' is not allowed; allowed: a private"),
    ({"vpcCidr": "10.0.0.1/16"}, "eks-neuron-llm:vpcCidr: '10.0.0.1/16' is not allowed; allowed: an IPv4 network"),
    (
        {"publicAccessCidrs": '["1.2.3.4"]'},
        "eks-neuron-llm:publicAccessCidrs: '1.2.3.4' is not allowed; allowed: each entry must be an IPv4 CIDR",
    ),
    (
        {"publicAccessCidrs": "0.0.0.0/0"},
        "eks-neuron-llm:publicAccessCidrs: '0.0.0.0/0' is not allowed; allowed: a list of",
    ),
    (
        {"publicAccessCidrs": '["nonsense"]'},
        "eks-neuron-llm:publicAccessCidrs: 'nonsense' is not allowed; allowed: each entry must be an IPv4 CIDR",
    ),
    (
        {"adminPrincipalArns": '["admin"]'},
        "eks-neuron-llm:adminPrincipalArns: 'admin' is not allowed; allowed: "
        "each entry must be an IAM role or user ARN",
    ),
    (
        {"systemNodeInstanceType": "inf2.xlarge"},
        "eks-neuron-llm:systemNodeInstanceType: 'inf2.xlarge' is not allowed; allowed: a general-purpose",
    ),
    (
        {"systemNodeInstanceType": "big"},
        "eks-neuron-llm:systemNodeInstanceType: 'big' is not allowed; allowed: an EC2 instance type",
    ),
    ({"systemNodeCount": "1"}, "eks-neuron-llm:systemNodeCount: 1 is not allowed; allowed: 2 to 10"),
    (
        {"systemNodeMaxCount": "2", "systemNodeCount": "3"},
        "eks-neuron-llm:systemNodeMaxCount: 2 is not allowed; allowed: at least systemNodeCount (3)",
    ),
    ({"clusterName": "9lives"}, "eks-neuron-llm:clusterName: '9lives' is not allowed; allowed: 1-38 letters"),
    ({"environment": "staging"}, "eks-neuron-llm:environment: 'staging' is not allowed; allowed: dev | prod"),
    ({"gcsFaultTolerance": "yes"}, "eks-neuron-llm:gcsFaultTolerance: 'yes' is not allowed; allowed: true | false"),
    ({"tags": '{"aws:owner": "x"}'}, "eks-neuron-llm:tags: 'aws:owner' is not allowed; allowed: tag keys"),
    ({"tags": '["a"]'}, 'eks-neuron-llm:tags: ["a"] is not allowed; allowed: a map'),
    (
        # the NodePool CRD's budgets[].nodes pattern allows at most 100%
        {"acceleratorDisruptionBudget": "150%"},
        "eks-neuron-llm:acceleratorDisruptionBudget: '150%' is not allowed; allowed: a node count such as 1, or a "
        "percentage from 0% to 100%",
    ),
    (
        {"clusterVerison": "1.35"},
        "eks-neuron-llm:clusterVerison: unknown key for this project; did you mean eks-neuron-llm:clusterVersion?",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "message"), BAD, ids=[next(iter(o)) + "=" + next(iter(o.values())) for o, _ in BAD]
)
def test_each_bad_value_gives_one_line_naming_key_value_and_allowed(overrides: dict[str, str], message: str) -> None:
    found = problems("dev", **overrides)
    assert len(found) == 1, found
    assert found[0].startswith(message), found[0]
    assert "\n" not in found[0]


def test_prod_rejects_an_open_api_endpoint() -> None:
    found = problems("prod", publicAccessCidrs='["0.0.0.0/0"]')
    assert found == [
        'eks-neuron-llm:publicAccessCidrs: ["0.0.0.0/0"] is not allowed; allowed: CIDRs narrower '
        "than 0.0.0.0/0 in prod (the API would be open)"
    ]
    assert problems("prod", publicAccessCidrs="[]")[0].startswith("eks-neuron-llm:publicAccessCidrs: [] is not")


def test_dev_may_leave_the_endpoint_open() -> None:
    assert load("dev").cluster.public_access_cidrs == ("0.0.0.0/0",)


def test_every_problem_is_reported_at_once() -> None:
    found = problems("dev", availabilityZoneCount="9", natGateways="x", clusterVersion="0.1")
    assert sorted(p.split(":")[1] for p in found) == ["availabilityZoneCount", "clusterVersion", "natGateways"]


def test_a_missing_key_says_how_to_set_it() -> None:
    _, values, _ = stack_config("dev")
    del values["aws:region"]
    with pytest.raises(ConfigError) as info:
        parse(values, stack="dev")
    assert info.value.problems == ["aws:region: not set; set it with `pulumi config set aws:region <value>`"]


# The schema in Pulumi.yaml and the keys the program reads are one set.


def _schema() -> dict[str, dict[str, object]]:
    return yaml.safe_load((REPO / "Pulumi.yaml").read_text())["config"]


def test_pulumi_yaml_declares_exactly_the_keys_the_program_reads() -> None:
    declared = {f"{PROJECT}:{k}" for k in _schema()}
    assert declared == {k for k in KNOWN_KEYS if k.startswith(f"{PROJECT}:")}


def test_every_declared_key_has_a_type_a_default_and_a_description() -> None:
    for key, decl in _schema().items():
        assert decl.get("description"), key
        assert "default" in decl, key
        if key != "tags":  # Pulumi's config schema has no object type
            assert decl.get("type") in {"string", "integer", "boolean", "array"}, key


def test_the_runtime_block_uses_a_venv_and_pip() -> None:
    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    assert project["name"] == PROJECT
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": "venv"}}


def test_stack_files_only_set_declared_or_provider_keys() -> None:
    for stack in ("dev", "prod"):
        keys = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
        for key in keys:
            assert key in KNOWN_KEYS, f"Pulumi.{stack}.yaml sets {key}, which the program does not read"


# The code's fallbacks (what a missing or bad key is replaced with while the other keys are still checked) and the
# defaults of Pulumi.yaml are one set of values.  An empty fallback means "no value" and systemNodeMaxCount falls back
# to systemNodeCount; every other fallback must be the declared default.
DERIVED_FALLBACKS = {f"{PROJECT}:systemNodeMaxCount"}


def _fallback_drift() -> list[str]:
    probe = _Reader({})
    _read_all(probe)
    drift = []
    for key, decl in _schema().items():
        full = f"{PROJECT}:{key}"
        fallback = probe.fallbacks.get(full, "")
        if fallback == "" or full in DERIVED_FALLBACKS:
            continue
        if _engine_value(fallback) != _engine_value(decl["default"]):
            drift.append(f"{full}: code {fallback!r}, Pulumi.yaml {decl['default']!r}")
    return drift


def test_the_code_falls_back_to_the_defaults_pulumi_yaml_declares() -> None:
    assert _fallback_drift() == []
    assert _schema()["clusterVersion"]["default"] == DEFAULT_EKS_VERSION in EKS_VERSIONS


def test_fallback_drift_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # The defect this guards against: config.py fell back to EKS_VERSIONS[-1] (1.36) while Pulumi.yaml said 1.35.
    monkeypatch.setattr("infra.config.DEFAULT_EKS_VERSION", "1.36")
    assert _fallback_drift() == [f"{PROJECT}:clusterVersion: code '1.36', Pulumi.yaml '1.35'"]


def test_a_minor_out_of_standard_support_is_refused_naming_the_supported_ones() -> None:
    # 1.34 left EKS standard support on 2026-12-02; a stack still set to it gets one line and upgrades.
    assert problems(clusterVersion="1.34") == [
        f"{PROJECT}:clusterVersion: '1.34' is not allowed; allowed: " + " | ".join(EKS_VERSIONS)
    ]
    assert "1.34" not in EKS_VERSIONS
