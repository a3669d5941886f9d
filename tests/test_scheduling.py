"""The scheduling proof on a small synthetic stack: it passes when it should, and each class of defect the old
blueprint shipped fails with a reason a user can act on."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from infra import tokens
from policy.scheduling import (
    Machine,
    allocatable,
    kube_reserved_cpu_millis,
    kube_reserved_memory_mib,
    node_sources,
    pod_requests,
    pod_templates,
    prove,
)
from workloads.topology import (
    NEURON_DEVICE_RESOURCE,
    NEURON_TOLERATION,
    accelerator_placement,
    system_placement,
)

MACHINES = {
    m.name: m
    for m in (
        Machine("m6i.xlarge", 4, 16384, 58),
        Machine("m6i.2xlarge", 8, 32768, 58),
        Machine("inf2.8xlarge", 32, 131072, 234, neuron_devices=1, neuron_cores=2),
        Machine("inf2.48xlarge", 192, 786432, 737, neuron_devices=12, neuron_cores=24),
    )
}


def k8s(kind: str, name: str, spec: dict[str, Any], ns: str = "apps") -> dict[str, Any]:
    api = "karpenter.sh/v1" if kind == "NodePool" else "apps/v1"
    return {
        "type": f"kubernetes:{api}:{kind}",
        "name": name,
        "urn": name,
        "inputs": {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": spec},
    }


def pod(**spec: Any) -> dict[str, Any]:
    return {"template": {"spec": {"containers": [{"name": "c", "image": "x:1"}], **spec}}}


def resources(cpu: str = "1", memory: str = "1Gi", **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": "c",
            "image": "x:1",
            "resources": {"requests": {"cpu": cpu, "memory": memory, **extra}, "limits": dict(extra)},
        }
    ]


def nodepool(name: str, types: list[str], taints: list[dict[str, str]], limits: dict[str, Any]) -> dict[str, Any]:
    return k8s(
        "NodePool",
        name,
        {
            "template": {
                "spec": {
                    "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": name},
                    "requirements": [{"key": "node.kubernetes.io/instance-type", "operator": "In", "values": types}],
                    "taints": taints,
                }
            },
            "limits": limits,
        },
    )


def stack() -> list[dict[str, Any]]:
    neuron_taint = {k: NEURON_TOLERATION[k] for k in ("key", "value", "effect")}
    return [
        {
            "type": tokens.EKS_NODE_GROUP,
            "name": "system",
            "urn": "ng",
            "inputs": {
                "nodeGroupName": "system",
                "instanceTypes": ["m6i.xlarge"],
                "taints": [{"key": "CriticalAddonsOnly", "value": "true", "effect": "NO_SCHEDULE"}],
                "scalingConfig": {"minSize": 2, "maxSize": 3, "desiredSize": 2},
            },
        },
        nodepool("default", ["m6i.xlarge", "m6i.2xlarge"], [], {"cpu": "100", "memory": "400Gi"}),
        nodepool(
            "inf2",
            ["inf2.8xlarge", "inf2.48xlarge"],
            [neuron_taint],
            {"cpu": "400", "memory": "2000Gi", NEURON_DEVICE_RESOURCE: "12"},
        ),
        k8s(
            "DaemonSet",
            "neuron-device-plugin",
            pod(tolerations=[dict(NEURON_TOLERATION)], containers=resources("10m", "32Mi")),
        ),
        k8s(
            "Deployment",
            "ui",
            pod(nodeSelector={"karpenter.sh/nodepool": "default"}, containers=resources("500m", "1Gi")),
        ),
        k8s("Deployment", "head", pod(**system_placement(), containers=resources("1", "4Gi"))),
        k8s(
            "Deployment",
            "worker",
            pod(
                **accelerator_placement("inf2", "inf2.8xlarge"),
                containers=resources("8", "32Gi", **{NEURON_DEVICE_RESOURCE: "1"}),
            ),
        ),
    ]


def verdicts(resources_: list[dict[str, Any]]) -> dict[str, Any]:
    pods = pod_templates(resources_)
    for p in pods:
        if p.name.startswith("DaemonSet") and "neuron" in p.name:
            p.provides = ("aws.amazon.com/neuron", "aws.amazon.com/neuroncore")
    return {v.pod.name: v for v in prove(pods, node_sources(resources_, MACHINES))}


def failure(resources_: list[dict[str, Any]], pod_name: str) -> str:
    v = verdicts(resources_)[pod_name]
    assert not v.ok, v.message()
    return v.message()


def edit(name: str, change: Any) -> list[dict[str, Any]]:
    s = copy.deepcopy(stack())
    obj = next(r for r in s if r["name"] == name)
    change(obj["inputs"])
    return s


def test_the_sound_stack_passes() -> None:
    found = verdicts(stack())
    assert all(v.ok for v in found.values()), [v.message() for v in found.values() if not v.ok]
    assert {s for s, _ in found["Deployment apps/worker"].fits} == {"NodePool inf2"}
    assert {s for s, _ in found["Deployment apps/head"].fits} == {"NodeGroup system"}
    assert {s for s, _ in found["Deployment apps/ui"].fits} == {"NodePool default"}


def test_a_selector_no_pool_sets_fails_with_label() -> None:
    s = edit("ui", lambda o: o["spec"]["template"]["spec"].update(nodeSelector={"role": "frontend"}))
    msg = failure(s, "Deployment apps/ui")
    assert "NodePool default: label role=frontend (node has unset)" in msg
    assert "NodeGroup system:" in msg and "NodePool inf2:" in msg


def test_an_untolerated_taint_fails_with_taint() -> None:
    def drop(o: dict[str, Any]) -> None:
        o["spec"]["template"]["spec"]["tolerations"] = []

    msg = failure(edit("worker", drop), "Deployment apps/worker")
    assert "NodePool inf2: taint aws.amazon.com/neuron=true:NoSchedule not tolerated" in msg


def test_a_head_bigger_than_any_node_fails_with_cpu_and_memory() -> None:
    def grow(o: dict[str, Any]) -> None:
        o["spec"]["template"]["spec"]["containers"] = resources("4", "15Gi")

    msg = failure(edit("head", grow), "Deployment apps/head")
    assert "NodeGroup system: m6i.xlarge: cpu: needs 4000m" in msg
    assert "memory: needs 15360Mi" in msg


def test_a_neuron_pod_without_the_neuron_scheduler_fails_with_scheduler() -> None:
    msg = failure(
        edit("worker", lambda o: o["spec"]["template"]["spec"].pop("schedulerName")), "Deployment apps/worker"
    )
    assert "scheduler: requests Neuron devices but schedulerName is 'default-scheduler'" in msg


def test_more_devices_than_the_instance_has_fails_with_device() -> None:
    def more(o: dict[str, Any]) -> None:
        o["spec"]["template"]["spec"]["containers"] = resources("8", "32Gi", **{NEURON_DEVICE_RESOURCE: "2"})

    msg = failure(edit("worker", more), "Deployment apps/worker")
    assert "inf2.8xlarge: device aws.amazon.com/neuron: needs 2, 1 free" in msg


def test_pool_limits_below_one_node_fail_with_limit() -> None:
    msg = failure(edit("inf2", lambda o: o["spec"]["limits"].update(cpu="16")), "Deployment apps/worker")
    assert "limit: one node exceeds the pool's limits (cpu 32000m > limit 16000m)" in msg


def test_a_device_plugin_that_never_reaches_the_accelerator_nodes_fails() -> None:
    s = edit("neuron-device-plugin", lambda o: o["spec"]["template"]["spec"].update(tolerations=[]))
    found = verdicts(s)
    plugin = found["DaemonSet apps/neuron-device-plugin"]
    assert not plugin.ok
    assert "Neuron DaemonSet does not land there: taint aws.amazon.com/neuron=true:NoSchedule" in plugin.message()
    worker = found["Deployment apps/worker"].message()
    assert "no DaemonSet advertising it (the Neuron device plugin) runs on NodePool inf2 nodes" in worker


def test_daemonsets_count_against_every_node_they_land_on() -> None:
    def greedy(o: dict[str, Any]) -> None:
        o["spec"]["template"]["spec"].update(tolerations=[{"operator": "Exists"}], containers=resources("3", "1Gi"))

    msg = failure(edit("neuron-device-plugin", greedy), "Deployment apps/head")
    assert "NodeGroup system: m6i.xlarge: cpu: needs 1000m" in msg


def test_allocatable_follows_the_eks_formula() -> None:
    assert kube_reserved_cpu_millis(1) == 60
    assert kube_reserved_cpu_millis(2) == 70
    assert kube_reserved_cpu_millis(4) == 80
    assert kube_reserved_cpu_millis(32) == 150
    assert kube_reserved_memory_mib(58) == 893
    a = allocatable(MACHINES["m6i.xlarge"])
    assert a["cpu"] == 3920
    assert a["memory"] == (int(16384 * 0.925) - 893 - 100) * 2**20
    assert a["pods"] == 58


@pytest.mark.parametrize(
    ("spec", "cpu"),
    [
        ({"containers": resources("250m", "1Gi") * 2}, 500),
        ({"containers": resources("250m", "1Gi"), "initContainers": resources("2", "1Gi")}, 2000),
    ],
)
def test_pod_requests_sum_containers_and_take_the_largest_init_container(spec: dict[str, Any], cpu: int) -> None:
    assert pod_requests(spec)["cpu"] == cpu


def test_pods_pinned_to_the_fixed_size_node_group_must_fit_there_together() -> None:
    from policy.scheduling import packing_problems

    s = edit("head", lambda o: o["spec"].update(replicas=9))
    pods = pod_templates(s)
    sources = node_sources(s, MACHINES)
    found = packing_problems(prove(pods, sources), sources)
    assert len(found) == 2  # cpu and memory
    assert found[0].startswith(
        "NodeGroup system: capacity cpu: pods that only fit there need 9000m together but 2 x m6i.xlarge offer"
    )
    assert "Deployment apps/head x9" in found[0]
    assert (
        packing_problems(
            prove(pod_templates(stack()), node_sources(stack(), MACHINES)), node_sources(stack(), MACHINES)
        )
        == []
    )
