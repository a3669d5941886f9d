"""The starter of the serving image build: a Pulumi dynamic provider that runs the stack's CodeBuild project and waits.

``pulumi up`` creates a ``ServingImageBuild`` once per image tag (a hash of everything under ``workloads/image``,
``infra/image.py``).  Its ``create``:

1. asks ECR whether the tag is already in the repository: tags are immutable, so an existing tag is never rebuilt
   (a second stack, a re-run after a destroyed state, a tag that a lost `pulumi up` pushed);
2. otherwise joins a build of the same tag that is still running (an interrupted `pulumi up`), or starts one;
3. polls the build until it ends; on failure it raises ``ImageBuildFailed`` with one line: the build, its status,
   the phase that failed and why, and the link to the build's log;
4. returns the image as ``<repository>:<tag>@<digest>``, the reference the RayService runs.

A change of the tag (or of the repository) replaces the resource, which builds the new tag; anything else changes
nothing.  Deleting it deletes nothing: the image stays in the repository (its lifecycle policy ages it out, and the
repository is emptied when the stack is destroyed).

Why a dynamic provider and not ``pulumi-command``: the build must be started and waited for with AWS calls, and the
issue rules out an AWS CLI (and Docker) on the deployer's machine; ``pulumi-command`` would run a shell command
there (so it would need the CLI, or a script shelling out to Python), report only stdout, and offer no diff of its
own.  The dynamic provider runs in the program's own Python with boto3 (a pinned dependency of ``requirements.txt``),
decides replace-or-keep from the tag itself, returns typed outputs (the digest), and its ``create`` is plain Python
that the tests drive with botocore's Stubber and a fake AWS endpoint.  Its credentials are boto3's default chain
(the same environment variables, profile and SSO session `pulumi up` runs with); the region is the stack's.

The provider is pickled by reference (module ``infra.image_build``); Pulumi's dynamic-provider process imports it
from the project directory, so this module must stay importable without side effects.
"""

from __future__ import annotations

import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pulumi
from pulumi.dynamic import ConfigureRequest, CreateResult, DiffResult, Resource, ResourceProvider

from infra import tokens

RESOURCE_TYPE: Final = tokens.SERVING_IMAGE_BUILD
# The inputs that name the image: a change of either is a new image, so the resource is replaced (rebuilt).
REPLACE_ON: Final = ("repository_url", "tag")
ENDED_BADLY: Final = frozenset({"FAILED", "FAULT", "STOPPED", "TIMED_OUT"})
# How many of the project's most recent builds are searched for a running build of the same tag.
RECENT_BUILDS: Final = 20
POLL_SECONDS: Final = 15.0

Clients = tuple[Any, Any]  # (CodeBuild, ECR) boto3 clients


class ImageBuildFailed(Exception):  # noqa: N818 - the name is what `pulumi up` prints before the message
    """The image was not built; the message is the single line ``pulumi up`` shows for the resource."""


def boto3_clients(region: str) -> Clients:
    """CodeBuild and ECR clients of ``region`` with boto3's default credentials."""
    import boto3  # only `pulumi up` (the provider process) needs it; renders and previews never call AWS

    session = boto3.session.Session(region_name=region)
    return session.client("codebuild"), session.client("ecr")


@dataclass(frozen=True)
class BuildInputs:
    region: str
    project_name: str
    repository_name: str
    repository_url: str
    tag: str
    timeout_minutes: float  # give up waiting after this long (the project's queued + build timeouts)
    poll_seconds: float  # how often CodeBuild is asked whether the build has ended

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> BuildInputs:
        return cls(
            region=str(props["region"]),
            project_name=str(props["project_name"]),
            repository_name=str(props["repository_name"]),
            repository_url=str(props["repository_url"]),
            tag=str(props["tag"]),
            timeout_minutes=float(props["timeout_minutes"]),
            poll_seconds=float(props.get("poll_seconds", POLL_SECONDS)),
        )

    @property
    def reference(self) -> str:
        return f"{self.repository_url}:{self.tag}"


