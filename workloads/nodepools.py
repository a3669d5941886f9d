"""Karpenter v1 EC2NodeClasses and NodePools as plain dicts, built from the capacity config.

Pure functions (no Pulumi import): ``infra/karpenter.py`` wraps them in custom resources, the tests validate them
against the vendored CRD schemas.  Every label, taint and pool name comes from ``workloads.topology`` so the pools and
the pods that select them cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from workloads.topology import (
    DEFAULT_POOL,
    INF2_POOL,
    INSTANCE_FAMILY_LABEL,
    INSTANCE_TYPE_LABEL,
    NEURON_DEVICE_RESOURCE,
    NEURON_TAINT,
    TRN1_POOL,
)

NODECLASS_API = "karpenter.k8s.aws/v1"
NODEPOOL_API = "karpenter.sh/v1"
NODECLASS_GROUP = "karpenter.k8s.aws"
DISCOVERY_TAG = "karpenter.sh/discovery"
CAPACITY_TYPE_LABEL = "karpenter.sh/capacity-type"
ARCH_LABEL = "kubernetes.io/arch"
OS_LABEL = "kubernetes.io/os"
INSTANCE_CATEGORY_LABEL = "karpenter.k8s.aws/instance-category"
INSTANCE_GENERATION_LABEL = "karpenter.k8s.aws/instance-generation"

DEFAULT_NODECLASS = "default"
NEURON_NODECLASS = "neuron"

# The AL2023 AMI variant the instances of each node class boot.  The al2023 alias resolves to every variant Karpenter
# finds and it picks one per instance type: the default class launches only x86 c/m/r types (the standard AMI), the
# neuron class only inf2/trn1 (the Neuron AMI, driver and runtime preinstalled).  Every pool requires amd64.
AMI_ARCH = "x86_64"
AMI_VARIANTS: dict[str, str] = {DEFAULT_NODECLASS: "standard", NEURON_NODECLASS: "neuron"}

# Default pool: general-purpose x86 of the current generations (6th and newer: m6i/c7i/r7a ...), spot or on-demand.
DEFAULT_CATEGORIES = ("c", "m", "r")
DEFAULT_MIN_GENERATION = 5  # Gt 5

# Root volumes.  gp3 baseline (3000 IOPS, 125 MiB/s) is enough for the default pool.  Neuron nodes pull a 10+ GB
# serving image and load ~16 GB of weights plus compiled artifacts on every cold start: at 125 MiB/s that alone is
# minutes, so their volumes get the gp3 maximum throughput (1000 MiB/s, which needs at least 4000 IOPS) and 8000 IOPS.
ROOT_DEVICE = "/dev/xvda"
DEFAULT_DISK_IOPS, DEFAULT_DISK_THROUGHPUT = 3000, 125
NEURON_DISK_IOPS, NEURON_DISK_THROUGHPUT = 8000, 1000

# Neuron nodes pull the ~15 GB serving image with the SOCI snapshotter's parallel pull and unpack (nodeadm's
# FastImagePull feature gate on AL2023: layers fetched in concurrent chunks and unpacked concurrently, no image change
# or SOCI index needed): AWS measured ~60% less pull time on a ~10 GB image on a 1000 MiB/s gp3 volume.  nodeadm
# ignores the gate on instances under 4 vCPU or 7 GiB, and AWS documents pulls getting slower with it below 600 MiB/s
# of volume throughput; tests hold the neuron class to both.  Karpenter merges this NodeConfig into the one it
# generates (plain NodeConfig YAML becomes an application/node.eks.aws part).  Sources: docs/serving-image.md.
FAST_IMAGE_PULL_GATE = "FastImagePull"
FAST_IMAGE_PULL_MIN_THROUGHPUT = 600  # MiB/s
FAST_IMAGE_PULL_MIN_VCPU, FAST_IMAGE_PULL_MIN_MEMORY_GIB = 4, 7
NODECONFIG_API = "node.eks.aws/v1alpha1"


def fast_image_pull_user_data() -> str:
    """The EC2NodeClass userData turning on nodeadm's FastImagePull gate (a NodeConfig that Karpenter merges)."""
    return f"apiVersion: {NODECONFIG_API}\nkind: NodeConfig\nspec:\n  featureGates:\n    {FAST_IMAGE_PULL_GATE}: true\n"


# Default pool: repack underused nodes after a minute, at most 10% of its nodes at a time.
DEFAULT_CONSOLIDATE_AFTER = "1m"
DEFAULT_DISRUPTION_BUDGET = "10%"
# A drained accelerator node gives its serving pods up to this long to finish in-flight requests and exit.
ACCELERATOR_TERMINATION_GRACE_PERIOD = "1h"


