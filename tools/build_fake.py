"""A fake AWS for the serving image build's starter (``infra/image_build.py``), for the offline render and the tests.

A scenario is the exact sequence of CodeBuild and ECR calls the starter makes for one outcome, each with the
parameters it must send and the answer AWS gives:

- ``built``: the tag is not in ECR, no build of it is running, a build starts, is polled once while it runs, then
  succeeds and the image is there;
- ``exists``: ECR already has the tag: nothing is built;
- ``failed``: as ``built``, but the build fails in its BUILD phase (a failing ``docker build``).

``stubbed_clients`` plays a scenario through real botocore clients with botocore's ``Stubber``, which checks every
request's parameters and every canned answer against the services' API models.  ``run_create`` does what Pulumi's
dynamic-provider process does with a resource: unpickle the provider from the resource's ``__provider`` input,
``configure`` it, call ``create``, and on an exception report ``traceback.format_exc()``.  The offline render runs it
for the ``ServingImageBuild`` resource, so its outputs (the image reference with a digest) are the provider's own.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

OUTCOMES = ("built", "exists", "failed")
ACCOUNT = "123456789012"
DOCKER_BUILD_ERROR = (
    'Error while executing command: docker build --platform linux/amd64 --build-arg "BASE_IMAGE=$BASE_IMAGE" '
    '--tag "$IMAGE_REPOSITORY:$IMAGE_TAG" .. Reason: exit status 1'
)


class ProviderError(Exception):
    """``create`` raised: ``details`` is what Pulumi's dynamic-provider process reports as the resource's error."""

    def __init__(self, details: str) -> None:
        self.details = details
        super().__init__(details)


@dataclass(frozen=True)
class Call:
    service: str  # "codebuild" or "ecr"
    operation: str  # the botocore method name, e.g. "start_build"
    params: Mapping[str, Any]
    response: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None  # an AWS error code instead of a response

    @property
    def api_name(self) -> str:
        return "".join(part.capitalize() for part in self.operation.split("_"))


def build_record(props: Mapping[str, Any], status: str, region: str, account: str = ACCOUNT) -> dict[str, Any]:
    """A CodeBuild build as BatchGetBuilds returns it, for this resource's project and tag."""
    project, tag = str(props["project_name"]), str(props["tag"])
    build_id = f"{project}:{hashlib.sha256(f'{project}/{tag}'.encode()).hexdigest()[:8]}-0000-4000-8000-000000000000"
    group = f"/aws/codebuild/{project}"
    stream = build_id.split(":", 1)[1]
    phases: list[dict[str, Any]] = [
        {"phaseType": "SUBMITTED", "phaseStatus": "SUCCEEDED"},
        {"phaseType": "QUEUED", "phaseStatus": "SUCCEEDED"},
        {"phaseType": "PROVISIONING", "phaseStatus": "SUCCEEDED"},
        {"phaseType": "DOWNLOAD_SOURCE", "phaseStatus": "SUCCEEDED"},
        {"phaseType": "PRE_BUILD", "phaseStatus": "SUCCEEDED"},
    ]
    if status == "SUCCEEDED":
        phases.append({"phaseType": "BUILD", "phaseStatus": "SUCCEEDED"})
    elif status == "FAILED":
        phases.append(
            {
                "phaseType": "BUILD",
                "phaseStatus": "FAILED",
                "contexts": [{"statusCode": "COMMAND_EXECUTION_ERROR", "message": DOCKER_BUILD_ERROR}],
            }
        )
    else:
        phases.append({"phaseType": "BUILD"})
    return {
        "id": build_id,
        "arn": f"arn:aws:codebuild:{region}:{account}:build/{build_id}",
        "projectName": project,
        "buildStatus": status,
        "buildComplete": status != "IN_PROGRESS",
        "currentPhase": "COMPLETED" if status != "IN_PROGRESS" else "BUILD",
        "phases": phases,
        "environment": {
            "type": "LINUX_CONTAINER",
            "image": "aws/codebuild/standard:7.0",
            "computeType": "BUILD_GENERAL1_LARGE",
            "environmentVariables": [{"name": "IMAGE_TAG", "value": tag, "type": "PLAINTEXT"}],
        },
        "logs": {
            "groupName": group,
            "streamName": stream,
            "deepLink": (
                f"https://console.aws.amazon.com/cloudwatch/home?region={region}#logsV2:log-groups/log-group/"
                f"{group.replace('/', '$252F')}/log-events/{stream}"
            ),
        },
    }


