"""The serving image the stack builds: its inputs and tag, its sources, its builder and the starter that waits for it.

The starter (``infra/image_build.py``) is driven three ways: directly with botocore's Stubber (each call checked
against the CodeBuild/ECR API models), inside the offline render (the mocked `pulumi up`), and in Pulumi's real
dynamic-provider process (``python -m pulumi.dynamic``, over gRPC as the engine drives it) against a fake AWS
endpoint on 127.0.0.1, which is where the one-line failure is proven.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra import image, tokens
from infra.image_build import ImageBuildFailed, ImageBuildProvider, failure_line, log_url
from tools.build_fake import (
    DOCKER_BUILD_ERROR,
    Call,
    ProviderError,
    build_record,
    digest_of,
    run_create,
    scenario,
    stubbed_clients,
)
from tools.render import IMAGE_BUILD_TYPE, Render, RenderDeployError, render

from .conftest import REPO, rendered

BUILD = IMAGE_BUILD_TYPE
PREBUILT = "123456789012.dkr.ecr.us-west-2.amazonaws.com/team/serving:2026-11-30"
BIN = Path(sys.executable).parent


def build_inputs(r: Render) -> dict[str, Any]:
    (b,) = r.of_type(BUILD)
    return dict(b["inputs"])


def project_env(r: Render) -> dict[str, str]:
    (p,) = r.of_type(tokens.CODEBUILD_PROJECT)
    return {v["name"]: v["value"] for v in p["inputs"]["environment"]["environmentVariables"]}


def rayservice_images(r: Render) -> set[str]:
    (rs,) = [m for m in r.manifests() if m["kind"] == "RayService"]
    cluster = rs["spec"]["rayClusterConfig"]
    specs = [cluster["headGroupSpec"]["template"]["spec"]]
    specs += [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    return {c["image"] for s in specs for c in s["containers"] if c["name"].startswith("ray-")}


# ---------------------------------------------------------------------------------------------------------------
# Inputs, tag, base image, names.
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    d = tmp_path / "image"
    shutil.copytree(image.IMAGE_DIR, d)
    return d


def test_every_file_of_workloads_image_is_an_input_and_changes_the_tag(image_dir: Path) -> None:
    first = image.image_inputs(image_dir)
    assert {i.path for i in first} == {p.relative_to(image_dir).as_posix() for p in image_dir.rglob("*") if p.is_file()}
    tag = image.image_tag(first)
    assert re.fullmatch(r"[0-9a-f]{16}", tag)
    assert image.image_tag(image.image_inputs(image_dir)) == tag  # stable
    # A new file the Dockerfile COPYs (whatever it is) is an input.
    (image_dir / "install-neuron-stack.sh").write_text("#!/bin/bash\npip check\n")
    added = image.image_tag(image.image_inputs(image_dir))
    assert added != tag
    # Its executable bit is an input too (the buildspec restores it).
    (image_dir / "install-neuron-stack.sh").chmod(0o755)
    assert image.image_tag(image.image_inputs(image_dir)) not in (tag, added)
    # So is every byte of the Dockerfile.
    (image_dir / "install-neuron-stack.sh").unlink()
    dockerfile = image_dir / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + "\n")
    assert image.image_tag(image.image_inputs(image_dir)) != tag


def test_interpreter_droppings_are_not_inputs(image_dir: Path) -> None:
    tag = image.image_tag(image.image_inputs(image_dir))
    (image_dir / "__pycache__").mkdir()
    (image_dir / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (image_dir / "Dockerfile~").write_text("backup")
    assert image.image_tag(image.image_inputs(image_dir)) == tag


def test_a_directory_without_dockerfile_is_refused(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("x")
    with pytest.raises(Exception, match="no Dockerfile"):
        image.image_inputs(tmp_path)


def test_the_render_builds_the_tag_of_the_committed_inputs(dev: Render) -> None:
    tag = image.image_tag(image.image_inputs())
    assert build_inputs(dev)["tag"] == tag
    assert project_env(dev)["IMAGE_TAG"] == tag
    (source,) = dev.of_type(tokens.S3_OBJECT)
    assert source["inputs"]["key"] == f"{image.SOURCE_PREFIX}/{tag}.zip"
    # The zip holds every input, by the relative path Pulumi stores (the same on every machine).
    assets = source["inputs"]["source"]["assets"]
    assert {k: v["path"] for k, v in assets.items()} == {
        i.path: f"workloads/image/{i.path}" for i in image.image_inputs()
    }
    (project,) = dev.of_type(tokens.CODEBUILD_PROJECT)
    assert project["inputs"]["source"]["location"] == f"{dev.outputs['artifactBucketName']}/{source['inputs']['key']}"
    assert project["inputs"]["source"]["type"] == "S3"


def test_the_base_comes_from_the_dockerfile_through_the_stacks_pull_through_cache(dev: Render) -> None:
    base = image.base_image()
    text = (image.IMAGE_DIR / "Dockerfile").read_text()
    assert f"ARG BASE_IMAGE={base.registry}/{base.repository}{base.reference}" in text
    (rule,) = dev.of_type("aws:ecr/pullThroughCacheRule:PullThroughCacheRule")
    assert rule["inputs"] == {
        "ecrRepositoryPrefix": "eks-neuron-llm-dev-public",
        "upstreamRegistryUrl": "public.ecr.aws",
    }
    cache = dev.one(tokens.ECR_REPOSITORY, "serving-build-base")["inputs"]
    assert cache["name"] == f"eks-neuron-llm-dev-public/{base.repository}"
    registry = dev.outputs["imageRepositoryUrl"].split("/")[0]
    assert project_env(dev)["BASE_IMAGE"] == f"{registry}/{cache['name']}{base.reference}"


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("ARG BASE_IMAGE=docker.io/library/ubuntu:24.04", "is not on public.ecr.aws"),
        ("ARG BASE_IMAGE=public.ecr.aws/neuron/pytorch-inference-vllm-neuronx", "not an image pinned"),
        ("ARG OTHER=1", "no `ARG BASE_IMAGE=<image>`"),
    ],
)
def test_a_base_the_cache_cannot_serve_is_one_line(image_dir: Path, arg: str, message: str) -> None:
    dockerfile = image_dir / "Dockerfile"
    dockerfile.write_text(re.sub(r"^ARG BASE_IMAGE=\S+$", arg, dockerfile.read_text(), flags=re.MULTILINE))
    with pytest.raises(Exception, match=re.escape(message)) as e:
        image.base_image(image_dir)
    assert "\n" not in str(e.value) and str(e.value).startswith("workloads/image/Dockerfile: ")


def test_a_digest_pinned_base_keeps_its_digest(image_dir: Path) -> None:
    dockerfile = image_dir / "Dockerfile"
    digest = "@sha256:" + "a" * 64
    dockerfile.write_text(
        re.sub(r"^(ARG BASE_IMAGE=\S+)$", rf"\g<1>{digest}", dockerfile.read_text(), flags=re.MULTILINE)
    )
    base = image.base_image(image_dir)
    assert base.reference.endswith(digest) and base.through("r/p/x") == f"r/p/x{base.reference}"


ECR_PREFIX = re.compile(r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*")


@pytest.mark.parametrize(
    "cluster",
    [
        "eks-neuron-llm-dev",
        "eks-neuron-llm-prod",
        "A",
        "Eks--Neuron-LLM-",
        "x" * 38,
        "a-very-long-cluster-name-for-team-b",
    ],
)
def test_the_cache_prefix_is_a_valid_ecr_prefix_of_at_most_30(cluster: str) -> None:
    prefix = image.cache_prefix(cluster)
    assert 2 <= len(prefix) <= image.CACHE_PREFIX_MAX and ECR_PREFIX.fullmatch(prefix), prefix


def test_long_cluster_names_keep_distinct_cache_prefixes() -> None:
    a, b = image.cache_prefix("platform-team-serving-cluster-a"), image.cache_prefix("platform-team-serving-cluster-b")
    assert a != b and image.cache_prefix("eks-neuron-llm-dev") == "eks-neuron-llm-dev-public"


# ---------------------------------------------------------------------------------------------------------------
# The buildspec.
# ---------------------------------------------------------------------------------------------------------------


def _shellcheck(spec: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    phases = yaml.safe_load(spec)["phases"]
    commands = [c for phase in ("pre_build", "build") for c in phases[phase]["commands"]]
    # The variables CodeBuild provides (the project's environment and AWS_DEFAULT_REGION) are declared first.
    script = "#!/bin/bash\nset -euo pipefail\n" + "".join(
        f': "${{{v}:?}}"\n' for v in ("AWS_DEFAULT_REGION", "BASE_IMAGE", "IMAGE_REPOSITORY", "IMAGE_TAG")
    )
    path = tmp_path / "buildspec.sh"
    path.write_text(script + "\n".join(commands) + "\n")
    return subprocess.run(
        [str(BIN / "shellcheck"), "--shell=bash", "--severity=style", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_buildspec_commands_pass_shellcheck_and_the_check_can_fail(tmp_path: Path) -> None:
    inputs = (*image.image_inputs(), image.ImageInput("tools/run step.sh", True, "0" * 64))
    spec = image.buildspec(inputs)
    done = _shellcheck(spec, tmp_path)
    assert (done.returncode, done.stdout) == (0, "")
    broken = spec.replace('--tag "$IMAGE_REPOSITORY:$IMAGE_TAG"', "--tag $IMAGE_REPOSITORY:$IMAGE_TAG")
    assert broken != spec
    assert "SC2086" in _shellcheck(broken, tmp_path).stdout


def test_the_buildspec_builds_with_the_cached_base_and_pushes_only_after_a_build() -> None:
    inputs = (*image.image_inputs(), image.ImageInput("install.sh", True, "0" * 64))
    spec = yaml.safe_load(image.buildspec(inputs))
    assert spec["version"] == 0.2
    pre, build = spec["phases"]["pre_build"], spec["phases"]["build"]
    assert pre["on-failure"] == build["on-failure"] == "ABORT"
    assert pre["commands"][:2] == ["find . -type f -exec chmod 0644 {} +", "chmod 0755 'install.sh'"]
    assert "docker login" in pre["commands"][-1]
    docker_build, push = build["commands"]
    assert '--build-arg "BASE_IMAGE=$BASE_IMAGE"' in docker_build and "--platform linux/amd64" in docker_build
    assert push == 'docker push "$IMAGE_REPOSITORY:$IMAGE_TAG"'
    assert "post_build" not in spec["phases"]  # a post_build would run (and push) after a failed build


def test_the_project_is_a_private_privileged_large_builder_with_its_own_logs(each_stack: Render) -> None:
    (p,) = each_stack.of_type(tokens.CODEBUILD_PROJECT)
    env = p["inputs"]["environment"]
    assert (env["computeType"], env["privilegedMode"], env["type"]) == ("BUILD_GENERAL1_LARGE", True, "LINUX_CONTAINER")
    assert p["inputs"]["projectVisibility"] == "PRIVATE"
    assert p["inputs"]["source"]["buildspec"] == image.buildspec(image.image_inputs())
    (logs,) = each_stack.of_type("aws:cloudwatch/logGroup:LogGroup")
    assert p["inputs"]["logsConfig"]["cloudwatchLogs"]["groupName"] == logs["inputs"]["name"]
    assert logs["inputs"]["retentionInDays"] == image.LOG_RETENTION_DAYS
    # the starter waits as long as CodeBuild may queue and run the build, and a little more
    assert build_inputs(each_stack)["timeout_minutes"] > p["inputs"]["buildTimeout"] + p["inputs"]["queuedTimeout"]


# ---------------------------------------------------------------------------------------------------------------
# The build role: least privilege.
# ---------------------------------------------------------------------------------------------------------------


def test_the_build_role_pushes_to_its_repository_pulls_through_its_cache_reads_its_sources_writes_its_logs(
    dev: Render,
) -> None:
    doc = json.loads(dev.one(tokens.IAM_ROLE_POLICY, "serving-build-inline")["inputs"]["policy"])
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    repo = "arn:aws:ecr:us-west-2:123456789012:repository/eks-neuron-llm-dev/serving"
    bucket = f"arn:aws:s3:::{dev.outputs['artifactBucketName']}"
    group = "arn:aws:logs:us-west-2:123456789012:log-group:/aws/codebuild/eks-neuron-llm-dev-serving-image"
    assert {sid: s["Resource"] for sid, s in by_sid.items()} == {
        "RegistryLogin": "*",
        "PushServingImage": repo,
        "PullBaseThroughCache": "arn:aws:ecr:us-west-2:123456789012:repository/eks-neuron-llm-dev-public/*",
        "ReadSources": f"{bucket}/image-sources/*",
        "SourceBucketOwner": bucket,
        "WriteBuildLogs": [group, f"{group}:log-stream:*"],
    }
    assert by_sid["RegistryLogin"]["Action"] == "ecr:GetAuthorizationToken"
    assert set(by_sid["PushServingImage"]["Action"]) == set(image.PUSH_ACTIONS)
    assert "ecr:BatchImportUpstreamImage" in by_sid["PullBaseThroughCache"]["Action"]
    # The cache repository is declared, so ECR never needs to create one: no CreateRepository anywhere.
    actions = {a for s in doc["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert "ecr:CreateRepository" not in actions and not any(a.endswith("*") for a in actions)
    assert all(s["Effect"] == "Allow" for s in doc["Statement"])
    trust = json.loads(dev.one(tokens.IAM_ROLE, "serving-build")["inputs"]["assumeRolePolicy"])
    (stmt,) = trust["Statement"]
    assert stmt["Principal"] == {"Service": "codebuild.amazonaws.com"}
    assert stmt["Condition"] == {
        "StringEquals": {"aws:SourceAccount": "123456789012"},
        "ArnLike": {
            "aws:SourceArn": "arn:aws:codebuild:us-west-2:123456789012:project/eks-neuron-llm-dev-serving-image"
        },
    }


# ---------------------------------------------------------------------------------------------------------------
# The RayService runs what the build made; a prebuilt image skips the build.
# ---------------------------------------------------------------------------------------------------------------


def test_the_dev_rayservice_runs_the_image_the_build_produced(dev: Render) -> None:
    (b,) = dev.of_type(BUILD)
    built = dev.outputs["servingImage"]
    tag = build_inputs(dev)["tag"]
    assert built == f"{dev.outputs['imageRepositoryUrl']}:{tag}@{digest_of(b['inputs'])}"
    assert rayservice_images(dev) == {built}
    (rs,) = dev.of_type(tokens.RAY_SERVICE)
    assert rs["propertyDependencies"]["spec"] and b["urn"] in rs["propertyDependencies"]["spec"]


def test_a_prebuilt_image_is_used_as_is_and_nothing_is_built() -> None:
    r = rendered("dev", servingImage=PREBUILT)
    assert rayservice_images(r) == {PREBUILT} and r.outputs["servingImage"] == PREBUILT
    for typ in (BUILD, tokens.CODEBUILD_PROJECT, "aws:ecr/pullThroughCacheRule:PullThroughCacheRule"):
        assert r.of_type(typ) == [], typ
    assert r.one(tokens.ECR_REPOSITORY, "serving-image")  # the repository stays for images pushed by hand


def test_an_existing_tag_is_not_rebuilt_in_the_render() -> None:
    r = render("dev", image_build="exists")
    assert r.outputs["servingImage"] == rendered("dev").outputs["servingImage"]
    (b,) = r.of_type(BUILD)
    assert b["inputs"]["tag"]  # the inputs are the same; the fake AWS made no build (its Stubber checked the calls)


def test_a_failing_build_fails_the_mocked_pulumi_up_with_one_line() -> None:
    with pytest.raises(RenderDeployError) as e:
        render("dev", image_build="failed")
    (line,) = e.value.lines
    assert line.startswith("serving-build: error: infra.image_build.ImageBuildFailed: serving image build ")
    assert " FAILED in phase BUILD: " in line and DOCKER_BUILD_ERROR in line
    assert re.search(r"; log: https://console\.aws\.amazon\.com/cloudwatch/\S+$", line)
    assert "Traceback" not in line
    assert getattr(sys, "tracebacklimit", None) is None  # the render restored the process's traceback limit


# ---------------------------------------------------------------------------------------------------------------
# The starter against botocore's Stubber.
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def props() -> dict[str, Any]:
    return build_inputs(rendered("dev"))


def _provider(calls: Sequence[Call]) -> tuple[ImageBuildProvider, list[Any]]:
    codebuild, ecr, stubbers = stubbed_clients(calls, "us-west-2")
    provider = ImageBuildProvider()
    provider.clients = lambda _region: (codebuild, ecr)  # type: ignore[method-assign]
    provider.sleep = lambda _s: None  # type: ignore[method-assign]
    return provider, stubbers


@pytest.mark.parametrize("outcome", ["built", "exists"])
def test_create_makes_exactly_the_calls_of_its_outcome(props: dict[str, Any], outcome: str) -> None:
    provider, stubbers = _provider(scenario(props, outcome, "us-west-2"))
    result = provider.create(dict(props))
    for stub in stubbers:
        stub.assert_no_pending_responses()
    assert result.id == f"{props['repository_name']}:{props['tag']}"
    assert result.outs["image"] == f"{props['repository_url']}:{props['tag']}@{digest_of(props)}"
    assert bool(result.outs["build_id"]) == (outcome == "built") == bool(result.outs["log_url"])


def test_a_build_of_the_same_tag_still_running_is_joined_not_started_twice(props: dict[str, Any]) -> None:
    running = build_record(props, "IN_PROGRESS", "us-west-2")
    other_tag = build_record({**props, "tag": "0" * 16}, "IN_PROGRESS", "us-west-2")
    done = build_record(props, "SUCCEEDED", "us-west-2")
    calls = [
        scenario(props, "built", "us-west-2")[0],
        Call(
            "codebuild",
            "list_builds_for_project",
            {"projectName": props["project_name"], "sortOrder": "DESCENDING"},
            {"ids": [other_tag["id"], running["id"]]},
        ),
        Call(
            "codebuild", "batch_get_builds", {"ids": [other_tag["id"], running["id"]]}, {"builds": [other_tag, running]}
        ),
        Call("codebuild", "batch_get_builds", {"ids": [running["id"]]}, {"builds": [done]}),
        scenario(props, "built", "us-west-2")[-1],
    ]
    provider, stubbers = _provider(calls)
    assert provider.create(dict(props)).outs["build_id"] == running["id"]
    for stub in stubbers:
        stub.assert_no_pending_responses()  # no start_build was expected, and none was made


def test_a_build_that_never_ends_is_given_up_with_one_line(props: dict[str, Any]) -> None:
    calls = scenario(props, "built", "us-west-2")[:4]  # it is still running at the first poll
    provider, _ = _provider(calls)
    ticks = iter([0.0, 10_000.0])
    provider.clock = lambda: next(ticks)  # type: ignore[method-assign]
    with pytest.raises(ImageBuildFailed, match=r"still running after 95 minutes; log: https://") as e:
        provider.create(dict(props))
    assert "\n" not in str(e.value)


def test_the_failure_line_names_the_phase_the_reason_and_the_log() -> None:
    build = build_record({"project_name": "p", "tag": "t"}, "FAILED", "us-east-1")
    line = failure_line(build)
    assert line.startswith(f"serving image build {build['id']} FAILED in phase BUILD: Error while executing command")
    assert line.endswith(f"; log: {build['logs']['deepLink']}") and "\n" not in line
    # without a deep link (no log stream yet), the build's console page
    build.pop("logs")
    assert log_url(build) == (
        "https://us-east-1.console.aws.amazon.com/codesuite/codebuild/123456789012/projects/p/build/"
        f"{build['id'].replace(':', '%3A')}/log?region=us-east-1"
    )


def test_only_a_new_tag_or_repository_rebuilds(props: dict[str, Any]) -> None:
    p = ImageBuildProvider()
    assert p.diff("x", props, dict(props)).changes is False
    assert p.diff("x", props, {**props, "project_name": "renamed", "poll_seconds": 1}).changes is False
    new = p.diff("x", props, {**props, "tag": "0" * 16})
    assert (new.changes, new.replaces, new.delete_before_replace) == (True, ["tag"], False)
    assert p.diff("x", props, {**props, "repository_url": "elsewhere"}).replaces == ["repository_url"]


def test_run_create_reports_what_the_provider_process_would(props: dict[str, Any]) -> None:
    with pytest.raises(ProviderError) as e:
        run_create(props, "failed", "us-west-2")
    assert e.value.details.count("\n") == 1 and e.value.details.startswith("infra.image_build.ImageBuildFailed: ")
    assert getattr(sys, "tracebacklimit", None) is None


# ---------------------------------------------------------------------------------------------------------------
# The real dynamic-provider process, against a fake AWS endpoint on 127.0.0.1.
# ---------------------------------------------------------------------------------------------------------------

TARGET_PREFIX = {"codebuild": "CodeBuild_20161006", "ecr": "AmazonEC2ContainerRegistry_V20150921"}


class FakeAws:
    """Answers CodeBuild/ECR JSON-protocol requests with a scenario's calls, in order, checking each request."""

    def __init__(self, calls: Sequence[Call]) -> None:
        self.calls = list(calls)
        self.problems: list[str] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                status, answer = fake.answer(self.headers.get("X-Amz-Target", ""), body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, target: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if not self.calls:
                self.problems.append(f"unexpected call {target}")
                return 400, {"__type": "InvalidRequestException", "message": "unexpected"}
            call = self.calls.pop(0)
            wanted = f"{TARGET_PREFIX[call.service]}.{call.api_name}"
            if target != wanted or body != call.params:
                self.problems.append(f"expected {wanted} {call.params}, got {target} {body}")
            if call.error:
                return 400, {"__type": call.error, "message": call.error}
            return 200, dict(call.response)

    def __enter__(self) -> FakeAws:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider_process(tmp_path: Path) -> Iterator[Any]:
    """Pulumi's dynamic-provider process, started as the engine starts it (from the project directory)."""

    def start(endpoint: str) -> Any:
        import grpc
        from pulumi.runtime.proto import provider_pb2_grpc

        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "offline",
            "AWS_SECRET_ACCESS_KEY": "offline",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "PULUMI_PROJECT": "eks-neuron-llm",
        }
        proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "pulumi.dynamic"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        port = int(proc.stdout.readline().strip())
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        return provider_pb2_grpc.ResourceProviderStub(channel)

    procs: list[subprocess.Popen[str]] = []
    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=30)


