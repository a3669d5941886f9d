"""Karpenter: IAM as upstream's v1 CloudFormation scoped to this stack, interruption queue and rules, charts, graph."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from infra import tokens
from infra.iam import NODE_ROLE_POLICIES
from infra.karpenter import INTERRUPTION_EVENTS, KARPENTER_VERSION, Scope, controller_policies
from tools.graph import depends_on, edges
from tools.render import ACCOUNT, Render
from workloads import nodepools
from workloads.topology import ACCELERATOR_POOLS, DEFAULT_POOL, SYSTEM_NODEGROUP, SYSTEM_TAINT_KEY

from .conftest import REPO, rendered

CFN = REPO / "schemas" / "iam" / "karpenter-cloudformation.yaml"


def release(r: Render, name: str) -> dict[str, Any]:
    (rel,) = [x for x in r.of_type(tokens.HELM_RELEASE) if x["inputs"].get("name") == name]
    return rel


def one(r: Render, typ: str, name: str) -> dict[str, Any]:
    return r.one(typ, name)


def role(r: Render, suffix: str) -> dict[str, Any]:
    (x,) = [x for x in r.of_type(tokens.IAM_ROLE) if x["name"] == f"karpenter-{suffix}"]
    return x


# ---------------------------------------------------------------------------------------------------------------
# Charts.
# ---------------------------------------------------------------------------------------------------------------


def test_crd_and_controller_charts_are_pinned_from_the_public_oci_registry(each_stack: Render) -> None:
    crd = release(each_stack, "karpenter-crd")["inputs"]
    ctl = release(each_stack, "karpenter")["inputs"]
    assert crd["chart"] == "oci://public.ecr.aws/karpenter/karpenter-crd"
    assert ctl["chart"] == "oci://public.ecr.aws/karpenter/karpenter"
    assert crd["version"] == ctl["version"] == KARPENTER_VERSION == "1.14.1"
    assert crd["namespace"] == ctl["namespace"] == "kube-system"
    # the CRDs have one owner: the karpenter-crd release
    assert ctl["skipCrds"] is True


def test_controller_settings_point_at_this_cluster_and_its_queue(each_stack: Render) -> None:
    values = release(each_stack, "karpenter")["inputs"]["values"]
    (eks,) = each_stack.of_type(tokens.EKS_CLUSTER)
    (queue,) = each_stack.of_type("aws:sqs/queue:Queue")
    assert values["settings"] == {
        "clusterName": each_stack.outputs["clusterName"],
        "clusterEndpoint": eks["inputs"]["endpoint"],
        "interruptionQueue": queue["inputs"]["name"],
    }
    assert each_stack.outputs["interruptionQueueName"] == queue["inputs"]["name"]


def test_controller_runs_two_replicas_with_a_pdb_on_the_system_nodes(dev: Render) -> None:
    values = release(dev, "karpenter")["inputs"]["values"]
    assert values["replicas"] == 2
    assert values["podDisruptionBudget"]["maxUnavailable"] == 1
    terms = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    (term,) = terms
    assert {"key": "eks.amazonaws.com/nodegroup", "operator": "In", "values": [SYSTEM_NODEGROUP]} in term[
        "matchExpressions"
    ]
    assert {"key": "karpenter.sh/nodepool", "operator": "DoesNotExist"} in term["matchExpressions"]
    assert any(t["key"] == SYSTEM_TAINT_KEY for t in values["tolerations"])


# ---------------------------------------------------------------------------------------------------------------
# Graph.
# ---------------------------------------------------------------------------------------------------------------


def test_controller_waits_for_its_crds_its_pod_identity_and_the_system_nodes(each_stack: Render) -> None:
    ctl = release(each_stack, "karpenter")
    direct = set(ctl["dependencies"])
    assert release(each_stack, "karpenter-crd")["urn"] in direct
    assoc = each_stack.one(tokens.EKS_POD_IDENTITY, "karpenter-controller")
    assert assoc["urn"] in direct
    (ng,) = each_stack.of_type(tokens.EKS_NODE_GROUP)
    assert ng["urn"] in direct
    # its IAM outlives it on destroy (it terminates nodes while pools and classes are deleted)
    policies = [
        x["urn"]
        for x in each_stack.of_type(tokens.IAM_POLICY_ATTACHMENT)
        if x["name"].startswith("karpenter-controller-")
    ]
    assert len(policies) == 4 and set(policies) <= direct


def test_node_pools_depend_on_their_node_class_and_both_on_the_crd_release(each_stack: Render) -> None:
    graph = edges(each_stack)
    crd = release(each_stack, "karpenter-crd")["urn"]
    classes = {x["inputs"]["metadata"]["name"]: x["urn"] for x in each_stack.of_type(tokens.NODE_CLASS)}
    pools = each_stack.of_type(tokens.NODE_POOL)
    assert {p["inputs"]["metadata"]["name"] for p in pools} == {DEFAULT_POOL, *ACCELERATOR_POOLS}
    for p in pools:
        ref = p["inputs"]["spec"]["template"]["spec"]["nodeClassRef"]["name"]
        assert classes[ref] in graph[p["urn"]], p["name"]
        assert depends_on(each_stack, p["urn"], crd, graph)
    for urn in classes.values():
        assert depends_on(each_stack, urn, crd, graph)


def test_accelerator_pools_in_the_render_allow_exactly_the_configured_types() -> None:
    r = rendered(
        "dev",
        inf2InstanceTypes='["inf2.48xlarge"]',
        trn1InstanceTypes='["trn1.2xlarge"]',
        servingPreset="inf2.48xlarge",
    )
    pools = {p["inputs"]["metadata"]["name"]: p["inputs"] for p in r.of_type(tokens.NODE_POOL)}
    assert nodepools.pool_instance_types(pools["inf2"]) == ["inf2.48xlarge"]
    assert nodepools.pool_instance_types(pools["trn1"]) == ["trn1.2xlarge"]
    assert r.outputs["nodePoolNames"] == ["default", "inf2", "trn1"]


def test_network_zones_prefer_zones_that_also_sell_the_pool_types(prod: Render) -> None:
    # us-east-1 in the mocks: inf2.8xlarge (the serving type) in use1-az1/2/4/6, trn1 only in use1-az4/6.  With the
    # trn1 pool's types passed to the network after the serving type, az4 and az6 are preferred; without them the
    # three lowest zone IDs (az1, az2, az4) would be chosen and trn1 nodes could launch in one zone only.
    zones = {s["inputs"]["availabilityZoneId"] for s in prod.of_type(tokens.SUBNET)}
    assert zones == {"use1-az1", "use1-az4", "use1-az6"}


# ---------------------------------------------------------------------------------------------------------------
# AWS side.
# ---------------------------------------------------------------------------------------------------------------


def test_node_role_has_the_worker_policies_and_an_ec2_linux_access_entry(dev: Render) -> None:
    node = role(dev, "node")
    attached = {
        a["inputs"]["policyArn"].rsplit("/", 1)[-1]
        for a in dev.of_type(tokens.IAM_POLICY_ATTACHMENT)
        if node["urn"] in a["dependencies"]
    }
    assert attached == set(NODE_ROLE_POLICIES)
    (entry,) = [e for e in dev.of_type(tokens.EKS_ACCESS_ENTRY) if e["inputs"]["type"] == "EC2_LINUX"]
    assert entry["propertyDependencies"]["principalArn"] == [node["urn"]]
    # every node class names the role (by its physical name, which IAM assigns)
    names = {c["inputs"]["spec"]["role"] for c in dev.of_type(tokens.NODE_CLASS)}
    (name,) = names
    assert name.startswith(node["name"])


def test_controller_role_is_bound_by_pod_identity_to_the_charts_service_account(dev: Render) -> None:
    assoc = dev.one(tokens.EKS_POD_IDENTITY, "karpenter-controller")
    values = release(dev, "karpenter")["inputs"]["values"]
    assert assoc["inputs"]["namespace"] == release(dev, "karpenter")["inputs"]["namespace"]
    assert assoc["inputs"]["serviceAccount"] == values["serviceAccount"]["name"]
    ctl = role(dev, "controller")
    assert assoc["propertyDependencies"]["roleArn"] == [ctl["urn"]]
    trust = json.loads(ctl["inputs"]["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "pods.eks.amazonaws.com"}


def _cfn_statements() -> dict[str, dict[str, Any]]:
    class Loader(yaml.SafeLoader):
        pass

    for tag in ("!Sub", "!Ref", "!GetAtt"):
        Loader.add_constructor(tag, lambda loader, node: loader.construct_scalar(node))  # type: ignore[attr-defined]
    cfn = yaml.load(CFN.read_text(), Loader=Loader)
    out: dict[str, dict[str, Any]] = {}
    for res in cfn["Resources"].values():
        if res["Type"] == "AWS::IAM::ManagedPolicy":
            doc = json.loads(res["Properties"]["PolicyDocument"])
            out.update({s["Sid"]: s for s in doc["Statement"]})
    return out


def _actions(stmt: dict[str, Any]) -> set[str]:
    a = stmt["Action"]
    return {a} if isinstance(a, str) else set(a)


def _controller_statements(r: Render) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for p in r.of_type("aws:iam/policy:Policy"):
        if p["name"].startswith("karpenter-controller-"):
            out.update({s["Sid"]: s for s in json.loads(p["inputs"]["policy"])["Statement"]})
    return out


def test_controller_policy_has_every_upstream_statement_with_the_same_actions(dev: Render) -> None:
    upstream = _cfn_statements()
    ours = _controller_statements(dev)
    # zonal shift is off (settings.enableZonalShift false), so its read permission is not granted
    assert set(upstream) - set(ours) == {"AllowZonalShiftStatusReadOnly"}
    assert set(ours) <= set(upstream)
    for sid, stmt in ours.items():
        assert _actions(stmt) == _actions(upstream[sid]), sid
        assert set(stmt.get("Condition", {})) == set(upstream[sid].get("Condition", {})), sid
    assert "iam:ListInstanceProfiles" in _actions(ours["AllowUnscopedInstanceProfileListAction"])
    assert {"iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile"} <= (
        _actions(ours["AllowScopedInstanceProfileActions"])
    )


def test_controller_policy_is_scoped_to_this_cluster_region_account_node_role_and_queue(dev: Render) -> None:
    ours = _controller_statements(dev)
    text = json.dumps(ours)
    cluster, region = dev.outputs["clusterName"], dev.outputs["region"]
    assert "${" not in text
    assert f"kubernetes.io/cluster/{cluster}" in text
    assert ours["AllowAPIServerEndpointDiscovery"]["Resource"] == f"arn:aws:eks:{region}:{ACCOUNT}:cluster/{cluster}"
    (node_role_name,) = {c["inputs"]["spec"]["role"] for c in dev.of_type(tokens.NODE_CLASS)}
    assert ours["AllowPassingInstanceRole"]["Resource"] == f"arn:aws:iam::{ACCOUNT}:role/{node_role_name}"
    (queue,) = dev.of_type("aws:sqs/queue:Queue")
    assert ours["AllowInterruptionQueueActions"]["Resource"].endswith(f":{queue['inputs']['name']}")
    for stmt in ours.values():
        resources = stmt["Resource"] if isinstance(stmt["Resource"], list) else [stmt["Resource"]]
        for res in resources:
            assert res == "*" or f":{region}:" in res or f"::{ACCOUNT}:" in res, (stmt["Sid"], res)


def test_scope_fills_every_placeholder() -> None:
    docs = controller_policies(Scope("c", "us-east-2", "111122223333", "aws"), "arn:node", "arn:queue")
    text = json.dumps(docs)
    assert "us-east-2" in text and "111122223333" in text and "${" not in text


def test_interruption_queue_is_encrypted_tls_only_and_fed_by_every_rule(dev: Render) -> None:
    (queue,) = dev.of_type("aws:sqs/queue:Queue")
    assert queue["inputs"]["sqsManagedSseEnabled"] is True
    assert queue["inputs"]["messageRetentionSeconds"] == 300
    (qp,) = dev.of_type("aws:sqs/queuePolicy:QueuePolicy")
    stmts = json.loads(qp["inputs"]["policy"])["Statement"]
    deny = [s for s in stmts if s["Effect"] == "Deny"]
    assert deny[0]["Resource"].endswith(f":{queue['inputs']['name']}")
    assert deny == [
        {
            "Sid": "DenyHTTP",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "sqs:*",
            "Resource": deny[0]["Resource"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    ]
    rules = dev.of_type("aws:cloudwatch/eventRule:EventRule")
    patterns = {json.loads(x["inputs"]["eventPattern"])["detail-type"][0] for x in rules}
    assert {dt for _, dt in INTERRUPTION_EVENTS.values()} == patterns
    assert {
        "AWS Health Event",
        "EC2 Spot Instance Interruption Warning",
        "EC2 Instance Rebalance Recommendation",
        "EC2 Instance State-change Notification",
    } <= patterns
    targets = dev.of_type("aws:cloudwatch/eventTarget:EventTarget")
    assert len(targets) == len(rules)
    assert all(t["propertyDependencies"]["arn"] == [queue["urn"]] for t in targets)


def test_the_cluster_security_group_carries_the_discovery_tag(each_stack: Render) -> None:
    (tag,) = each_stack.of_type("aws:ec2/tag:Tag")
    (eks,) = each_stack.of_type(tokens.EKS_COMPONENT)
    assert tag["inputs"]["key"] == nodepools.DISCOVERY_TAG
    assert tag["inputs"]["value"] == each_stack.outputs["clusterName"]
    assert tag["inputs"]["resourceId"].startswith("sg-")
    assert eks["urn"] in tag["propertyDependencies"]["resourceId"]
    for nc in each_stack.of_type(tokens.NODE_CLASS):
        assert nc["inputs"]["spec"]["securityGroupSelectorTerms"] == [
            {"tags": {nodepools.DISCOVERY_TAG: each_stack.outputs["clusterName"]}}
        ]
        assert tag["urn"] in nc["dependencies"]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_private_subnets_carry_the_discovery_tag_the_node_classes_select(stack: str) -> None:
    r = rendered(stack)
    cluster = r.outputs["clusterName"]
    tagged = [s for s in r.of_type(tokens.SUBNET) if (s["inputs"].get("tags") or {}).get("karpenter.sh/discovery")]
    assert tagged and all(s["inputs"]["tags"]["karpenter.sh/discovery"] == cluster for s in tagged)


def test_nodes_karpenter_launches_carry_the_stack_tags(each_stack: Render) -> None:
    (provider,) = each_stack.of_type("pulumi:providers:aws")
    tags = json.loads(provider["inputs"]["defaultTags"])["tags"]
    assert tags["project"] == "eks-neuron-llm"
    for nc in each_stack.of_type(tokens.NODE_CLASS):
        assert nc["inputs"]["spec"]["tags"] == tags
