"""IAM building blocks shared by the components that own roles (each component keeps its own policies beside it)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import pulumi
import pulumi_aws as aws

PolicyDocument = dict[str, Any]


def managed_policy_arn(name: str) -> str:
    """ARN of an AWS managed policy (commercial partition: the only one that sells inf2 and trn1)."""
    return f"arn:aws:iam::aws:policy/{name}"


def trust_policy(service: str, actions: Sequence[str] = ("sts:AssumeRole",)) -> PolicyDocument:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": service}, "Action": list(actions)},
        ],
    }


# EKS Pod Identity: the agent assumes the role on behalf of a service account and tags the session with it.
POD_IDENTITY_TRUST: PolicyDocument = trust_policy("pods.eks.amazonaws.com", ("sts:AssumeRole", "sts:TagSession"))
EC2_TRUST: PolicyDocument = trust_policy("ec2.amazonaws.com")
# The AWS managed policies of a node's role: the system node group's and the nodes Karpenter launches alike.
NODE_ROLE_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryPullOnly",
    "AmazonSSMManagedInstanceCore",
)


def to_json(document: PolicyDocument) -> str:
    return json.dumps(document, sort_keys=True)


def role(
    name: str,
    *,
    trust: PolicyDocument,
    managed: Sequence[str] = (),
    inline: pulumi.Input[str] | None = None,
    description: str,
    parent: pulumi.Resource,
) -> aws.iam.Role:
    """A role with its managed-policy attachments and, optionally, one inline policy (JSON)."""
    return role_with_policies(
        name, trust=trust, managed=managed, inline=inline, description=description, parent=parent
    ).role


class RoleWithPolicies(NamedTuple):
    role: aws.iam.Role
    # The attachments (and inline policy): depend on these, not only on the role, when the role must carry its
    # permissions before the user starts and (on destroy) keep them until the user is gone.
    policies: tuple[pulumi.Resource, ...]


def role_with_policies(
    name: str,
    *,
    trust: PolicyDocument | pulumi.Output[PolicyDocument],
    managed: Sequence[str] = (),
    inline: pulumi.Input[str] | None = None,
    description: str,
    parent: pulumi.Resource,
) -> RoleWithPolicies:
    child = pulumi.ResourceOptions(parent=parent)
    assume = trust.apply(to_json) if isinstance(trust, pulumi.Output) else to_json(trust)
    r = aws.iam.Role(name, assume_role_policy=assume, description=description, opts=child)
    policies: list[pulumi.Resource] = []
    for policy in managed:
        policies.append(
            aws.iam.RolePolicyAttachment(
                f"{name}-{policy}", role=r.name, policy_arn=managed_policy_arn(policy), opts=child
            )
        )
    if inline is not None:
        policies.append(aws.iam.RolePolicy(f"{name}-inline", role=r.id, policy=inline, opts=child))
    return RoleWithPolicies(r, tuple(policies))


def node_role(name: str, *, description: str, parent: pulumi.Resource) -> RoleWithPolicies:
    """The role of EKS worker nodes (EC2 trust, ``NODE_ROLE_POLICIES``): the system node group's and Karpenter's."""
    return role_with_policies(name, trust=EC2_TRUST, managed=NODE_ROLE_POLICIES, description=description, parent=parent)


class PodIdentityRole(NamedTuple):
    role: aws.iam.Role
    association: aws.eks.PodIdentityAssociation
    # What a pod of the service account must be created after: the association (Pod Identity injects credentials
    # only into pods created after it exists) and the role's policies (its first AWS call needs them; on destroy
    # they stay until the pod is gone).
    ready: tuple[pulumi.Resource, ...]


def pod_identity_role(
    name: str,
    *,
    cluster_name: pulumi.Input[str],
    namespace: pulumi.Input[str],
    service_account: pulumi.Input[str],
    inline: pulumi.Input[str] | None = None,
    description: str,
    parent: pulumi.Resource,
) -> PodIdentityRole:
    """A role a Kubernetes service account assumes through EKS Pod Identity, with its association."""
    r, policies = role_with_policies(
        name, trust=POD_IDENTITY_TRUST, inline=inline, description=description, parent=parent
    )
    association = aws.eks.PodIdentityAssociation(
        name,
        cluster_name=cluster_name,
        namespace=namespace,
        service_account=service_account,
        role_arn=r.arn,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return PodIdentityRole(r, association, (association, *policies))
