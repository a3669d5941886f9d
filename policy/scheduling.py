"""The scheduling proof: every pod template the stack declares has a node it can run on.

Input is the stack as recorded (a list of resources shaped like the render harness's ``resources.json``: ``type``,
``name``, ``urn``, ``inputs``), so the same proof runs in the tests, in the render summary and in the policy pack.

For each pod template (Deployments, StatefulSets, Jobs, CronJobs, DaemonSets, the RayService head and every worker
group, and the pods of Helm charts, derived from the chart's defaults merged with the release's values) it finds the
node sources it could land on — each Karpenter NodePool (requirements, template labels, taints, limits) and each
managed node group — and proves that at least one instance type there

- carries every label the pod's nodeSelector and required node affinity ask for,
- has a taint set the pod tolerates,
- has allocatable CPU, memory, pods and Neuron devices/cores for the pod's requests, after the kubelet's reservations
  (the EKS AL2023 formula) and the requests of every DaemonSet that lands on that node,
- fits in the pool's limits at least once.

It also enforces two Neuron rules: a pod that requests Neuron resources uses the Neuron scheduler, and a pod that
requests Neuron resources can only land on nodes whose Neuron DaemonSets (device plugin) tolerate the Neuron taint.
Every rejection names the pod, the candidate node source and the reason: label, taint, cpu, memory, pods, device,
limit, scheduler.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from policy.quantity import amount, show
from workloads.topology import (
    NEURON_CORE_RESOURCE,
    NEURON_DEVICE_RESOURCE,
    NEURON_SCHEDULER,
    NODEPOOL_LABEL,
)

MIB = 2**20
# Karpenter subtracts this share of nominal memory for the hypervisor/OS before it computes allocatable
# (karpenter settings.vmMemoryOverheadPercent, default 0.075); the same margin is applied to managed nodes.
VM_MEMORY_OVERHEAD = 0.075
# kubelet hard eviction threshold for memory.available on EKS AMIs.
EVICTION_MEMORY_MIB = 100
NEURON_RESOURCES = (NEURON_DEVICE_RESOURCE, NEURON_CORE_RESOURCE)
# What KubeRay gives the autoscaler sidecar when autoscalerOptions.resources is unset (ray-operator default).
KUBERAY_AUTOSCALER_RESOURCES = {
    "requests": {"cpu": "500m", "memory": "512Mi"},
    "limits": {"cpu": "500m", "memory": "512Mi"},
}
EFFECTS = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}
# KubeRay 1.7 runs a Job when a RayCluster with Redis-backed GCS fault tolerance is deleted (a NewCluster upgrade,
# the RayService's deletion): the head's pod template with only the Ray container and these fixed resources
# (ray-operator raycluster_controller.go buildRedisCleanupJob).
KUBERAY_REDIS_CLEANUP_RESOURCES = {
    "requests": {"cpu": "200m", "memory": "256Mi"},
    "limits": {"cpu": "200m", "memory": "256Mi"},
}
# Owners the disruption controller cannot scale (no scale subresource): a PodDisruptionBudget over their pods can
# only be an integer minAvailable ("Failed to calculate the number of expected pods" otherwise).
UNSCALABLE_OWNERS = ("RayService", "RayCluster")


# ---------------------------------------------------------------------------------------------------------------
# Instance facts and the allocatable model.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    """What one instance type offers to Kubernetes."""

    name: str
    vcpu: int
    memory_mib: int
    max_pods: int
    neuron_devices: int = 0
    neuron_cores: int = 0
    arch: str = "amd64"

    @property
    def family(self) -> str:
        return self.name.split(".")[0]

    @property
    def category(self) -> str:
        return re.sub(r"\d.*", "", self.family)

    @property
    def generation(self) -> str:
        m = re.search(r"\d+", self.family)
        return m.group(0) if m else ""

    @property
    def size(self) -> str:
        return self.name.split(".")[1]


def kube_reserved_cpu_millis(vcpu: int) -> int:
    """EKS AMI formula: 6% of the first core, 1% of the second, 0.5% of cores 3-4, 0.25% of the rest."""
    cores = [(1, 60), (1, 10), (2, 5)]
    reserved, left = 0.0, vcpu
    for count, per_core in cores:
        use = min(left, count)
        reserved += use * per_core
        left -= use
    reserved += max(left, 0) * 2.5
    return int(reserved)


def kube_reserved_memory_mib(max_pods: int) -> int:
    """EKS AMI formula: 255 MiB + 11 MiB per pod the node may run."""
    return 255 + 11 * max_pods


def allocatable(machine: Machine) -> dict[str, int]:
    memory = int(machine.memory_mib * (1 - VM_MEMORY_OVERHEAD))
    memory -= kube_reserved_memory_mib(machine.max_pods) + EVICTION_MEMORY_MIB
    out = {
        "cpu": machine.vcpu * 1000 - kube_reserved_cpu_millis(machine.vcpu),
        "memory": memory * MIB,
        "pods": machine.max_pods,
    }
    if machine.neuron_devices:
        out[NEURON_DEVICE_RESOURCE] = machine.neuron_devices
        out[NEURON_CORE_RESOURCE] = machine.neuron_cores
    return out


def capacity(machine: Machine) -> dict[str, int]:
    """What Karpenter counts against a NodePool's limits for one node of this type."""
    out = {"cpu": machine.vcpu * 1000, "memory": machine.memory_mib * MIB}
    if machine.neuron_devices:
        out[NEURON_DEVICE_RESOURCE] = machine.neuron_devices
        out[NEURON_CORE_RESOURCE] = machine.neuron_cores
    return out


