"""The serving image, built in the stack's region by the stack itself (the default of ``servingImage``).

What ``ServingImage`` declares (docs/serving-image.md has the operator's view):

- an ECR pull-through cache rule for ``public.ecr.aws`` under a per-stack prefix, and the cache repository of the
  Dockerfile's base image under it (declared, so it is encrypted, pruned and deleted with the stack; ECR fills it on
  the first pull, so the build reads the ~18 GB Neuron base from in-region ECR);
- the build's sources: every file under ``workloads/image`` as one zip in the artifact bucket
  (``image-sources/<tag>.zip``);
- a CodeBuild project (privileged, ``BUILD_GENERAL1_LARGE``: 8 vCPU, 15 GB memory, 128 GB disk) whose buildspec
  builds ``workloads/image`` with ``--build-arg BASE_IMAGE=<the cached base>`` and pushes ``<repository>:<tag>``,
  its log group and its role (push to the serving repository only, pull the base through the cache only, read its
  sources only, write its logs only);
- the starter (``infra.image_build.ServingImageBuild``), which `pulumi up` creates once per tag: it builds the tag
  unless ECR already has it, waits, and fails with one line and the build log's link.

The tag is a hash of the build's inputs: every file under ``workloads/image`` (path, executable bit, content) and
the buildspec.  Equal inputs give the same tag, ECR's tags are immutable, and an existing tag is not rebuilt.

None of it depends on the network or the cluster: the build starts within a minute of `pulumi up` and runs beside
the VPC, the control plane and the node group; only the RayService waits for it (tools/timeline.py models it).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pulumi
import pulumi_aws as aws
import yaml

from infra import iam
from infra.image_build import ServingImageBuild, ServingImageBuildArgs

REPO: Final = Path(__file__).resolve().parent.parent
IMAGE_DIR: Final = REPO / "workloads" / "image"
IMAGE_DIR_IN_PROJECT: Final = "workloads/image"  # relative, as Pulumi stores asset paths (same on every machine)
SOURCE_PREFIX: Final = "image-sources"  # key prefix of the build sources in the artifact bucket
UPSTREAM_REGISTRY: Final = "public.ecr.aws"
# BUILD_GENERAL1_LARGE, on-demand Linux: 8 vCPU, 15 GB memory, 128 GB disk.  The image is ~18 GB unpacked (the
# Neuron vLLM DLC) plus ~1 GB of Ray; a build holds the pulled layers, the unpacked tree and the new layer (~30 GB
# at peak), so the disk has 4x headroom; MEDIUM has the same disk but half the vCPUs and network for the layer
# decompression and the push that dominate the build; XLARGE (36 vCPU, 256 GB) costs several times more per minute
# for steps that do not scale with cores.  See docs/serving-image.md.
COMPUTE_TYPE: Final = "BUILD_GENERAL1_LARGE"
BUILD_ENVIRONMENT_IMAGE: Final = "aws/codebuild/standard:7.0"  # Ubuntu 22.04 with Docker and the buildx plugin
BUILD_TIMEOUT_MINUTES: Final = 60
QUEUED_TIMEOUT_MINUTES: Final = 30
LOG_RETENTION_DAYS: Final = 30
TAG_HEX_DIGITS: Final = 16
# Editor and interpreter droppings that are not image inputs (a stray __pycache__ must not change the tag).
IGNORED_PARTS: Final = frozenset({"__pycache__", ".DS_Store"})
IGNORED_SUFFIXES: Final = (".pyc", ".pyo", ".swp", "~")
# ECR pull-through cache prefixes: 2-30 characters of lowercase letters, digits and single separators.
CACHE_PREFIX_MAX: Final = 30
CACHE_PREFIX_SUFFIX: Final = "-public"
# Images kept per repository: every tag of the serving repository is immutable, so old ones only go by this rule.
KEEP_IMAGES: Final = 20
KEEP_BASE_IMAGES: Final = 3
UNTAGGED_DAYS: Final = 7


# ---------------------------------------------------------------------------------------------------------------
# The build's inputs and its tag (pure functions of the files under workloads/image).
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageInput:
    path: str  # POSIX path relative to workloads/image
    executable: bool
    sha256: str


def image_inputs(directory: Path = IMAGE_DIR) -> tuple[ImageInput, ...]:
    """Every file under ``directory`` (sorted), whatever it is, except interpreter and editor droppings."""
    out = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory)
        if IGNORED_PARTS & set(rel.parts) or rel.name.endswith(IGNORED_SUFFIXES):
            continue
        out.append(
            ImageInput(rel.as_posix(), bool(path.stat().st_mode & 0o111), hashlib.sha256(path.read_bytes()).hexdigest())
        )
    if not any(i.path == "Dockerfile" for i in out):
        raise pulumi.RunError(f"{directory}: no Dockerfile; the serving image is built from this directory")
    return tuple(out)


def buildspec(inputs: tuple[ImageInput, ...]) -> str:
    """The CodeBuild buildspec: restore file modes, log in to ECR, build with the cached base, push the tag.

    Pulumi zips the sources without file modes, so the first command gives every file 0644 and the repository's
    executable files 0755 again.  ``docker build`` runs BuildKit (Docker 23+); the push happens in the same phase, so
    a failed build never pushes.  $BASE_IMAGE, $IMAGE_REPOSITORY and $IMAGE_TAG come from the project.
    """
    restore = ["find . -type f -exec chmod 0644 {} +"]
    executables = [i.path for i in inputs if i.executable]
    if executables:
        restore.append("chmod 0755 " + " ".join(f"'{p}'" for p in executables))
    spec = {
        "version": 0.2,
        "env": {"shell": "bash"},
        "phases": {
            "pre_build": {
                "on-failure": "ABORT",
                "commands": [
                    *restore,
                    'aws ecr get-login-password --region "$AWS_DEFAULT_REGION" '
                    '| docker login --username AWS --password-stdin "${IMAGE_REPOSITORY%%/*}"',
                ],
            },
            "build": {
                "on-failure": "ABORT",
                "commands": [
                    'docker build --platform linux/amd64 --build-arg "BASE_IMAGE=$BASE_IMAGE" '
                    '--tag "$IMAGE_REPOSITORY:$IMAGE_TAG" .',
                    'docker push "$IMAGE_REPOSITORY:$IMAGE_TAG"',
                ],
            },
        },
    }
    return yaml.safe_dump(spec, sort_keys=False, width=1000)


def image_tag(inputs: tuple[ImageInput, ...]) -> str:
    """A hash of everything that makes the image: each input's path, executable bit and content, and the buildspec."""
    digest = hashlib.sha256()
    for i in inputs:
        digest.update(f"{'755' if i.executable else '644'} {i.sha256} {i.path}\n".encode())
    digest.update(buildspec(inputs).encode())
    return digest.hexdigest()[:TAG_HEX_DIGITS]


