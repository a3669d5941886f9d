"""Every rendered object is valid for what will receive it: strict Kubernetes schemas for the cluster's minor, the
real CRD schemas for custom resources, and each Helm release's values against the chart's own values.yaml."""

from __future__ import annotations

import copy

import pytest

from tools.render import Render
from tools.schemas import (
    HELM_VALUES_DIR,
    chart_values,
    custom_resource_problems,
    helm_value_problems,
    kubernetes_problems,
    manifest_problems,
)


def test_every_manifest_passes_its_schema(each_stack: Render) -> None:
    version = each_stack.config["eks-neuron-llm:clusterVersion"]
    manifests = each_stack.manifests()
    assert manifests
    problems = [p for m in manifests for p in manifest_problems(m, version)]
    assert problems == []


def chart_name(chart: str) -> str:
    return chart.rstrip("/").rsplit("/", 1)[-1]


def test_every_helm_release_is_pinned_and_its_values_keys_exist_in_the_chart(each_stack: Render) -> None:
    for release in each_stack.helm_releases():
        assert release["version"], f"{release['name']}: chart version not pinned"
        if not release["values"]:
            continue
        filename = f"{chart_name(release['chart'])}-{release['version']}.values.yaml"
        assert (HELM_VALUES_DIR / filename).exists(), f"{release['name']}: vendor the chart's values as {filename}"
        assert helm_value_problems(release["name"], release["values"], chart_values(filename)) == []


# The validators themselves must be able to fail.

STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {"name": "x"},
    "provisioner": "ebs.csi.aws.com",
}
NODEPOOL = {
    "apiVersion": "karpenter.sh/v1",
    "kind": "NodePool",
    "metadata": {"name": "p"},
    "spec": {
        "template": {
            "spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                "requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}],
            }
        },
        "limits": {"cpu": 100, "memory": "400Gi"},
    },
}


def test_kubernetes_validation_rejects_unknown_fields_and_wrong_types() -> None:
    assert kubernetes_problems(STORAGE_CLASS, "1.35") == []
    bad = {**STORAGE_CLASS, "volumeBindingMod": "WaitForFirstConsumer"}
    assert kubernetes_problems(bad, "1.35")
    assert kubernetes_problems({**STORAGE_CLASS, "allowVolumeExpansion": "yes"}, "1.35")
    assert kubernetes_problems({**STORAGE_CLASS, "apiVersion": "storage.k8s.io/v9"}, "1.35")


def test_crd_validation_accepts_a_nodepool_and_rejects_a_misspelled_field() -> None:
    assert custom_resource_problems(NODEPOOL) == []
    bad = copy.deepcopy(NODEPOOL)
    bad["spec"]["template"]["spec"]["requirement"] = bad["spec"]["template"]["spec"].pop("requirements")
    found = custom_resource_problems(bad)
    assert any("requirement" in p for p in found)
    wrong_type = copy.deepcopy(NODEPOOL)
    wrong_type["spec"]["limits"]["cpu"] = {"n": 1}
    assert custom_resource_problems(wrong_type)
    assert custom_resource_problems({**NODEPOOL, "apiVersion": "karpenter.sh/v1beta1"})


@pytest.mark.parametrize(
    ("values", "bad_key"),
    [
        ({"settings": {"clusterNam": "x"}}, "settings.clusterNam"),
        ({"controller": {"resource": {}}}, "controller.resource"),
        ({"replica": 2}, "replica"),
    ],
)
def test_helm_values_check_names_the_misspelled_key(values: dict, bad_key: str) -> None:
    chart = chart_values("karpenter-1.14.1.values.yaml")
    assert helm_value_problems("karpenter", {"settings": {"clusterName": "c"}, "replicas": 2}, chart) == []
    (problem,) = helm_value_problems("karpenter", values, chart)
    assert repr(bad_key) in problem


def test_pass_through_maps_accept_any_key() -> None:
    chart = chart_values("karpenter-1.14.1.values.yaml")
    assert chart["nodeSelector"]  # not empty by default, yet its keys are node labels, not chart settings
    assert helm_value_problems("karpenter", {"nodeSelector": {"eks.amazonaws.com/nodegroup": "system"}}, chart) == []


# The vendored Karpenter files are the v1.14.1 release's (commit c88abbbad), not a branch's: what the main branch had
# and 1.14.1 does not must be refused here.


def test_the_karpenter_crds_have_the_releases_typed_kubelet() -> None:
    node_class = {
        "apiVersion": "karpenter.k8s.aws/v1",
        "kind": "EC2NodeClass",
        "metadata": {"name": "c"},
        "spec": {
            "role": "r",
            "amiSelectorTerms": [{"alias": "al2023@v20260930"}],
            "subnetSelectorTerms": [{"tags": {"k": "v"}}],
            "securityGroupSelectorTerms": [{"tags": {"k": "v"}}],
            "kubelet": {"maxPods": 110},
        },
    }
    assert custom_resource_problems(node_class) == []
    node_class["spec"]["kubelet"]["cpuManagerPolicy"] = "static"  # a KubeletConfiguration field 1.14.1 does not take
    (problem,) = custom_resource_problems(node_class)
    assert "cpuManagerPolicy" in problem


def test_the_karpenter_chart_values_are_the_releases() -> None:
    chart = chart_values("karpenter-1.14.1.values.yaml")
    assert chart["controller"]["image"]["digest"] == (
        "sha256:445baefaaa689029cc12ac1f659b916b0b82fb14308ce536f8521fcf079116fa"
    )
    (problem,) = helm_value_problems("karpenter", {"settings": {"awsFeatureGates": {"nodeClassCEL": True}}}, chart)
    assert "'settings.awsFeatureGates'" in problem
