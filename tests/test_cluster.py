"""Cluster: API auth, encryption, logs, endpoint CIDRs, access entries, add-ons, system node group, storage class."""

from __future__ import annotations

import json

from infra import tokens
from infra.cluster import ADDONS_AFTER_NODES, ADDONS_BEFORE_NODES, CLUSTER_ADMIN_POLICY
from tools.render import Render
from workloads.topology import SYSTEM_NODEGROUP, SYSTEM_TAINT_KEY

from .conftest import rendered


def control_plane(r: Render) -> dict:
    (c,) = r.of_type(tokens.EKS_COMPONENT)
    return c


def test_control_plane_security_settings(each_stack: Render) -> None:
    i = control_plane(each_stack)["inputs"]
    assert i["authenticationMode"] == "API"
    assert i["enabledClusterLogTypes"] == ["api", "audit", "authenticator"]
    assert i["endpointPrivateAccess"] is True
    assert i["createOidcProvider"] is True
    assert i["skipDefaultNodeGroup"] is True
    assert i["bootstrapSelfManagedAddons"] is False
    assert i["version"] == each_stack.config["eks-neuron-llm:clusterVersion"]


def test_secrets_are_encrypted_with_a_rotating_key(each_stack: Render) -> None:
    (key,) = each_stack.of_type("aws:kms/key:Key")
    assert key["inputs"]["enableKeyRotation"] is True
    assert control_plane(each_stack)["propertyDependencies"]["encryptionConfigKeyArn"] == [key["urn"]]


def test_public_endpoint_is_limited_to_the_configured_cidrs(dev: Render, prod: Render) -> None:
    assert control_plane(dev)["inputs"]["publicAccessCidrs"] == ["0.0.0.0/0"]
    assert control_plane(prod)["inputs"]["publicAccessCidrs"] == ["198.51.100.0/24"]


def test_admin_principals_get_cluster_admin_access_entries_and_nobody_else() -> None:
    arns = ["arn:aws:iam::123456789012:role/Admin", "arn:aws:iam::123456789012:user/alice"]
    r = rendered("dev", adminPrincipalArns=json.dumps(arns))
    # STANDARD entries are people; the Karpenter node role's EC2_LINUX entry is tested in test_karpenter.py
    entries = [e for e in r.of_type(tokens.EKS_ACCESS_ENTRY) if e["inputs"]["type"] != "EC2_LINUX"]
    assert sorted(e["inputs"]["principalArn"] for e in entries) == sorted(arns)
    assert all(e["inputs"]["type"] == "STANDARD" for e in entries)
    policies = r.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    assert len(policies) == 2
    assert all(p["inputs"]["policyArn"] == CLUSTER_ADMIN_POLICY for p in policies)
    assert all(p["inputs"]["accessScope"] == {"type": "cluster"} for p in policies)
    # none for the deploying principal: EKS gives the creator one already
    assert [e for e in rendered("dev").of_type(tokens.EKS_ACCESS_ENTRY) if e["inputs"]["type"] != "EC2_LINUX"] == []


def test_managed_addons_are_all_there_pinned_and_configured(dev: Render) -> None:
    # the cluster's own add-ons (observability adds amazon-cloudwatch-observability, tested in its own file)
    addons = {a["inputs"]["addonName"]: a for a in dev.of_type(tokens.EKS_ADDON) if a["name"].startswith("cluster-")}
    assert set(addons) == {*ADDONS_BEFORE_NODES, *ADDONS_AFTER_NODES}
    assert set(addons) == {"vpc-cni", "coredns", "kube-proxy", "eks-pod-identity-agent", "aws-ebs-csi-driver"}
    for a in addons.values():
        assert a["inputs"]["addonVersion"], a["name"]
    assert json.loads(addons["vpc-cni"]["inputs"]["configurationValues"]) == {"enableNetworkPolicy": "true"}
    (assoc,) = addons["aws-ebs-csi-driver"]["inputs"]["podIdentityAssociations"]
    assert assoc["serviceAccount"] == "ebs-csi-controller-sa"
    role = next(r for r in dev.of_type(tokens.IAM_ROLE) if r["name"].endswith("ebs-csi"))
    trust = json.loads(role["inputs"]["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(trust["Statement"][0]["Action"]) == ["sts:AssumeRole", "sts:TagSession"]


def test_system_node_group_spans_every_zone_and_is_reserved_for_system_pods(each_stack: Render) -> None:
    (ng,) = each_stack.of_type(tokens.EKS_NODE_GROUP)
    i = ng["inputs"]
    assert i["nodeGroupName"] == SYSTEM_NODEGROUP
    assert i["amiType"].startswith("AL2023_x86_64")
    assert i["scalingConfig"]["minSize"] >= 2
    assert i["subnetIds"] == each_stack.outputs["privateSubnetIds"]
    assert i["taints"] == [{"key": SYSTEM_TAINT_KEY, "value": "true", "effect": "NO_SCHEDULE"}]
    assert i["instanceTypes"] == [each_stack.config["eks-neuron-llm:systemNodeInstanceType"]]


def test_system_nodes_require_imdsv2_and_encrypt_their_root_volume(each_stack: Render) -> None:
    (lt,) = each_stack.of_type("aws:ec2/launchTemplate:LaunchTemplate")
    meta = lt["inputs"]["metadataOptions"]
    assert meta["httpTokens"] == "required"
    assert meta["httpPutResponseHopLimit"] <= 2
    (disk,) = lt["inputs"]["blockDeviceMappings"]
    assert disk["ebs"]["encrypted"] == "true" and disk["ebs"]["volumeType"] == "gp3"
    assert disk["ebs"]["volumeSize"] == int(each_stack.config["eks-neuron-llm:systemNodeDiskGiB"])


def test_system_node_role_has_exactly_the_worker_policies(dev: Render) -> None:
    role = next(r for r in dev.of_type(tokens.IAM_ROLE) if r["name"].endswith("system-node"))
    attached = {
        a["inputs"]["policyArn"].rsplit("/", 1)[-1]
        for a in dev.of_type(tokens.IAM_POLICY_ATTACHMENT)
        if role["urn"] in a["dependencies"]
    }
    assert attached == {
        "AmazonEKSWorkerNodePolicy",
        "AmazonEKS_CNI_Policy",
        "AmazonEC2ContainerRegistryPullOnly",
        "AmazonSSMManagedInstanceCore",
    }


def test_default_storage_class_is_encrypted_gp3(dev: Render) -> None:
    (sc,) = [m for m in dev.manifests() if m["kind"] == "StorageClass"]
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert sc["provisioner"] == "ebs.csi.aws.com"
    assert sc["parameters"]["type"] == "gp3" and sc["parameters"]["encrypted"] == "true"
    assert sc["volumeBindingMode"] == "WaitForFirstConsumer"


def test_every_aws_resource_carries_the_stack_tags(each_stack: Render) -> None:
    (provider,) = each_stack.of_type("pulumi:providers:aws")
    tags = json.loads(provider["inputs"]["defaultTags"])["tags"]
    assert tags["project"] == "eks-neuron-llm" and tags["stack"] == each_stack.stack
    assert provider["inputs"]["region"] == each_stack.outputs["region"]
    for r in each_stack.resources:
        if r["type"].startswith("aws:") and r.get("createdBy") is None:
            assert r["provider"] and r["provider"].startswith(provider["urn"]), r["urn"]