def ec2_node_class(
    name: str,
    *,
    cluster_name: str,
    node_role: str,
    ami_alias: str,
    disk_gib: int,
    iops: int,
    throughput: int,
    tags: Mapping[str, str] | None = None,
    user_data: str | None = None,
) -> dict[str, Any]:
    """An EC2NodeClass: the pinned AL2023 alias, discovery-tagged subnets and security groups, IMDSv2, encrypted gp3;
    ``user_data`` (a nodeadm NodeConfig) when given."""
    discovery = {"tags": {DISCOVERY_TAG: cluster_name}}
    node_class: dict[str, Any] = {
        "apiVersion": NODECLASS_API,
        "kind": "EC2NodeClass",
        "metadata": {"name": name},
        "spec": {
            # The al2023 alias resolves per instance type: the standard AMI for x86, the Neuron AMI (driver and
            # runtime preinstalled) for inf2/trn1.  A pinned version keeps nodes from drifting on every AMI release.
            "amiSelectorTerms": [{"alias": ami_alias}],
            "role": node_role,
            "subnetSelectorTerms": [discovery],
            "securityGroupSelectorTerms": [discovery],
            "metadataOptions": {
                "httpEndpoint": "enabled",
                "httpProtocolIPv6": "disabled",
                # Only the node itself reaches instance metadata; pods get AWS credentials from Pod Identity.
                "httpPutResponseHopLimit": 1,
                "httpTokens": "required",
            },
            # The size goes through blockDeviceMappings: Karpenter v1 has no top-level disk-size field, and a key it
            # does not know is silently dropped (the 100Gi-instead-of-500Gi bug); the CRD schema test catches that.
            "blockDeviceMappings": [
                {
                    "deviceName": ROOT_DEVICE,
                    "rootVolume": True,
                    "ebs": {
                        "volumeSize": f"{disk_gib}Gi",
                        "volumeType": "gp3",
                        "iops": iops,
                        "throughput": throughput,
                        "encrypted": True,
                        "deleteOnTermination": True,
                    },
                }
            ],
            # The stack's tags (project, stack, ...) on every instance, volume and ENI Karpenter launches: the
            # provider's default tags reach only what Pulumi creates.  Karpenter adds its own (cluster, pool, Name).
            "tags": dict(tags or {}),
        },
    }
    if user_data is not None:
        node_class["spec"]["userData"] = user_data
    return node_class


def requirement(key: str, operator: str, values: Sequence[str] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"key": key, "operator": operator}
    if operator in {"In", "NotIn", "Gt", "Lt"}:
        out["values"] = list(values)
    return out


@dataclass(frozen=True)
class Disruption:
    consolidation_policy: str  # WhenEmpty | WhenEmptyOrUnderutilized
    consolidate_after: str
    budget_nodes: str

    def to_spec(self) -> dict[str, Any]:
        return {
            "consolidationPolicy": self.consolidation_policy,
            "consolidateAfter": self.consolidate_after,
            "budgets": [{"nodes": self.budget_nodes}],
        }


def node_pool(
    name: str,
    *,
    node_class: str,
    requirements: Sequence[Mapping[str, Any]],
    limits: Mapping[str, int | str],
    disruption: Disruption,
    expire_after: str,
    taints: Sequence[Mapping[str, str]] = (),
    termination_grace_period: str | None = None,
    weight: int | None = None,
) -> dict[str, Any]:
    template_spec: dict[str, Any] = {
        "nodeClassRef": {"group": NODECLASS_GROUP, "kind": "EC2NodeClass", "name": node_class},
        "requirements": [dict(r) for r in requirements],
        "expireAfter": expire_after,
    }
    if taints:
        template_spec["taints"] = [dict(t) for t in taints]
    if termination_grace_period:
        template_spec["terminationGracePeriod"] = termination_grace_period
    spec: dict[str, Any] = {
        "template": {"spec": template_spec},
        "limits": dict(limits),
        "disruption": disruption.to_spec(),
    }
    if weight is not None:
        spec["weight"] = weight
    return {"apiVersion": NODEPOOL_API, "kind": "NodePool", "metadata": {"name": name}, "spec": spec}


def _linux_amd64() -> list[dict[str, Any]]:
    return [requirement(ARCH_LABEL, "In", ["amd64"]), requirement(OS_LABEL, "In", ["linux"])]


def default_pool(*, cpu_limit: int, memory_gib: int, expire_after: str) -> dict[str, Any]:
    """x86 c/m/r of current generations, spot preferred by Karpenter's price ordering, on-demand as fallback."""
    return node_pool(
        DEFAULT_POOL,
        node_class=DEFAULT_NODECLASS,
        requirements=[
            *_linux_amd64(),
            requirement(CAPACITY_TYPE_LABEL, "In", ["spot", "on-demand"]),
            requirement(INSTANCE_CATEGORY_LABEL, "In", DEFAULT_CATEGORIES),
            requirement(INSTANCE_GENERATION_LABEL, "Gt", [str(DEFAULT_MIN_GENERATION)]),
        ],
        limits={"cpu": cpu_limit, "memory": f"{memory_gib}Gi"},
        disruption=Disruption("WhenEmptyOrUnderutilized", DEFAULT_CONSOLIDATE_AFTER, DEFAULT_DISRUPTION_BUDGET),
        expire_after=expire_after,
    )


