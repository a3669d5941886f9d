"""Node classes and pools, as pure builders: CRD-valid, the disk where Karpenter reads it, pools matching workloads."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from infra import ami
from infra.config import PROJECT, CapacityConfig, ConfigError, parse
from tools.render import Render, stack_config
from tools.schemas import custom_resource_problems
from workloads import nodepools
from workloads.instances import facts
from workloads.topology import (
    ACCELERATOR_POOLS,
    DEFAULT_POOL,
    INF2_POOL,
    INSTANCE_FAMILY_LABEL,
    INSTANCE_TYPE_LABEL,
    NEURON_DEVICE_RESOURCE,
    NEURON_TAINT,
    NODEPOOL_LABEL,
    TRN1_POOL,
    accelerator_placement,
)

# The serving presets the serving side offers (issue 4); each must be launchable by the default pool lists.
SERVING_PRESET_TYPES = {
    INF2_POOL: ("inf2.8xlarge", "inf2.24xlarge", "inf2.48xlarge"),
    TRN1_POOL: ("trn1.2xlarge", "trn1.32xlarge"),
}


def capacity(stack: str = "dev", **overrides: str) -> CapacityConfig:
    _, values, _ = stack_config(stack, {f"{PROJECT}:{k}": v for k, v in overrides.items()})
    return parse(values, stack=stack).capacity


def build(cfg: CapacityConfig | None = None) -> nodepools.CapacityPlan:
    c = cfg or capacity()
    return nodepools.plan(
        cluster_name="eks-neuron-llm-dev",
        node_role="karpenter-node",
        ami_alias=ami.alias(c.ami_version),
        default_disk_gib=c.default_disk_gib,
        neuron_disk_gib=c.neuron_disk_gib,
        default_pool_cpu_limit=c.default_pool_cpu_limit,
        default_pool_memory_gib=c.default_pool_memory_gib,
        inf2_instance_types=c.inf2_instance_types,
        trn1_instance_types=c.trn1_instance_types,
        accelerator_capacity_types=c.accelerator_capacity_types,
        accelerator_pool_cpu_limit=c.accelerator_pool_cpu_limit,
        accelerator_pool_memory_gib=c.accelerator_pool_memory_gib,
        inf2_neuron_device_limit=c.inf2_neuron_device_limit,
        trn1_neuron_device_limit=c.trn1_neuron_device_limit,
        accelerator_consolidate_after=c.accelerator_consolidate_after,
        accelerator_disruption_budget=c.accelerator_disruption_budget,
        node_expire_after=c.node_expire_after,
    )


def reqs(pool: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in pool["spec"]["template"]["spec"]["requirements"]}


def test_every_node_class_and_pool_validates_against_the_crds() -> None:
    p = build()
    assert set(p.node_classes) == {"default", "neuron"}
    assert set(p.node_pools) == {DEFAULT_POOL, *ACCELERATOR_POOLS}
    for obj in [*p.node_classes.values(), *p.node_pools.values()]:
        assert custom_resource_problems(obj) == [], obj["metadata"]["name"]


def test_the_blueprints_ignored_disk_key_would_fail_here() -> None:
    # The old blueprint set the disk size under a key Karpenter does not read; the CRD schema rejects such keys.
    neuron = copy.deepcopy(build().node_classes["neuron"])
    neuron["spec"]["blockDeviceMappings"][0]["ebs"]["volumeSizeGiB"] = 500
    assert any("volumeSizeGiB" in p for p in custom_resource_problems(neuron))
    top_level = copy.deepcopy(build().node_classes["neuron"])
    top_level["spec"]["diskSize"] = "500Gi"
    assert any("diskSize" in p for p in custom_resource_problems(top_level))


def test_neuron_nodes_get_a_large_fast_encrypted_gp3_root_volume() -> None:
    cfg = capacity()
    assert cfg.neuron_disk_gib >= 500
    (disk,) = build().node_classes["neuron"]["spec"]["blockDeviceMappings"]
    assert disk["rootVolume"] is True and disk["deviceName"] == "/dev/xvda"
    ebs = disk["ebs"]
    assert ebs["volumeSize"] == f"{cfg.neuron_disk_gib}Gi"
    assert ebs["volumeType"] == "gp3" and ebs["encrypted"] is True and ebs["deleteOnTermination"] is True
    # 10+ GB image pulls: well above the gp3 baseline, within gp3's limits and its IOPS-per-throughput rule
    assert 500 <= ebs["throughput"] <= 1000 and ebs["iops"] >= 4 * ebs["throughput"] and ebs["iops"] <= 16000
    (default_disk,) = build().node_classes["default"]["spec"]["blockDeviceMappings"]
    assert default_disk["ebs"]["volumeSize"] == f"{cfg.default_disk_gib}Gi" and default_disk["ebs"]["encrypted"]


def test_node_classes_pin_the_al2023_release_require_imdsv2_and_discover_by_tag() -> None:
    for nc in build().node_classes.values():
        spec = nc["spec"]
        (term,) = spec["amiSelectorTerms"]
        assert term["alias"].startswith("al2023@v20") and "latest" not in term["alias"]
        assert spec["metadataOptions"]["httpTokens"] == "required"
        assert spec["metadataOptions"]["httpPutResponseHopLimit"] == 1
        discovery = [{"tags": {nodepools.DISCOVERY_TAG: "eks-neuron-llm-dev"}}]
        assert spec["subnetSelectorTerms"] == discovery and spec["securityGroupSelectorTerms"] == discovery
        assert spec["role"] == "karpenter-node"


def test_accelerator_pools_allow_exactly_the_configured_types_and_are_tainted() -> None:
    cfg = capacity(
        inf2InstanceTypes='["inf2.24xlarge"]',
        trn1InstanceTypes='["trn1.32xlarge", "trn1.2xlarge"]',
        servingPreset="inf2.24xlarge",
    )
    p = build(cfg)
    assert nodepools.pool_instance_types(p.node_pools[INF2_POOL]) == ["inf2.24xlarge"]
    assert nodepools.pool_instance_types(p.node_pools[TRN1_POOL]) == ["trn1.32xlarge", "trn1.2xlarge"]
    for name, family in ((INF2_POOL, "inf2"), (TRN1_POOL, "trn1")):
        pool = p.node_pools[name]
        spec = pool["spec"]["template"]["spec"]
        assert spec["taints"] == [NEURON_TAINT]
        assert spec["nodeClassRef"] == {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "neuron"}
        assert reqs(pool)[INSTANCE_FAMILY_LABEL]["values"] == [family]
        assert reqs(pool)["karpenter.sh/capacity-type"]["values"] == ["on-demand"]


def test_default_pool_lists_include_every_serving_preset_type() -> None:
    p = build()
    for pool, types in SERVING_PRESET_TYPES.items():
        assert set(types) <= set(nodepools.pool_instance_types(p.node_pools[pool])), pool


def test_pool_limits_cap_cpu_memory_and_neuron_devices() -> None:
    cfg = capacity()
    p = build(cfg)
    assert p.node_pools[INF2_POOL]["spec"]["limits"] == {
        "cpu": cfg.accelerator_pool_cpu_limit,
        "memory": f"{cfg.accelerator_pool_memory_gib}Gi",
        NEURON_DEVICE_RESOURCE: cfg.inf2_neuron_device_limit,
    }
    assert p.node_pools[TRN1_POOL]["spec"]["limits"][NEURON_DEVICE_RESOURCE] == cfg.trn1_neuron_device_limit
    assert p.node_pools[DEFAULT_POOL]["spec"]["limits"] == {
        "cpu": cfg.default_pool_cpu_limit,
        "memory": f"{cfg.default_pool_memory_gib}Gi",
    }


def test_serving_nodes_are_consolidated_only_when_empty_within_a_budget() -> None:
    cfg = capacity(acceleratorDisruptionBudget="0", acceleratorConsolidateAfter="1h")
    p = build(cfg)
    for name in ACCELERATOR_POOLS:
        d = p.node_pools[name]["spec"]["disruption"]
        assert d == {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "1h", "budgets": [{"nodes": "0"}]}
        tmpl = p.node_pools[name]["spec"]["template"]["spec"]
        assert tmpl["expireAfter"] == cfg.node_expire_after and tmpl["terminationGracePeriod"]
    default = p.node_pools[DEFAULT_POOL]
    assert default["spec"]["disruption"]["consolidationPolicy"] == "WhenEmptyOrUnderutilized"
    assert "taints" not in default["spec"]["template"]["spec"]


def test_default_pool_is_current_generation_x86_cmr_spot_and_on_demand() -> None:
    r = reqs(build().node_pools[DEFAULT_POOL])
    assert r["kubernetes.io/arch"]["values"] == ["amd64"]
    assert set(r["karpenter.sh/capacity-type"]["values"]) == {"spot", "on-demand"}
    assert set(r["karpenter.k8s.aws/instance-category"]["values"]) == {"c", "m", "r"}
    assert r["karpenter.k8s.aws/instance-generation"] == {
        "key": "karpenter.k8s.aws/instance-generation",
        "operator": "Gt",
        "values": ["5"],
    }


def _tolerates(tolerations: list[dict[str, str]], taint: dict[str, str]) -> bool:
    for t in tolerations:
        if t.get("key") != taint["key"] or t.get("effect", taint["effect"]) != taint["effect"]:
            continue
        if t.get("operator") == "Exists" or t.get("value") == taint["value"]:
            return True
    return False


def _selects(pool: dict[str, Any], pool_name: str, node_selector: dict[str, str]) -> list[str]:
    """Why a node of ``pool`` could not match ``node_selector`` (empty: it can)."""
    problems = []
    r = reqs(pool)
    for key, value in node_selector.items():
        if key == NODEPOOL_LABEL:
            if value != pool_name:
                problems.append(f"{key}={value} but the pool is {pool_name}")
        elif key not in r or r[key]["operator"] != "In" or value not in r[key]["values"]:
            problems.append(f"{key}={value} is not allowed by the pool's requirements")
    return problems


@pytest.mark.parametrize("pool_name", ACCELERATOR_POOLS)
def test_workload_placement_lands_on_the_pool_for_every_allowed_type(pool_name: str) -> None:
    pool = build().node_pools[pool_name]
    for instance_type in nodepools.pool_instance_types(pool):
        placement = accelerator_placement(pool_name, instance_type)
        assert _selects(pool, pool_name, placement["nodeSelector"]) == []  # type: ignore[arg-type]
        assert _tolerates(placement["tolerations"], NEURON_TAINT)  # type: ignore[arg-type]


def test_placement_check_can_fail() -> None:
    pool = build().node_pools[INF2_POOL]
    assert _selects(pool, INF2_POOL, {NODEPOOL_LABEL: INF2_POOL, INSTANCE_TYPE_LABEL: "inf2.xlarge"})
    assert _selects(pool, INF2_POOL, {NODEPOOL_LABEL: TRN1_POOL})
    assert not _tolerates([{"key": "other", "operator": "Exists"}], NEURON_TAINT)


BAD = [
    ({"nodeAmiVersion": "latest"}, "eks-neuron-llm:nodeAmiVersion: 'latest' is not allowed; allowed: a pinned"),
    ({"neuronNodeDiskGiB": "100"}, "eks-neuron-llm:neuronNodeDiskGiB: 100 is not allowed; allowed: 500 to 16384"),
    (
        {"inf2InstanceTypes": '["trn1.2xlarge"]'},
        "eks-neuron-llm:inf2InstanceTypes: 'trn1.2xlarge' is not allowed; allowed: each entry must be a inf2",
    ),
    ({"trn1InstanceTypes": "[]"}, "eks-neuron-llm:trn1InstanceTypes: [] is not allowed; allowed: at least one trn1"),
    (
        {"acceleratorCapacityTypes": '["reserved"]'},
        "eks-neuron-llm:acceleratorCapacityTypes: 'reserved' is not allowed; allowed: each entry must be on-demand",
    ),
    ({"acceleratorDisruptionBudget": "some"}, "eks-neuron-llm:acceleratorDisruptionBudget: 'some' is not allowed"),
    ({"nodeExpireAfter": "forever"}, "eks-neuron-llm:nodeExpireAfter: 'forever' is not allowed; allowed: a duration"),
    ({"inf2NeuronDeviceLimit": "0"}, "eks-neuron-llm:inf2NeuronDeviceLimit: 0 is not allowed"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD)
def test_bad_capacity_values_stop_with_one_line(overrides: dict[str, str], message: str) -> None:
    _, values, _ = stack_config("dev", {f"{PROJECT}:{k}": v for k, v in overrides.items()})
    with pytest.raises(ConfigError) as info:
        parse(values, stack="dev")
    (problem,) = info.value.problems
    assert problem.startswith(message), problem


# --- Image pull on a new neuron node: nodeadm's FastImagePull (SOCI parallel pull and unpack) ----------------------

# nodeadm's feature gates (awslabs/amazon-eks-ami, nodeadm/internal/api/featuregates.go): an unknown gate is rejected,
# and the node would not join.
NODEADM_FEATURE_GATES = {"InstanceIdNodeName", "FastImagePull", "OSManagedNoManageENIs"}


def rendered_node_classes(r: Render) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in r.manifests() if m["kind"] == "EC2NodeClass"}


def node_config(user_data: str) -> dict[str, Any]:
    """The NodeConfig Karpenter takes from a node class's userData: not MIME, so YAML parsed as one NodeConfig part
    (karpenter-provider-aws, pkg/providers/amifamily/bootstrap/nodeadm.go, parseUserData)."""
    assert not user_data.lstrip().startswith(("MIME-Version:", "Content-Type:"))
    doc = yaml.safe_load(user_data)
    assert isinstance(doc, dict)
    return doc


def fast_image_pull_problems(node_class: dict[str, Any], pools: list[dict[str, Any]]) -> list[str]:
    """Why FastImagePull would not speed up the pulls of a node class's nodes (empty: it does)."""
    spec = node_class["spec"]
    if "userData" not in spec:
        return ["no userData"]
    config = node_config(spec["userData"])
    gates = config.get("spec", {}).get("featureGates", {})
    problems = [f"unknown nodeadm feature gate {g}" for g in gates if g not in NODEADM_FEATURE_GATES]
    if (config.get("apiVersion"), config.get("kind")) != (nodepools.NODECONFIG_API, "NodeConfig"):
        problems.append("not a nodeadm NodeConfig")
    if gates.get(nodepools.FAST_IMAGE_PULL_GATE) is not True:
        problems.append("FastImagePull is not on")
    (disk,) = spec["blockDeviceMappings"]
    if disk["ebs"]["throughput"] < nodepools.FAST_IMAGE_PULL_MIN_THROUGHPUT:
        problems.append(f"root volume throughput {disk['ebs']['throughput']} MiB/s < 600: parallel pull is slower")
    for pool in pools:
        for t in nodepools.pool_instance_types(pool):
            f = facts(t)
            if f.vcpu < nodepools.FAST_IMAGE_PULL_MIN_VCPU or f.memory_gib < nodepools.FAST_IMAGE_PULL_MIN_MEMORY_GIB:
                problems.append(f"{t}: nodeadm ignores the gate below 4 vCPU / 7 GiB")
    return problems


