"""The benchmark Job: the old blueprint's profile as `vllm bench serve` arguments, against the serve Service,
hardened on the default pool, results in the log and (when configured) under one S3 prefix the Job alone may write."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest

from infra.config import ConfigError, parse
from policy.rules import image_problem
from tools.render import Render, stack_config
from workloads import bench, netpol, rayservice
from workloads.topology import DEFAULT_POOL, NODEPOOL_LABEL

from .conftest import rendered


def objects(r: Render, kind: str) -> list[dict[str, Any]]:
    return [m for m in r.manifests() if m["kind"] == kind and m["metadata"].get("namespace") == bench.NAMESPACE]


def the_job(r: Render) -> dict[str, Any]:
    (job,) = objects(r, "Job")
    return job


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_dev_runs_the_benchmark_prod_does_not_by_default(dev: Render, prod: Render) -> None:
    assert the_job(dev)["metadata"]["name"] == bench.NAME
    assert [m for m in prod.manifests() if m["kind"] == "Job"] == []
    assert "benchmarkResultsUri" not in prod.outputs
    assert not [r for r in prod.resources if r["type"] == "eks-neuron-llm:infra:Benchmark"]


def test_the_profile_is_the_old_blueprints() -> None:
    target = bench.Target("http://svc:8000", "m", "m")
    steps = bench.sweep(bench.BLUEPRINT, target, "/results")
    assert [int(flag(s, "--max-concurrency")) for s in steps] == [1, 2, 4, 8, 16]
    assert [int(flag(s, "--num-prompts")) for s in steps] == [8, 16, 32, 64, 128]
    for s in steps:
        assert flag(s, "--dataset-name") == "random"
        assert (flag(s, "--random-input-len"), flag(s, "--random-output-len")) == ("512", "245")
        ratio = json.loads(flag(s, "--random-range-ratio"))
        # vLLM samples in [len * (1 - r), len * (1 + r)]: exactly ± 20 tokens each way.
        assert round(512 * ratio["input"]) == 20 and round(245 * ratio["output"]) == 20
        assert "--ignore-eos" in s and "--save-result" in s and "--save-detailed" in s
        assert flag(s, "--request-rate") == "inf"
        assert flag(s, "--metric-percentiles") == "50,95"
    assert [flag(s, "--result-filename") for s in steps] == [f"c{c}.json" for c in (1, 2, 4, 8, 16)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_spread": 600}, "spreads"),
        ({"output_spread": -1}, "spreads"),
        ({"concurrencies": ()}, "concurrencies"),
        ({"concurrencies": (0, 2)}, "concurrencies"),
        ({"requests_per_concurrency": 0}, "concurrencies"),
    ],
)
def test_a_bad_profile_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bench.Profile(**kwargs)


def test_the_script_targets_the_serve_service_and_waits_only_on_the_first_step(dev: Render) -> None:
    (cm,) = objects(dev, "ConfigMap")
    script = cm["data"][bench.SCRIPT_KEY]
    steps = [shlex.split(line) for line in script.splitlines() if line.startswith("vllm bench serve")]
    assert len(steps) == 5
    (rs,) = [m for m in dev.manifests() if m["kind"] == "RayService"]
    # The Service KubeRay makes for the RayService, in its namespace, on the Serve port: the same host Open WebUI uses.
    expected = f"http://{rs['metadata']['name']}-serve-svc.{rs['metadata']['namespace']}.svc.cluster.local:8000"
    assert {flag(s, "--base-url") for s in steps} == {expected}
    assert dev.outputs["servingEndpoint"] == expected + "/v1"
    model = dev.outputs["modelId"]
    assert {flag(s, "--model") for s in steps} == {model} == {flag(s, "--tokenizer") for s in steps}
    assert [flag(s, "--ready-check-timeout-sec") for s in steps] == [str(bench.READY_TIMEOUT_S)] + ["60"] * 4
    assert script.startswith("#!/bin/sh\nset -eu\n")


def test_the_namespace_is_the_one_the_serve_policy_admits(dev: Render) -> None:
    assert bench.NAMESPACE == netpol.BENCH_NAMESPACE
    (policy,) = [
        m for m in dev.manifests() if m["kind"] == "NetworkPolicy" and m["metadata"]["name"] == "serve-clients"
    ]
    peers = policy["spec"]["ingress"][0]["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": bench.NAMESPACE}}} in peers
    (ns,) = [m for m in dev.manifests() if m["kind"] == "Namespace" and m["metadata"]["name"] == bench.NAMESPACE]
    assert ns


def test_the_job_runs_hardened_on_the_default_pool_and_never_retries(dev: Render) -> None:
    job = the_job(dev)
    assert job["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["activeDeadlineSeconds"] > 0
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {NODEPOOL_LABEL: DEFAULT_POOL}
    assert "tolerations" not in pod
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == bench.SERVICE_ACCOUNT
    assert pod["securityContext"]["runAsNonRoot"] is True
    for c in pod["containers"] + pod.get("initContainers", []):
        assert image_problem(c["image"]) is None
        assert c["resources"]["requests"] and c["resources"]["limits"]
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["capabilities"] == {"drop": ["ALL"]}
        assert not sc["allowPrivilegeEscalation"]


def test_with_a_prefix_the_sweep_runs_first_and_an_upload_container_copies_the_results(dev: Render) -> None:
    pod = the_job(dev)["spec"]["template"]["spec"]
    (sweep,) = pod["initContainers"]
    (upload,) = pod["containers"]
    assert sweep["name"] == "sweep" and sweep["image"] == bench.IMAGE
    assert upload["name"] == "upload" and upload["image"] == bench.UPLOAD_IMAGE
    uri = dev.outputs["benchmarkResultsUri"]
    assert uri.startswith("s3://") and uri.endswith("/benchmarks")
    assert uri in upload["command"][-1]
    assert dev.outputs["benchmarkLogs"] == "kubectl -n bench logs -f job/llm-bench --all-containers"


def test_the_results_role_may_only_write_under_its_prefix(dev: Render) -> None:
    (assoc,) = [
        r
        for r in dev.resources
        if r["type"] == "aws:eks/podIdentityAssociation:PodIdentityAssociation"
        and r["inputs"].get("namespace") == bench.NAMESPACE
    ]
    assert assoc["inputs"]["serviceAccount"] == bench.SERVICE_ACCOUNT
    (policy,) = [r for r in dev.resources if r["type"] == "aws:iam/rolePolicy:RolePolicy" and "benchmark" in r["name"]]
    doc = json.loads(policy["inputs"]["policy"])
    (statement,) = doc["Statement"]
    assert statement["Action"] == "s3:PutObject"
    assert statement["Resource"].endswith("/benchmarks/*") and statement["Resource"].startswith("arn:aws:s3:::")
    # The Job's pod is created after both: credentials are injected at pod creation, the upload needs the policy.
    job_deps = set(dev.one("kubernetes:batch/v1:Job", "benchmark-job")["dependencies"])
    assert {assoc["urn"], policy["urn"]} <= job_deps


def test_without_a_prefix_the_results_stay_in_the_log_and_no_role_exists() -> None:
    r = rendered("dev", benchmarkResultsPrefix="")
    pod = the_job(r)["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    (sweep,) = pod["containers"]
    assert sweep["name"] == "sweep"
    assert r.outputs["benchmarkResultsUri"] == ""
    assert not [x for x in r.resources if x["type"] == "aws:iam/role:Role" and "benchmark" in x["name"]]


def test_a_gated_model_gets_its_token_in_the_bench_namespace() -> None:
    r = rendered("dev", hfToken="hf_example", modelId="meta-llama/Meta-Llama-3-8B-Instruct")
    names = {s["metadata"]["name"] for s in objects(r, "Secret")}
    assert names == {rayservice.HF_TOKEN_SECRET, rayservice.API_KEY_SECRET}
    pod = the_job(r)["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["initContainers"][0]["env"]}
    assert env[rayservice.HF_TOKEN_KEY]["valueFrom"]["secretKeyRef"]["name"] == rayservice.HF_TOKEN_SECRET


def test_the_job_waits_for_what_it_mounts_the_service_it_loads_and_its_pool(dev: Render) -> None:
    (job,) = [r for r in dev.resources if r["type"] == "kubernetes:batch/v1:Job"]
    by_urn = {r["urn"]: r for r in dev.resources if "urn" in r}
    deps = {by_urn[u]["type"] for u in job["dependencies"] if u in by_urn}
    for needed in (
        "kubernetes:core/v1:ConfigMap",
        "kubernetes:core/v1:ServiceAccount",
        "aws:eks/podIdentityAssociation:PodIdentityAssociation",
        "kubernetes:ray.io/v1:RayService",
        "kubernetes:karpenter.sh/v1:NodePool",
    ):
        assert needed in deps, (needed, deps)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("benchmarkEnabled", "yes", "eks-neuron-llm:benchmarkEnabled: 'yes' is not allowed; allowed: true | false"),
        (
            "benchmarkResultsPrefix",
            "Results_/x",
            "eks-neuron-llm:benchmarkResultsPrefix: 'Results_/x' is not allowed; allowed: empty",
        ),
        ("benchmarkResultsPrefix", "/lead", "eks-neuron-llm:benchmarkResultsPrefix: '/lead' is not allowed"),
    ],
)
def test_bad_benchmark_config_is_one_line(key: str, value: str, message: str) -> None:
    _, values, _ = stack_config("dev", {f"eks-neuron-llm:{key}": value})
    with pytest.raises(ConfigError) as info:
        parse(values, stack="dev")
    assert len(info.value.problems) == 1 and info.value.problems[0].startswith(message)
