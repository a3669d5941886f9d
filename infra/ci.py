"""GitHub Actions bootstrap: the GitHub OIDC identity provider and the two roles the workflows assume.

Created only when ``eks-neuron-llm:githubRepository`` names a repository.  Both roles trust tokens minted by GitHub
for that repository only, with audience ``sts.amazonaws.com``:

- the *preview* role (``.github/workflows/preview.yml``) is assumable from pull-request workflows and reads
  metadata only: describe/list/get calls in the stack's region, IAM reads inside the account, AWS's public EKS AMI
  parameters (the program checks the pinned AMI release, infra/ami.py), and the EKS view access policy.  It can read
  no object data, no parameter or secret of the account, and it can change nothing.
- the *deploy* role (``deploy.yml``) is assumable from the ``main`` branch and from jobs in the ``prod`` GitHub
  environment (which has required reviewers).  Deploying this stack creates IAM roles, EKS, EC2, KMS, SQS,
  EventBridge, S3, ECR and CodeBuild resources and runs the serving image build (``infra/image_build.py`` starts it
  with these credentials), so it needs broad rights: every action of those services, but only in the stack's
  region, and IAM actions only on roles, policies, instance profiles and OIDC providers of this account.
  Because it can create and attach IAM roles it is administrator-equivalent inside the account; the protection is
  who can trigger it (main, or the reviewed ``prod`` environment), not the policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra import iam
from infra.config import CiConfig

GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
GITHUB_OIDC_URL = f"https://{GITHUB_OIDC_HOST}"
STS_AUDIENCE = "sts.amazonaws.com"
PROD_ENVIRONMENT = "prod"  # the GitHub environment of deploy.yml's prod job; its reviewers gate prod updates
DEPLOY_SESSION_SECONDS = 7200  # a cold `pulumi up` (EKS, node group, model load) can run past the default hour

EKS_VIEW_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSViewPolicy"
EKS_CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"

# Regional services whose resources the stack declares (and so a deploy creates, updates and deletes).
DEPLOY_SERVICES = (
    "autoscaling",
    "cloudwatch",
    "codebuild",
    "ec2",
    "ecr",
    "eks",
    "elasticloadbalancing",
    "events",
    "kms",
    "logs",
    "s3",
    "sqs",
    "ssm",
)

# Metadata reads a `pulumi preview` makes (the program's invokes, EKS for the Kubernetes provider) and the reads a
# `--refresh` would add; no data-plane reads (objects, messages, parameters' secure values, secrets).
PREVIEW_REGIONAL_READS = (
    "ec2:Describe*",
    "eks:Describe*",
    "eks:List*",
    "kms:DescribeKey",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListAliases",
    "kms:ListResourceTags",
    "sqs:GetQueueAttributes",
    "sqs:ListQueueTags",
    "events:DescribeRule",
    "events:ListTagsForResource",
    "events:ListTargetsByRule",
    "codebuild:BatchGetProjects",
    "ecr:DescribePullThroughCacheRules",
    "ecr:DescribeRepositories",
    "ecr:GetLifecyclePolicy",
    "ecr:GetRepositoryPolicy",
    "ecr:ListTagsForResource",
    "s3:GetBucketPolicy",
    "s3:GetBucketTagging",
    "s3:GetBucketVersioning",
    "s3:GetEncryptionConfiguration",
    "s3:GetLifecycleConfiguration",
    "logs:DescribeLogGroups",
    "logs:ListTagsForResource",
    "cloudwatch:GetDashboard",
    "cloudwatch:ListTagsForResource",
)
# AWS-owned public parameters (no account in the ARN) the program lists at preview: the EKS AMI releases per minor,
# architecture and variant (infra/ami.py).
PUBLIC_AMI_PARAMETERS = "parameter/aws/service/eks/optimized-ami/*"
PUBLIC_PARAMETER_READS = ("ssm:GetParametersByPath",)
PREVIEW_IAM_READS = (
    "iam:GetInstanceProfile",
    "iam:GetOpenIDConnectProvider",
    "iam:GetPolicy",
    "iam:GetPolicyVersion",
    "iam:GetRole",
    "iam:GetRolePolicy",
    "iam:ListAttachedRolePolicies",
    "iam:ListInstanceProfilesForRole",
    "iam:ListRolePolicies",
)
DEPLOY_IAM_ACTIONS = (
    *PREVIEW_IAM_READS,
    "iam:AddRoleToInstanceProfile",
    "iam:AttachRolePolicy",
    "iam:CreateInstanceProfile",
    "iam:CreateOpenIDConnectProvider",
    "iam:CreatePolicy",
    "iam:CreatePolicyVersion",
    "iam:CreateRole",
    "iam:DeleteInstanceProfile",
    "iam:DeleteOpenIDConnectProvider",
    "iam:DeletePolicy",
    "iam:DeletePolicyVersion",
    "iam:DeleteRole",
    "iam:DeleteRolePolicy",
    "iam:DetachRolePolicy",
    "iam:ListPolicyVersions",
    "iam:PassRole",
    "iam:PutRolePolicy",
    "iam:RemoveRoleFromInstanceProfile",
    "iam:TagInstanceProfile",
    "iam:TagOpenIDConnectProvider",
    "iam:TagPolicy",
    "iam:TagRole",
    "iam:UntagRole",
    "iam:UpdateAssumeRolePolicy",
    "iam:UpdateOpenIDConnectProviderThumbprint",
    "iam:UpdateRole",
)
# Service-linked roles AWS creates on first use of EKS, node groups, Auto Scaling, load balancers and spot.
SERVICE_LINKED_ROLE_SERVICES = (
    "autoscaling.amazonaws.com",
    "eks-nodegroup.amazonaws.com",
    "eks.amazonaws.com",
    "elasticloadbalancing.amazonaws.com",
    "spot.amazonaws.com",
)


def subjects_for_preview(repository: str) -> list[str]:
    """OIDC ``sub`` claims allowed to assume the preview role: pull-request workflows of the repository."""
    return [f"repo:{repository}:pull_request"]


def subjects_for_deploy(repository: str) -> list[str]:
    """OIDC ``sub`` claims allowed to assume the deploy role: the main branch and the reviewed prod environment."""
    return [f"repo:{repository}:ref:refs/heads/main", f"repo:{repository}:environment:{PROD_ENVIRONMENT}"]


def github_trust(provider_arn: str, subjects: Sequence[str]) -> iam.PolicyDocument:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{GITHUB_OIDC_HOST}:aud": STS_AUDIENCE,
                        f"{GITHUB_OIDC_HOST}:sub": list(subjects),
                    }
                },
            }
        ],
    }


def _account_iam_resources(account_id: str) -> list[str]:
    return [f"arn:aws:iam::{account_id}:{kind}/*" for kind in ("role", "policy", "instance-profile", "oidc-provider")]


def preview_policy(account_id: str, region: str) -> iam.PolicyDocument:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadStackMetadataInRegion",
                "Effect": "Allow",
                "Action": list(PREVIEW_REGIONAL_READS),
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:RequestedRegion": region}},
            },
            {
                "Sid": "ReadIamOfThisAccount",
                "Effect": "Allow",
                "Action": list(PREVIEW_IAM_READS),
                "Resource": _account_iam_resources(account_id),
            },
            {
                "Sid": "ReadPublicEksAmiParameters",
                "Effect": "Allow",
                "Action": list(PUBLIC_PARAMETER_READS),
                "Resource": f"arn:aws:ssm:{region}::{PUBLIC_AMI_PARAMETERS}",
            },
        ],
    }


def deploy_policy(account_id: str, region: str) -> iam.PolicyDocument:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ManageStackServicesInRegion",
                "Effect": "Allow",
                "Action": [f"{service}:*" for service in DEPLOY_SERVICES],
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:RequestedRegion": region}},
            },
            {
                "Sid": "ManageIamOfThisAccount",
                "Effect": "Allow",
                "Action": list(DEPLOY_IAM_ACTIONS),
                "Resource": _account_iam_resources(account_id),
            },
            {
                "Sid": "CreateServiceLinkedRoles",
                "Effect": "Allow",
                "Action": "iam:CreateServiceLinkedRole",
                "Resource": f"arn:aws:iam::{account_id}:role/aws-service-role/*",
                "Condition": {"StringEquals": {"iam:AWSServiceName": list(SERVICE_LINKED_ROLE_SERVICES)}},
            },
        ],
    }


@dataclass
class CiAccessArgs:
    """What the CI bootstrap needs; ``__main__.py`` fills it when ``githubRepository`` is set."""

    config: CiConfig
    """The CI section of the stack config (``infra.config``): the GitHub repository the workflows run in."""
    region: str
    """AWS region of the stack (config ``aws:region``): the only region either role may act in."""
    cluster_name: pulumi.Input[str]
    """Name of the EKS cluster (the cluster component's output): both roles get an access entry to it."""


class CiAccess(pulumi.ComponentResource):
    """The GitHub OIDC provider and the preview and deploy roles the workflows assume (see the module docstring).

    Outputs: ``preview_role_arn`` and ``deploy_role_arn`` (the workflows' ``role-to-assume``)."""

    preview_role_arn: pulumi.Output[str]
    deploy_role_arn: pulumi.Output[str]

    def __init__(self, name: str, args: CiAccessArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        if not args.config.enabled:
            raise ValueError("CiAccess needs eks-neuron-llm:githubRepository to be set")
        super().__init__("eks-neuron-llm:infra:CiAccess", name, None, opts)
        repository = args.config.github_repository
        child = pulumi.ResourceOptions(parent=self)

        # IAM validates GitHub's certificate chain itself for this provider, so no thumbprint is pinned here.
        provider = aws.iam.OpenIdConnectProvider(
            f"{name}-github", url=GITHUB_OIDC_URL, client_id_lists=[STS_AUDIENCE], opts=child
        )
        account_id = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self)).account_id

        def make_role(kind: str, subjects: list[str], policy: pulumi.Output[str], seconds: int) -> aws.iam.Role:
            role = aws.iam.Role(
                f"{name}-{kind}",
                description=f"GitHub Actions {kind} of stack {pulumi.get_stack()} from {repository}",
                assume_role_policy=provider.arn.apply(lambda arn: iam.to_json(github_trust(arn, subjects))),
                max_session_duration=seconds,
                opts=child,
            )
            aws.iam.RolePolicy(f"{name}-{kind}", role=role.id, policy=policy, opts=child)
            return role

        preview = make_role(
            "preview",
            subjects_for_preview(repository),
            account_id.apply(lambda a: iam.to_json(preview_policy(a, args.region))),
            3600,
        )
        deploy = make_role(
            "deploy",
            subjects_for_deploy(repository),
            account_id.apply(lambda a: iam.to_json(deploy_policy(a, args.region))),
            DEPLOY_SESSION_SECONDS,
        )

        # Kubernetes access: the deploy role is not the cluster's creator, so it needs its own admin entry; the
        # preview role gets the view policy (the Kubernetes provider falls back to a client-side diff where a
        # server-side dry run is forbidden).
        for kind, role, access_policy in (
            ("preview", preview, EKS_VIEW_POLICY),
            ("deploy", deploy, EKS_CLUSTER_ADMIN_POLICY),
        ):
            entry = aws.eks.AccessEntry(
                f"{name}-{kind}", cluster_name=args.cluster_name, principal_arn=role.arn, type="STANDARD", opts=child
            )
            aws.eks.AccessPolicyAssociation(
                f"{name}-{kind}",
                cluster_name=args.cluster_name,
                principal_arn=entry.principal_arn,
                policy_arn=access_policy,
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                opts=child,
            )

        self.provider_arn = provider.arn
        self.preview_role_arn = preview.arn
        self.deploy_role_arn = deploy.arn
        self.register_outputs({"providerArn": provider.arn, "previewRoleArn": preview.arn, "deployRoleArn": deploy.arn})
