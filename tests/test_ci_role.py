"""CI bootstrap (infra/ci.py): GitHub OIDC provider and the preview/deploy roles, only when a repository is named."""

from __future__ import annotations

import fnmatch
import json
from typing import Any

import pytest
from parliament import analyze_policy_string, enhance_finding

from infra import ci, tokens
from tools.render import ACCOUNT, Render

from .conftest import rendered
from .test_config import problems

REPO = "acme/llm"
OIDC = "aws:iam/openIdConnectProvider:OpenIdConnectProvider"


@pytest.fixture(scope="module")
def with_ci() -> Render:
    return rendered("dev", githubRepository=REPO)


def _role(r: Render, kind: str) -> dict[str, Any]:
    return r.one(tokens.IAM_ROLE, f"ci-{kind}")


def _trust(r: Render, kind: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(_role(r, kind)["inputs"]["assumeRolePolicy"])
    return doc


def _inline(r: Render, kind: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(r.one(tokens.IAM_ROLE_POLICY, f"ci-{kind}")["inputs"]["policy"])
    return doc


def test_nothing_is_created_without_a_repository(each_stack: Render) -> None:
    assert not each_stack.of_type(OIDC)
    assert not [r for r in each_stack.resources if r["type"] == "eks-neuron-llm:infra:CiAccess"]
    assert "ciPreviewRoleArn" not in each_stack.outputs and "ciDeployRoleArn" not in each_stack.outputs


def test_github_oidc_provider_has_the_sts_audience(with_ci: Render) -> None:
    (provider,) = with_ci.of_type(OIDC)
    assert provider["inputs"]["url"] == "https://token.actions.githubusercontent.com"
    assert provider["inputs"]["clientIdLists"] == ["sts.amazonaws.com"]


def test_outputs_are_the_two_role_arns(with_ci: Render) -> None:
    for output, kind in (("ciPreviewRoleArn", "preview"), ("ciDeployRoleArn", "deploy")):
        assert with_ci.outputs[output].startswith(f"arn:aws:iam::{ACCOUNT}:role/ci-{kind}-")


@pytest.mark.parametrize(
    ("kind", "subjects"),
    [
        ("preview", [f"repo:{REPO}:pull_request"]),
        ("deploy", [f"repo:{REPO}:ref:refs/heads/main", f"repo:{REPO}:environment:prod"]),
    ],
)
def test_roles_trust_only_this_repository_with_the_sts_audience(
    with_ci: Render, kind: str, subjects: list[str]
) -> None:
    (statement,) = _trust(with_ci, kind)["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"] == {
        "Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"
    }
    # StringEquals (not StringLike): no wildcard can widen the subject to other repositories or branches.
    assert statement["Condition"] == {
        "StringEquals": {
            "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
            "token.actions.githubusercontent.com:sub": subjects,
        }
    }


def _actions(doc: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for s in doc["Statement"]:
        out += [s["Action"]] if isinstance(s["Action"], str) else s["Action"]
    return out


def _non_reads(doc: dict[str, Any]) -> list[str]:
    return [a for a in _actions(doc) if not a.split(":")[1].startswith(("Describe", "Get", "List", "BatchGet"))]


def test_preview_role_only_reads() -> None:
    doc = ci.preview_policy(ACCOUNT, "us-west-2")
    assert _non_reads(doc) == []
    # Metadata only: no object, message, parameter or secret contents.
    for data_read in ("s3:GetObject", "sqs:ReceiveMessage", "ssm:GetParameter", "secretsmanager:GetSecretValue"):
        assert data_read not in _actions(doc)
    # The one parameter read is of AWS-owned public parameters (no account in the ARN), not of the account's.
    for statement in doc["Statement"]:
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        if any(a.startswith("ssm:") for a in actions):
            assert statement["Resource"] == "arn:aws:ssm:us-west-2::parameter/aws/service/eks/optimized-ami/*"


def test_preview_read_only_check_can_fail() -> None:
    doc = ci.preview_policy(ACCOUNT, "us-west-2")
    doc["Statement"][0]["Action"].append("ec2:RunInstances")
    assert _non_reads(doc) == ["ec2:RunInstances"]


@pytest.mark.parametrize("kind", ["preview", "deploy"])
def test_policies_are_scoped_to_the_region_and_the_account(with_ci: Render, kind: str) -> None:
    doc = _inline(with_ci, kind)
    for statement in doc["Statement"]:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if resources == ["*"]:
            assert statement["Condition"] == {"StringEquals": {"aws:RequestedRegion": "us-west-2"}}, statement
        else:
            # This account's IAM, or AWS's public parameters of the stack's region.
            prefixes = (f"arn:aws:iam::{ACCOUNT}:", "arn:aws:ssm:us-west-2::parameter/aws/service/")
            assert all(r.startswith(prefixes) for r in resources), statement
    assert not any(a in {"*", "iam:*"} for a in _actions(doc))


def test_prod_policies_use_the_prod_region() -> None:
    r = rendered("prod", githubRepository=REPO)
    assert "us-east-1" in json.dumps(_inline(r, "deploy")["Statement"][0]["Condition"])


def test_deploy_role_session_outlasts_a_cold_up(with_ci: Render) -> None:
    assert _role(with_ci, "deploy")["inputs"]["maxSessionDuration"] == ci.DEPLOY_SESSION_SECONDS >= 7200


@pytest.mark.parametrize(("kind", "policy"), [("preview", ci.EKS_VIEW_POLICY), ("deploy", ci.EKS_CLUSTER_ADMIN_POLICY)])
def test_roles_get_kubernetes_access(with_ci: Render, kind: str, policy: str) -> None:
    entry = with_ci.one(tokens.EKS_ACCESS_ENTRY, f"ci-{kind}")
    assoc = with_ci.one("aws:eks/accessPolicyAssociation:AccessPolicyAssociation", f"ci-{kind}")
    assert entry["inputs"]["clusterName"] == "eks-neuron-llm-dev"
    assert assoc["inputs"]["policyArn"] == policy
    assert assoc["inputs"]["accessScope"] == {"type": "cluster"}


def _parliament(doc: dict[str, Any]) -> list[str]:
    findings = []
    for raw in analyze_policy_string(json.dumps(doc)).findings:
        f = enhance_finding(raw)
        # RESOURCE_STAR: describe/list calls and regional service actions are bounded by aws:RequestedRegion,
        # which parliament does not take into account.  RESOURCE_MISMATCH on the public-parameter read: AWS's
        # public parameters have no account ID in their ARN; parliament's format expects one.
        public_parameters = f.issue == "RESOURCE_MISMATCH" and "ssm:GetParametersByPath" in str(f.detail)
        if f.issue != "RESOURCE_STAR" and not public_parameters:
            findings.append(f"{f.issue} {f.severity} {f.detail}")
    return findings


@pytest.mark.parametrize("policy", [ci.preview_policy, ci.deploy_policy])
def test_policies_are_clean_under_parliament(policy: Any) -> None:
    assert _parliament(policy(ACCOUNT, "us-west-2")) == []


def test_parliament_check_can_fail() -> None:
    doc = ci.preview_policy(ACCOUNT, "us-west-2")
    doc["Statement"][1]["Action"].append("iam:NoSuchAction")
    assert any(f.startswith("UNKNOWN_ACTION") for f in _parliament(doc))


# What the project's IAM lint (tools/iam_lint.py: parliament with its community auditors, MEDIUM and above) reports
# for the CI roles, each with the reason it stays.  The set must match exactly: a new kind of finding fails, and so
# does a reason that no longer applies.
CI_LINT_EXCEPTIONS = {
    # parliament knows no OIDC provider but Cognito, and not the token.actions.githubusercontent.com condition keys.
    ("ci-preview", "assumeRolePolicy", "UNKNOWN_FEDERATION_SOURCE"): "GitHub's OIDC provider is not in its data",
    ("ci-preview", "assumeRolePolicy", "UNKNOWN_CONDITION_FOR_ACTION"): "GitHub's aud/sub keys are not in its data",
    ("ci-deploy", "assumeRolePolicy", "UNKNOWN_FEDERATION_SOURCE"): "GitHub's OIDC provider is not in its data",
    ("ci-deploy", "assumeRolePolicy", "UNKNOWN_CONDITION_FOR_ACTION"): "GitHub's aud/sub keys are not in its data",
    # A trust policy's action is the assume call, which hands out credentials by definition.
    ("ci-preview", "assumeRolePolicy", "CREDENTIALS_EXPOSURE"): "sts:AssumeRoleWithWebIdentity in a trust policy",
    ("ci-deploy", "assumeRolePolicy", "CREDENTIALS_EXPOSURE"): "sts:AssumeRoleWithWebIdentity in a trust policy",
    # The deploy role creates the stack's IAM roles, policies and instance profiles and passes them to EKS and EC2,
    # and logs in to ECR to push the serving image: what deploying this stack is.  It is bounded to the account
    # (IAM) and the stack's region (everything else); who may assume it is the control (main, reviewed prod).
    ("ci-deploy", "policy", "CREDENTIALS_EXPOSURE"): "ecr:GetAuthorizationToken, to push the serving image",
    ("ci-deploy", "policy", "PERMISSIONS_MANAGEMENT_ACTIONS"): "creates and attaches the stack's IAM roles",
    ("ci-deploy", "policy", "PRIVILEGE_ESCALATION"): "creates roles and passes them to EKS/EC2, as a deploy must",
    # The preview lists AWS's public EKS AMI parameters (arn:aws:ssm:<region>::parameter/aws/service/eks/...): public
    # parameters have no account ID, and parliament's ARN format for ssm parameters requires one.
    ("ci-preview", "policy", "RESOURCE_MISMATCH"): "public SSM parameters have no account in their ARN",
}


def test_iam_lint_reports_only_the_reasoned_exceptions(with_ci: Render) -> None:
    from tools.iam_lint import documents, lint_document

    ours = [d for d in documents(with_ci.resources) if d.resource.startswith("ci-")]
    assert {(d.resource, d.field) for d in ours} >= {("ci-preview", "policy"), ("ci-deploy", "policy")}
    found = {(f.resource, f.field, f.issue) for d in ours for f in lint_document(d) if f.blocking}
    assert found == set(CI_LINT_EXCEPTIONS)


@pytest.mark.parametrize("bad", ["llm", "acme/", "/llm", "acme/llm/extra", "-acme/llm", "acme llm/x", "acme/llm name"])
def test_bad_repository_is_one_line(bad: str) -> None:
    assert problems("dev", githubRepository=bad) == [
        f"eks-neuron-llm:githubRepository: {bad!r} is not allowed; allowed: empty (no CI bootstrap) or a GitHub "
        "repository as owner/name, e.g. acme/eks-neuron-llm"
    ]


def test_component_refuses_to_run_disabled() -> None:
    from infra.config import CiConfig

    with pytest.raises(ValueError, match="githubRepository"):
        ci.CiAccess("ci", ci.CiAccessArgs(config=CiConfig(""), region="us-west-2", cluster_name="x"))


# What each invoke the program makes asks of AWS: (IAM action, resource ARN template), or None when it needs no
# permission (STS GetCallerIdentity, or computed locally by the provider).
INVOKE_ACTIONS: dict[str, tuple[str, str] | None] = {
    "aws:index/getAvailabilityZones:getAvailabilityZones": ("ec2:DescribeAvailabilityZones", "*"),
    "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": ("ec2:DescribeInstanceTypeOfferings", "*"),
    "aws:eks/getAddonVersion:getAddonVersion": ("eks:DescribeAddonVersions", "*"),
    "aws:ssm/getParametersByPath:getParametersByPath": (
        "ssm:GetParametersByPath",
        "arn:aws:ssm:{region}::parameter{path}",
    ),
    "aws:index/getCallerIdentity:getCallerIdentity": None,
    "aws:index/getPartition:getPartition": None,
    "aws:index/getRegion:getRegion": None,
}


def _allows(doc: dict[str, Any], action: str, resource: str, region: str) -> bool:
    for statement in doc["Statement"]:
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        resources = [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]
        condition = statement.get("Condition")
        if condition not in (None, {"StringEquals": {"aws:RequestedRegion": region}}):
            continue
        if any(fnmatch.fnmatchcase(action, a) for a in actions) and any(
            fnmatch.fnmatchcase(resource, r) for r in resources
        ):
            return True
    return False


def _denied_invokes(r: Render, doc: dict[str, Any]) -> list[str]:
    region = r.config["aws:region"]
    denied = []
    for invoke in r.invokes:
        needs = INVOKE_ACTIONS[invoke["token"]]  # a new invoke must be added above, with what it asks of AWS
        if needs is None:
            continue
        action, template = needs
        resource = template.format(region=region, path=invoke["args"].get("path", ""))
        if not _allows(doc, action, resource, region):
            denied.append(f"{action} on {resource}")
    return denied


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_preview_role_may_make_every_call_the_program_makes(stack: str) -> None:
    r = rendered(stack)
    assert {i["token"] for i in r.invokes} <= set(INVOKE_ACTIONS)
    assert _denied_invokes(r, ci.preview_policy(ACCOUNT, r.config["aws:region"])) == []
    assert _denied_invokes(r, ci.deploy_policy(ACCOUNT, r.config["aws:region"])) == []


def test_a_call_the_preview_role_may_not_make_is_caught(dev: Render) -> None:
    # The defect this guards against: the AMI check's listing without the public-parameter statement.
    doc = ci.preview_policy(ACCOUNT, "us-west-2")
    doc["Statement"] = [s for s in doc["Statement"] if s.get("Sid") != "ReadPublicEksAmiParameters"]
    assert _denied_invokes(dev, doc) == [
        f"ssm:GetParametersByPath on arn:aws:ssm:us-west-2::parameter/aws/service/eks/optimized-ami/1.35/"
        f"amazon-linux-2023/x86_64/{variant}"
        for variant in ("standard", "neuron")
    ]


def test_the_deploy_role_can_run_the_image_build_and_the_preview_role_can_read_its_builder() -> None:
    from fnmatch import fnmatchcase

    from tools.build_fake import scenario

    deploy = _actions(ci.deploy_policy(ACCOUNT, "us-west-2"))
    props = {"repository_name": "r", "repository_url": "u", "project_name": "p", "tag": "t"}
    # every call the starter makes with the deployer's credentials (infra/image_build.py), as its IAM action
    calls = {f"{c.service}:{c.api_name}" for outcome in ("built", "exists") for c in scenario(props, outcome, "x")}
    assert calls == {
        "ecr:DescribeImages",
        "codebuild:ListBuildsForProject",
        "codebuild:StartBuild",
        "codebuild:BatchGetBuilds",
    }
    assert [a for a in sorted(calls) if not any(fnmatchcase(a, pattern) for pattern in deploy)] == []
    preview = _actions(ci.preview_policy(ACCOUNT, "us-west-2"))
    assert {"codebuild:BatchGetProjects", "ecr:DescribePullThroughCacheRules"} <= set(preview)
    assert not any(a.startswith("codebuild:") and a != "codebuild:BatchGetProjects" for a in preview)