# ---------------------------------------------------------------------------------------------------------------
# Pods and node sources.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


@dataclass
class PodTemplate:
    """One kind of pod the stack will ask the scheduler to place."""

    name: str  # e.g. "Deployment open-webui/open-webui" or "RayService vllm/llm worker neuron"
    spec: Mapping[str, Any]
    daemonset: bool = False
    replicas: int = 1
    declared: bool = False  # derived from Helm values rather than a rendered manifest
    # Extended resources this DaemonSet makes a node advertise (the Neuron device plugin advertises Neuron devices
    # and cores); a node without it offers none of them.
    provides: tuple[str, ...] = ()
    # For the disruption-budget check: the pods' namespace and labels, the most replicas they scale to, and the kind
    # of their owner.
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    max_replicas: int | None = None
    owner: str = ""

    def requests(self) -> dict[str, int]:
        return pod_requests(self.spec)

    @property
    def scheduler(self) -> str:
        return str(self.spec.get("schedulerName") or "default-scheduler")


def _container_requests(container: Mapping[str, Any]) -> dict[str, int]:
    res = container.get("resources") or {}
    req = {k: amount(k, v) for k, v in (res.get("requests") or {}).items()}
    for k, v in (res.get("limits") or {}).items():
        req.setdefault(k, amount(k, v))  # a limit without a request is the request too
    return req


def pod_requests(spec: Mapping[str, Any]) -> dict[str, int]:
    """Effective requests: the sum over containers, or the largest init container if that is larger."""
    total: dict[str, int] = {}
    for c in spec.get("containers") or []:
        for k, v in _container_requests(c).items():
            total[k] = total.get(k, 0) + v
    for c in spec.get("initContainers") or []:
        for k, v in _container_requests(c).items():
            total[k] = max(total.get(k, 0), v)
    total["pods"] = 1
    return total


@dataclass
class NodeSource:
    """A place nodes come from: a Karpenter NodePool or a managed node group."""

    name: str  # "NodePool inf2" or "NodeGroup system"
    machines: list[Machine]
    labels: Callable[[Machine], dict[str, set[str]]]
    taints: list[Taint]
    limits: dict[str, int] = field(default_factory=dict)
    max_nodes: int | None = None
    # Nodes always present without any autoscaler (a managed node group's minimum size); None for Karpenter pools.
    fixed_nodes: int | None = None
    problems: list[str] = field(default_factory=list)


def _labels_match(spec: Mapping[str, Any], labels: Mapping[str, set[str]]) -> list[str]:
    """Why ``labels`` (key -> the values a node may carry) cannot satisfy the pod; empty if it can."""
    why: list[str] = []
    for key, value in (spec.get("nodeSelector") or {}).items():
        if str(value) not in labels.get(key, set()):
            have = ",".join(sorted(labels.get(key, set()))) or "unset"
            why.append(f"label {key}={value} (node has {have})")
    affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = affinity.get("nodeSelectorTerms") or []
    if terms:
        term_why = [_term_problems(t, labels) for t in terms]
        if all(term_why):
            why.append("required node affinity: " + " / ".join("; ".join(t) for t in term_why))
    return why


