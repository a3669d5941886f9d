"""Open WebUI in front of the RayService, as plain Kubernetes objects.

One replica (its SQLite database lives on a ReadWriteOnce gp3 volume at ``/app/backend/data``, so updates recreate
the pod rather than surge), on the Karpenter ``default`` pool (x86), behind Service ``open-webui`` port 80 -> 8080.
It talks to the serve Service only (Ollama off), requires sign-in, and takes its session-signing key from a Secret.
Its settings come from the environment on every start (``ENABLE_PERSISTENT_CONFIG=false``): the stack, not a value
saved once in the database, decides the backend URL and whether sign-up is open.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from workloads import rayservice
from workloads.topology import DEFAULT_POOL, NODEPOOL_LABEL

NAMESPACE: Final = "open-webui"
NAME: Final = "open-webui"
# Open WebUI v0.12.4, the newest release on PyPI on 2026-12-01 (open-webui 0.12.4); its release workflow tags the image
# with the release's git tag.  Every variable environment() sets was checked against that release's own code
# (open_webui/env.py and config.py of the 0.12.4 wheel); docs/versions.md says how, and what reads the others.
# The browser tier runs the PyPI package of this tag (tools/webui_local.py reads it from here).
IMAGE: Final = "ghcr.io/open-webui/open-webui:v0.12.4"
PORT: Final = 8080
SERVICE_PORT: Final = 80
DATA_DIR: Final = "/app/backend/data"
SECRET_NAME: Final = "open-webui-secret"
SECRET_KEY: Final = "WEBUI_SECRET_KEY"
PVC_NAME: Final = "open-webui-data"
USER_ID: Final = 10001
LABELS: Final[dict[str, str]] = {"app.kubernetes.io/name": NAME}
RESOURCES: Final = {"requests": {"cpu": "500m", "memory": "1536Mi"}, "limits": {"cpu": "2", "memory": "3Gi"}}


@dataclass(frozen=True)
class OpenWebUIInputs:
    openai_base_url: str  # the RayService's serve Service, derived from the RayService's name
    enable_signup: bool
    storage_gib: int
    storage_class: str
    namespace: str = NAMESPACE


def environment(inputs: OpenWebUIInputs) -> list[dict[str, Any]]:
    def plain(name: str, value: str) -> dict[str, Any]:
        return {"name": name, "value": value}

    return [
        plain("OPENAI_API_BASE_URLS", inputs.openai_base_url),
        # The serve endpoint's key (one per URL; a single URL here), from the copy of its Secret in this namespace.
        {
            "name": "OPENAI_API_KEYS",
            "valueFrom": {"secretKeyRef": {"name": rayservice.API_KEY_SECRET, "key": rayservice.API_KEY_SECRET_KEY}},
        },
        plain("ENABLE_OPENAI_API", "true"),
        plain("ENABLE_OLLAMA_API", "false"),
        plain("WEBUI_AUTH", "true"),
        plain("ENABLE_SIGNUP", "true" if inputs.enable_signup else "false"),
        plain("DEFAULT_USER_ROLE", "pending"),
        # Open WebUI >= 0.12 calls tools natively by default: every chat request carries its built-in tools, which
        # vLLM refuses ("auto" tool choice needs --enable-auto-tool-choice and a tool-call parser), so no chat gets
        # an answer; Llama-3-8B-Instruct's chat template has no tools anyway. Legacy (prompt-based) tool calling
        # sends plain chat requests. Found by the browser tier (tests/e2e/test_browser.py).
        plain("DEFAULT_MODEL_PARAMS", json.dumps({"function_calling": "legacy"})),
        plain("ENABLE_PERSISTENT_CONFIG", "false"),
        plain("DATA_DIR", DATA_DIR),
        plain("PORT", str(PORT)),
        plain("HOME", "/tmp"),
        plain("ANONYMIZED_TELEMETRY", "false"),
        plain("DO_NOT_TRACK", "true"),
        plain("SCARF_NO_ANALYTICS", "true"),
        {"name": SECRET_KEY, "valueFrom": {"secretKeyRef": {"name": SECRET_NAME, "key": SECRET_KEY}}},
    ]


def _probe(path: str, *, period: int, failures: int, timeout: int = 5) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def pod_spec(inputs: OpenWebUIInputs) -> dict[str, Any]:
    return {
        # The default (x86) Karpenter pool, by Karpenter's well-known label.
        "nodeSelector": {NODEPOOL_LABEL: DEFAULT_POOL},
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "fsGroup": USER_ID,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": NAME,
                "image": IMAGE,
                "imagePullPolicy": "Always",
                "ports": [{"name": "http", "containerPort": PORT}],
                "env": environment(inputs),
                "resources": RESOURCES,
                # The first start downloads the RAG embedding model into the data volume: allow 10 minutes.
                "startupProbe": _probe("/health", period=10, failures=60),
                "livenessProbe": _probe("/health", period=20, failures=3),
                # /ready: start-up finished and the database answers (/health only says the process is up).
                "readinessProbe": _probe("/ready", period=10, failures=3),
                "volumeMounts": [
                    {"name": "data", "mountPath": DATA_DIR},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "privileged": False,
                    "capabilities": {"drop": ["ALL"]},
                    "runAsNonRoot": True,
                    "runAsUser": USER_ID,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
            }
        ],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": PVC_NAME}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    }


def manifests(inputs: OpenWebUIInputs) -> dict[str, dict[str, Any]]:
    """The PVC, Deployment and Service (the namespace and the Secret are made by the component)."""
    ns = inputs.namespace
    return {
        "pvc": {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": PVC_NAME, "namespace": ns, "labels": dict(LABELS)},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": inputs.storage_class,
                "resources": {"requests": {"storage": f"{inputs.storage_gib}Gi"}},
            },
        },
        "deployment": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": NAME, "namespace": ns, "labels": dict(LABELS)},
            "spec": {
                "replicas": 1,
                # ReadWriteOnce volume and SQLite: the old pod must stop before the new one mounts the data.
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": dict(LABELS)},
                "template": {"metadata": {"labels": dict(LABELS)}, "spec": pod_spec(inputs)},
            },
        },
        "service": {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": NAME, "namespace": ns, "labels": dict(LABELS)},
            "spec": {
                "type": "ClusterIP",
                "selector": dict(LABELS),
                "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
            },
        },
    }
