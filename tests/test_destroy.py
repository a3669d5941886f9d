"""Safe destroy: `pulumi destroy` alone must leave no instance, volume, ENI or security group behind.

Pulumi deletes dependents first, so "A is deleted before B" is "A depends on B" in the render's graph.  The order
proved here, on the real dev and prod renders:

    workloads (RayService, Open WebUI, anything selecting a Karpenter pool)
      -> NodePools -> EC2NodeClasses            (finalizers drain and terminate every NodeClaim's instance)
      -> Karpenter controller                   (+ its IAM, Pod Identity association, interruption queue)
      -> system node group                      (+ its IAM, and the NAT routes the controller calls AWS through)
      -> EKS cluster -> network (subnets, VPC)

    RayService -> serving image build -> its repositories, cache rule, builder and the build role's policy
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from infra.cluster import RETAINED_STORAGE_CLASS
from infra.karpenter import NODE_DELETE_TIMEOUT
from tools.graph import depends_on, edges
from tools.render import Render, is_kubernetes_object
from workloads.topology import NODEPOOL_LABEL

from .conftest import rendered

NODEPOOL = "kubernetes:karpenter.sh/v1:NodePool"
NODECLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"
RELEASE = "kubernetes:helm.sh/v3:Release"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
IMAGE_BUILD = "pulumi-python:dynamic/image:ServingImageBuild"


def _pool_selectors(value: Any) -> Iterator[str]:
    """Every Karpenter pool a pod template of this object selects (``nodeSelector`` on the pool label)."""
    if isinstance(value, dict):
        selector = value.get("nodeSelector")
        if isinstance(selector, dict) and NODEPOOL_LABEL in selector:
            yield selector[NODEPOOL_LABEL]
        for v in value.values():
            yield from _pool_selectors(v)
    elif isinstance(value, list):
        for v in value:
            yield from _pool_selectors(v)


def _release(r: Render, name: str) -> str:
    (rel,) = [x["urn"] for x in r.of_type(RELEASE) if x["inputs"].get("name") == name]
    return rel


def _named(r: Render, typ: str, prefix: str) -> list[str]:
    return [x["urn"] for x in r.of_type(typ) if x["name"].startswith(prefix)]


def destroy_order_problems(r: Render) -> list[str]:
    """Every 'must be deleted before' pair the destroy order needs, as the problems found (empty when safe)."""
    graph = edges(r)
    problems: list[str] = []

    def need(a: str, b: str, why: str) -> None:
        if not depends_on(r, a, b, graph):
            problems.append(f"{a.rsplit('::', 1)[-1]} would not be deleted before {b.rsplit('::', 1)[-1]}: {why}")

    pools = {x["inputs"]["metadata"]["name"]: x for x in r.of_type(NODEPOOL)}
    classes = {x["inputs"]["metadata"]["name"]: x for x in r.of_type(NODECLASS)}
    controller = _release(r, "karpenter")
    (system_nodes,) = r.of_type("aws:eks/nodeGroup:NodeGroup")
    (control_plane,) = r.of_type("aws:eks/cluster:Cluster")

    # 1. Workloads before the pools their pods run on: their pods go while Karpenter still runs, then nodes drain.
    workloads = 0
    for x in r.resources:
        if not is_kubernetes_object(x) or x["type"] in (NODEPOOL, NODECLASS):
            continue
        for pool in sorted(set(_pool_selectors(x["inputs"]))):
            workloads += 1
            if pool not in pools:
                problems.append(f"{x['name']} selects NodePool {pool!r}, which the stack does not create")
                continue
            need(x["urn"], pools[pool]["urn"], "its pods must be gone before the pool's nodes drain")
    if workloads == 0:
        problems.append("no workload selects a Karpenter pool: the check found nothing to check")

    # 2. Pools before their class, and both before the controller that runs their finalizers.
    for pool in pools.values():
        ref = pool["inputs"]["spec"]["template"]["spec"]["nodeClassRef"]["name"]
        need(pool["urn"], classes[ref]["urn"], "nodes of the pool were launched from the class")
        need(pool["urn"], controller, "the controller drains and terminates the pool's NodeClaims")
    node_policies = _named(r, ATTACHMENT, "karpenter-node-")
    for cls in classes.values():
        need(cls["urn"], controller, "the class finalizer waits for the controller to terminate its instances")
        for urn in node_policies:
            need(cls["urn"], urn, "nodes keep their IAM permissions until they are terminated")
        need(cls["urn"], r.one("aws:eks/accessEntry:AccessEntry", "karpenter-node")["urn"], "nodes keep joining")
        need(cls["urn"], r.one("aws:ec2/tag:Tag", "karpenter-cluster-sg-discovery")["urn"], "security group found")

    # 3. The controller before its permissions, its credentials, its queue and the nodes it runs on.
    for urn in _named(r, ATTACHMENT, "karpenter-controller-"):
        need(controller, urn, "the controller needs its IAM policies to terminate instances")
    need(
        controller,
        r.one("aws:eks/podIdentityAssociation:PodIdentityAssociation", "karpenter-controller")["urn"],
        "the controller gets AWS credentials through Pod Identity",
    )
    need(controller, r.one("aws:sqs/queue:Queue", "karpenter-interruption")["urn"], "the controller polls it")
    need(controller, system_nodes["urn"], "the controller runs on the system nodes")

    # 4. System nodes before their IAM, the NAT routes (the controller reaches EC2 through them) and the cluster.
    for urn in _named(r, ATTACHMENT, "cluster-system-node-"):
        need(system_nodes["urn"], urn, "the system nodes keep their permissions until they are gone")
    for x in r.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation"):
        if x["name"].startswith("network-private-"):
            need(system_nodes["urn"], x["urn"], "the controller on the system nodes calls AWS through the NAT route")
    for x in r.of_type("aws:ec2/natGateway:NatGateway"):
        need(system_nodes["urn"], x["urn"], "the NAT gateway is the private subnets' only way to AWS APIs")
    need(system_nodes["urn"], control_plane["urn"], "a node group belongs to its cluster")

    # 5. Volumes: a claim goes while the EBS CSI controller (and its permissions) can still delete or release it.
    ebs_csi = r.one("aws:eks/addon:Addon", "cluster-aws-ebs-csi-driver")["urn"]
    for x in r.of_type("kubernetes:core/v1:PersistentVolumeClaim"):
        need(x["urn"], ebs_csi, "the EBS CSI controller deletes (or releases) the claim's volume")
    for urn in _named(r, ATTACHMENT, "cluster-ebs-csi-"):
        need(ebs_csi, urn, "the EBS CSI controller keeps its permissions until it is gone")

    # 6. Disruption budgets before the pools their pods run on: on destroy a budget never holds a drain up.
    budgets = [x for x in r.resources if x["type"] == "kubernetes:policy/v1:PodDisruptionBudget"]
    for budget in budgets:
        selector = budget["inputs"]["spec"]["selector"]["matchLabels"]
        for x in r.resources:
            if not is_kubernetes_object(x) or x["inputs"].get("kind") not in ("RayService", "RayCluster"):
                continue
            cluster = x["inputs"]["spec"].get("rayClusterConfig", x["inputs"]["spec"])
            for group in cluster.get("workerGroupSpecs") or []:
                labels = (group["template"].get("metadata") or {}).get("labels") or {}
                if selector.items() <= labels.items():
                    for pool in sorted(set(_pool_selectors(group))):
                        if pool in pools:
                            need(budget["urn"], pools[pool]["urn"], "a budget must not outlive its pods' pool")

    # 7. GCS fault tolerance: the head pods go first (the RayService), while the store, its token, their security
    # group and what gives it to them still exist (the VPC resource controller deletes a pod's branch interface with
    # the cluster role's permission); the store before the subnets it lives in.
    for group in r.of_type("aws:elasticache/replicationGroup:ReplicationGroup"):
        for rs_record in r.of_type("kubernetes:ray.io/v1:RayService"):
            need(rs_record["urn"], group["urn"], "the head persists the GCS to the store until it is gone")
            for typ, name in [
                ("kubernetes:vpcresources.k8s.aws/v1beta1:SecurityGroupPolicy", "serving-gcs-security-group-policy"),
                ("kubernetes:core/v1:Secret", "serving-gcs-auth-token"),
                ("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "cluster-vpc-resource-controller"),
                ("aws:ec2/securityGroup:SecurityGroup", "serving-gcs-client-sg"),
            ]:
                need(rs_record["urn"], r.one(typ, name)["urn"], "the head pods' branch interfaces use it")
        for x in r.of_type("aws:ec2/subnet:Subnet"):
            if x["name"].startswith("network-private-"):
                need(group["urn"], x["urn"], "the store's nodes live in the private subnets")

    # 8. The cluster before the network it lives in.  The control plane is created inside the remote eks:index:Cluster
    # component, whose provider gives its children the dependencies of the component's inputs (subnets, VPC).
    (eks_component,) = r.of_type("eks:index:Cluster")
    need(system_nodes["urn"], eks_component["urn"], "a node group belongs to its cluster")
    for x in [*r.of_type("aws:ec2/subnet:Subnet"), *r.of_type("aws:ec2/vpc:Vpc")]:
        need(eks_component["urn"], x["urn"], "the cluster's ENIs and security group live in the VPC")

    # 7. The serving image the stack builds: the RayService's pods run it, so they go before the build record and the
    # repository that holds the image; a build keeps its permissions, cache rule and cache until it is gone.
    (rs,) = r.of_type("kubernetes:ray.io/v1:RayService")
    for build in r.of_type(IMAGE_BUILD):
        need(rs["urn"], build["urn"], "its pods run the image the build made")
        need(rs["urn"], r.one("aws:ecr/repository:Repository", "serving-image")["urn"], "its pods pull the image")
        need(build["urn"], r.one("aws:iam/rolePolicy:RolePolicy", "serving-build-inline")["urn"], "build's rights")
        need(build["urn"], r.one("aws:ecr/repository:Repository", "serving-build-base")["urn"], "the cached base")
        for x in r.of_type("aws:ecr/pullThroughCacheRule:PullThroughCacheRule"):
            need(build["urn"], x["urn"], "the build pulls its base through the rule")
    return problems


def test_destroy_order_is_explicit_in_the_graph(each_stack: Render) -> None:
    assert destroy_order_problems(each_stack) == []


def test_destroy_order_holds_with_the_benchmark_job() -> None:
    # The benchmark Job (benchmarkEnabled) runs on a Karpenter pool too: it must go before that pool.
    r = rendered("dev", benchmarkEnabled="true")
    jobs = [x for x in r.resources if x["type"] == "kubernetes:batch/v1:Job"]
    assert jobs and all(list(_pool_selectors(j["inputs"])) for j in jobs)
    assert destroy_order_problems(r) == []


def _without_edge(r: Render, from_name: str, to_fragment: str) -> Render:
    broken = copy.deepcopy(r.resources)
    (x,) = [x for x in broken if x["name"] == from_name and any(to_fragment in d for d in x["dependencies"])]
    before = len(x["dependencies"])
    x["dependencies"] = [d for d in x["dependencies"] if to_fragment not in d]
    assert len(x["dependencies"]) < before, f"{from_name} had no edge to {to_fragment}"
    return Render(r.stack, r.config, broken, r.outputs, 0.0)


@pytest.mark.parametrize(
    ("from_name", "to_fragment", "expected"),
    [
        (
            "serving-rayservice",
            "NodePool::karpenter-nodepool-inf2",
            "serving-rayservice would not be deleted before karpenter-nodepool-inf2: its pods must be gone",
        ),
        (
            "openwebui-deployment",
            "NodePool::karpenter-nodepool-default",
            "openwebui-deployment would not be deleted before karpenter-nodepool-default",
        ),
        (
            "cluster-system",
            "RouteTableAssociation::network-private-",
            "cluster-system would not be deleted before network-private-",
        ),
        (
            "openwebui-data",
            "Addon::cluster-aws-ebs-csi-driver",
            "openwebui-data would not be deleted before cluster-aws-ebs-csi-driver",
        ),
        (
            "serving-workers-pdb",
            "NodePool::karpenter-nodepool-inf2",
            "serving-workers-pdb would not be deleted before karpenter-nodepool-inf2: a budget must not outlive",
        ),
        (
            "serving-build",
            "RolePolicy::serving-build-inline",
            "serving-build would not be deleted before serving-build-inline: build's rights",
        ),
    ],
)
def test_destroy_order_check_fails_on_a_missing_edge(
    dev: Render, from_name: str, to_fragment: str, expected: str
) -> None:
    problems = destroy_order_problems(_without_edge(dev, from_name, to_fragment))
    # only the cut edge (and what only it implied) is reported
    assert problems and all(p.startswith(f"{from_name} would not be deleted before") for p in problems), problems
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("to_fragment", "expected"),
    [
        ("Secret::serving-gcs-auth-token", "serving-gcs-auth-token: the head pods"),
        ("SecurityGroupPolicy::serving-gcs-security-group-policy", "serving-gcs-security-group-policy: the head pods"),
        ("RolePolicyAttachment::cluster-vpc-resource-controller", "cluster-vpc-resource-controller: the head pods"),
    ],
)
def test_destroy_order_check_fails_when_the_head_could_outlive_its_gcs_store(
    prod: Render, to_fragment: str, expected: str
) -> None:
    problems = destroy_order_problems(_without_edge(prod, "serving-rayservice", to_fragment))
    assert any(expected in p for p in problems), problems


def test_destroy_order_check_fails_on_a_pool_nobody_creates(dev: Render) -> None:
    broken = copy.deepcopy(dev.resources)
    (dep,) = [x for x in broken if x["name"] == "openwebui-deployment"]
    dep["inputs"]["spec"]["template"]["spec"]["nodeSelector"][NODEPOOL_LABEL] = "gpu"
    problems = destroy_order_problems(Render(dev.stack, dev.config, broken, dev.outputs, 0.0))
    assert problems == ["openwebui-deployment selects NodePool 'gpu', which the stack does not create"]


def test_no_false_delete_order_edge_on_the_control_plane(each_stack: Render) -> None:
    # The NAT routes are for nodes; the control plane (~10 min, the longest create) must not wait for them.
    (control_plane,) = each_stack.of_type("aws:eks/cluster:Cluster")
    graph = edges(each_stack)
    for x in each_stack.of_type("aws:ec2/natGateway:NatGateway"):
        assert not depends_on(each_stack, control_plane["urn"], x["urn"], graph)


def _timeout_minutes(value: str) -> float:
    units = {"s": 1 / 60, "m": 1.0, "h": 60.0}
    return float(value[:-1]) * units[value[-1]]


def test_node_pools_and_classes_wait_long_enough_for_their_nodes_to_go(each_stack: Render) -> None:
    for x in [*each_stack.of_type(NODEPOOL), *each_stack.of_type(NODECLASS)]:
        assert x["customTimeouts"].get("delete") == NODE_DELETE_TIMEOUT, x["name"]
    # above the Kubernetes provider's 10-minute default: a drain plus an EC2 termination can take longer
    assert _timeout_minutes(NODE_DELETE_TIMEOUT) >= 20


def test_nothing_creates_a_load_balancer(each_stack: Render) -> None:
    # A LoadBalancer Service or an Ingress would leave an ELB (and its ENIs and security group) that no Pulumi
    # resource owns; everything is reached through kubectl port-forward instead.
    for m in each_stack.manifests():
        assert m["kind"] != "Ingress", m["metadata"]
        if m["kind"] == "Service":
            assert m.get("spec", {}).get("type", "ClusterIP") == "ClusterIP", m["metadata"]
    assert not [x for x in each_stack.resources if x["type"].startswith(("aws:lb/", "aws:elb/", "aws:alb/"))]
    charts = {x["inputs"].get("chart") for x in each_stack.of_type(RELEASE)}
    assert not [c for c in charts if c and "load-balancer" in str(c)]
    # The RayService's serve and head Services are created by KubeRay: ClusterIP unless the spec asks otherwise.
    for rs in each_stack.of_type("kubernetes:ray.io/v1:RayService"):
        spec = rs["inputs"]["spec"]
        assert spec.get("serveService", {}).get("spec", {}).get("type", "ClusterIP") == "ClusterIP"
        head = spec["rayClusterConfig"]["headGroupSpec"]
        assert head.get("serviceType", "ClusterIP") == "ClusterIP"


# ---------------------------------------------------------------------------------------------------------------
# Protection: data that hurts to lose is retained in prod (so `pulumi destroy` still completes), never in dev.
# ---------------------------------------------------------------------------------------------------------------


def _retained(r: Render) -> set[tuple[str, str]]:
    return {(x["type"], x["name"]) for x in r.resources if x["retainOnDelete"]}


PROD_RETAINED = {
    ("aws:s3/bucket:Bucket", "serving-artifacts"),
    # the kept bucket keeps its encryption, public access block, TLS-only policy and the rest of its settings
    ("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "serving-artifacts"),
    ("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "serving-artifacts"),
    ("aws:s3/bucketOwnershipControls:BucketOwnershipControls", "serving-artifacts"),
    ("aws:s3/bucketPolicy:BucketPolicy", "serving-artifacts"),
    ("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "serving-artifacts"),
    ("kubernetes:core/v1:PersistentVolumeClaim", "openwebui-data"),
    # the metrics history (docs/observability.md), on gp3-retain like the chat data
    ("kubernetes:core/v1:PersistentVolumeClaim", "monitoring-prometheus-data"),
}


def test_prod_retains_the_artifact_bucket_and_the_chat_volume(prod: Render) -> None:
    assert _retained(prod) == PROD_RETAINED
    assert prod.one("aws:s3/bucket:Bucket", "serving-artifacts")["inputs"]["forceDestroy"] is False
    # The claim alone is not the data: the namespace's deletion deletes it anyway, so the volume's class must
    # reclaim with Retain for the EBS volume to survive.
    pvc = prod.one("kubernetes:core/v1:PersistentVolumeClaim", "openwebui-data")
    assert pvc["inputs"]["spec"]["storageClassName"] == RETAINED_STORAGE_CLASS
    classes = {m["metadata"]["name"]: m for m in prod.manifests() if m["kind"] == "StorageClass"}
    assert classes[RETAINED_STORAGE_CLASS]["reclaimPolicy"] == "Retain"


def test_dev_retains_nothing_and_deletes_its_data(dev: Render) -> None:
    assert _retained(dev) == set()
    assert dev.one("aws:s3/bucket:Bucket", "serving-artifacts")["inputs"]["forceDestroy"] is True
    pvc = dev.one("kubernetes:core/v1:PersistentVolumeClaim", "openwebui-data")
    classes = {m["metadata"]["name"]: m for m in dev.manifests() if m["kind"] == "StorageClass"}
    assert classes[pvc["inputs"]["spec"]["storageClassName"]]["reclaimPolicy"] == "Delete"
    assert RETAINED_STORAGE_CLASS not in classes


def test_protection_follows_the_environment_not_the_stack_name() -> None:
    # environment is the config that decides; a dev-named stack configured as prod protects like prod
    r = rendered("prod", environment="dev", publicAccessCidrs='["0.0.0.0/0"]')
    assert _retained(r) == set()


def test_nothing_is_protected_so_destroy_never_refuses(each_stack: Render) -> None:
    # `protect` makes `pulumi destroy` fail; retained resources are left behind instead, and the ECR repositories
    # are emptied with the stack so they cannot stop a destroy halfway.
    assert [x["name"] for x in each_stack.resources if x["protect"]] == []
    assert each_stack.one("aws:ecr/repository:Repository", "serving-image")["inputs"]["forceDelete"] is True


def test_built_images_and_the_base_cache_go_with_the_stack_in_both_environments(each_stack: Render) -> None:
    # The images are rebuilt by the next `pulumi up` (~11 min, beside the cluster) and the cache is a copy of a public
    # image, so neither is kept, in dev or in prod: both repositories are force-deleted with their images, and the
    # cache rule, the builder, its logs and its sources go too (prod keeps the artifact bucket, not the sources in it).
    repos = each_stack.of_type("aws:ecr/repository:Repository")
    assert {x["name"] for x in repos} == {"serving-image", "serving-build-base"}
    assert all(x["inputs"]["forceDelete"] is True and not x["retainOnDelete"] for x in repos)
    for typ in (
        IMAGE_BUILD,
        "aws:ecr/pullThroughCacheRule:PullThroughCacheRule",
        "aws:codebuild/project:Project",
        "aws:cloudwatch/logGroup:LogGroup",
        "aws:s3/bucketObjectv2:BucketObjectv2",
    ):
        (x,) = each_stack.of_type(typ)
        assert not x["retainOnDelete"] and not x["protect"], typ


def test_retention_check_can_fail(prod: Render) -> None:
    broken = copy.deepcopy(prod.resources)
    for x in broken:
        if x["name"] == "serving-artifacts" and x["type"] == "aws:s3/bucket:Bucket":
            x["retainOnDelete"] = False
    assert _retained(Render(prod.stack, prod.config, broken, prod.outputs, 0.0)) != PROD_RETAINED
