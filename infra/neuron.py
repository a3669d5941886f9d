"""The Neuron Helm chart: device plugin on accelerator nodes, the scheduler extension and the second scheduler.

Chart ``oci://public.ecr.aws/neuron/neuron-helm-chart`` at ``NEURON_CHART_VERSION``; its values are vendored as
``schemas/helm-values/neuron-helm-chart-<version>.values.yaml`` and every key set here is checked against them.

- Device plugin: advertises ``aws.amazon.com/neuron`` and ``aws.amazon.com/neuroncore``; it must tolerate the Neuron
  taint of the accelerator pools or no Neuron node ever shows a device.
- Scheduler extension + ``my-scheduler``: EKS's own scheduler cannot call an extender, so the chart runs a second
  kube-scheduler (``my-scheduler``) that consults the extension; pods asking for more than one Neuron device or core
  use it to get contiguous, directly connected devices.  Both run on the system node group.  The chart's default
  kube-scheduler image is v1.31 (EKS Distro), four minors behind a 1.35 API server and outside the Kubernetes skew
  policy for schedulers (same minor, or one older), so the image is pinned here to the cluster's minor.
- Node problem detector: ON, recovery OFF.  It watches the kernel log of Neuron nodes for uncorrectable SRAM/HBM/
  NeuronCore and DMA errors and reports them as the ``NeuronHealth`` node condition (cheap: 10m CPU / 80Mi per
  Neuron node), so a broken device is visible in ``kubectl describe node`` and events instead of only as failing
  inference.  Its recovery action is left off: Karpenter owns these nodes' lifecycle (interruption, drift, expiry),
  and a second actor terminating instances behind its back would race it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_kubernetes as k8s

from workloads.topology import NEURON_SCHEDULER, NEURON_TOLERATION, SYSTEM_NODE_SELECTOR, SYSTEM_TOLERATION

if TYPE_CHECKING:
    from infra.cluster import Cluster

NEURON_CHART = "oci://public.ecr.aws/neuron/neuron-helm-chart"
# 1.9.0 (Neuron SDK 2.31.0: device plugin and scheduler extension 2.31.0.0).  1.10.0 exists (Aug 2026, SDK 2.32,
# same value keys); it is not pinned because no verbatim copy of its values.yaml could be vendored offline.
NEURON_CHART_VERSION = "1.9.0"
NAMESPACE = "kube-system"

# kube-scheduler for the second scheduler, per cluster minor (upstream registry.k8s.io images): the newest patch of each
# minor that could be confirmed on 2026-12-01.  v1.35.7 and v1.36.3 are the newest tags (kubernetes-1.35.7,
# kubernetes-1.36.3) of the kubernetes/kube-scheduler staging repository as of its 2026-07-23 copy; v1.35.8 and
# v1.36.4 were released on 2026-08-20 (kubernetes/kubernetes CHANGELOG-1.35.md#v1358 and CHANGELOG-1.36.md#v1364, as
# picked up by downstream trackers: kubermatic/kubermatic#16293, Siemens-Healthineers/K2s#2983,
# openshift/kubernetes#2777).  Nothing newer could be confirmed; the former pin v1.36.5 could not be found at all.
KUBE_SCHEDULER_IMAGE = "registry.k8s.io/kube-scheduler"
KUBE_SCHEDULER_TAGS: dict[str, str] = {"1.35": "v1.35.8", "1.36": "v1.36.4"}


def scheduler_tag(cluster_version: str) -> str:
    try:
        return KUBE_SCHEDULER_TAGS[cluster_version]
    except KeyError:
        raise ValueError(
            f"no kube-scheduler image pinned for Kubernetes {cluster_version}; add it to KUBE_SCHEDULER_TAGS"
        ) from None


def chart_values(cluster_version: str) -> dict[str, Any]:
    system = {"nodeSelector": dict(SYSTEM_NODE_SELECTOR), "tolerations": [dict(SYSTEM_TOLERATION)]}
    return {
        "devicePlugin": {
            "enabled": True,
            # Only the Neuron taint: the chart's own node affinity already limits it to Neuron instance types.
            "tolerations": [dict(NEURON_TOLERATION)],
        },
        "scheduler": {
            "enabled": True,
            **system,
            "customScheduler": {
                "enabled": True,
                "fullnameOverride": NEURON_SCHEDULER,
                "image": {"repository": KUBE_SCHEDULER_IMAGE, "tag": scheduler_tag(cluster_version)},
                # Leader election is on in the chart's scheduler config, so a second replica is a warm standby.
                "replicaCount": 2,
                **system,
            },
        },
        "npd": {"enabled": True, "nodeRecovery": {"enabled": False}},
        # Devices are allocated through the device plugin, not DRA; no UltraServers here.
        "draDriver": {"enabled": False},
        "ultraserverOperator": {"enabled": False},
    }


@dataclass
class NeuronArgs:
    """What the Neuron component needs; ``__main__.py`` fills it."""

    cluster_version: str
    """The cluster's Kubernetes minor (config ``kubernetesVersion``): the second scheduler's image is pinned to it."""
    cluster: Cluster
    """The cluster component: the Kubernetes provider and the system node group the schedulers run on."""


class Neuron(pulumi.ComponentResource):
    """The Neuron Helm chart: device plugin, scheduler extension, ``my-scheduler`` and node problem detector.

    Outputs: ``release`` (what a pod asking for Neuron devices waits for) and ``scheduler_name``."""

    release: k8s.helm.v3.Release
    scheduler_name: pulumi.Output[str]

    def __init__(self, name: str, args: NeuronArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("eks-neuron-llm:infra:Neuron", name, None, opts)
        self.release = k8s.helm.v3.Release(
            f"{name}-chart",
            name="neuron-helm-chart",
            chart=NEURON_CHART,
            version=NEURON_CHART_VERSION,
            namespace=NAMESPACE,
            values=chart_values(args.cluster_version),
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=args.cluster.provider,
                # The schedulers run on the system node group; Helm waits for them to become ready.
                depends_on=[args.cluster.system_node_group],
            ),
        )
        self.scheduler_name = pulumi.Output.from_input(NEURON_SCHEDULER)
        self.register_outputs({"schedulerName": self.scheduler_name})