def _term_problems(term: Mapping[str, Any], labels: Mapping[str, set[str]]) -> list[str]:
    why = []
    for expr in term.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], {str(v) for v in expr.get("values") or []}
        have = labels.get(key, set())
        ok = {
            "In": bool(have & values),
            "NotIn": not have or bool(have - values),
            "Exists": bool(have),
            "DoesNotExist": not have,
            "Gt": any(h.isdigit() and int(h) > int(next(iter(values))) for h in have),
            "Lt": any(h.isdigit() and int(h) < int(next(iter(values))) for h in have),
        }.get(op, False)
        if not ok:
            why.append(f"label {key} {op} {sorted(values)} (node has {','.join(sorted(have)) or 'unset'})")
    return why


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Taint) -> bool:
    for t in tolerations:
        op = t.get("operator") or "Equal"
        if t.get("effect") and t["effect"] != taint.effect:
            continue
        if not t.get("key") and op == "Exists":
            return True
        if t.get("key") != taint.key:
            continue
        if op == "Exists" or str(t.get("value") or "") == taint.value:
            return True
    return False


def _untolerated(spec: Mapping[str, Any], taints: Iterable[Taint]) -> list[Taint]:
    tols = spec.get("tolerations") or []
    return [t for t in taints if t.effect in {"NoSchedule", "NoExecute"} and not tolerates(tols, t)]


# ---------------------------------------------------------------------------------------------------------------
# The proof.
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    pod: PodTemplate
    fits: list[tuple[str, str]]  # (node source, instance type)
    rejections: dict[str, list[str]]  # node source -> reasons
    rule_problems: list[str]

    @property
    def ok(self) -> bool:
        return (bool(self.fits) or self.pod.daemonset) and not self.rule_problems

    def message(self) -> str:
        if self.ok:
            by_source: dict[str, list[str]] = {}
            for src, machine in self.fits:
                by_source.setdefault(src, []).append(machine)
            if self.pod.daemonset:
                where = ", ".join(sorted(by_source)) or "no node source"
                return f"{self.pod.name}: ok, lands on {where}"
            where = "; ".join(f"{src} ({', '.join(sorted(ms))})" for src, ms in sorted(by_source.items()))
            return f"{self.pod.name}: ok, fits {where}"
        parts = list(self.rule_problems)
        if not self.fits and not self.pod.daemonset:
            parts.append(
                "no node source fits: "
                + "; ".join(f"{src}: {', '.join(reasons)}" for src, reasons in sorted(self.rejections.items()))
            )
        return f"{self.pod.name}: FAILED: " + " | ".join(parts)


def _merged_label_problems(spec: Mapping[str, Any], src: NodeSource) -> list[str]:
    """Label problems against every value any node of ``src`` may carry (names all values, not one machine's)."""
    merged: dict[str, set[str]] = {}
    for m in src.machines:
        for k, v in src.labels(m).items():
            merged.setdefault(k, set()).update(v)
    return _labels_match(spec, merged)


def lands_on(ds: PodTemplate, machine: Machine, source: NodeSource) -> list[str]:
    """Why DaemonSet ``ds`` does not run on a ``machine`` node of ``source``; empty if it does."""
    why = _labels_match(ds.spec, source.labels(machine))
    untolerated = _untolerated(ds.spec, source.taints)
    if untolerated:
        why.append("taint " + ", ".join(map(str, untolerated)) + " not tolerated")
    return why


def _daemonset_load(
    machine: Machine, source: NodeSource, daemonsets: Sequence[PodTemplate], overhead: Sequence[DeclaredOverhead]
) -> dict[str, int]:
    load: dict[str, int] = {}
    for ds in daemonsets:
        if lands_on(ds, machine, source):
            continue
        for k, v in ds.requests().items():
            load[k] = load.get(k, 0) + v
    for o in overhead:
        if o.applies(source):
            load["cpu"] = load.get("cpu", 0) + o.cpu_millis
            load["memory"] = load.get("memory", 0) + o.memory_mib * MIB
            load["pods"] = load.get("pods", 0) + 1
    return load