@dataclass(frozen=True)
class BaseImage:
    """The Dockerfile's ``ARG BASE_IMAGE`` default: ``<registry>/<repository>[:<tag>][@<digest>]``."""

    registry: str
    repository: str
    reference: str  # ":<tag>", "@sha256:<digest>" or both, as written

    def through(self, cache_repository_url: str) -> str:
        """The same image read through the stack's pull-through cache repository."""
        return f"{cache_repository_url}{self.reference}"


_BASE_ARG = re.compile(r"^ARG\s+BASE_IMAGE=(?P<ref>\S+)\s*$", re.MULTILINE)
_FROM_BASE = re.compile(r"^FROM\s+\$\{?BASE_IMAGE\}?(\s|$)", re.MULTILINE)
_REFERENCE = re.compile(r"(?P<name>[^:@]+(?::\d+)?/[^:@]+)(?P<ref>(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?)")


def base_image(directory: Path = IMAGE_DIR) -> BaseImage:
    """The base the Dockerfile builds FROM (its ``ARG BASE_IMAGE`` default), which must be on public.ecr.aws."""
    text = (directory / "Dockerfile").read_text()
    arg, uses = _BASE_ARG.search(text), _FROM_BASE.search(text)
    where = f"{IMAGE_DIR_IN_PROJECT}/Dockerfile"
    if not arg or not uses:
        raise pulumi.RunError(
            f"{where}: no `ARG BASE_IMAGE=<image>` used by `FROM ${{BASE_IMAGE}}`; the stack passes the cached base "
            "as --build-arg BASE_IMAGE"
        )
    m = _REFERENCE.fullmatch(arg.group("ref"))
    if not m or not m.group("ref"):
        raise pulumi.RunError(f"{where}: BASE_IMAGE {arg.group('ref')!r} is not an image pinned by tag or digest")
    registry, _, repository = m.group("name").partition("/")
    if registry != UPSTREAM_REGISTRY:
        raise pulumi.RunError(
            f"{where}: BASE_IMAGE {arg.group('ref')!r} is not on {UPSTREAM_REGISTRY}; the stack's pull-through cache "
            f"serves only {UPSTREAM_REGISTRY}"
        )
    return BaseImage(registry, repository, m.group("ref"))


