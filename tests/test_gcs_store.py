"""GCS fault tolerance on the render: prod declares the store (ElastiCache for Valkey) and wires the RayService to it;
dev declares none.  Encryption, the auth token's path, and who may reach the store are checked on the real render."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from infra import gcs_store
from infra.cluster import POD_ENI_VALUES, VPC_RESOURCE_CONTROLLER_POLICY
from tools.render import Render
from workloads import rayservice

from .conftest import rendered

REPLICATION_GROUP = "aws:elasticache/replicationGroup:ReplicationGroup"
SGP = "kubernetes:vpcresources.k8s.aws/v1beta1:SecurityGroupPolicy"
RAYSERVICE = "kubernetes:ray.io/v1:RayService"


def cluster_config(r: Render) -> dict[str, Any]:
    (rs,) = r.of_type(RAYSERVICE)
    spec: dict[str, Any] = rs["inputs"]["spec"]["rayClusterConfig"]
    return spec


def vpc_cni(r: Render) -> dict[str, Any]:
    values: dict[str, Any] = json.loads(
        r.one("aws:eks/addon:Addon", "cluster-vpc-cni")["inputs"]["configurationValues"]
    )
    return values


def test_dev_has_no_store_and_no_pod_security_groups(dev: Render) -> None:
    assert "gcsFaultToleranceOptions" not in cluster_config(dev)
    assert not dev.of_type(REPLICATION_GROUP) and not dev.of_type(SGP)
    assert "env" not in vpc_cni(dev)
    assert not [x for x in dev.resources if x["name"] == "cluster-vpc-resource-controller"]
    head_env = {e["name"] for e in cluster_config(dev)["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    assert rayservice.REDIS_CA_CERT_ENV not in head_env


def test_prod_store_is_encrypted_replicated_and_asks_for_a_token(prod: Render) -> None:
    (group,) = prod.of_type(REPLICATION_GROUP)
    g = group["inputs"]
    assert g["engine"] == "valkey" and g["atRestEncryptionEnabled"] is True
    assert g["transitEncryptionEnabled"] is True and g["transitEncryptionMode"] == "required"
    assert g["authToken"] == "[secret]"  # from the RandomPassword, never in clear
    assert g["numCacheClusters"] == 2 and g["automaticFailoverEnabled"] is True and g["multiAzEnabled"] is True
    assert "numNodeGroups" not in g  # cluster mode off: Ray's GCS talks to one primary
    assert len(g["replicationGroupId"]) <= 40 and g["replicationGroupId"] == g["replicationGroupId"].lower()
    token = prod.one("random:index/randomPassword:RandomPassword", "serving-gcs-auth-token")["inputs"]
    assert token["length"] >= 32 and token["special"] is False  # ElastiCache refuses some punctuation


def test_prod_store_lives_in_the_private_subnets(prod: Render) -> None:
    (group,) = prod.of_type(REPLICATION_GROUP)
    subnets = prod.one("aws:elasticache/subnetGroup:SubnetGroup", "serving-gcs-subnets")
    assert group["inputs"]["subnetGroupName"] == subnets["inputs"]["name"]
    private = {x["urn"] for x in prod.of_type("aws:ec2/subnet:Subnet") if x["name"].startswith("network-private-")}
    used = {u for u in subnets["dependencies"] if "aws:ec2/subnet:Subnet" in u}
    assert used == private and len(private) == 3


def test_only_the_ray_head_pods_security_group_reaches_the_store(prod: Render) -> None:
    (group,) = prod.of_type(REPLICATION_GROUP)
    store_sg = prod.one("aws:ec2/securityGroup:SecurityGroup", "serving-gcs-store-sg")
    client_sg = prod.one("aws:ec2/securityGroup:SecurityGroup", "serving-gcs-client-sg")
    assert group["propertyDependencies"]["securityGroupIds"] == [store_sg["urn"]]
    assert not store_sg["inputs"].get("ingress")  # no inline rules: the one rule below is all there is
    rules = [
        x
        for x in prod.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if x["propertyDependencies"]["securityGroupId"] == [store_sg["urn"]]
    ]
    (rule,) = rules
    assert rule["propertyDependencies"]["referencedSecurityGroupId"] == [client_sg["urn"]]
    assert (rule["inputs"]["fromPort"], rule["inputs"]["toPort"]) == (gcs_store.PORT, gcs_store.PORT)
    assert not rule["inputs"].get("cidrIpv4") and not rule["inputs"].get("cidrIpv6")
    # The client group goes to the head pods (and nothing else) through a SecurityGroupPolicy, beside the cluster
    # security group every node and pod of the cluster has (the one Karpenter discovers).
    (sgp,) = prod.of_type(SGP)
    spec = sgp["inputs"]["spec"]
    assert spec["podSelector"] == {"matchLabels": rayservice.HEAD_LABELS}
    cluster_sg = prod.one("aws:ec2/tag:Tag", "karpenter-cluster-sg-discovery")["inputs"]["resourceId"]
    assert spec["securityGroups"]["groupIds"] == [cluster_sg, rule["inputs"]["referencedSecurityGroupId"]]
    assert client_sg["urn"] in sgp["dependencies"]


def test_the_head_pods_selector_selects_the_head_and_not_the_workers(prod: Render) -> None:
    (sgp,) = prod.of_type(SGP)
    selector = sgp["inputs"]["spec"]["podSelector"]["matchLabels"]
    cluster = cluster_config(prod)
    head_labels = cluster["headGroupSpec"]["template"]["metadata"]["labels"]
    worker_labels = cluster["workerGroupSpecs"][0]["template"]["metadata"]["labels"]
    assert selector.items() <= head_labels.items()
    assert not selector.items() <= worker_labels.items()


def test_prod_turns_pod_security_groups_on_for_the_cluster(prod: Render) -> None:
    values = vpc_cni(prod)
    assert values["enableNetworkPolicy"] == "true"  # kept
    assert values["env"] == POD_ENI_VALUES["env"] and values["init"] == POD_ENI_VALUES["init"]
    attachment = prod.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "cluster-vpc-resource-controller")
    assert attachment["inputs"]["policyArn"] == f"arn:aws:iam::aws:policy/{VPC_RESOURCE_CONTROLLER_POLICY}"
    # The cluster's own role (pulumi-eks made it): its name, taken from the control plane's roleArn.
    (eks,) = prod.of_type("aws:eks/cluster:Cluster")
    assert eks["urn"] in attachment["dependencies"]
    assert "eksRole" in attachment["inputs"]["role"] and "/" not in attachment["inputs"]["role"]


def test_the_rayservice_reads_the_store_the_stack_declares(prod: Render) -> None:
    options = cluster_config(prod)["gcsFaultToleranceOptions"]
    (group,) = prod.of_type(REPLICATION_GROUP)
    (rs,) = prod.of_type(RAYSERVICE)
    assert group["urn"] in rs["propertyDependencies"]["spec"]  # the address is the group's own output
    host = f"master.{group['inputs']['replicationGroupId']}."
    assert options["redisAddress"].startswith(f"rediss://{host}")  # TLS, the primary endpoint
    assert options["redisAddress"].endswith(f".cache.amazonaws.com:{gcs_store.PORT}")
    ref = options["redisPassword"]["valueFrom"]["secretKeyRef"]
    (secret,) = [m for m in prod.manifests() if m["kind"] == "Secret" and m["metadata"]["name"] == ref["name"]]
    assert secret["metadata"]["namespace"] == rayservice.NAMESPACE
    assert secret["stringData"] == {ref["key"]: "[secret]"}
    assert "externalStorageNamespace" not in options  # KubeRay keys the state by RayCluster UID: upgrades never share
    head = cluster_config(prod)["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in head["env"]}
    assert env[rayservice.REDIS_CA_CERT_ENV]["value"] == rayservice.SYSTEM_CA_BUNDLE


def test_the_rayservice_waits_for_the_store_its_token_and_its_security_group(prod: Render) -> None:
    (rs,) = prod.of_type(RAYSERVICE)
    deps = set(rs["dependencies"])
    for typ, name in [
        (REPLICATION_GROUP, "serving-gcs-store"),
        (SGP, "serving-gcs-security-group-policy"),
        ("kubernetes:core/v1:Secret", "serving-gcs-auth-token"),
        ("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "cluster-vpc-resource-controller"),
        ("aws:eks/addon:Addon", "cluster-vpc-cni"),
    ]:
        assert prod.one(typ, name)["urn"] in deps, name


def test_the_store_token_never_appears_in_clear(prod: Render) -> None:
    from tools.render import _hex

    value = _hex("serving-gcs-auth-token", "password", n=32)
    assert value not in json.dumps(prod.resources) + json.dumps(prod.outputs)
    serve_config = yaml.safe_load(prod.one(RAYSERVICE, "serving-rayservice")["inputs"]["spec"]["serveConfigV2"])
    assert "password" not in json.dumps(serve_config)


def test_a_dev_stack_may_turn_it_on_and_prod_off() -> None:
    assert rendered("dev", gcsFaultTolerance="true").of_type(REPLICATION_GROUP)
    assert not rendered("prod", gcsFaultTolerance="false").of_type(REPLICATION_GROUP)


@pytest.mark.parametrize(
    ("cluster", "expected"),
    [
        ("eks-neuron-llm-prod", "eks-neuron-llm-prod-gcs"),
        ("A" * 38, "a" * 36 + "-gcs"),
        ("abc-" + "d" * 34, "abc-" + "d" * 32 + "-gcs"),
    ],
)
def test_replication_group_ids_fit_elasticache_limits(cluster: str, expected: str) -> None:
    got = gcs_store.replication_group_id(cluster)
    assert got == expected and len(got) <= 40 and "--" not in got


def test_the_security_group_policy_schema_catches_a_wrong_field(prod: Render) -> None:
    from tools.schemas import custom_resource_problems

    (sgp,) = [m for m in prod.manifests() if m["kind"] == "SecurityGroupPolicy"]
    assert custom_resource_problems(sgp) == []
    typo = {**sgp, "spec": {**sgp["spec"], "securityGroup": sgp["spec"]["securityGroups"]}}
    del typo["spec"]["securityGroups"]
    assert any("securityGroup" in p for p in custom_resource_problems(typo))
    empty = {**sgp, "spec": {**sgp["spec"], "securityGroups": {"groupIds": []}}}
    assert custom_resource_problems(empty)
