"""The KubeRay operator: Helm chart ``kuberay-operator`` from the KubeRay Helm repository, on the system nodes.

The chart installs the RayCluster/RayJob/RayService CRDs (its ``crds/``) and the operator that reconciles them.  Its
values are checked against ``schemas/helm-values/kuberay-operator-<version>.values.yaml``.  Helm never upgrades a
chart's ``crds/``: bumping ``KUBERAY_VERSION`` also needs the new CRDs applied (README runbook).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import pulumi
import pulumi_kubernetes as k8s

from workloads.topology import system_placement

if TYPE_CHECKING:
    from infra.cluster import Cluster

KUBERAY_CHART: Final = "kuberay-operator"
KUBERAY_REPOSITORY: Final = "https://ray-project.github.io/kuberay-helm/"
KUBERAY_VERSION: Final = "1.7.0"
NAMESPACE: Final = "kuberay"


def chart_values() -> dict[str, Any]:
    return {
        **system_placement(),
        # Limits only, as the chart sets them (requests default to the limits): a 100m CPU limit throttles the
        # reconcile loop when a RayService upgrade creates a whole new cluster; memory as the chart sizes it
        # (~500 MB per 500 Ray pods).
        "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}},
        # Watch every namespace (the RayService lives in its own); one replica with leader election, as charted.
        "singleNamespaceInstall": False,
        "leaderElectionEnabled": True,
    }


@dataclass
class KubeRayArgs:
    """What the KubeRay component needs; ``__main__.py`` fills it."""

    cluster: Cluster
    """The cluster component: the Kubernetes provider and the system node group the operator runs on."""


class KubeRay(pulumi.ComponentResource):
    """The KubeRay operator and its CRDs (Helm chart ``kuberay-operator``), on the system nodes.

    Outputs: ``release`` (what a RayService waits for) and ``namespace``."""

    release: k8s.helm.v3.Release
    namespace: pulumi.Output[str]

    def __init__(self, name: str, args: KubeRayArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("eks-neuron-llm:infra:KubeRay", name, None, opts)
        cluster = args.cluster
        self.release = k8s.helm.v3.Release(
            f"{name}-operator",
            name="kuberay-operator",
            chart=KUBERAY_CHART,
            version=KUBERAY_VERSION,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=KUBERAY_REPOSITORY),
            namespace=NAMESPACE,
            create_namespace=True,
            values=chart_values(),
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=cluster.provider,
                # The operator only fits on the tainted system nodes; without them Helm's wait times out.
                depends_on=[cluster.system_node_group],
            ),
        )
        self.namespace = self.release.namespace.apply(lambda ns: ns or NAMESPACE)
        self.register_outputs({"namespace": self.namespace})