def log_url(build: Mapping[str, Any]) -> str:
    """The build's log: CodeBuild's CloudWatch deep link, else the build's page in the CodeBuild console."""
    deep = (build.get("logs") or {}).get("deepLink")
    if deep:
        return str(deep)
    arn = str(build.get("arn", ""))  # arn:aws:codebuild:<region>:<account>:build/<project>:<uuid>
    parts = arn.split(":", 5)
    if len(parts) < 6 or not build.get("id"):
        return "(no log: the build has no ARN)"
    region, account = parts[3], parts[4]
    project = str(build["id"]).split(":", 1)[0]
    build_id = urllib.parse.quote(str(build["id"]), safe="")
    return (
        f"https://{region}.console.aws.amazon.com/codesuite/codebuild/{account}/projects/{project}/build/"
        f"{build_id}/log?region={region}"
    )


def failure_line(build: Mapping[str, Any]) -> str:
    """One line: which build, how it ended, in which phase and why, and where its log is."""
    status = build.get("buildStatus", "UNKNOWN")
    failed = next((p for p in build.get("phases") or [] if p.get("phaseStatus") in ENDED_BADLY), None)
    text = f"serving image build {build.get('id', '?')} {status}"
    if failed:
        text += f" in phase {failed.get('phaseType', '?')}"
        reasons = [str(c["message"]) for c in failed.get("contexts") or [] if c.get("message")]
        if reasons:
            text += ": " + "; ".join(reasons)
    return " ".join(f"{text}; log: {log_url(build)}".split())


def existing_digest(ecr: Any, inputs: BuildInputs) -> str | None:
    """The digest of the image tagged ``inputs.tag`` in the repository, or None if there is none."""
    try:
        found = ecr.describe_images(repositoryName=inputs.repository_name, imageIds=[{"imageTag": inputs.tag}])
    except ecr.exceptions.ImageNotFoundException:
        return None
    details: Sequence[Mapping[str, Any]] = found.get("imageDetails") or []
    return str(details[0]["imageDigest"]) if details else None


def _environment(build: Mapping[str, Any]) -> dict[str, str]:
    variables = (build.get("environment") or {}).get("environmentVariables") or []
    return {str(v["name"]): str(v.get("value", "")) for v in variables}