def accelerator_pool(
    name: str,
    *,
    family: str,
    instance_types: Sequence[str],
    capacity_types: Sequence[str],
    cpu_limit: int,
    memory_gib: int,
    neuron_device_limit: int,
    consolidate_after: str,
    disruption_budget: str,
    expire_after: str,
) -> dict[str, Any]:
    """A Neuron pool: exactly ``instance_types``, tainted, capped in devices, consolidating only empty nodes.

    ``WhenEmpty``: Karpenter never moves a running serving pod to repack nodes; a node goes away only once its
    pods are gone (plus ``consolidate_after``), by expiry/drift within the budget, or by interruption.
    """
    return node_pool(
        name,
        node_class=NEURON_NODECLASS,
        requirements=[
            *_linux_amd64(),
            requirement(CAPACITY_TYPE_LABEL, "In", capacity_types),
            requirement(INSTANCE_FAMILY_LABEL, "In", [family]),
            requirement(INSTANCE_TYPE_LABEL, "In", instance_types),
        ],
        taints=[NEURON_TAINT],
        limits={
            "cpu": cpu_limit,
            "memory": f"{memory_gib}Gi",
            # The cap on accelerator spend: Karpenter counts the Neuron devices of every node it launches here.
            NEURON_DEVICE_RESOURCE: neuron_device_limit,
        },
        disruption=Disruption("WhenEmpty", consolidate_after, disruption_budget),
        expire_after=expire_after,
        termination_grace_period=ACCELERATOR_TERMINATION_GRACE_PERIOD,
    )


@dataclass(frozen=True)
class CapacityPlan:
    """Everything Karpenter is given: node classes by name, pools by name (each pool names its node class)."""

    node_classes: dict[str, dict[str, Any]]
    node_pools: dict[str, dict[str, Any]]


def plan(
    *,
    cluster_name: str,
    node_role: str,
    ami_alias: str,
    default_disk_gib: int,
    neuron_disk_gib: int,
    default_pool_cpu_limit: int,
    default_pool_memory_gib: int,
    inf2_instance_types: Sequence[str],
    trn1_instance_types: Sequence[str],
    accelerator_capacity_types: Sequence[str],
    accelerator_pool_cpu_limit: int,
    accelerator_pool_memory_gib: int,
    inf2_neuron_device_limit: int,
    trn1_neuron_device_limit: int,
    accelerator_consolidate_after: str,
    accelerator_disruption_budget: str,
    node_expire_after: str,
    tags: Mapping[str, str] | None = None,
) -> CapacityPlan:
    classes = {
        DEFAULT_NODECLASS: ec2_node_class(
            DEFAULT_NODECLASS,
            cluster_name=cluster_name,
            node_role=node_role,
            ami_alias=ami_alias,
            disk_gib=default_disk_gib,
            iops=DEFAULT_DISK_IOPS,
            throughput=DEFAULT_DISK_THROUGHPUT,
            tags=tags,
        ),
        NEURON_NODECLASS: ec2_node_class(
            NEURON_NODECLASS,
            cluster_name=cluster_name,
            node_role=node_role,
            ami_alias=ami_alias,
            disk_gib=neuron_disk_gib,
            iops=NEURON_DISK_IOPS,
            throughput=NEURON_DISK_THROUGHPUT,
            tags=tags,
            user_data=fast_image_pull_user_data(),
        ),
    }

    def neuron_pool(name: str, family: str, types: Sequence[str], devices: int) -> dict[str, Any]:
        return accelerator_pool(
            name,
            family=family,
            instance_types=types,
            capacity_types=accelerator_capacity_types,
            cpu_limit=accelerator_pool_cpu_limit,
            memory_gib=accelerator_pool_memory_gib,
            neuron_device_limit=devices,
            consolidate_after=accelerator_consolidate_after,
            disruption_budget=accelerator_disruption_budget,
            expire_after=node_expire_after,
        )

    pools = {
        DEFAULT_POOL: default_pool(
            cpu_limit=default_pool_cpu_limit, memory_gib=default_pool_memory_gib, expire_after=node_expire_after
        ),
        INF2_POOL: neuron_pool(INF2_POOL, "inf2", inf2_instance_types, inf2_neuron_device_limit),
        TRN1_POOL: neuron_pool(TRN1_POOL, "trn1", trn1_instance_types, trn1_neuron_device_limit),
    }
    return CapacityPlan(classes, pools)


def pool_instance_types(pool: Mapping[str, Any]) -> list[str]:
    """The instance types a NodePool allows through its ``node.kubernetes.io/instance-type In`` requirement."""
    for r in pool["spec"]["template"]["spec"]["requirements"]:
        if r["key"] == INSTANCE_TYPE_LABEL and r["operator"] == "In":
            return list(r["values"])
    return []
