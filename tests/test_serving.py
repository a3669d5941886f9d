"""Serving around the RayService: artifact bucket and worker role, ECR repository, NetworkPolicies, secrets, outputs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from infra import tokens
from infra.image import base_image
from infra.serving import (
    ARTIFACT_PREFIX,
    WEIGHTS_PREFIX,
    artifact_policy,
    base_image_warning,
    ecr_lifecycle,
    tls_only_policy,
)
from tools.render import Render
from workloads import netpol, rayservice

from .conftest import rendered

SENTINEL = "hf_test_sentinel_DO_NOT_RENDER_42"


def inputs(r: Render, typ: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = r.one(typ, name)["inputs"]
    return found


# --- artifact bucket and the worker's role ---------------------------------------------------------------------


def test_artifact_bucket_is_encrypted_private_owner_enforced_and_tls_only(dev: Render) -> None:
    sse = inputs(
        dev,
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "serving-artifacts",
    )
    assert sse["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
    pab = inputs(dev, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "serving-artifacts")
    assert all(
        pab[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    )
    own = inputs(dev, "aws:s3/bucketOwnershipControls:BucketOwnershipControls", "serving-artifacts")
    assert own["rule"]["objectOwnership"] == "BucketOwnerEnforced"
    policy = json.loads(inputs(dev, "aws:s3/bucketPolicy:BucketPolicy", "serving-artifacts")["policy"])
    (deny,) = policy["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_artifact_bucket_outlives_the_stack_only_in_prod(dev: Render, prod: Render) -> None:
    assert dev.one(tokens.S3_BUCKET, "serving-artifacts")["retainOnDelete"] is False
    assert dev.one(tokens.S3_BUCKET, "serving-artifacts")["inputs"]["forceDestroy"] is True
    assert prod.one(tokens.S3_BUCKET, "serving-artifacts")["retainOnDelete"] is True
    assert prod.one(tokens.S3_BUCKET, "serving-artifacts")["inputs"]["forceDestroy"] is False


def test_worker_role_reaches_only_the_artifact_and_weights_prefixes(dev: Render) -> None:
    bucket = dev.one(tokens.S3_BUCKET, "serving-artifacts")["inputs"]
    arn = f"arn:aws:s3:::{dev.outputs['artifactBucketName']}"
    doc = json.loads(inputs(dev, tokens.IAM_ROLE_POLICY, "serving-worker-inline")["policy"])
    assert doc == artifact_policy(arn)
    resources = [s["Resource"] for s in doc["Statement"]]
    assert resources == [arn, [f"{arn}/{ARTIFACT_PREFIX}/*", f"{arn}/{WEIGHTS_PREFIX}/*"]] and bucket
    actions = {a for s in doc["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert actions == {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"}
    trust = json.loads(inputs(dev, tokens.IAM_ROLE, "serving-worker")["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "pods.eks.amazonaws.com"}


def test_pod_identity_binds_the_role_to_the_workers_service_account(dev: Render) -> None:
    record = dev.one(tokens.EKS_POD_IDENTITY, "serving-worker")
    assoc = record["inputs"]
    assert (assoc["namespace"], assoc["serviceAccount"]) == ("vllm", rayservice.WORKER_SERVICE_ACCOUNT)
    assert record["propertyDependencies"]["roleArn"] == [dev.one(tokens.IAM_ROLE, "serving-worker")["urn"]]
    (rs,) = [m for m in dev.manifests() if m["kind"] == "RayService"]
    worker = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    assert worker["serviceAccountName"] == assoc["serviceAccount"]


def test_policy_documents() -> None:
    assert tls_only_policy("arn:aws:s3:::b")["Statement"][0]["Resource"] == ["arn:aws:s3:::b", "arn:aws:s3:::b/*"]
    cond = artifact_policy("arn:aws:s3:::b")["Statement"][0]["Condition"]
    assert cond == {"StringLike": {"s3:prefix": [f"{ARTIFACT_PREFIX}/*", f"{WEIGHTS_PREFIX}/*"]}}


def test_every_worker_prefix_has_its_incomplete_uploads_cleaned_up(dev: Render) -> None:
    typ = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
    rules = inputs(dev, typ, "serving-artifacts")["rules"]
    cleaned = {r["filter"]["prefix"] for r in rules if r["abortIncompleteMultipartUpload"]["daysAfterInitiation"] == 1}
    assert cleaned == {f"{ARTIFACT_PREFIX}/", f"{WEIGHTS_PREFIX}/"}


# --- ECR -------------------------------------------------------------------------------------------------------


def test_image_repository_is_immutable_scanned_and_pruned(dev: Render) -> None:
    repo = inputs(dev, tokens.ECR_REPOSITORY, "serving-image")
    assert repo["imageTagMutability"] == "IMMUTABLE"
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    lifecycle = json.loads(inputs(dev, "aws:ecr/lifecyclePolicy:LifecyclePolicy", "serving-image")["policy"])
    assert lifecycle == ecr_lifecycle()
    assert {r["selection"]["tagStatus"] for r in lifecycle["rules"]} == {"untagged", "any"}
    assert dev.outputs["imageRepositoryUrl"].endswith("/eks-neuron-llm-dev/serving")


# --- NetworkPolicies -------------------------------------------------------------------------------------------


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def policies(r: Render) -> dict[str, dict[str, Any]]:
    return {
        m["metadata"]["name"]: m
        for m in r.manifests()
        if m["kind"] == "NetworkPolicy" and m["metadata"]["namespace"] == rayservice.NAMESPACE
    }


def pod_labels(r: Render) -> dict[str, dict[str, str]]:
    (rs,) = [m for m in r.manifests() if m["kind"] == "RayService"]
    cluster = rs["spec"]["rayClusterConfig"]
    (ui,) = [m for m in r.manifests() if m["kind"] == "Deployment" and m["metadata"]["name"] == "open-webui"]
    return {
        "head": cluster["headGroupSpec"]["template"]["metadata"]["labels"],
        "worker": cluster["workerGroupSpecs"][0]["template"]["metadata"]["labels"],
        "open-webui": ui["spec"]["template"]["metadata"]["labels"],
    }


def test_netpol_selectors_select_the_right_pods(dev: Render) -> None:
    pols, labels = policies(dev), pod_labels(dev)
    assert all(p["metadata"]["namespace"] == "vllm" for p in pols.values())
    # Default deny: every pod of the namespace.
    assert pols["default-deny-ingress"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    # Ray-internal: selects and admits head and workers.
    internal = pols["ray-internal"]["spec"]
    assert selects(internal["podSelector"], labels["head"]) and selects(internal["podSelector"], labels["worker"])
    (rule,) = internal["ingress"]
    (peer,) = rule["from"]
    assert selects(peer["podSelector"], labels["head"]) and "namespaceSelector" not in peer
    # Serve port: workers only, from Open WebUI's pods and the bench namespace.
    serve = pols["serve-clients"]["spec"]
    assert selects(serve["podSelector"], labels["worker"]) and not selects(serve["podSelector"], labels["head"])
    (rule,) = serve["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    ui_peer, bench_peer = rule["from"]
    assert ui_peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "open-webui"}
    assert selects(ui_peer["podSelector"], labels["open-webui"])
    assert bench_peer == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "bench"}}}
    # Dashboard: head only, only from the KubeRay operator's pods.
    dash = pols["dashboard-from-operator"]["spec"]
    assert selects(dash["podSelector"], labels["head"]) and not selects(dash["podSelector"], labels["worker"])
    (rule,) = dash["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8265}]
    (op,) = rule["from"]
    assert op["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kuberay"}


def test_no_policy_admits_the_dashboard_from_clients(dev: Render) -> None:
    labels = pod_labels(dev)
    for name, pol in policies(dev).items():
        if not selects(pol["spec"]["podSelector"], labels["head"]):
            continue
        for rule in pol["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                ns = (peer.get("namespaceSelector") or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                assert ns not in {"open-webui", "bench"}, name


def test_selector_check_can_fail() -> None:
    assert not selects({"matchLabels": rayservice.WORKER_LABELS}, rayservice.HEAD_LABELS)
    broken = netpol.serving_policies(operator_namespace="kuberay", openwebui_namespace="webui")
    ui_peer = broken[2]["spec"]["ingress"][0]["from"][0]
    assert ui_peer["namespaceSelector"]["matchLabels"] != {"kubernetes.io/metadata.name": "open-webui"}


# --- secrets and outputs ---------------------------------------------------------------------------------------


def test_hf_token_is_never_rendered_in_clear() -> None:
    r = rendered("dev", hfToken=SENTINEL)
    text = json.dumps(r.resources) + json.dumps(r.outputs) + r.log
    assert SENTINEL not in text
    secret = r.one("kubernetes:core/v1:Secret", "serving-hf-token")["inputs"]
    assert secret["stringData"] == {rayservice.HF_TOKEN_KEY: "[secret]"}


def test_no_hf_token_no_secret(dev: Render) -> None:
    assert not [s for s in dev.of_type("kubernetes:core/v1:Secret") if s["name"] == "serving-hf-token"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("servingEndpoint", "http://llm-serve-svc.vllm.svc.cluster.local:8000/v1"),
        ("modelId", "NousResearch/Meta-Llama-3-8B-Instruct"),
        ("servePortForward", "kubectl -n vllm port-forward svc/llm-serve-svc 8000:8000"),
        ("rayDashboardPortForward", "kubectl -n vllm port-forward svc/llm-head-svc 8265:8265"),
        ("openWebuiPortForward", "kubectl -n open-webui port-forward svc/open-webui 8081:80"),
    ],
)
def test_outputs(dev: Render, key: str, value: str) -> None:
    assert dev.outputs[key] == value


def test_model_id_is_config() -> None:
    r = rendered("dev", modelId="meta-llama/Llama-3.1-8B-Instruct", hfToken=SENTINEL)
    assert r.outputs["modelId"] == "meta-llama/Llama-3.1-8B-Instruct"


def test_the_base_image_as_serving_image_is_flagged_and_the_default_and_a_built_image_are_not(dev: Render) -> None:
    assert dev.config["eks-neuron-llm:servingImage"] == ""  # the default: the stack builds the image
    assert base_image_warning("") is None
    base = base_image()
    as_config = f"{base.registry}/{base.repository}{base.reference}"
    assert "no ray[serve]" in (base_image_warning(as_config) or "")
    assert "Leave eks-neuron-llm:servingImage empty" in (base_image_warning(as_config) or "")
    built = "123456789012.dkr.ecr.us-west-2.amazonaws.com/eks-neuron-llm-dev/serving:0123456789abcdef"
    assert base_image_warning(built) is None


def test_bucket_and_repository_names_are_lowercase_whatever_the_cluster_name() -> None:
    r = rendered("dev", clusterName="Eks-Neuron-LLM-Dev")
    bucket = r.one(tokens.S3_BUCKET, "serving-artifacts")["inputs"]
    assert bucket["bucketPrefix"] == "eks-neuron-llm-dev-artifacts-"
    assert r.one(tokens.ECR_REPOSITORY, "serving-image")["inputs"]["name"] == "eks-neuron-llm-dev/serving"