def digest_of(props: Mapping[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(f"{props['repository_url']}:{props['tag']}".encode()).hexdigest()


def scenario(props: Mapping[str, Any], outcome: str, region: str) -> list[Call]:
    """The calls the starter must make for ``outcome``, in order, with AWS's answers."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
    describe = {"repositoryName": props["repository_name"], "imageIds": [{"imageTag": props["tag"]}]}
    found = {
        "imageDetails": [
            {
                "registryId": ACCOUNT,
                "repositoryName": props["repository_name"],
                "imageDigest": digest_of(props),
                "imageTags": [props["tag"]],
                "imageSizeInBytes": 8_000_000_000,
            }
        ]
    }
    if outcome == "exists":
        return [Call("ecr", "describe_images", describe, found)]
    project = props["project_name"]
    running = build_record(props, "IN_PROGRESS", region)
    ended = build_record(props, "SUCCEEDED" if outcome == "built" else "FAILED", region)
    calls = [
        Call("ecr", "describe_images", describe, error="ImageNotFoundException"),
        Call("codebuild", "list_builds_for_project", {"projectName": project, "sortOrder": "DESCENDING"}, {}),
        Call("codebuild", "start_build", {"projectName": project}, {"build": running}),
        Call("codebuild", "batch_get_builds", {"ids": [running["id"]]}, {"builds": [running]}),
        Call("codebuild", "batch_get_builds", {"ids": [running["id"]]}, {"builds": [ended]}),
    ]
    if outcome == "built":
        calls.append(Call("ecr", "describe_images", describe, found))
    return calls


@cache
def _session() -> Any:
    import botocore.session

    return botocore.session.get_session()


def stubbed_clients(calls: Sequence[Call], region: str) -> tuple[Any, Any, list[Any]]:
    """(codebuild, ecr, stubbers): real botocore clients that answer exactly ``calls``, offline."""
    from botocore.stub import Stubber

    session = _session()
    clients = {
        service: session.create_client(
            service, region_name=region, aws_access_key_id="offline", aws_secret_access_key="offline"
        )
        for service in ("codebuild", "ecr")
    }
    stubbers = {service: Stubber(client) for service, client in clients.items()}
    for call in calls:
        stub = stubbers[call.service]
        if call.error:
            stub.add_client_error(
                call.operation, service_error_code=call.error, http_status_code=400, expected_params=dict(call.params)
            )
        else:
            stub.add_response(call.operation, dict(call.response), dict(call.params))
    for stub in stubbers.values():
        stub.activate()
    return clients["codebuild"], clients["ecr"], list(stubbers.values())


def provider_from(inputs: Mapping[str, Any]) -> Any:
    """The provider pickled into the resource's ``__provider`` input, unpickled as Pulumi's provider process does."""
    import dill

    serialized = inputs["__provider"]
    if isinstance(serialized, Mapping):  # a secret under the mocks: {sig: secret, value: ...}
        serialized = serialized["value"]
    return dill.loads(base64.b64decode(serialized))


def run_create(inputs: Mapping[str, Any], outcome: str, region: str) -> dict[str, Any]:
    """``create`` the resource the way Pulumi's dynamic-provider process does, against the fake AWS of ``outcome``.

    Returns the outputs; raises ``ProviderError`` with the text the process would report when ``create`` raises.
    """
    from pulumi.dynamic import Config, ConfigureRequest

    props = dict(inputs)
    calls = scenario(props, outcome, region)
    codebuild, ecr, stubbers = stubbed_clients(calls, region)
    provider = provider_from(props)
    limit = getattr(sys, "tracebacklimit", None)
    try:
        provider.configure(ConfigureRequest(Config({}, "eks-neuron-llm")))
        provider.clients = lambda _region: (codebuild, ecr)
        provider.sleep = lambda _seconds: None
        try:
            result = provider.create(props)
        except Exception:  # reported the way the provider process reports it
            raise ProviderError(traceback.format_exc()) from None
    finally:
        if limit is None:
            if hasattr(sys, "tracebacklimit"):
                del sys.tracebacklimit
        else:
            sys.tracebacklimit = limit
    for stub in stubbers:
        stub.assert_no_pending_responses()
    outs: dict[str, Any] = {k: v for k, v in (result.outs or {}).items() if k != "__provider"}
    return outs