@dataclass(frozen=True)
class DeclaredOverhead:
    """Per-node requests of a DaemonSet the stack does not render itself (EKS add-ons, chart DaemonSets)."""

    name: str
    cpu_millis: int
    memory_mib: int
    source: str
    neuron_only: bool = False

    def applies(self, node_source: NodeSource) -> bool:
        return not self.neuron_only or any(m.neuron_devices for m in node_source.machines)


def prove(
    pods: Sequence[PodTemplate], sources: Sequence[NodeSource], overhead: Sequence[DeclaredOverhead] = ()
) -> list[Verdict]:
    daemonsets = [p for p in pods if p.daemonset]
    verdicts = []
    for pod in pods:
        req = pod.requests()
        wants_neuron = any(req.get(r, 0) > 0 for r in NEURON_RESOURCES)
        rules: list[str] = []
        if wants_neuron and pod.scheduler != NEURON_SCHEDULER:
            rules.append(
                f"scheduler: requests Neuron devices but schedulerName is {pod.scheduler!r}, "
                f"not {NEURON_SCHEDULER!r} (multi-device pods hang or fragment without it)"
            )
        fits: list[tuple[str, str]] = []
        rejections: dict[str, list[str]] = {}
        for src in sources:
            reasons: list[str] = list(src.problems)
            untolerated = _untolerated(pod.spec, src.taints)
            if untolerated:
                reasons.append("taint " + ", ".join(map(str, untolerated)) + " not tolerated")
            label_misses: dict[str, list[str]] = {}
            fit_misses: list[str] = []
            for m in src.machines:
                label_why = _labels_match(pod.spec, src.labels(m))
                if label_why:
                    label_misses[m.name] = label_why
                    continue
                fit_why = [] if pod.daemonset else _fit(pod, req, m, src, daemonsets=daemonsets, overhead=overhead)
                if not fit_why and not untolerated and not src.problems:
                    fits.append((src.name, m.name))
                fit_misses += [f"{m.name}: {w}" for w in fit_why]
            if fit_misses:
                reasons += fit_misses
            elif label_misses:
                reasons += _merged_label_problems(pod.spec, src) or next(iter(label_misses.values()))
            if not src.machines:
                reasons.append("no instance type this source may launch is in the instance facts table")
            if not any(s == src.name for s, _ in fits):
                rejections[src.name] = reasons
        if pod.daemonset and wants_neuron:
            rules.append("device: a DaemonSet requests Neuron resources")
        if pod.daemonset and pod.provides:
            for src in sources:
                for m in src.machines:
                    if any(m_res in pod.provides for m_res in NEURON_RESOURCES) and m.neuron_devices:
                        missed = lands_on(pod, m, src)
                        if missed:
                            rules.append(
                                f"{src.name} ({m.name}): Neuron DaemonSet does not land there: " + ", ".join(missed)
                            )
                            break
        verdicts.append(Verdict(pod, fits, rejections, rules))
    return verdicts


def packing_problems(
    verdicts: Sequence[Verdict], sources: Sequence[NodeSource], overhead: Sequence[DeclaredOverhead] = ()
) -> list[str]:
    """Pods that can only run on a fixed-size node source must fit there together, replicas included.

    No autoscaler grows the managed node group, so its minimum size is what there is.  Only pods whose every fitting
    instance is in that source count; the check is on sums (a lower bound on what bin packing needs).
    """
    problems = []
    daemonsets = [v.pod for v in verdicts if v.pod.daemonset]
    for src in sources:
        if not src.fixed_nodes or not src.machines:
            continue
        pinned = [v for v in verdicts if not v.pod.daemonset and v.fits and {s for s, _ in v.fits} == {src.name}]
        if not pinned:
            continue
        m = max(src.machines, key=lambda x: (x.vcpu, x.memory_mib))
        alloc = allocatable(m)
        load = _daemonset_load(m, src, daemonsets, overhead)
        for resource in ("cpu", "memory", "pods"):
            free = (alloc.get(resource, 0) - load.get(resource, 0)) * src.fixed_nodes
            need = sum(v.pod.requests().get(resource, 0) * max(v.pod.replicas, 1) for v in pinned)
            if need > free:
                who = ", ".join(f"{v.pod.name} x{max(v.pod.replicas, 1)}" for v in pinned)
                problems.append(
                    f"{src.name}: capacity {resource}: pods that only fit there need {show(resource, need)} together "
                    f"but {src.fixed_nodes} x {m.name} offer {show(resource, max(free, 0))} after kubelet "
                    f"reservations and DaemonSets ({who}); raise its size or instance type"
                )
    return problems


