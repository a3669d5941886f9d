"""Open WebUI: it talks to the Service KubeRay creates for the RayService, keeps its data, and signs users in."""

from __future__ import annotations

import json
from typing import Any

from infra import tokens
from policy.rules import image_problem
from tools.render import Render, _hex
from workloads import openwebui
from workloads.topology import DEFAULT_POOL, NODEPOOL_LABEL

from .conftest import rendered


def manifest(r: Render, kind: str, name: str) -> dict[str, Any]:
    (found,) = [m for m in r.manifests() if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def pod(r: Render) -> dict[str, Any]:
    spec: dict[str, Any] = manifest(r, "Deployment", "open-webui")["spec"]["template"]["spec"]
    return spec


def env(r: Render) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in pod(r)["containers"][0]["env"]}


def test_backend_url_is_the_serve_service_kuberay_creates(each_stack: Render) -> None:
    (rs,) = [m for m in each_stack.manifests() if m["kind"] == "RayService"]
    # KubeRay 1.7 names a RayService's Serve Service "<rayservice>-serve-svc" (utils.GenerateServeServiceName) in
    # the RayService's namespace; the Serve HTTP port is the workers' container port named "serve".
    (group,) = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    port = next(p["containerPort"] for p in group["template"]["spec"]["containers"][0]["ports"] if p["name"] == "serve")
    expected = f"http://{rs['metadata']['name']}-serve-svc.{rs['metadata']['namespace']}.svc.cluster.local:{port}/v1"
    assert env(each_stack)["OPENAI_API_BASE_URLS"]["value"] == expected
    assert each_stack.outputs["servingEndpoint"] == expected


def test_only_the_openai_backend_with_sign_in_and_closed_signup(dev: Render) -> None:
    e = env(dev)
    assert e["ENABLE_OLLAMA_API"]["value"] == "false" and e["ENABLE_OPENAI_API"]["value"] == "true"
    assert e["WEBUI_AUTH"]["value"] == "true"
    assert e["ENABLE_SIGNUP"]["value"] == "false"
    assert env(rendered("dev", openWebuiEnableSignup="true"))["ENABLE_SIGNUP"]["value"] == "true"


def test_secret_key_comes_from_a_random_password_in_a_secret(dev: Render) -> None:
    ref = env(dev)["WEBUI_SECRET_KEY"]["valueFrom"]["secretKeyRef"]
    secret = manifest(dev, "Secret", ref["name"])
    assert secret["metadata"]["namespace"] == "open-webui"
    assert secret["stringData"] == {ref["key"]: "[secret]"}
    password = dev.one("random:index/randomPassword:RandomPassword", "openwebui-secret-key")
    assert password["inputs"]["length"] >= 32
    # The mock's password value never appears anywhere in the render.
    value = _hex(password["name"], "password", n=32)
    assert value not in json.dumps(dev.resources) + json.dumps(dev.outputs)


def test_data_lives_on_a_gp3_volume_and_updates_recreate(dev: Render) -> None:
    deployment = manifest(dev, "Deployment", "open-webui")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"} and deployment["spec"]["replicas"] == 1
    mount = next(m for m in pod(dev)["containers"][0]["volumeMounts"] if m["mountPath"] == "/app/backend/data")
    volume = next(v for v in pod(dev)["volumes"] if v["name"] == mount["name"])
    pvc = manifest(dev, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert pvc["spec"]["storageClassName"] == "gp3" and pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert dev.one("kubernetes:core/v1:PersistentVolumeClaim", "openwebui-data")["retainOnDelete"] is False
    assert rendered("prod").one("kubernetes:core/v1:PersistentVolumeClaim", "openwebui-data")["retainOnDelete"]


def test_service_port_80_reaches_the_container_on_8080(dev: Render) -> None:
    svc = manifest(dev, "Service", "open-webui")
    (port,) = svc["spec"]["ports"]
    assert port["port"] == 80
    container_ports = {p["name"]: p["containerPort"] for p in pod(dev)["containers"][0]["ports"]}
    assert container_ports[port["targetPort"]] == 8080
    labels = manifest(dev, "Deployment", "open-webui")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert dev.outputs["openWebuiPortForward"] == "kubectl -n open-webui port-forward svc/open-webui 8081:80"


def test_runs_hardened_on_the_default_pool(dev: Render) -> None:
    spec = pod(dev)
    assert spec["nodeSelector"] == {NODEPOOL_LABEL: DEFAULT_POOL}
    assert "tolerations" not in spec
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] > 10000
    (container,) = spec["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"requests", "limits"} <= set(container["resources"])
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    assert image_problem(container["image"]) is None
    assert container["image"] == openwebui.IMAGE


def test_deployment_waits_for_its_secret_volume_and_pool(dev: Render) -> None:
    record = dev.one("kubernetes:apps/v1:Deployment", "openwebui-deployment")
    deps = set(record["dependencies"])
    assert dev.one("kubernetes:core/v1:Secret", "openwebui-secret")["urn"] in deps
    assert dev.one("kubernetes:core/v1:PersistentVolumeClaim", "openwebui-data")["urn"] in deps
    assert dev.one(tokens.NODE_POOL, "karpenter-nodepool-default")["urn"] in deps


def test_chats_go_out_without_native_tool_calls(dev: Render) -> None:
    # Open WebUI >= 0.12 adds its built-in tools to every chat unless function calling is "legacy"; vLLM without
    # --enable-auto-tool-choice refuses such requests (the browser tier showed the error in place of an answer).
    assert json.loads(env(dev)["DEFAULT_MODEL_PARAMS"]["value"]) == {"function_calling": "legacy"}
