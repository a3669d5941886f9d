"""The scheduling proof on the real renders: every pod the stack declares has a node, and defects injected into a
copy of the real records fail with the reason a user needs."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from infra import tokens
from policy.proof import machines, run, summary, validate
from tools.render import Render
from tools.render import summary as render_summary
from workloads.instances import INSTANCES

Records = list[dict[str, Any]]


def verdicts(resources: Records) -> dict[str, Any]:
    found, unknown = run(resources)
    assert unknown == []
    return {v.pod.name: v for v in found}


def pod_named(resources: Records, prefix: str) -> Any:
    matches = [v for name, v in verdicts(resources).items() if name.startswith(prefix)]
    assert len(matches) == 1, (prefix, list(verdicts(resources)))
    return matches[0]


def test_every_pod_of_the_real_stacks_has_a_node(each_stack: Render) -> None:
    found = verdicts(each_stack.resources)
    assert [v.message() for v in found.values() if not v.ok] == []
    names = list(found)
    for expected in (
        "RayService vllm/",
        "Deployment open-webui/",
        "HelmRelease karpenter controller",
        "HelmRelease kuberay-operator",
        "HelmRelease neuron-helm-chart device plugin",
        "HelmRelease neuron-helm-chart my-scheduler",
        "EksAddon amazon-cloudwatch-observability",
    ):
        assert any(n.startswith(expected) for n in names), expected


def test_the_serving_worker_lands_on_the_presets_instance_type(dev: Render) -> None:
    worker = next(v for n, v in verdicts(dev.resources).items() if n.startswith("RayService") and "worker" in n)
    assert {m for _, m in worker.fits} == {"inf2.8xlarge"}
    assert {s for s, _ in worker.fits} == {"NodePool inf2"}
    head = next(v for n, v in verdicts(dev.resources).items() if n.startswith("RayService") and n.endswith("head"))
    assert {s for s, _ in head.fits} == {"NodeGroup system"}


def test_the_head_counts_the_autoscaler_sidecar(dev: Render) -> None:
    head = next(v for n, v in verdicts(dev.resources).items() if n.startswith("RayService") and n.endswith("head"))
    assert "autoscaler" in [c["name"] for c in head.pod.spec["containers"]]


def test_the_stack_policy_reports_nothing_for_the_real_stacks(each_stack: Render) -> None:
    found: list[str] = []
    validate(each_stack.resources, {}, found.append)
    assert found == []


def test_the_render_summary_prints_a_verdict_per_pod(dev: Render) -> None:
    lines = summary(dev.resources)
    assert lines and all(": ok, " in line for line in lines)
    assert "scheduling proof:" in render_summary(dev)


def test_every_instance_type_the_accelerator_pools_may_launch_has_facts(each_stack: Render) -> None:
    for r in each_stack.resources:
        if r["inputs"].get("kind") != "NodePool":
            continue
        for req in r["inputs"]["spec"]["template"]["spec"]["requirements"]:
            if req["key"] == "node.kubernetes.io/instance-type":
                assert set(req["values"]) <= set(INSTANCES), r["name"]
    assert set(machines()) == set(INSTANCES)


# Defects injected into a copy of the real dev records.


def mutate(r: Render, pick: Callable[[dict[str, Any]], bool], change: Callable[[dict[str, Any]], None]) -> Records:
    resources = copy.deepcopy(r.resources)
    targets = [x for x in resources if pick(x)]
    assert targets
    for t in targets:
        change(t["inputs"])
    return resources


def is_kind(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda x: x["type"].startswith("kubernetes:") and x["inputs"].get("kind") == kind


def ray_groups(obj: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    cluster = obj["spec"]["rayClusterConfig"]
    return cluster["headGroupSpec"]["template"]["spec"], cluster["workerGroupSpecs"][0]["template"]["spec"]


def test_worker_without_the_neuron_scheduler(dev: Render) -> None:
    resources = mutate(dev, is_kind("RayService"), lambda o: ray_groups(o)[1].pop("schedulerName"))
    worker = next(v for n, v in verdicts(resources).items() if "worker" in n)
    assert not worker.ok
    assert "scheduler: requests Neuron devices but schedulerName is 'default-scheduler'" in worker.message()


def test_selector_naming_a_label_no_pool_sets(dev: Render) -> None:
    def change(o: dict[str, Any]) -> None:
        o["spec"]["template"]["spec"]["nodeSelector"] = {"node-type": "frontend"}

    msg = pod_named(mutate(dev, is_kind("Deployment"), change), "Deployment open-webui/").message()
    assert "FAILED" in msg and "NodePool default: label node-type=frontend (node has unset)" in msg


def test_untolerated_neuron_taint(dev: Render) -> None:
    msg = next(
        v
        for n, v in verdicts(
            mutate(dev, is_kind("RayService"), lambda o: ray_groups(o)[1].update(tolerations=[]))
        ).items()
        if "worker" in n
    ).message()
    assert "NodePool inf2: taint aws.amazon.com/neuron=true:NoSchedule not tolerated" in msg


def test_head_bigger_than_any_system_node(dev: Render) -> None:
    def grow(o: dict[str, Any]) -> None:
        for c in ray_groups(o)[0]["containers"]:
            c["resources"] = {"requests": {"cpu": "6", "memory": "8Gi"}, "limits": {"memory": "8Gi"}}

    head = next(v for n, v in verdicts(mutate(dev, is_kind("RayService"), grow)).items() if n.endswith("head"))
    assert not head.ok
    assert "NodeGroup system: m6i.xlarge: cpu: needs 6200m" in head.message()  # 6 CPU + the autoscaler sidecar


def test_pool_limits_too_small_for_one_node(dev: Render) -> None:
    def shrink(o: dict[str, Any]) -> None:
        if o["metadata"]["name"] == "inf2":
            o["spec"]["limits"]["cpu"] = "16"

    worker = next(v for n, v in verdicts(mutate(dev, is_kind("NodePool"), shrink)).items() if "worker" in n)
    assert "limit: one node exceeds the pool's limits (cpu 32000m > limit 16000m)" in worker.message()


def test_device_plugin_that_never_reaches_the_accelerator_nodes(dev: Render) -> None:
    def no_tolerations(o: dict[str, Any]) -> None:
        if "neuron" in str(o.get("chart")):
            o["values"]["devicePlugin"]["tolerations"] = []

    resources = mutate(dev, lambda x: x["type"] == tokens.HELM_RELEASE, no_tolerations)
    found = verdicts(resources)
    plugin = found["HelmRelease neuron-helm-chart device plugin"]
    assert not plugin.ok and "Neuron DaemonSet does not land there" in plugin.message()
    worker = next(v for n, v in found.items() if "worker" in n)
    assert "no DaemonSet advertising it (the Neuron device plugin) runs on NodePool inf2 nodes" in worker.message()


@pytest.mark.parametrize("chart", ["karpenter", "kuberay-operator"])
def test_a_controller_that_no_longer_tolerates_the_system_taint(dev: Render, chart: str) -> None:
    def change(o: dict[str, Any]) -> None:
        if str(o.get("chart")).endswith("/" + chart) or o.get("chart") == chart:
            o["values"]["tolerations"] = []

    resources = mutate(dev, lambda x: x["type"] == tokens.HELM_RELEASE, change)
    v = pod_named(resources, f"HelmRelease {chart}")
    assert not v.ok
    assert "NodeGroup system: taint CriticalAddonsOnly=true:NoSchedule not tolerated" in v.message()
