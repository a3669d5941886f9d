"""Voluntary disruption on the render: the serve workers' PodDisruptionBudget works with KubeRay's pods, lets
Karpenter drain one node at a time, and the pool has room for the replacement a drain waits for; each defect fails
the scheduling proof with a reason.  The destroy side (the budget goes before the pool drains) is in
tests/test_destroy.py."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from policy import proof
from tools.render import Render
from workloads import rayservice

from .conftest import rendered

PDB = "kubernetes:policy/v1:PodDisruptionBudget"


def problems(resources: list[dict[str, Any]]) -> list[str]:
    return [p for p in proof.run(resources)[1] if p.startswith("PodDisruptionBudget")]


def with_budget(r: Render, change: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    resources = copy.deepcopy(r.resources)
    (budget,) = [x for x in resources if x["type"] == PDB]
    change(budget["inputs"]["spec"])
    return resources


def test_the_budget_holds_on_both_stacks(each_stack: Render) -> None:
    assert [x for x in each_stack.resources if x["type"] == PDB]
    assert problems(each_stack.resources) == []


def test_the_redis_cleanup_job_of_prod_fits_the_system_nodes_with_the_rest(prod: Render) -> None:
    verdicts, stack_problems = proof.run(prod.resources)
    (cleanup,) = [v for v in verdicts if "Redis cleanup Job" in v.pod.name]
    assert cleanup.ok and {s for s, _ in cleanup.fits} == {"NodeGroup system"}
    assert cleanup.pod.requests()["cpu"] == 200  # KubeRay's fixed 200m
    assert stack_problems == []  # the packing of the fixed-size system group still holds with it
    assert not [v for v in proof.run(rendered("dev").resources)[0] if "Redis cleanup" in v.pod.name]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda s: s.update(maxUnavailable=1) or s.pop("minAvailable"), "no scale subresource"),
        (lambda s: s.update(minAvailable="50%"), "no scale subresource"),
        (lambda s: s.update(minAvailable=2), "no eviction is ever allowed"),
        (lambda s: s.update(selector={"matchLabels": {"app.kubernetes.io/component": "nothing"}}), "selects no pod"),
    ],
)
def test_a_budget_that_cannot_work_fails_the_proof(dev: Render, change: Callable[..., Any], reason: str) -> None:
    found = problems(with_budget(dev, change))
    assert any(reason in p for p in found), found


def test_a_pool_without_room_for_the_replacement_fails_the_proof() -> None:
    # Passes the config check (2 workers x 1 device <= 2) but a drain of one worker needs a third node first.
    (found,) = problems(rendered("dev", inf2NeuronDeviceLimit="2").resources)
    assert "NodePool inf2 cannot hold 3 x inf2.8xlarge" in found and "aws.amazon.com/neuron 3 > limit 2" in found
    assert problems(rendered("dev", inf2NeuronDeviceLimit="3").resources) == []


def test_the_budget_keeps_at_least_one_worker_and_only_workers(dev: Render) -> None:
    budget = rayservice.worker_disruption_budget()
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == rayservice.WORKER_LABELS