class ImageBuildProvider(ResourceProvider):
    """Create = ensure the tag is in the repository (build it if not); see the module docstring."""

    serialize_as_secret_always = False  # the pickled provider is a class reference: nothing secret in it
    # Replaced by the tests and the offline render (fake AWS); never pickled, so the real process uses boto3.
    clients: Callable[[str], Clients] = staticmethod(boto3_clients)
    sleep: Callable[[float], None] = staticmethod(time.sleep)
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def configure(self, req: ConfigureRequest) -> None:
        # Called only in Pulumi's dynamic-provider process (which serves this program's dynamic resources and nothing
        # else) when it loads this provider.  That process reports an exception from create() as the resource's error
        # text, formatted with traceback.format_exc(); with no stack frames that text is the exception's one line
        # ("infra.image_build.ImageBuildFailed: serving image build ... ; log: https://..."), which is what
        # `pulumi up` then prints, instead of a traceback through the provider's internals.
        sys.tracebacklimit = 0

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in REPLACE_ON if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(replaces), replaces=replaces, stables=[], delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> CreateResult:
        inputs = BuildInputs.from_props(props)
        codebuild, ecr = self.clients(inputs.region)
        digest = existing_digest(ecr, inputs)
        build: Mapping[str, Any] = {}
        if digest is None:
            build = self._build(codebuild, inputs)
            digest = existing_digest(ecr, inputs)
            if digest is None:
                raise ImageBuildFailed(
                    f"serving image build {build.get('id', '?')} SUCCEEDED but {inputs.reference} is not in the "
                    f"repository; log: {log_url(build)}"
                )
        outs = {
            **props,
            "digest": digest,
            "image": f"{inputs.reference}@{digest}",
            "build_id": str(build.get("id", "")),  # empty: the tag was already there, nothing was built
            "log_url": log_url(build) if build else "",
        }
        return CreateResult(id_=f"{inputs.repository_name}:{inputs.tag}", outs=outs)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Nothing to delete: the image stays until the lifecycle policy or the repository's deletion removes it."""

    def _build(self, codebuild: Any, inputs: BuildInputs) -> Mapping[str, Any]:
        build = self._running(codebuild, inputs) or codebuild.start_build(projectName=inputs.project_name)["build"]
        deadline = self.clock() + inputs.timeout_minutes * 60
        while build.get("buildStatus") == "IN_PROGRESS":
            if self.clock() > deadline:
                raise ImageBuildFailed(
                    f"serving image build {build['id']} still running after {inputs.timeout_minutes:g} minutes; "
                    f"log: {log_url(build)}"
                )
            self.sleep(inputs.poll_seconds)
            found = codebuild.batch_get_builds(ids=[build["id"]]).get("builds") or []
            if not found:
                raise ImageBuildFailed(f"serving image build {build['id']} disappeared; log: {log_url(build)}")
            build = found[0]
        if build.get("buildStatus") != "SUCCEEDED":
            raise ImageBuildFailed(failure_line(build))
        return build

    def _running(self, codebuild: Any, inputs: BuildInputs) -> Mapping[str, Any] | None:
        """A build of this tag still running (its `pulumi up` was interrupted): wait for it, do not start another."""
        ids = codebuild.list_builds_for_project(projectName=inputs.project_name, sortOrder="DESCENDING").get("ids")
        if not ids:
            return None
        for build in codebuild.batch_get_builds(ids=list(ids)[:RECENT_BUILDS]).get("builds") or []:
            if build.get("buildStatus") == "IN_PROGRESS" and _environment(build).get("IMAGE_TAG") == inputs.tag:
                return dict(build)
        return None


@dataclass
class ServingImageBuildArgs:
    """What the build starter needs; ``infra.image.ServingImage`` fills it."""

    region: str
    """AWS region of the stack (config ``aws:region``): where CodeBuild and ECR are called."""
    project_name: pulumi.Input[str]
    """Name of the CodeBuild project that builds the image (``infra.image``)."""
    repository_name: pulumi.Input[str]
    """Name of the ECR repository the image is pushed to: the build is skipped when it already has ``tag``."""
    repository_url: pulumi.Input[str]
    """URL of that repository (``<account>.dkr.ecr.<region>.amazonaws.com/<name>``): the output image's prefix."""
    tag: str
    """The image tag: a hash of the image's inputs (``infra.image.image_tag``), so a change of input is a new tag."""
    timeout_minutes: int
    """Give up waiting after this many minutes (the project's queued and build timeouts, and a margin)."""
    poll_seconds: float = POLL_SECONDS
    """How often, in seconds, CodeBuild is asked whether the build has ended."""


class ServingImageBuild(Resource, module="image", name="ServingImageBuild"):
    """The image ``<repository>:<tag>@<digest>``, built by the stack's CodeBuild project if the tag is missing."""

    image: pulumi.Output[str]
    digest: pulumi.Output[str]
    build_id: pulumi.Output[str]
    log_url: pulumi.Output[str]

    def __init__(self, name: str, args: ServingImageBuildArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props: dict[str, Any] = {
            "region": args.region,
            "project_name": args.project_name,
            "repository_name": args.repository_name,
            "repository_url": args.repository_url,
            "tag": args.tag,
            "timeout_minutes": args.timeout_minutes,
            "poll_seconds": args.poll_seconds,
            # outputs
            "image": None,
            "digest": None,
            "build_id": None,
            "log_url": None,
        }
        super().__init__(ImageBuildProvider(), name, props, opts)
