"""The scheduling proof over a whole recorded stack: pods from manifests, charts and add-ons; nodes from the
node group and the Karpenter pools; machines from the instance facts table."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from policy.charts import ADDON_DAEMONSETS, addon_pods, chart_pods
from policy.scheduling import (
    Machine,
    Verdict,
    disruption_problems,
    node_sources,
    packing_problems,
    pod_templates,
    prove,
)
from workloads.instances import INSTANCES

Records = Sequence[Mapping[str, Any]]


def machines() -> dict[str, Machine]:
    """The instance facts table as the proof's machines."""
    return {
        name: Machine(name, f.vcpu, int(f.memory_gib * 1024), f.max_pods, f.neuron_devices, f.neuron_cores)
        for name, f in INSTANCES.items()
    }


def run(resources: Records) -> tuple[list[Verdict], list[str]]:
    """Verdicts for every pod template, and stack-wide problems: unknown charts (unproven pods), node sources of
    fixed size that cannot hold, together, the pods that only fit there, and disruption budgets that cannot work."""
    charts, unknown = chart_pods(resources)
    pods = pod_templates(resources) + charts + addon_pods(resources)
    sources = node_sources(resources, machines())
    verdicts = prove(pods, sources, ADDON_DAEMONSETS)
    return verdicts, [
        *unknown,
        *packing_problems(verdicts, sources, ADDON_DAEMONSETS),
        *disruption_problems(resources, verdicts, sources),
    ]


def validate(resources: Records, config: Mapping[str, Any], report: Callable[[str], None]) -> None:
    """Stack policy: every pod has a node; each failure names the pod, every candidate pool and the reason."""
    verdicts, unknown = run(resources)
    for problem in unknown:
        report(problem)
    for v in verdicts:
        if not v.ok:
            report(v.message())


def summary(resources: Records) -> list[str]:
    verdicts, unknown = run(resources)
    return [v.message() for v in verdicts] + unknown