def cache_prefix(cluster_name: str) -> str:
    """The pull-through cache's repository prefix for this stack: unique per cluster name, at most 30 characters."""
    name = re.sub(r"-+", "-", cluster_name.lower()).strip("-")
    prefix = f"{name}{CACHE_PREFIX_SUFFIX}"
    if len(prefix) <= CACHE_PREFIX_MAX:
        return prefix
    short = hashlib.sha256(name.encode()).hexdigest()[:4]
    head = name[: CACHE_PREFIX_MAX - len(CACHE_PREFIX_SUFFIX) - len(short) - 1].rstrip("-")
    return f"{head}-{short}{CACHE_PREFIX_SUFFIX}"


def project_name(cluster_name: str) -> str:
    return f"{cluster_name}-serving-image"


def ecr_lifecycle(keep: int = KEEP_IMAGES, untagged_days: int = UNTAGGED_DAYS) -> dict[str, Any]:
    return {
        "rules": [
            {
                "rulePriority": 1,
                "description": f"Expire untagged images after {untagged_days} days",
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": untagged_days,
                },
                "action": {"type": "expire"},
            },
            {
                "rulePriority": 2,
                "description": f"Keep the {keep} most recent images",
                "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep},
                "action": {"type": "expire"},
            },
        ]
    }


# ---------------------------------------------------------------------------------------------------------------
# IAM of the build.
# ---------------------------------------------------------------------------------------------------------------


def codebuild_trust(account: str, region: str, project: str) -> iam.PolicyDocument:
    """CodeBuild may assume the role, for this account's project only (confused-deputy conditions)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "codebuild.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": account},
                    "ArnLike": {"aws:SourceArn": f"arn:aws:codebuild:{region}:{account}:project/{project}"},
                },
            }
        ],
    }


PUSH_ACTIONS: Final = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:CompleteLayerUpload",
    "ecr:InitiateLayerUpload",
    "ecr:PutImage",
    "ecr:UploadLayerPart",
)
# Pulling through the cache: read the cached repository, and let ECR import a missing image from upstream.  The cache
# repository is declared by the stack, so ecr:CreateRepository (needed only when ECR must create it) is not granted.
CACHE_PULL_ACTIONS: Final = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:BatchImportUpstreamImage",
    "ecr:GetDownloadUrlForLayer",
)


def build_policy(
    *, account: str, region: str, repository_arn: str, prefix: str, bucket_arn: str, log_group: str
) -> iam.PolicyDocument:
    """What the build may do: push to the serving repository, pull through the cache, read its sources, log."""
    log_group_arn = f"arn:aws:logs:{region}:{account}:log-group:{log_group}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            # GetAuthorizationToken has no resource-level permissions: the registry login token.
            {"Sid": "RegistryLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {"Sid": "PushServingImage", "Effect": "Allow", "Action": list(PUSH_ACTIONS), "Resource": repository_arn},
            {
                "Sid": "PullBaseThroughCache",
                "Effect": "Allow",
                "Action": list(CACHE_PULL_ACTIONS),
                "Resource": f"arn:aws:ecr:{region}:{account}:repository/{prefix}/*",
            },
            {
                "Sid": "ReadSources",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:GetObjectVersion"],
                "Resource": f"{bucket_arn}/{SOURCE_PREFIX}/*",
            },
            # CodeBuild checks who owns an S3 source's bucket before it downloads (its documented service role).
            {
                "Sid": "SourceBucketOwner",
                "Effect": "Allow",
                "Action": ["s3:GetBucketAcl", "s3:GetBucketLocation"],
                "Resource": bucket_arn,
            },
            {
                "Sid": "WriteBuildLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": [log_group_arn, f"{log_group_arn}:log-stream:*"],
            },
        ],
    }


# ---------------------------------------------------------------------------------------------------------------
# The component.
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ServingImageArgs:
    """What the serving image component needs; ``infra.serving`` fills it."""

    cluster_name: str
    """Name of the EKS cluster (config ``clusterName``): names the cache prefix, the CodeBuild project and its logs."""
    region: str
    """AWS region of the stack (config ``aws:region``): where the image is built and pushed."""
    repository: aws.ecr.Repository
    """Where the image is pushed (immutable tags): the serving component's image repository."""
    bucket: aws.s3.Bucket
    """The serving component's artifact bucket: the build's sources go under ``image-sources/``."""