def _fit(
    pod: PodTemplate,
    req: Mapping[str, int],
    m: Machine,
    src: NodeSource,
    *,
    daemonsets: Sequence[PodTemplate],
    overhead: Sequence[DeclaredOverhead],
) -> list[str]:
    alloc = allocatable(m)
    load = _daemonset_load(m, src, daemonsets, overhead)
    provided = {r for ds in daemonsets if not lands_on(ds, m, src) for r in ds.provides}
    why = []
    for resource in NEURON_RESOURCES:
        if req.get(resource, 0) > 0 and resource not in provided:
            why.append(
                f"device {resource}: no DaemonSet advertising it (the Neuron device plugin) runs on {src.name} nodes"
            )
            alloc.pop(resource, None)
            req = {k: v for k, v in req.items() if k != resource}
    for resource, need in sorted(req.items()):
        if need <= 0:
            continue
        free = alloc.get(resource, 0) - load.get(resource, 0)
        if need > free:
            label = resource if resource in {"cpu", "memory", "pods"} else f"device {resource}"
            why.append(
                f"{label}: needs {show(resource, need)}, {show(resource, max(free, 0))} free "
                f"after kubelet reservations and DaemonSets"
            )
    if src.limits:
        cap = capacity(m)
        over = [
            f"{r} {show(r, cap.get(r, 0))} > limit {show(r, lim)}"
            for r, lim in sorted(src.limits.items())
            if cap.get(r, 0) > lim
        ]
        if over:
            why.append("limit: one node exceeds the pool's limits (" + ", ".join(over) + ")")
    if src.max_nodes is not None and src.max_nodes < 1:
        why.append("limit: node source may not have any node")
    return why


# ---------------------------------------------------------------------------------------------------------------
# Reading the recorded stack.
# ---------------------------------------------------------------------------------------------------------------


