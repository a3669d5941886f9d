"""Resource policies of the CrossGuard pack, as plain functions ``validate(args, report)``.

Each takes an object with ``resource_type``, ``props`` (camelCase, as the engine sends them), ``urn`` and
``get_config()`` — a ``pulumi_policy.ResourceValidationArgs`` in the pack, or a render record wrapped by
``from_record`` in the tests — and calls ``report(message)`` once per violation.  Only ``policy/__main__.py``
builds the ``PolicyPack``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Report = Callable[[str], None]

REQUIRED_CONTROL_PLANE_LOGS = {"api", "audit", "authenticator"}
OPEN = {"0.0.0.0/0", "::/0"}
# A security group may take ingress from anywhere only when it fronts a load balancer and says so.
LOAD_BALANCER_TAG = "eks-neuron-llm/load-balancer"
DEFAULT_PROD_STACKS = ("prod",)


class Args(Protocol):
    resource_type: str
    props: Mapping[str, Any]
    urn: str
    name: str

    def get_config(self) -> Mapping[str, Any]: ...


@dataclass
class RecordArgs:
    """A render record presented the way the policy engine presents a resource."""

    resource_type: str
    props: Mapping[str, Any]
    urn: str
    name: str
    config: Mapping[str, Any] = field(default_factory=dict)

    def get_config(self) -> Mapping[str, Any]:
        return self.config


def from_record(record: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> RecordArgs:
    return RecordArgs(record["type"], record["inputs"], record["urn"], record["name"], dict(config or {}))


def stack_of(urn: str) -> str:
    return urn.split("::", maxsplit=1)[0].removeprefix("urn:pulumi:")


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


# ---------------------------------------------------------------------------------------------------------------
# Encryption at rest.
# ---------------------------------------------------------------------------------------------------------------


def ebs_encrypted(args: Args, report: Report) -> None:
    t, p = args.resource_type, args.props
    if t == "aws:ec2/launchTemplate:LaunchTemplate":
        for bdm in p.get("blockDeviceMappings") or []:
            if bdm.get("ebs") and not _truthy(bdm["ebs"].get("encrypted")):
                report(f"launch template volume {bdm.get('deviceName')} is not encrypted")
    elif t == "aws:ebs/volume:Volume" and not _truthy(p.get("encrypted")):
        report("EBS volume is not encrypted")
    elif t == "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass":
        for bdm in (p.get("spec") or {}).get("blockDeviceMappings") or []:
            if not _truthy((bdm.get("ebs") or {}).get("encrypted")):
                report(f"EC2NodeClass volume {bdm.get('deviceName')} is not encrypted")
    elif t == "kubernetes:storage.k8s.io/v1:StorageClass" and p.get("provisioner") == "ebs.csi.aws.com":
        if not _truthy((p.get("parameters") or {}).get("encrypted")):
            report('EBS StorageClass does not set parameters.encrypted: "true"')


def sqs_encrypted(args: Args, report: Report) -> None:
    if args.resource_type == "aws:sqs/queue:Queue":
        p = args.props
        if not (_truthy(p.get("sqsManagedSseEnabled")) or p.get("kmsMasterKeyId")):
            report("SQS queue has neither SQS-managed SSE nor a KMS key")


def elasticache_encrypted(args: Args, report: Report) -> None:
    """Redis-compatible stores encrypt at rest, require TLS, and ask for a token (clear text or no auth is refused)."""
    if args.resource_type != "aws:elasticache/replicationGroup:ReplicationGroup":
        return
    p = args.props
    if not _truthy(p.get("atRestEncryptionEnabled")):
        report("ElastiCache replication group is not encrypted at rest (atRestEncryptionEnabled)")
    if not _truthy(p.get("transitEncryptionEnabled")) or p.get("transitEncryptionMode", "required") != "required":
        report("ElastiCache replication group does not require TLS (transitEncryptionEnabled, transitEncryptionMode)")
    if not (p.get("authToken") or p.get("authTokenWo") or p.get("userGroupIds")):
        report("ElastiCache replication group asks for no credentials (authToken or user groups)")


def kms_rotation(args: Args, report: Report) -> None:
    if args.resource_type == "aws:kms/key:Key":
        spec = args.props.get("customerMasterKeySpec") or args.props.get("keySpec") or "SYMMETRIC_DEFAULT"
        if spec == "SYMMETRIC_DEFAULT" and not _truthy(args.props.get("enableKeyRotation")):
            report("KMS key does not rotate (enableKeyRotation)")


# ---------------------------------------------------------------------------------------------------------------
# Instances and networks.
# ---------------------------------------------------------------------------------------------------------------


def imdsv2_required(args: Args, report: Report) -> None:
    t, p = args.resource_type, args.props
    if t == "aws:ec2/launchTemplate:LaunchTemplate":
        if (p.get("metadataOptions") or {}).get("httpTokens") != "required":
            report("launch template does not require IMDSv2 (metadataOptions.httpTokens: required)")
    elif t == "aws:ec2/instance:Instance":
        if (p.get("metadataOptions") or {}).get("httpTokens") != "required":
            report("instance does not require IMDSv2 (metadataOptions.httpTokens: required)")
    elif t == "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass":
        if ((p.get("spec") or {}).get("metadataOptions") or {}).get("httpTokens") != "required":
            report("EC2NodeClass does not require IMDSv2 (spec.metadataOptions.httpTokens: required)")


def no_open_ingress(args: Args, report: Report) -> None:
    t, p = args.resource_type, args.props
    tagged_lb = (p.get("tags") or {}).get(LOAD_BALANCER_TAG) == "true"
    if t == "aws:ec2/securityGroup:SecurityGroup":
        for rule in p.get("ingress") or []:
            cidrs = set(rule.get("cidrBlocks") or []) | set(rule.get("ipv6CidrBlocks") or [])
            if cidrs & OPEN and not tagged_lb:
                report(
                    f"security group allows ingress from {sorted(cidrs & OPEN)} on ports "
                    f"{rule.get('fromPort')}-{rule.get('toPort')}; only load balancer groups (tag "
                    f"{LOAD_BALANCER_TAG}=true) may"
                )
    elif t == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule":
        if {p.get("cidrIpv4"), p.get("cidrIpv6")} & OPEN and not tagged_lb:
            report("ingress rule from anywhere; only load balancer groups may")
    elif t == "aws:ec2/securityGroupRule:SecurityGroupRule" and p.get("type") == "ingress":
        if set(p.get("cidrBlocks") or []) & OPEN:
            report("ingress rule from anywhere; only load balancer groups may")


# ---------------------------------------------------------------------------------------------------------------
# Storage.
# ---------------------------------------------------------------------------------------------------------------


def s3_public_access_block(args: Args, report: Report) -> None:
    if args.resource_type == "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock":
        for key in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
            if not _truthy(args.props.get(key)):
                report(f"bucket public access block leaves {key} off")


# ---------------------------------------------------------------------------------------------------------------
# Container images and their builder (infra/serving.py, infra/image.py).
# ---------------------------------------------------------------------------------------------------------------

ECR_ENCRYPTION = {"AES256", "KMS", "KMS_DSSE"}
PUBLIC_OBJECT_ACLS = {"public-read", "public-read-write", "authenticated-read"}
ECR_POLICY_TYPES = ("aws:ecr/repositoryPolicy:RepositoryPolicy", "aws:ecr/registryPolicy:RegistryPolicy")
S3_OBJECT_TYPES = ("aws:s3/bucketObjectv2:BucketObjectv2", "aws:s3/bucketObject:BucketObject")
CODEBUILD_PROJECT = "aws:codebuild/project:Project"


def ecr_encrypted(args: Args, report: Report) -> None:
    if args.resource_type == "aws:ecr/repository:Repository":
        kinds = {c.get("encryptionType") for c in args.props.get("encryptionConfigurations") or []}
        if not kinds & ECR_ENCRYPTION:
            report("ECR repository does not declare its encryption (encryptionConfigurations: AES256 or KMS)")


def codebuild_encrypted(args: Args, report: Report) -> None:
    if args.resource_type != CODEBUILD_PROJECT:
        return
    p = args.props
    if _truthy(((p.get("logsConfig") or {}).get("s3Logs") or {}).get("encryptionDisabled")):
        report("CodeBuild project writes its S3 logs unencrypted (logsConfig.s3Logs.encryptionDisabled)")
    for where, artifacts in (
        ("artifacts", [p.get("artifacts") or {}]),
        ("secondaryArtifacts", p.get("secondaryArtifacts") or []),
    ):
        if any(_truthy(a.get("encryptionDisabled")) for a in artifacts):
            report(f"CodeBuild project writes unencrypted {where} (encryptionDisabled)")


def _open_to_everyone(document: Any) -> bool:
    """An Allow statement whose principal is everyone and that no condition narrows."""
    doc = json.loads(document) if isinstance(document, str) else document
    for s in (doc or {}).get("Statement") or []:
        principal = s.get("Principal")
        aws = principal.get("AWS") if isinstance(principal, Mapping) else principal
        everyone = aws == "*" or (isinstance(aws, list) and "*" in aws)
        if s.get("Effect") == "Allow" and everyone and not s.get("Condition"):
            return True
    return False


def no_public_images_or_builds(args: Args, report: Report) -> None:
    t, p = args.resource_type, args.props
    if t in ECR_POLICY_TYPES and _open_to_everyone(p.get("policy")):
        report("ECR policy lets everyone (Principal *) in without a condition: images would be public")
    elif t == CODEBUILD_PROJECT and p.get("projectVisibility", "PRIVATE") != "PRIVATE":
        report(f"CodeBuild project is {p.get('projectVisibility')}: anyone could read its build logs")
    elif t in S3_OBJECT_TYPES and p.get("acl") in PUBLIC_OBJECT_ACLS:
        report(f"S3 object has the public ACL {p.get('acl')}")


# ---------------------------------------------------------------------------------------------------------------
# The EKS control plane.
# ---------------------------------------------------------------------------------------------------------------


def _eks_view(args: Args) -> dict[str, Any] | None:
    """The control plane's settings, from the wrapped aws.eks.Cluster or the pulumi_eks component's inputs."""
    p = args.props
    if args.resource_type == "aws:eks/cluster:Cluster":
        vpc = p.get("vpcConfig") or {}
        enc = p.get("encryptionConfig") or {}
        enc = enc[0] if isinstance(enc, list) and enc else enc
        return {
            "keyArn": ((enc or {}).get("provider") or {}).get("keyArn"),
            "encrypts": set((enc or {}).get("resources") or []),
            "logs": set(p.get("enabledClusterLogTypes") or []),
            "public": _truthy(vpc.get("endpointPublicAccess", True)),
            "cidrs": list(vpc.get("publicAccessCidrs") or ["0.0.0.0/0"]),
        }
    if args.resource_type == "eks:index:Cluster":
        return {
            "keyArn": p.get("encryptionConfigKeyArn"),
            "encrypts": {"secrets"} if p.get("encryptionConfigKeyArn") else set(),
            "logs": set(p.get("enabledClusterLogTypes") or []),
            "public": _truthy(p.get("endpointPublicAccess", True)),
            "cidrs": list(p.get("publicAccessCidrs") or ["0.0.0.0/0"]),
        }
    return None


def eks_secrets_and_logs(args: Args, report: Report) -> None:
    view = _eks_view(args)
    if view is None:
        return
    if not view["keyArn"] or "secrets" not in view["encrypts"]:
        report("EKS secrets are not envelope-encrypted with a KMS key")
    missing = REQUIRED_CONTROL_PLANE_LOGS - view["logs"]
    if missing:
        report(f"EKS control-plane logs missing: {', '.join(sorted(missing))}")


def eks_public_endpoint(args: Args, report: Report) -> None:
    view = _eks_view(args)
    if view is None or not view["public"]:
        return
    prod_stacks = tuple(args.get_config().get("prodStacks") or DEFAULT_PROD_STACKS)
    if stack_of(args.urn) in prod_stacks and set(view["cidrs"]) & OPEN:
        report("the public EKS endpoint is open to the internet in a prod stack; set publicAccessCidrs")


# ---------------------------------------------------------------------------------------------------------------
# Images.
# ---------------------------------------------------------------------------------------------------------------

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def image_problem(image: str) -> str | None:
    """Why ``image`` is not pinned, or None: a digest, or a tag other than latest."""
    if _DIGEST.search(image):
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image} has no tag"
    tag = last.rsplit(":", 1)[1]
    if tag == "latest" or not tag:
        return f"image {image} uses the moving tag {tag or '(empty)'}"
    return None


def _pod_specs(obj: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every pod spec inside a Kubernetes object, wherever it nests (templates, RayService groups, CronJobs)."""
    if isinstance(obj, Mapping):
        if isinstance(obj.get("containers"), list):
            yield obj
        for v in obj.values():
            yield from _pod_specs(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _pod_specs(v)


def images_of(obj: Mapping[str, Any]) -> list[str]:
    out = []
    for spec in _pod_specs(obj):
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            if isinstance(c, Mapping) and c.get("image"):
                out.append(str(c["image"]))
    return out


def pinned_images(args: Args, report: Report) -> None:
    if not args.resource_type.startswith("kubernetes:") or args.resource_type.startswith("kubernetes:helm"):
        return
    for image in images_of(args.props):
        problem = image_problem(image)
        if problem:
            report(problem)


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    validate: Callable[[Args, Report], None]


RESOURCE_RULES: Sequence[Rule] = (
    Rule(
        "ebs-encrypted",
        "EBS volumes, launch templates, EC2NodeClasses and EBS StorageClasses encrypt data",
        ebs_encrypted,
    ),
    Rule("sqs-encrypted", "SQS queues use server-side encryption", sqs_encrypted),
    Rule(
        "elasticache-encrypted",
        "ElastiCache stores encrypt at rest, require TLS in transit and an auth token",
        elasticache_encrypted,
    ),
    Rule("kms-rotation", "Symmetric KMS keys rotate", kms_rotation),
    Rule("imdsv2-required", "Instances, launch templates and EC2NodeClasses require IMDSv2", imdsv2_required),
    Rule("no-open-ingress", "No security group ingress from 0.0.0.0/0 except load balancers", no_open_ingress),
    Rule("s3-public-access-block", "S3 public access blocks turn every switch on", s3_public_access_block),
    Rule("ecr-encrypted", "ECR repositories declare encryption at rest (AES256 or KMS)", ecr_encrypted),
    Rule("codebuild-encrypted", "CodeBuild projects never write S3 logs or artifacts unencrypted", codebuild_encrypted),
    Rule(
        "no-public-images-or-builds",
        "No ECR policy open to everyone, no public CodeBuild project, no public-ACL S3 object",
        no_public_images_or_builds,
    ),
    Rule(
        "eks-secrets-and-logs",
        "EKS encrypts secrets with KMS and ships api/audit/authenticator logs",
        eks_secrets_and_logs,
    ),
    Rule(
        "eks-public-endpoint", "The public EKS endpoint is limited to listed CIDRs in prod stacks", eks_public_endpoint
    ),
    Rule("pinned-images", "Every container image is pinned to a tag other than latest, or a digest", pinned_images),
)
