"""Pods the stack asks for without rendering them itself: Helm charts and EKS managed add-ons.

A chart's pod template is derived from the chart's own default values (vendored under ``schemas/helm-values``)
merged with the release's values, exactly as Helm merges them, so a default the release does not override (such as
Karpenter's "not on Karpenter nodes" affinity) is part of the proof.  DaemonSets of EKS managed add-ons are declared
per-node overheads, each with the source of its figures.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from policy.scheduling import DeclaredOverhead, PodTemplate
from policy.vendored import HELM_VALUES_DIR, chart_values
from workloads.topology import NEURON_CORE_RESOURCE, NEURON_DEVICE_RESOURCE

# Per-node requests of the DaemonSets of EKS managed add-ons; every one of them tolerates all taints.
ADDON_DAEMONSETS: tuple[DeclaredOverhead, ...] = (
    DeclaredOverhead(
        "vpc-cni aws-node (aws-node + network policy agent)",
        50,
        0,
        "EKS vpc-cni add-on manifest: each container requests cpu 25m, no memory request",
    ),
    DeclaredOverhead("kube-proxy", 100, 0, "EKS kube-proxy add-on manifest: requests cpu 100m"),
    DeclaredOverhead(
        "ebs-csi-node", 30, 120, "aws-ebs-csi-driver chart node DaemonSet: 3 containers x (10m cpu, 40Mi)"
    ),
    DeclaredOverhead("eks-pod-identity-agent", 0, 0, "EKS eks-pod-identity-agent add-on: no requests set"),
)


def merge(base: Any, override: Any) -> Any:
    """Helm's value merge: maps merge key by key, anything else (lists included) is replaced."""
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        out = dict(base)
        for k, v in override.items():
            out[k] = merge(base.get(k), v) if k in base else v
        return out
    return override


def _pod(values: Mapping[str, Any], resources: Mapping[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "resources": dict(resources or {})}]}
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
        if values.get(key):
            spec[key] = values[key]
    return spec


def _karpenter(name: str, v: Mapping[str, Any]) -> list[PodTemplate]:
    return [
        PodTemplate(
            f"HelmRelease {name} controller",
            _pod(v, (v.get("controller") or {}).get("resources")),
            replicas=int(v.get("replicas") or 1),
            declared=True,
        )
    ]


def _kuberay(name: str, v: Mapping[str, Any]) -> list[PodTemplate]:
    return [
        PodTemplate(
            f"HelmRelease {name} operator",
            _pod(v, v.get("resources")),
            replicas=int(v.get("replicas") or 1),
            declared=True,
        )
    ]


def _neuron_instances_affinity(v: Mapping[str, Any]) -> dict[str, Any]:
    """The node affinity the chart's templates pin Neuron DaemonSets with (instance type In neuronInstances)."""
    term = {
        "matchExpressions": [
            {
                "key": "node.kubernetes.io/instance-type",
                "operator": "In",
                "values": list(v.get("neuronInstances") or []),
            }
        ]
    }
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}


def _neuron(name: str, v: Mapping[str, Any]) -> list[PodTemplate]:
    """neuron-helm-chart: device plugin and node problem detector DaemonSets, scheduler extension, my-scheduler."""
    pods: list[PodTemplate] = []
    neuron_resources = (NEURON_DEVICE_RESOURCE, NEURON_CORE_RESOURCE)
    plugin = v.get("devicePlugin") or {}
    if plugin.get("enabled"):
        # values.yaml spells the affinity with placeholders the templates fill in; model what they render
        spec = _pod({**plugin, "affinity": _neuron_instances_affinity(v)}, plugin.get("resources"))
        pods.append(
            PodTemplate(
                f"HelmRelease {name} device plugin", spec, daemonset=True, declared=True, provides=neuron_resources
            )
        )
    npd = v.get("npd") or {}
    if npd.get("enabled"):
        resources = (npd.get("nodeProblemDetector") or {}).get("resources")
        spec = _pod({**npd, "affinity": _neuron_instances_affinity(v)}, resources)
        if (npd.get("nodeRecovery") or {}).get("enabled"):
            spec["containers"].append({"name": "recovery", "resources": npd["nodeRecovery"].get("resources") or {}})
        pods.append(PodTemplate(f"HelmRelease {name} node problem detector", spec, daemonset=True, declared=True))
    scheduler = v.get("scheduler") or {}
    if scheduler.get("enabled"):
        pods.append(
            PodTemplate(
                f"HelmRelease {name} scheduler extension",
                _pod(scheduler, scheduler.get("resources")),
                replicas=int(scheduler.get("replicaCount") or 1),
                declared=True,
            )
        )
        custom = scheduler.get("customScheduler") or {}
        if custom.get("enabled"):
            pods.append(
                PodTemplate(
                    f"HelmRelease {name} {custom.get('fullnameOverride') or 'custom scheduler'}",
                    _pod(custom, custom.get("resources")),
                    replicas=int(custom.get("replicaCount") or 1),
                    declared=True,
                )
            )
    return pods


