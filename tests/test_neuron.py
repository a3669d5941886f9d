"""Neuron chart: pinned current version with vendored values, device plugin on tainted nodes, my-scheduler on system."""

from __future__ import annotations

import re
from typing import Any

import pytest

from infra import tokens
from infra.config import EKS_VERSIONS
from infra.neuron import KUBE_SCHEDULER_TAGS, NEURON_CHART, NEURON_CHART_VERSION, chart_values, scheduler_tag
from tools.render import Render
from tools.schemas import HELM_VALUES_DIR, helm_value_problems
from tools.schemas import chart_values as vendored_values
from workloads.topology import NEURON_SCHEDULER, NEURON_TAINT, SYSTEM_NODE_SELECTOR, SYSTEM_TAINT_KEY

from .conftest import rendered

VALUES_FILE = f"neuron-helm-chart-{NEURON_CHART_VERSION}.values.yaml"


def neuron_release(r: Render) -> dict[str, Any]:
    (rel,) = [x for x in r.helm_releases() if x["name"] == "neuron-helm-chart"]
    return rel


def tolerates(tolerations: list[dict[str, str]], taint: dict[str, str]) -> bool:
    return any(
        t.get("key") == taint["key"]
        and t.get("effect", taint["effect"]) == taint["effect"]
        and (t.get("operator") == "Exists" or t.get("value") == taint["value"])
        for t in tolerations
    )


def test_chart_is_the_pinned_oci_chart_with_its_values_vendored(each_stack: Render) -> None:
    rel = neuron_release(each_stack)
    assert rel["chart"] == NEURON_CHART == "oci://public.ecr.aws/neuron/neuron-helm-chart"
    assert rel["version"] == NEURON_CHART_VERSION
    assert tuple(int(x) for x in NEURON_CHART_VERSION.split(".")) >= (1, 9, 0)  # not the blueprint's 1.0.0
    assert (HELM_VALUES_DIR / VALUES_FILE).exists()
    assert helm_value_problems(rel["name"], rel["values"], vendored_values(VALUES_FILE)) == []


def test_a_key_of_the_old_chart_layout_is_rejected() -> None:
    values = chart_values("1.35")
    values["scheduler"]["customScheduler"]["imageTag"] = "v1.35.5"
    (problem,) = helm_value_problems("neuron-helm-chart", values, vendored_values(VALUES_FILE))
    assert "'scheduler.customScheduler.imageTag'" in problem


def test_device_plugin_and_scheduler_extension_are_on_and_tolerate_what_they_must(dev: Render) -> None:
    values = neuron_release(dev)["values"]
    assert values["devicePlugin"]["enabled"] is True
    assert tolerates(values["devicePlugin"]["tolerations"], NEURON_TAINT)
    sched = values["scheduler"]
    assert sched["enabled"] is True and sched["customScheduler"]["enabled"] is True
    assert sched["customScheduler"]["fullnameOverride"] == NEURON_SCHEDULER == "my-scheduler"
    for part in (sched, sched["customScheduler"]):
        assert part["nodeSelector"] == SYSTEM_NODE_SELECTOR
        assert any(t["key"] == SYSTEM_TAINT_KEY for t in part["tolerations"])


def test_the_toleration_check_can_fail() -> None:
    assert not tolerates([{"key": SYSTEM_TAINT_KEY, "operator": "Exists"}], NEURON_TAINT)
    assert not tolerates([{"key": NEURON_TAINT["key"], "operator": "Equal", "value": "false"}], NEURON_TAINT)


def test_node_problem_detector_reports_but_does_not_recover(dev: Render) -> None:
    npd = neuron_release(dev)["values"]["npd"]
    assert npd == {"enabled": True, "nodeRecovery": {"enabled": False}}


def test_the_charts_own_second_scheduler_is_too_old_for_the_supported_clusters() -> None:
    # Why the image is overridden: the chart ships a v1.31 kube-scheduler; the skew policy allows a scheduler of the
    # API server's minor or one older, and the oldest minor the stack supports is several minors newer.
    default = vendored_values(VALUES_FILE)["scheduler"]["customScheduler"]["image"]["tag"]
    minor = re.match(r"v1\.(\d+)\.", default)
    assert minor is not None
    oldest = int(EKS_VERSIONS[0].split(".")[1])
    assert int(minor.group(1)) < oldest - 1


@pytest.mark.parametrize("version", EKS_VERSIONS)
def test_second_scheduler_image_matches_the_cluster_minor(version: str) -> None:
    image = chart_values(version)["scheduler"]["customScheduler"]["image"]
    assert image["tag"].startswith(f"v{version}.")
    assert image["repository"] == "registry.k8s.io/kube-scheduler"


def test_every_supported_minor_has_a_scheduler_image_and_others_fail() -> None:
    assert set(KUBE_SCHEDULER_TAGS) == set(EKS_VERSIONS)
    with pytest.raises(ValueError, match=r"no kube-scheduler image pinned for Kubernetes 1\.99"):
        scheduler_tag("1.99")


def test_the_rendered_scheduler_follows_the_configured_cluster_version() -> None:
    r = rendered("dev", clusterVersion="1.36")
    assert neuron_release(r)["values"]["scheduler"]["customScheduler"]["image"]["tag"].startswith("v1.36.")


def test_the_chart_waits_for_the_system_nodes(dev: Render) -> None:
    (rel,) = [x for x in dev.of_type(tokens.HELM_RELEASE) if x["inputs"]["name"] == "neuron-helm-chart"]
    (ng,) = dev.of_type(tokens.EKS_NODE_GROUP)
    assert ng["urn"] in rel["dependencies"]
