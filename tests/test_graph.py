"""The dependency graph: what must exist before what, read from the recorded registrations."""

from __future__ import annotations

from tools.graph import depends_on, edges
from tools.render import Render, is_kubernetes_object


def urn(r: Render, typ: str, suffix: str = "") -> str:
    found = [x["urn"] for x in r.of_type(typ) if x["name"].endswith(suffix)]
    assert len(found) == 1, (typ, suffix, found)
    return found[0]


def test_kubernetes_provider_is_built_from_the_cluster(each_stack: Render) -> None:
    provider = urn(each_stack, "pulumi:providers:kubernetes")
    assert depends_on(each_stack, provider, urn(each_stack, "eks:index:Cluster"))
    (p,) = each_stack.of_type("pulumi:providers:kubernetes")
    assert p["inputs"]["kubeconfig"] == "[secret]"


def test_nothing_kubernetes_side_is_created_before_the_cluster(each_stack: Render) -> None:
    cluster = urn(each_stack, "eks:index:Cluster")
    provider = urn(each_stack, "pulumi:providers:kubernetes")
    graph = edges(each_stack)
    k8s = [x for x in each_stack.resources if x["type"].startswith("kubernetes:") and x["custom"]]
    assert k8s
    for x in k8s:
        assert x["provider"] and x["provider"].startswith(provider), x["urn"]
        assert depends_on(each_stack, x["urn"], cluster, graph), x["urn"]


def test_node_group_waits_for_networking_addons_and_coredns_waits_for_nodes(dev: Render) -> None:
    graph = edges(dev)
    ng = urn(dev, "aws:eks/nodeGroup:NodeGroup")
    for addon in ("vpc-cni", "kube-proxy", "eks-pod-identity-agent"):
        assert urn(dev, "aws:eks/addon:Addon", addon) in graph[ng]
    for addon in ("coredns", "aws-ebs-csi-driver"):
        assert ng in graph[urn(dev, "aws:eks/addon:Addon", addon)]


def test_cluster_waits_for_the_network_but_not_for_nat(dev: Render) -> None:
    cluster = urn(dev, "eks:index:Cluster")
    graph = edges(dev)
    subnets = {x["urn"] for x in dev.of_type("aws:ec2/subnet:Subnet")}
    assert subnets <= graph[cluster]
    # the control plane does not need NAT to exist; only data flow orders them
    assert not any(n in graph[cluster] for n in (x["urn"] for x in dev.of_type("aws:ec2/natGateway:NatGateway")))


def test_every_rendered_kubernetes_object_is_a_manifest(dev: Render) -> None:
    objects = [x for x in dev.resources if is_kubernetes_object(x)]
    assert len(objects) == len(dev.manifests())
    for m in dev.manifests():
        assert m["apiVersion"] and m["kind"] and m["metadata"]["name"]