def _create(stub: Any, inputs: dict[str, Any]) -> dict[str, Any]:
    from pulumi.runtime import rpc
    from pulumi.runtime.proto import provider_pb2

    properties = asyncio.run(rpc.serialize_properties(inputs, {}))
    response = stub.Create(
        provider_pb2.CreateRequest(
            urn=f"urn:pulumi:dev::eks-neuron-llm::{BUILD}::serving-build", properties=properties
        ),
        timeout=60,
    )
    return dict(rpc.deserialize_properties(response.properties))


def test_the_real_provider_process_builds_a_missing_tag(provider_process: Any) -> None:
    inputs = {**build_inputs(rendered("dev")), "poll_seconds": 0}
    with FakeAws(scenario(inputs, "built", "us-west-2")) as aws:
        outs = _create(provider_process(aws.url), inputs)
    assert aws.problems == [] and aws.calls == []
    assert outs["image"] == rendered("dev").outputs["servingImage"]


def test_the_real_provider_process_fails_a_failed_build_with_one_line(provider_process: Any) -> None:
    import grpc

    inputs = {**build_inputs(rendered("dev")), "poll_seconds": 0}
    with FakeAws(scenario(inputs, "failed", "us-west-2")) as aws, pytest.raises(grpc.RpcError) as e:
        _create(provider_process(aws.url), inputs)
    assert aws.problems == [] and aws.calls == []
    details = e.value.details()
    # What the engine prints under the resource, `error: <details>`: one line, no traceback, the log's link.
    assert details.strip().count("\n") == 0, details
    assert details.startswith("infra.image_build.ImageBuildFailed: serving image build ")
    assert "FAILED in phase BUILD" in details and "; log: https://" in details


def test_without_the_providers_configure_the_process_would_print_a_traceback(props: dict[str, Any]) -> None:
    # What the one line rests on: Pulumi's provider process formats create()'s exception with format_exc().
    try:
        raise ImageBuildFailed(failure_line(build_record(props, "FAILED", "us-west-2")))
    except ImageBuildFailed:
        assert traceback.format_exc().startswith("Traceback (most recent call last):")