def test_neuron_nodes_pull_the_serving_image_in_parallel(dev: Render) -> None:
    classes = rendered_node_classes(dev)
    pools = [m for m in dev.manifests() if m["kind"] == "NodePool"]
    neuron_pools = [p for p in pools if p["spec"]["template"]["spec"]["nodeClassRef"]["name"] == "neuron"]
    assert {p["metadata"]["name"] for p in neuron_pools} == set(ACCELERATOR_POOLS)
    assert fast_image_pull_problems(classes["neuron"], neuron_pools) == []
    assert custom_resource_problems(classes["neuron"]) == []
    # the default class (Open WebUI, small images, baseline gp3) leaves containerd as it is
    assert "userData" not in classes["default"]["spec"]


def test_fast_image_pull_check_fails_on_a_slow_volume_an_unknown_gate_or_no_gate() -> None:
    p = build()
    pools = [p.node_pools[INF2_POOL]]
    slow = copy.deepcopy(p.node_classes["neuron"])
    slow["spec"]["blockDeviceMappings"][0]["ebs"]["throughput"] = 500
    assert fast_image_pull_problems(slow, pools) == ["root volume throughput 500 MiB/s < 600: parallel pull is slower"]
    typo = copy.deepcopy(p.node_classes["neuron"])
    typo["spec"]["userData"] = typo["spec"]["userData"].replace("FastImagePull", "FastContainerImagePull")
    assert fast_image_pull_problems(typo, pools) == [
        "unknown nodeadm feature gate FastContainerImagePull",
        "FastImagePull is not on",
    ]
    assert fast_image_pull_problems(p.node_classes["default"], [p.node_pools[DEFAULT_POOL]]) == ["no userData"]