def _inputs(resources: Sequence[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [r["inputs"] for r in resources if r["type"].startswith("kubernetes:") and r["inputs"].get("kind") == kind]


def _meta_name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


def pod_templates(resources: Sequence[Mapping[str, Any]]) -> list[PodTemplate]:
    """Every pod template among the rendered Kubernetes objects."""
    out: list[PodTemplate] = []
    for kind in ("Deployment", "StatefulSet", "ReplicaSet", "Job", "DaemonSet"):
        for obj in _inputs(resources, kind):
            spec = (obj.get("spec") or {}).get("template", {}).get("spec") or {}
            out.append(
                PodTemplate(
                    f"{kind} {_meta_name(obj)}",
                    spec,
                    daemonset=kind == "DaemonSet",
                    replicas=int((obj.get("spec") or {}).get("replicas") or 1),
                )
            )
    for obj in _inputs(resources, "CronJob"):
        spec = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        out.append(PodTemplate(f"CronJob {_meta_name(obj)}", spec))
    for obj in _inputs(resources, "Pod"):
        out.append(PodTemplate(f"Pod {_meta_name(obj)}", obj.get("spec") or {}))
    for kind in ("RayService", "RayCluster"):
        for obj in _inputs(resources, kind):
            cluster = obj["spec"].get("rayClusterConfig", obj["spec"]) if kind == "RayService" else obj["spec"]
            ns = str((obj.get("metadata") or {}).get("namespace") or "")
            head_template = cluster["headGroupSpec"]["template"]
            head = dict(head_template["spec"])
            if cluster.get("enableInTreeAutoscaling"):
                # KubeRay injects the autoscaler as a sidecar of the head pod.
                sidecar = (cluster.get("autoscalerOptions") or {}).get("resources") or KUBERAY_AUTOSCALER_RESOURCES
                head["containers"] = [*head.get("containers", []), {"name": "autoscaler", "resources": sidecar}]
            head_labels = dict((head_template.get("metadata") or {}).get("labels") or {})
            out.append(
                PodTemplate(f"{kind} {_meta_name(obj)} head", head, namespace=ns, labels=head_labels, owner=kind)
            )
            ft = cluster.get("gcsFaultToleranceOptions")
            if ft is not None and ft.get("backend", "redis") == "redis":
                ray_container = {**head_template["spec"]["containers"][0], "resources": KUBERAY_REDIS_CLEANUP_RESOURCES}
                cleanup = {**head_template["spec"], "containers": [ray_container]}
                out.append(
                    PodTemplate(f"{kind} {_meta_name(obj)} Redis cleanup Job", cleanup, namespace=ns, owner="Job")
                )
            for group in cluster.get("workerGroupSpecs") or []:
                out.append(
                    PodTemplate(
                        f"{kind} {_meta_name(obj)} worker group {group.get('groupName')}",
                        group["template"]["spec"],
                        replicas=int(group.get("minReplicas") or 0),
                        namespace=ns,
                        labels=dict((group["template"].get("metadata") or {}).get("labels") or {}),
                        max_replicas=int(group["maxReplicas"]) if group.get("maxReplicas") is not None else None,
                        owner=kind,
                    )
                )
    return out


def disruption_problems(
    resources: Sequence[Mapping[str, Any]], verdicts: Sequence[Verdict], sources: Sequence[NodeSource]
) -> list[str]:
    """Every PodDisruptionBudget can be evaluated, selects pods the stack declares, lets a drain proceed one node at a
    time once there are more pods than it keeps, and the pool those pods run on has room for the replacement node a
    drain waits for (Karpenter launches it before it drains the old one)."""
    problems: list[str] = []
    by_source = {s.name: s for s in sources}
    for budget in _inputs(resources, "PodDisruptionBudget"):
        name = f"PodDisruptionBudget {_meta_name(budget)}"
        spec = budget.get("spec") or {}
        ns = str((budget.get("metadata") or {}).get("namespace") or "")
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        selected = [
            v for v in verdicts if v.pod.namespace == ns and v.pod.labels and selector.items() <= v.pod.labels.items()
        ]
        if not selector or not selected:
            problems.append(f"{name}: selects no pod template the stack declares (selector {selector})")
            continue
        min_available = spec.get("minAvailable")
        for v in selected:
            pod = v.pod
            if pod.owner in UNSCALABLE_OWNERS and ("maxUnavailable" in spec or not isinstance(min_available, int)):
                problems.append(
                    f"{name}: its pods belong to a {pod.owner}, which has no scale subresource; the disruption "
                    "controller evaluates only an integer minAvailable for them (maxUnavailable or a percentage "
                    "leaves the budget uncomputed)"
                )
                continue
            if isinstance(min_available, int) and pod.max_replicas is not None and min_available >= pod.max_replicas:
                problems.append(
                    f"{name}: minAvailable {min_available} >= {pod.name}'s most replicas ({pod.max_replicas}); no "
                    "eviction is ever allowed, so every drain of their nodes waits out the pool's grace period"
                )
            for source_name in sorted({s for s, _ in v.fits}):
                src = by_source[source_name]
                if not src.limits or pod.max_replicas is None:
                    continue
                machines = [m for m in src.machines if (source_name, m.name) in v.fits]
                m = min(machines, key=lambda x: (x.vcpu, x.memory_mib))
                nodes = pod.max_replicas + 1
                over = [
                    f"{r} {show(r, capacity(m).get(r, 0) * nodes)} > limit {show(r, lim)}"
                    for r, lim in sorted(src.limits.items())
                    if capacity(m).get(r, 0) * nodes > lim
                ]
                if over:
                    problems.append(
                        f"{name}: {source_name} cannot hold {nodes} x {m.name} ({pod.max_replicas} for {pod.name} and "
                        f"the replacement a drain launches first): " + ", ".join(over)
                    )
    return problems


WELL_KNOWN: dict[str, Callable[[Machine], set[str]]] = {
    "node.kubernetes.io/instance-type": lambda m: {m.name},
    "kubernetes.io/arch": lambda m: {m.arch},
    "kubernetes.io/os": lambda m: {"linux"},
    "karpenter.k8s.aws/instance-family": lambda m: {m.family},
    "karpenter.k8s.aws/instance-category": lambda m: {m.category},
    "karpenter.k8s.aws/instance-generation": lambda m: {m.generation},
    "karpenter.k8s.aws/instance-size": lambda m: {m.size},
    "karpenter.k8s.aws/instance-cpu": lambda m: {str(m.vcpu)},
    "karpenter.k8s.aws/instance-memory": lambda m: {str(m.memory_mib)},
    "karpenter.k8s.aws/instance-accelerator-count": lambda m: {str(m.neuron_devices)} if m.neuron_devices else set(),
}


def _requirement_allows(req: Mapping[str, Any], values: set[str]) -> bool:
    op, allowed = req["operator"], {str(v) for v in req.get("values") or []}
    if op == "In":
        return bool(values & allowed)
    if op == "NotIn":
        return not values or bool(values - allowed)
    if op == "Exists":
        return bool(values)
    if op == "DoesNotExist":
        return not values
    if op in {"Gt", "Lt"}:
        bound = int(next(iter(allowed)))
        return any(v.isdigit() and (int(v) > bound if op == "Gt" else int(v) < bound) for v in values)
    return False


def nodepool_source(pool: Mapping[str, Any], machines: Mapping[str, Machine]) -> NodeSource:
    name = pool["metadata"]["name"]
    tmpl = pool["spec"]["template"]
    requirements = tmpl["spec"].get("requirements") or []
    fixed_labels = {k: {str(v)} for k, v in ((tmpl.get("metadata") or {}).get("labels") or {}).items()}
    launchable = []
    for m in machines.values():
        if all(_requirement_allows(r, WELL_KNOWN[r["key"]](m)) for r in requirements if r["key"] in WELL_KNOWN):
            launchable.append(m)
    open_keys = {
        r["key"]: {str(v) for v in r.get("values") or []}
        for r in requirements
        if r["key"] not in WELL_KNOWN and r["operator"] == "In"
    }

    def labels(m: Machine) -> dict[str, set[str]]:
        out = {k: f(m) for k, f in WELL_KNOWN.items()}
        out = {k: v for k, v in out.items() if v}
        out[NODEPOOL_LABEL] = {name}
        out.setdefault("karpenter.sh/capacity-type", {"on-demand"})
        out.update(open_keys)
        out.update(fixed_labels)
        return out

    taints = [Taint(t["key"], str(t.get("value") or ""), t["effect"]) for t in tmpl["spec"].get("taints") or []]
    limits = {k: amount(k, v) for k, v in (pool["spec"].get("limits") or {}).items()}
    return NodeSource(f"NodePool {name}", sorted(launchable, key=lambda m: m.name), labels, taints, limits)


def nodegroup_source(ng: Mapping[str, Any], machines: Mapping[str, Machine]) -> NodeSource:
    name = ng.get("nodeGroupName") or "nodegroup"
    types = ng.get("instanceTypes") or []
    known = [machines[t] for t in types if t in machines]
    problems = [f"no instance facts for {t}" for t in types if t not in machines]
    extra = {k: {str(v)} for k, v in (ng.get("labels") or {}).items()}
    capacity_type = "SPOT" if ng.get("capacityType") == "SPOT" else "ON_DEMAND"

    def labels(m: Machine) -> dict[str, set[str]]:
        return {
            "eks.amazonaws.com/nodegroup": {name},
            "eks.amazonaws.com/capacityType": {capacity_type},
            "node.kubernetes.io/instance-type": {m.name},
            "kubernetes.io/arch": {m.arch},
            "kubernetes.io/os": {"linux"},
            **extra,
        }

    taints = [
        Taint(t["key"], str(t.get("value") or ""), EFFECTS.get(t["effect"], t["effect"]))
        for t in ng.get("taints") or []
    ]
    scaling = ng.get("scalingConfig") or {}
    return NodeSource(
        f"NodeGroup {name}",
        known,
        labels,
        taints,
        max_nodes=scaling.get("maxSize"),
        fixed_nodes=scaling.get("minSize"),
        problems=problems,
    )


def node_sources(resources: Sequence[Mapping[str, Any]], machines: Mapping[str, Machine]) -> list[NodeSource]:
    out = [nodegroup_source(r["inputs"], machines) for r in resources if r["type"] == "aws:eks/nodeGroup:NodeGroup"]
    out += [nodepool_source(p, machines) for p in _inputs(resources, "NodePool")]
    return out


def dumps(verdicts: Sequence[Verdict]) -> str:
    return json.dumps([{"pod": v.pod.name, "ok": v.ok, "message": v.message()} for v in verdicts], indent=2)
