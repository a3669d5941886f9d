"""Names that tie node sources to the pods that land on them, defined once.

Every nodeSelector, toleration and taint in the stack is built from these constants, so a label a workload selects
on and the label a node source sets can never drift apart.
"""

from __future__ import annotations

from typing import Final

# The managed system node group.  It is tainted so that only cluster add-ons, controllers and the Ray head (which
# must not be disrupted by Karpenter consolidation or spot reclaim) run there; EKS sets the node-group label itself.
SYSTEM_NODEGROUP: Final = "system"
SYSTEM_NODE_SELECTOR: Final[dict[str, str]] = {"eks.amazonaws.com/nodegroup": SYSTEM_NODEGROUP}
SYSTEM_TAINT_KEY: Final = "CriticalAddonsOnly"
SYSTEM_TAINT: Final[dict[str, str]] = {"key": SYSTEM_TAINT_KEY, "value": "true", "effect": "NO_SCHEDULE"}
SYSTEM_TOLERATION: Final[dict[str, str]] = {"key": SYSTEM_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}


def system_placement() -> dict[str, object]:
    """Pod spec fields that put a pod on the system node group and nowhere else."""
    return {"nodeSelector": dict(SYSTEM_NODE_SELECTOR), "tolerations": [dict(SYSTEM_TOLERATION)]}


# Karpenter node pools.  Workloads select them by Karpenter's and Kubernetes' own well-known labels only.
NODEPOOL_LABEL: Final = "karpenter.sh/nodepool"
INSTANCE_TYPE_LABEL: Final = "node.kubernetes.io/instance-type"
INSTANCE_FAMILY_LABEL: Final = "karpenter.k8s.aws/instance-family"
DEFAULT_POOL: Final = "default"
INF2_POOL: Final = "inf2"
TRN1_POOL: Final = "trn1"
ACCELERATOR_POOLS: Final = (INF2_POOL, TRN1_POOL)

# Neuron devices: the taint every accelerator pool sets, the resources the device plugin advertises, and the
# scheduler extension that places multi-device pods on contiguous devices.
NEURON_TAINT_KEY: Final = "aws.amazon.com/neuron"
NEURON_TAINT: Final[dict[str, str]] = {"key": NEURON_TAINT_KEY, "value": "true", "effect": "NoSchedule"}
NEURON_TOLERATION: Final[dict[str, str]] = {
    "key": NEURON_TAINT_KEY,
    "operator": "Equal",
    "value": "true",
    "effect": "NoSchedule",
}
NEURON_DEVICE_RESOURCE: Final = "aws.amazon.com/neuron"
NEURON_CORE_RESOURCE: Final = "aws.amazon.com/neuroncore"
NEURON_SCHEDULER: Final = "my-scheduler"


def accelerator_placement(pool: str, instance_type: str) -> dict[str, object]:
    """Pod spec fields that put a Neuron pod on ``instance_type`` nodes of ``pool``, via the Neuron scheduler."""
    return {
        "schedulerName": NEURON_SCHEDULER,
        "nodeSelector": {NODEPOOL_LABEL: pool, INSTANCE_TYPE_LABEL: instance_type},
        "tolerations": [dict(NEURON_TOLERATION)],
    }