@dataclass(frozen=True)
class _BaseCache:
    """The in-region pull-through cache the build reads the base image through: its rule and its repository."""

    rule: aws.ecr.PullThroughCacheRule
    repository: aws.ecr.Repository


class ServingImage(pulumi.ComponentResource):
    """Builds ``workloads/image`` in-region when its inputs change; ``image`` is ``<repository>:<tag>@<digest>``.

    Steps: the base image's pull-through cache, the sources (one zip in the bucket), the builder (log group, role,
    CodeBuild project) and the starter (``ServingImageBuild``: builds the tag unless ECR has it, waits, fails with one
    line)."""

    image: pulumi.Output[str]
    tag: str
    build: ServingImageBuild

    def __init__(self, name: str, args: ServingImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("eks-neuron-llm:infra:ServingImage", name, None, opts)
        inputs = image_inputs()
        self.tag = image_tag(inputs)
        cache = self._base_cache(name, args)
        # The sources: workloads/image as one zip (Pulumi zips the files; the buildspec restores their modes).
        source = aws.s3.BucketObjectv2(
            f"{name}-source",
            bucket=args.bucket.id,
            key=f"{SOURCE_PREFIX}/{self.tag}.zip",
            source=pulumi.AssetArchive({i.path: pulumi.FileAsset(f"{IMAGE_DIR_IN_PROJECT}/{i.path}") for i in inputs}),
            content_type="application/zip",
            opts=pulumi.ResourceOptions(parent=self),
        )
        codebuild, role_policies = self._builder(name, args, inputs, cache, source)
        self.build = ServingImageBuild(
            name,
            ServingImageBuildArgs(
                region=args.region,
                project_name=codebuild.name,
                repository_name=args.repository.name,
                repository_url=args.repository.repository_url,
                tag=self.tag,
                timeout_minutes=QUEUED_TIMEOUT_MINUTES + BUILD_TIMEOUT_MINUTES + 5,
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                # The build pulls through the rule and needs its permissions in place before it starts; on destroy
                # they outlive it.
                depends_on=[cache.rule, cache.repository, *role_policies],
            ),
        )
        self.image = self.build.image
        self.register_outputs({"image": self.image, "tag": self.tag})

    def _base_cache(self, name: str, args: ServingImageArgs) -> _BaseCache:
        """The base image, read through an in-region pull-through cache: the rule, its repository and lifecycle."""
        child = pulumi.ResourceOptions(parent=self)
        prefix = cache_prefix(args.cluster_name)
        rule = aws.ecr.PullThroughCacheRule(
            f"{name}-cache", ecr_repository_prefix=prefix, upstream_registry_url=UPSTREAM_REGISTRY, opts=child
        )
        repository = aws.ecr.Repository(
            f"{name}-base",
            name=f"{prefix}/{base_image().repository}",
            # The cache refreshes the upstream tag in place, so its tags stay mutable; the build pins what it used.
            image_tag_mutability="MUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
            encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="AES256")],
            force_delete=True,  # a copy of a public image: ECR pulls it again on the next build
            opts=child,
        )
        aws.ecr.LifecyclePolicy(
            f"{name}-base",
            repository=repository.name,
            policy=iam.to_json(ecr_lifecycle(KEEP_BASE_IMAGES)),
            opts=child,
        )
        return _BaseCache(rule, repository)

    def _builder_role(
        self, name: str, args: ServingImageArgs, project: str, logs: aws.cloudwatch.LogGroup
    ) -> iam.RoleWithPolicies:
        """The CodeBuild project's service role: trusted by this project only, with the build's inline policy."""
        account = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self)).account_id
        policy = pulumi.Output.all(
            account=account, repository_arn=args.repository.arn, bucket_arn=args.bucket.arn, log_group=logs.name
        ).apply(
            lambda a: iam.to_json(
                build_policy(
                    account=a["account"],
                    region=args.region,
                    repository_arn=a["repository_arn"],
                    prefix=cache_prefix(args.cluster_name),
                    bucket_arn=a["bucket_arn"],
                    log_group=a["log_group"],
                )
            )
        )
        return iam.role_with_policies(
            name,
            trust=account.apply(lambda a: codebuild_trust(a, args.region, project)),
            inline=policy,
            description=f"CodeBuild of {project}: builds the serving image and pushes it to its repository",
            parent=self,
        )

    def _builder(
        self,
        name: str,
        args: ServingImageArgs,
        inputs: tuple[ImageInput, ...],
        cache: _BaseCache,
        source: aws.s3.BucketObjectv2,
    ) -> tuple[aws.codebuild.Project, tuple[pulumi.Resource, ...]]:
        """The builder: its log group, its role (and the role's policies) and the CodeBuild project."""
        child = pulumi.ResourceOptions(parent=self)
        project = project_name(args.cluster_name)
        logs = aws.cloudwatch.LogGroup(
            f"{name}-logs", name=f"/aws/codebuild/{project}", retention_in_days=LOG_RETENTION_DAYS, opts=child
        )
        role, role_policies = self._builder_role(name, args, project, logs)
        codebuild = aws.codebuild.Project(
            name,
            name=project,
            description=f"Builds {IMAGE_DIR_IN_PROJECT} (serving image of {args.cluster_name}); started by pulumi up",
            service_role=role.arn,
            source=aws.codebuild.ProjectSourceArgs(
                type="S3",
                location=pulumi.Output.concat(args.bucket.bucket, "/", source.key),
                buildspec=buildspec(inputs),
            ),
            artifacts=aws.codebuild.ProjectArtifactsArgs(type="NO_ARTIFACTS"),
            environment=aws.codebuild.ProjectEnvironmentArgs(
                type="LINUX_CONTAINER",
                compute_type=COMPUTE_TYPE,
                image=BUILD_ENVIRONMENT_IMAGE,
                image_pull_credentials_type="CODEBUILD",
                privileged_mode=True,  # the build runs Docker
                environment_variables=[
                    aws.codebuild.ProjectEnvironmentEnvironmentVariableArgs(
                        name="BASE_IMAGE", value=cache.repository.repository_url.apply(base_image().through)
                    ),
                    aws.codebuild.ProjectEnvironmentEnvironmentVariableArgs(
                        name="IMAGE_REPOSITORY", value=args.repository.repository_url
                    ),
                    aws.codebuild.ProjectEnvironmentEnvironmentVariableArgs(name="IMAGE_TAG", value=self.tag),
                ],
            ),
            logs_config=aws.codebuild.ProjectLogsConfigArgs(
                cloudwatch_logs=aws.codebuild.ProjectLogsConfigCloudwatchLogsArgs(
                    status="ENABLED", group_name=logs.name
                ),
                s3_logs=aws.codebuild.ProjectLogsConfigS3LogsArgs(status="DISABLED"),
            ),
            project_visibility="PRIVATE",
            build_timeout=BUILD_TIMEOUT_MINUTES,
            queued_timeout=QUEUED_TIMEOUT_MINUTES,
            concurrent_build_limit=1,
            opts=child,
        )
        return codebuild, role_policies
