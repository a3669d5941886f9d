"""The KubeRay operator release: pinned chart from the KubeRay repository, on the system nodes."""

from __future__ import annotations

from infra import tokens
from infra.kuberay import KUBERAY_REPOSITORY, KUBERAY_VERSION, NAMESPACE, chart_values
from tools.render import Render
from tools.schemas import chart_values as vendored_values
from tools.schemas import helm_value_problems
from workloads.topology import system_placement


def operator(r: Render) -> dict:
    (release,) = [h for h in r.helm_releases() if h["name"] == "kuberay-operator"]
    return release


def test_operator_release_is_pinned_from_the_kuberay_repository(each_stack: Render) -> None:
    release = operator(each_stack)
    assert (release["chart"], release["version"], release["repository"]) == (
        "kuberay-operator",
        "1.7.0",
        "https://ray-project.github.io/kuberay-helm/",
    )
    assert KUBERAY_VERSION == "1.7.0" and KUBERAY_REPOSITORY.startswith("https://")
    assert release["namespace"] == NAMESPACE


def test_operator_runs_on_the_system_nodes(dev: Render) -> None:
    values = operator(dev)["values"]
    for key, value in system_placement().items():
        assert values[key] == value
    record = dev.by_urn(operator(dev)["urn"])
    (node_group,) = dev.of_type(tokens.EKS_NODE_GROUP)
    assert node_group["urn"] in record["dependencies"]


def test_values_exist_in_the_vendored_chart_and_the_check_can_fail() -> None:
    chart = vendored_values(f"kuberay-operator-{KUBERAY_VERSION}.values.yaml")
    assert helm_value_problems("kuberay-operator", chart_values(), chart) == []
    (problem,) = helm_value_problems("kuberay-operator", {**chart_values(), "replica": 2}, chart)
    assert "'replica'" in problem


def test_operator_chart_version_has_vendored_crds() -> None:
    from tools.schemas import custom_resource_kinds

    assert ("ray.io/v1", "RayService") in custom_resource_kinds()
