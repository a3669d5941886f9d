"""The dependency graph: what must exist before what, read from the recorded registrations."""

from __future__ import annotations

from infra import tokens
from tools.graph import depends_on, edges
from tools.render import Render, is_kubernetes_object


def urn(r: Render, typ: str, suffix: str = "") -> str:
    found = [x["urn"] for x in r.of_type(typ) if x["name"].endswith(suffix)]
    assert len(found) == 1, (typ, suffix, found)
    return found[0]


def test_kubernetes_provider_is_built_from_the_cluster(each_stack: Render) -> None:
    provider = urn(each_stack, "pulumi:providers:kubernetes")
    assert depends_on(each_stack, provider, urn(each_stack, tokens.EKS_COMPONENT))
    (p,) = each_stack.of_type("pulumi:providers:kubernetes")
    assert p["inputs"]["kubeconfig"] == "[secret]"


def test_nothing_kubernetes_side_is_created_before_the_cluster(each_stack: Render) -> None:
    cluster = urn(each_stack, tokens.EKS_COMPONENT)
    provider = urn(each_stack, "pulumi:providers:kubernetes")
    graph = edges(each_stack)
    k8s = [x for x in each_stack.resources if x["type"].startswith("kubernetes:") and x["custom"]]
    assert k8s
    for x in k8s:
        assert x["provider"] and x["provider"].startswith(provider), x["urn"]
        assert depends_on(each_stack, x["urn"], cluster, graph), x["urn"]


def test_node_group_waits_for_networking_addons_and_coredns_waits_for_nodes(dev: Render) -> None:
    graph = edges(dev)
    ng = urn(dev, tokens.EKS_NODE_GROUP)
    for addon in ("vpc-cni", "kube-proxy", "eks-pod-identity-agent"):
        assert urn(dev, tokens.EKS_ADDON, addon) in graph[ng]
    for addon in ("coredns", "aws-ebs-csi-driver"):
        assert ng in graph[urn(dev, tokens.EKS_ADDON, addon)]


def test_cluster_waits_for_the_network_but_not_for_nat(dev: Render) -> None:
    cluster = urn(dev, tokens.EKS_COMPONENT)
    graph = edges(dev)
    subnets = {x["urn"] for x in dev.of_type(tokens.SUBNET)}
    assert subnets <= graph[cluster]
    # the control plane does not need NAT to exist; only data flow orders them
    assert not any(n in graph[cluster] for n in (x["urn"] for x in dev.of_type(tokens.NAT_GATEWAY)))


def test_every_rendered_kubernetes_object_is_a_manifest(dev: Render) -> None:
    objects = [x for x in dev.resources if is_kubernetes_object(x)]
    assert len(objects) == len(dev.manifests())
    for m in dev.manifests():
        assert m["apiVersion"] and m["kind"] and m["metadata"]["name"]


# --- the serving image build: beside the network and the cluster, before the RayService ----------------------------


def _closure(r: Render, start: str, graph: dict[str, set[str]]) -> set[str]:
    """Every resource ``start`` transitively waits for (waiting on a component waits on its children)."""
    return {x["urn"] for x in r.resources if x["urn"] != start and depends_on(r, start, x["urn"], graph)}


def build_problems(r: Render) -> list[str]:
    """Why the image build is not where it belongs in the graph (empty when it is)."""
    graph = edges(r)
    (build,) = [x["urn"] for x in r.of_type(tokens.SERVING_IMAGE_BUILD)]
    problems = []
    (rs,) = r.of_type(tokens.RAY_SERVICE)
    if not depends_on(r, rs["urn"], build, graph):
        problems.append("the RayService does not wait for the image build")
    waits = _closure(r, build, graph)
    network_or_cluster = {
        x["urn"]
        for x in r.resources
        if x["type"] in ("eks-neuron-llm:infra:Network", "eks-neuron-llm:infra:Cluster", tokens.EKS_COMPONENT)
        or x["type"].startswith(("kubernetes:", "pulumi:providers:kubernetes"))
        or any(a.split("::")[-1] in ("network", "cluster") for a in r.ancestors(x["urn"]))
    }
    problems += [f"the image build waits for {u.rsplit('::', 1)[-1]}" for u in sorted(waits & network_or_cluster)]
    return problems


def test_the_rayservice_waits_for_the_image_build_which_waits_for_nothing_of_network_or_cluster(
    each_stack: Render,
) -> None:
    assert build_problems(each_stack) == []


def test_the_image_build_waits_only_for_its_repository_cache_role_sources_and_builder(each_stack: Render) -> None:
    graph = edges(each_stack)
    (build,) = [x["urn"] for x in each_stack.of_type(tokens.SERVING_IMAGE_BUILD)]
    waits = {each_stack.by_urn(u)["type"]: u for u in _closure(each_stack, build, graph)}
    assert set(waits) == {
        "pulumi:providers:aws",
        tokens.ECR_REPOSITORY,  # the serving repository and the cache repository
        "aws:ecr/pullThroughCacheRule:PullThroughCacheRule",
        tokens.IAM_ROLE,
        tokens.IAM_ROLE_POLICY,
        tokens.S3_BUCKET,
        tokens.S3_OBJECT,
        "aws:cloudwatch/logGroup:LogGroup",
        tokens.CODEBUILD_PROJECT,
    }


def test_the_build_placement_check_can_fail(dev: Render) -> None:
    import copy

    broken = copy.deepcopy(dev.resources)
    (build,) = [x for x in broken if x["type"] == tokens.SERVING_IMAGE_BUILD]
    (subnet, *_) = [x["urn"] for x in broken if x["type"] == tokens.SUBNET]
    build["dependencies"].append(subnet)  # a false dependency on the network
    (rs,) = [x for x in broken if x["type"] == tokens.RAY_SERVICE]
    rs["propertyDependencies"] = {k: [u for u in v if u != build["urn"]] for k, v in rs["propertyDependencies"].items()}
    rs["dependencies"] = [u for u in rs["dependencies"] if u != build["urn"]]
    problems = build_problems(Render(dev.stack, dev.config, broken, dev.outputs, 0.0))
    assert problems[0] == "the RayService does not wait for the image build"
    assert any(p.startswith("the image build waits for network-") for p in problems[1:]), problems
