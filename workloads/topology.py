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


# The accelerator instance type the subnets' zones must offer until the capacity config names the pools' types.
DEFAULT_ACCELERATOR_INSTANCE_TYPE: Final = "inf2.8xlarge"