ADAPTERS: dict[str, Callable[[str, Mapping[str, Any]], list[PodTemplate]]] = {
    "karpenter": _karpenter,
    "kuberay-operator": _kuberay,
    "neuron-helm-chart": _neuron,
}
# Charts that run no pods of their own (CRDs only).
NO_PODS = {"karpenter-crd"}


CLOUDWATCH_ADDON = "amazon-cloudwatch-observability"
CLOUDWATCH_VALUES = "amazon-cloudwatch-observability-6.4.0.values.yaml"


def cloudwatch_pods(configuration: Mapping[str, Any]) -> list[PodTemplate]:
    """The add-on's pods: its configuration values are the chart's values (vendored 6.4.0), merged like Helm."""
    v = merge(chart_values(CLOUDWATCH_VALUES), configuration)
    shared = {"tolerations": v.get("tolerations") or []}
    logs = v.get("containerLogs") or {}
    monitor = v.get("neuronMonitor") or {}
    daemonsets = {
        "cloudwatch-agent": v.get("agent") or {},
        "fluent-bit": (logs.get("fluentBit") or {}) if logs.get("enabled") else None,
        "neuron-monitor": monitor if monitor.get("enabled") else None,
    }
    pods = [
        PodTemplate(
            f"EksAddon {CLOUDWATCH_ADDON} {name}",
            _pod({**part, **shared}, part.get("resources")),
            daemonset=True,
            declared=True,
        )
        for name, part in daemonsets.items()
        if part is not None
    ]
    manager = v.get("manager") or {}
    pods.append(
        PodTemplate(
            f"EksAddon {CLOUDWATCH_ADDON} controller-manager",
            _pod(manager, manager.get("resources")),
            replicas=int(v.get("replicaCount") or 1),
            declared=True,
        )
    )
    return pods


def chart_name(chart: str) -> str:
    return chart.rstrip("/").rsplit("/", 1)[-1]


def effective_values(release: Mapping[str, Any]) -> dict[str, Any]:
    filename = f"{chart_name(str(release.get('chart')))}-{release.get('version')}.values.yaml"
    defaults = chart_values(filename) if (HELM_VALUES_DIR / filename).exists() else {}
    return dict(merge(defaults, release.get("values") or {}))


def chart_pods(resources: Sequence[Mapping[str, Any]]) -> tuple[list[PodTemplate], list[str]]:
    """Pod templates of every Helm release, and the releases no adapter knows (a problem: unproven pods)."""
    pods: list[PodTemplate] = []
    unknown: list[str] = []
    for r in resources:
        if r["type"] != "kubernetes:helm.sh/v3:Release":
            continue
        release = r["inputs"]
        chart = chart_name(str(release.get("chart")))
        name = str(release.get("name") or r["name"])
        if chart in NO_PODS:
            continue
        adapter = ADAPTERS.get(chart)
        if adapter is None:
            unknown.append(
                f"HelmRelease {name}: chart {chart} has no pod adapter in policy/charts.py; its pods are unproven"
            )
            continue
        pods += adapter(name, effective_values(release))
    return pods, unknown


def addon_pods(resources: Sequence[Mapping[str, Any]]) -> list[PodTemplate]:
    config = addon_configuration(resources, CLOUDWATCH_ADDON)
    return cloudwatch_pods(config) if config is not None else []


def addon_configuration(resources: Sequence[Mapping[str, Any]], addon: str) -> dict[str, Any] | None:
    for r in resources:
        if r["type"] == "aws:eks/addon:Addon" and r["inputs"].get("addonName") == addon:
            raw = r["inputs"].get("configurationValues")
            return json.loads(raw) if raw else {}
    return None
